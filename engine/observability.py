"""Logs and task metrics that follow one request through the API and into the Celery workers.

Every HTTP request gets an id (`api.observability` accepts the client's `X-Request-ID` or makes one); it lives in
the `REQUEST_ID` context variable while the request is served, rides in the headers of every task published
meanwhile, and is set again in the worker while that task runs. A logging filter stamps it on every record, so
one grep finds an order's webhook, its settlement task and the fulfilment it queued.

Logs are text or JSON lines (`settings.api.log_format`), and never carry secrets: `RedactionFilter` masks bearer
credentials, `adv_` API keys, JWTs, URL passwords, unsubscribe tokens and the values of secret-named fields
before any handler writes a record.

Task counters are counted where tasks run, the worker's pool processes. `serve_worker_metrics` exposes them; with
the prefork pool, set `PROMETHEUS_MULTIPROC_DIR` in the worker's environment so the parent can add up its
children. The API's `/metrics` reads programme-wide numbers from the store instead, which every process shares.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TextIO

from celery import signals
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from engine.settings import Settings
from graph.factory import redact

REQUEST_ID: ContextVar[str | None] = ContextVar("advocacy_request_id", default=None)
"""The id of the HTTP request (or of the request that published the running task); None outside both."""

TASK: ContextVar[tuple[str, str] | None] = ContextVar("advocacy_task", default=None)
"""(task name, task id) while a Celery task runs in this context."""

TASK_HEADER: Final = "advocacy_request_id"
"""The message header that carries the request id to the worker; prefixed so it cannot clash with Celery's own."""

_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def accept_request_id(value: str | None) -> str:
    """The client's id when it is a short plain token, else a new one: a header is input, and it goes into logs.

    >>> accept_request_id("abc-123")
    'abc-123'
    >>> len(accept_request_id("evil\\nline"))
    32
    """
    if value is not None and _SANE_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return REQUEST_ID.get()


@contextmanager
def request_context(request_id: str) -> Iterator[str]:
    """Everything logged or published inside the block carries `request_id`."""
    token = REQUEST_ID.set(request_id)
    try:
        yield request_id
    finally:
        REQUEST_ID.reset(token)


# --- redaction ---------------------------------------------------------------------------------------------------
MASK: Final = "***"

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>]+")
_SECRET_WORDS = r"password|passwd|secret|token|api[_-]?key|authorization|cookie|credential"  # noqa: S105 - names, not a value
_SECRET_NAME = rf"[A-Za-z0-9_-]*(?:{_SECRET_WORDS})[A-Za-z0-9_-]*"
_SECRET_FIELD = re.compile(
    rf"(?i)(?<![A-Za-z0-9_-])({_SECRET_NAME})([\"']?\s*[:=]\s*[\"']?)((?:bearer|basic)\s+)?[^\s\"'&,;}}\]]+"
)
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
_API_KEY = re.compile(r"\badv_(?:([a-z0-9]{8,32})_)?[A-Za-z0-9_-]{16,}")
"""Marketer keys (`adv_<id>_<secret>`): the id stays, to tell which key it was. The floor on length spares names
such as the `adv_click` and `adv_visitor` cookies."""
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{5,}(?:\.[A-Za-z0-9_-]*){0,2}")
_UNSUBSCRIBE = re.compile(r"(/u/)[A-Za-z0-9._~%-]+")
"""The signed one-click unsubscribe link: whoever holds it can unsubscribe that person."""
_SECRET_KEY = re.compile(rf"(?i)^{_SECRET_NAME}$")
_MAYBE_SECRET = re.compile(rf"://|adv_|eyJ|/u/|(?i:bearer|{_SECRET_WORDS})")
"""What each pattern above needs to match at all: most log lines (an access line each request) have none of it,
and one search then spares them the six substitutions."""


def _redact_url(match: re.Match[str]) -> str:
    try:
        return redact(match.group(0))
    except ValueError:
        return MASK


