"""Operations: a request id on every request and log line, and Prometheus metrics at `/metrics`.

`install_observability(app)` wraps the whole app (outside Starlette's error middleware, so a 500 answer carries
`X-Request-ID` too and the traceback logged for it carries the id), configures logging from the settings, and
adds `/metrics`. The middleware is plain ASGI: it only reads the response start, so streaming is untouched.

HTTP metrics are labelled by route template (`/r/{code}`), never by raw path, and by status class; unknown
methods count as `OTHER`, so hostile requests cannot mint label values. What every process shares (contacts sent
and held back, rewards, customers) is read from the store at scrape time by `StoreCollector`, cached for a few
seconds so scrapes do not load it, and reported as `advocacy_store_up 0` when the store cannot be read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from fastapi import FastAPI, params
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.clicks import ClickRecorder
from engine.observability import accept_request_id, configure_logging, log_options, request_context
from engine.settings import Settings
from graph.outreach import HoldReason, MessageStatus
from graph.program_store import Store

log = logging.getLogger("advocacy.access")
_errors = logging.getLogger(__name__)

REQUEST_ID_HEADER: Final = b"x-request-id"
UNMATCHED: Final = "<unmatched>"
"""The route label of a request no route matched (404s for made-up paths share one label)."""
METRICS_PATH: Final = "/metrics"
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HttpMetrics:
    """The app's own request metrics, in the app's registry (one app per process in production)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "advocacy_http_requests",
            "HTTP requests answered, by method, route template and status class.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "advocacy_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=registry,
        )

    def observe(self, *, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(method=method, route=route, status=f"{status // 100}xx").inc()
        self.latency.labels(method=method, route=route).observe(seconds)


def route_template(scope: Scope, *, root_path: str = "") -> str:
    """The path format of the route the router matched (`/r/{code}`), or `<unmatched>`.

    FastAPI records the route only for its own routes; a mount (`/static`) shows as the prefix it added to
    `root_path` (the value before the app ran is `root_path`).
    """
    template = getattr(scope.get("route"), "path_format", None)
    if isinstance(template, str) and template:
        return template
    mounted = str(scope.get("root_path", ""))
    if mounted != root_path and mounted.startswith(root_path):
        return mounted[len(root_path) :] + "/{path}"
    return UNMATCHED


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == REQUEST_ID_HEADER:
            return bytes(value).decode("latin-1")
    return None


class RequestContextMiddleware:
    """Sets the request id for the request's duration, echoes it, logs one access line and records metrics."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(_incoming_id(scope))
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        root_path = str(scope.get("root_path", ""))
        started = time.perf_counter()
        with request_context(request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                seconds = time.perf_counter() - started
                method, route = str(scope.get("method", "")), route_template(scope, root_path=root_path)
                self.metrics.observe(method=method, route=route, status=status, seconds=seconds)
                log.info(
                    "%s %s %s %.1f ms",
                    method,
                    route,
                    status,
                    seconds * 1000,
                    extra={"method": method, "route": route, "status": status, "duration_ms": round(seconds * 1000, 3)},
                )


# --- what the store knows ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreSnapshot:
    """The programme-wide numbers one scrape reports, read from the store in one go."""

    customers: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    held: dict[str, int] = field(default_factory=dict)
    conversions: dict[str, int] = field(default_factory=dict)
    rewards_minor: dict[tuple[str, str], int] = field(default_factory=dict)


def read_snapshot(store: Store) -> StoreSnapshot:
    """Outbox counts summed over every outreach, and the programme's counts overall."""
    messages: Tally[str] = Tally({status.value: 0 for status in MessageStatus})
    held: Tally[str] = Tally({reason.value: 0 for reason in HoldReason})
    for outreach in store.list_outreach():
        counts = store.outbox_counts(outreach.id)
        messages.update({status.value: n for status, n in counts.by_status.items()})
        held.update({reason.value: n for reason, n in counts.held_by_reason.items()})
    program = store.program_counts()
    return StoreSnapshot(
        customers=program.customers,
        messages=dict(messages),
        held=dict(held),
        conversions={status.value: n for status, n in program.conversions.items()},
        rewards_minor={
            (currency, state.value): amount
            for currency, by_state in program.reward_cost_minor.items()
            for state, amount in by_state.items()
        },
    )


class StoreCollector:
    """Reads the store at most once per `ttl_s` (a failure too is remembered that long: no hammering a sick store).

    A scrape never fails because of the store: it reports the last numbers it read and `advocacy_store_up 0`.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        *,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot: StoreSnapshot | None = None
        self._up = False
        self._read_at = float("-inf")

    def _refresh(self) -> tuple[StoreSnapshot | None, bool]:
        with self._lock:
            now = self._clock()
            if now - self._read_at >= self._ttl_s:
                self._read_at = now
                try:
                    self._snapshot, self._up = read_snapshot(self._store()), True
                except Exception as exc:  # whatever the store raises, the scrape goes on
                    self._up = False
                    _errors.warning("metrics could not read the store: %s", exc)
            return self._snapshot, self._up

    def collect(self) -> Iterator[Metric]:
        snapshot, up = self._refresh()
        yield GaugeMetricFamily("advocacy_store_up", "1 when the last read of the store succeeded.", value=int(up))
        if snapshot is None:
            return
        yield GaugeMetricFamily("advocacy_customers", "Customers in the store.", value=snapshot.customers)
        yield _by(
            "advocacy_outreach_messages", "Outbox messages of every outreach, by status.", "status", snapshot.messages
        )
        yield _by(
            "advocacy_outreach_held",
            "Contacts held back (not made), by reason, over every outreach.",
            "reason",
            snapshot.held,
        )
        yield _by("advocacy_conversions", "Conversions by status.", "status", snapshot.conversions)
        rewards = GaugeMetricFamily(
            "advocacy_rewards_amount_minor",
            "Summed reward amounts in minor units (cents), by currency and state.",
            labels=["currency", "state"],
        )
        for (currency, state), amount in sorted(snapshot.rewards_minor.items()):
            rewards.add_metric([currency, state], amount)
        yield rewards


def _by(name: str, documentation: str, label: str, values: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(values.items()):
        family.add_metric([value], count)
    return family


class _ClickMetrics:
    """The clicks this process took and has not yet written: grows while the store is down."""

    def __init__(self, clicks: ClickRecorder) -> None:
        self._clicks = clicks

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "advocacy_clicks_waiting",
            "Clicks this process took and has not yet written to the store.",
            value=self._clicks.pending,
        )


class _ProcessMetrics:
    """The process-wide default registry (process, GC, task counters of eager tasks) inside the app's one."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def build_registry(app: FastAPI) -> tuple[CollectorRegistry, HttpMetrics]:
    registry = CollectorRegistry()
    metrics = HttpMetrics(registry)
    holder = getattr(app.state, "store_holder", None)
    if holder is not None:
        registry.register(StoreCollector(holder.get))
    clicks = getattr(app.state, "clicks", None)
    if clicks is not None:
        registry.register(_ClickMetrics(clicks))
    registry.register(_ProcessMetrics())
    return registry, metrics


def install_observability(app: FastAPI, *, dependencies: Sequence[params.Depends] = ()) -> None:
    """Request ids, logging from `app.state.settings`, metrics and `/metrics`; a second call changes nothing.

    `dependencies` guard `/metrics` (business numbers: customers, rewards), e.g. `[Depends(authorise)]`.
    """
    if getattr(app.state, "metrics_registry", None) is not None:
        return
    settings: Settings | None = getattr(app.state, "settings", None)
    if settings is not None:
        log_format, level = log_options(settings)
        configure_logging(log_format=log_format, level=level)
    registry, metrics = build_registry(app)
    app.state.metrics_registry = registry

    # Outermost, around Starlette's ServerErrorMiddleware, which `add_middleware` cannot reach. An app that has
    # served already (its stack is built) is wrapped as it is.
    if app.middleware_stack is not None:
        app.middleware_stack = RequestContextMiddleware(app.middleware_stack, metrics)
    else:
        build_stack = app.build_middleware_stack

        def build_with_context() -> ASGIApp:
            return RequestContextMiddleware(build_stack(), metrics)

        app.build_middleware_stack = build_with_context  # type: ignore[method-assign]

    @app.get(METRICS_PATH, include_in_schema=False, dependencies=list(dependencies))
    def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)