def redact_text(text: str) -> str:
    """`text` with every secret we know the shape of replaced by `***`.

    >>> redact_text("GET /v1/x Authorization: Bearer adv_0123456789abcdefXYZ")
    'GET /v1/x Authorization: Bearer ***'
    >>> redact_text("key adv_3f9a0c1b2d4e_Zm9vYmFyYmF6cXV4cXV1eA used")
    'key adv_3f9a0c1b2d4e_*** used'
    >>> redact_text("bolt://neo4j:hunter2@db:7687")
    'bolt://neo4j:***@db:7687'
    """
    if not _MAYBE_SECRET.search(text):
        return text
    return _redact_all(text)


def _redact_all(text: str) -> str:
    text = _URL.sub(_redact_url, text)
    text = _SECRET_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3) or ''}{MASK}", text)
    text = _BEARER.sub(rf"\1 {MASK}", text)
    text = _API_KEY.sub(lambda m: f"adv_{m.group(1)}_{MASK}" if m.group(1) else f"adv_{MASK}", text)
    text = _JWT.sub(f"eyJ{MASK}", text)
    return _UNSUBSCRIBE.sub(rf"\1{MASK}", text)


def redact_value(key: str, value: Any) -> Any:
    """A field of a log record (or of a mapping in it, such as headers), masked by its name or its content."""
    if _SECRET_KEY.match(key):
        return MASK
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(str(k), v) for k, v in value.items()}
    return value


_RECORD_FIELDS: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_OUR_FIELDS: Final = frozenset({"request_id", "task_name", "task_id"})


class RedactionFilter(logging.Filter):
    """Rewrites a record's message, exception text and extra fields before any formatter sees them.

    It sits on handlers (a logger's own filters do not see records propagated from child loggers).
    """

    _exceptions = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is logging's to report, not ours
            message = str(record.msg)
        record.msg, record.args = redact_text(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exceptions.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS and key not in _OUR_FIELDS:
                setattr(record, key, redact_value(key, value))
        return True


class RequestIdFilter(logging.Filter):
    """Stamps the current request id (and the running task) on each record, unless the caller set them."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        task = TASK.get()
        if task is not None and not hasattr(record, "task_name"):
            record.task_name, record.task_id = task
        return True


# --- formatters --------------------------------------------------------------------------------------------------
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, defaults={"request_id": "-"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `message`, `request_id`, the task, extras, `exc`."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key != "request_id" and not key.startswith("_"):
                out[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def equip_handler(handler: logging.Handler, log_format: str) -> None:
    """Give `handler` our formatter and filters (once each): redaction first, so nothing else sees a secret."""
    handler.setFormatter(make_formatter(log_format))
    for kind in (RedactionFilter, RequestIdFilter):
        if not any(isinstance(f, kind) for f in handler.filters):
            handler.addFilter(kind())


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time, so a replaced stderr (test capture) is followed."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


_OURS: Final = "_advocacy_observability"


def log_options(settings: Settings) -> tuple[str, str]:
    """(format, level) from `settings.api`: one choice for the API and its workers."""
    return settings.api.log_format, settings.api.log_level.upper()


def configure_logging(*, log_format: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route the process's logs through one handler on the root logger, replacing the one installed before.

    Uvicorn's loggers propagate to it (uvicorn writes its own lines otherwise); uvicorn's access log is switched
    off because `api.observability` logs each request itself, by route template, so paths with tokens stay out.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
    handler: logging.Handler = _StderrHandler() if stream is None else logging.StreamHandler(stream)
    setattr(handler, _OURS, True)
    equip_handler(handler, log_format)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True


# --- Celery: the request id in task headers, task metrics, worker logs -----------------------------------------
TASKS = Counter("advocacy_celery_tasks", "Celery tasks run, by task name and outcome.", ["task", "outcome"])
TASK_SECONDS = Histogram(
    "advocacy_celery_task_duration_seconds",
    "How long successful Celery tasks ran.",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, float("inf")),
)


@dataclass
class _WorkerOptions:
    log_format: str = "text"
    metrics_port: int | None = None


_worker = _WorkerOptions()
_install_lock = threading.Lock()
_installed = False
_tokens: dict[str, tuple[Token[str | None], Token[tuple[str, str] | None]]] = {}


def _publishing(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = REQUEST_ID.get()
    if request_id is not None and headers is not None:
        headers.setdefault(TASK_HEADER, request_id)


def _request_id_of(task: Any) -> str | None:
    request = getattr(task, "request", None)
    value = getattr(request, TASK_HEADER, None) or (getattr(request, "headers", None) or {}).get(TASK_HEADER)
    return value if isinstance(value, str) and _SANE_ID.fullmatch(value) else None


def _task_started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task_id is None or task is None:
        return
    request_id = _request_id_of(task) or REQUEST_ID.get()
    _tokens[task_id] = (REQUEST_ID.set(request_id), TASK.set((str(task.name), task_id)))


def _task_finished(task_id: str | None = None, **_: Any) -> None:
    tokens = _tokens.pop(task_id, None) if task_id is not None else None
    if tokens is None:
        return
    try:
        TASK.reset(tokens[1])
        REQUEST_ID.reset(tokens[0])
    except ValueError:  # finished in another context than it started: clear rather than leak the id
        TASK.set(None)
        REQUEST_ID.set(None)


def _task_name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or sender or "unknown")


def _succeeded(sender: Any = None, runtime: float | None = None, **_: Any) -> None:
    name = _task_name(sender)
    TASKS.labels(task=name, outcome="success").inc()
    if runtime is not None:
        TASK_SECONDS.labels(task=name).observe(runtime)


def _failed(sender: Any = None, **_: Any) -> None:
    TASKS.labels(task=_task_name(sender), outcome="failure").inc()


def _retried(sender: Any = None, **_: Any) -> None:
    TASKS.labels(task=_task_name(sender), outcome="retry").inc()


def _worker_logging(logger: logging.Logger | None = None, **_: Any) -> None:
    """Celery set up its handlers: give them our formatter and filters, as the API's handler has."""
    if logger is not None:
        for handler in logger.handlers:
            equip_handler(handler, _worker.log_format)


def _worker_ready(**_: Any) -> None:
    if _worker.metrics_port is not None:
        serve_worker_metrics(_worker.metrics_port)


def serve_worker_metrics(port: int, *, addr: str = "0.0.0.0") -> tuple[Any, threading.Thread]:  # noqa: S104
    """Serve the task metrics over HTTP from this process (Prometheus scrapes workers from elsewhere).

    With `PROMETHEUS_MULTIPROC_DIR` set, the numbers are added up over every process that wrote there (the
    prefork pool's children); without it only this process's own count, which suits the solo and thread pools.
    Returns the server and its thread (`server.server_port` is the port when `port` is 0).
    """
    registry: CollectorRegistry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server, thread = start_http_server(port, addr=addr, registry=registry)
    logging.getLogger(__name__).info("worker metrics served on %s:%s", addr, server.server_port)
    return server, thread


def install_task_context(settings: Settings | None = None) -> None:
    """Connect the Celery signals (once per process; later calls only update the worker's options).

    Publishing copies the request id into the task's headers; the worker sets it around the task, counts the
    outcome, and formats its logs as the API does. `make_celery` calls this.
    """
    global _installed
    if settings is not None:
        _worker.log_format, _ = log_options(settings)
        _worker.metrics_port = settings.celery.metrics_port
    with _install_lock:
        if _installed:
            return
        signals.before_task_publish.connect(_publishing, weak=False)
        signals.task_prerun.connect(_task_started, weak=False)
        signals.task_postrun.connect(_task_finished, weak=False)
        signals.task_success.connect(_succeeded, weak=False)
        signals.task_failure.connect(_failed, weak=False)
        signals.task_retry.connect(_retried, weak=False)
        signals.after_setup_logger.connect(_worker_logging, weak=False)
        signals.after_setup_task_logger.connect(_worker_logging, weak=False)
        signals.worker_ready.connect(_worker_ready, weak=False)
        _installed = True
