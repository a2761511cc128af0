"""Liveness and readiness probes, for orchestrators and load balancers.

Both answer at once whatever the dependencies do. They run on the event loop, not in the thread pool: while the
store is down every request waits on it (the Neo4j driver retries for 10 s) and together they hold every pool
thread, and a liveness probe queued behind them timed out and would have had the orchestrator restart a healthy
process. Readiness runs its checks in one thread of its own (at most one check in flight per app) and waits
`READY_WITHIN_S` for them; a dependency still silent by then is "not answering".

Readiness covers every service a request may need: the store, and Redis wherever the settings put it (the
contact limiter with `contact.backend=redis`, the task broker with `contact.dispatch=celery`, shared rate limits
with `api.rate_limit_storage=redis://...`). Each probe asks again, so readiness comes back by itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import PurePosixPath
from typing import Final
from urllib.parse import urlsplit

import redis
from fastapi import APIRouter, Request, Response

from api.deps import StoreHolder
from api.problems import TYPE_PREFIX, problem_response
from api.schemas import Health, Readiness, problem_responses
from engine.settings import Settings
from graph.errors import StoreUnavailable
from graph.factory import redact

router = APIRouter(tags=["health"])

READY_WITHIN_S: Final = 3.0
"""How long readiness waits for its checks: an orchestrator's probe must get an answer within its own timeout."""
REDIS_TIMEOUT_S: Final = 0.5
_REDIS_SCHEMES: Final = ("redis://", "rediss://", "unix://")

_clients: dict[str, redis.Redis[bytes]] = {}
_clients_lock = threading.Lock()


class DependencyDown(Exception):
    """A dependency readiness needs is not answering: which one, and why."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(detail)
        self.dependency = dependency
        self.detail = detail


def redis_dependencies(settings: Settings) -> dict[str, list[str]]:
    """The Redis URLs the app uses with these settings, each with what it is used for."""
    uses: dict[str, list[str]] = {}
    if settings.contact.backend == "redis":
        uses.setdefault(settings.contact.redis_db_url or settings.redis.url, []).append("contact limiter")
    if settings.contact.dispatch == "celery" and settings.broker_url.startswith(_REDIS_SCHEMES):
        uses.setdefault(settings.broker_url, []).append("task broker")
    if settings.api.rate_limit_storage.startswith(_REDIS_SCHEMES):
        uses.setdefault(settings.api.rate_limit_storage, []).append("rate limits")
    return uses


def _client(url: str) -> redis.Redis[bytes]:
    """One client (a connection pool) per URL for the process, so probes open no connection storms."""
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S)
            _clients[url] = client
        return client


def check_dependencies(holder: StoreHolder, settings: Settings) -> None:
    """Raise `DependencyDown` for the store, then for every Redis the settings use, unless each answers."""
    try:
        holder.ping()
    except StoreUnavailable as exc:
        raise DependencyDown("store", exc.detail) from exc
    failures = []
    for url, uses in redis_dependencies(settings).items():
        try:
            _client(url).ping()
        except (redis.RedisError, OSError) as exc:
            failures.append(f"{redact(url)} ({', '.join(uses)}): {exc}")
    if failures:
        raise DependencyDown("redis", "dependency 'redis' is not answering: " + "; ".join(failures))


class _Checks:
    """At most one readiness check in flight per app, in a thread of its own: a store that hangs holds one thread,
    however often the orchestrator asks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: Future[None] | None = None
        self._last_down: DependencyDown | None = None

    @property
    def last_down(self) -> DependencyDown | None:
        """What the last finished check found down (None: all answered), to say why while the next one hangs."""
        return self._last_down

    def start(self, check: Callable[[], None]) -> Future[None]:
        with self._lock:
            if self._running is None or self._running.done():
                future: Future[None] = Future()

                def run() -> None:
                    try:
                        check()
                    except BaseException as exc:  # handed to whoever waits for the check
                        self._last_down = exc if isinstance(exc, DependencyDown) else None
                        future.set_exception(exc)
                    else:
                        self._last_down = None
                        future.set_result(None)

                threading.Thread(target=run, name="readiness-check", daemon=True).start()
                self._running = future
            return self._running


def _checks(request: Request) -> _Checks:
    checks: _Checks | None = getattr(request.app.state, "readiness_checks", None)
    if checks is None:
        checks = request.app.state.readiness_checks = _Checks()
    return checks


def _unavailable(request: Request, down: DependencyDown) -> Response:
    return problem_response(
        request,
        status=StoreUnavailable.status,
        title=StoreUnavailable.title,
        detail=down.detail,
        type_=TYPE_PREFIX + "store-unavailable",
        headers={"Retry-After": str(StoreUnavailable.retry_after_s)},
        extensions={"dependency": down.dependency},
    )


def public_location(url: str) -> str:
    """The kind of store and where, without users, passwords or the server's directories (the probe is public)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return f"sqlite:///{PurePosixPath(parts.path).name}"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


@router.get("/healthz", summary="Is the process alive?", description="Answers 200 even when the store is down.")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="Can the app serve requests?",
    description="200 when the store answers a trivial query and every Redis the settings use (contact limiter, "
    f"task broker, rate limits) answers a PING, within {READY_WITHIN_S:g} s; otherwise 503 naming the dependency "
    "(`dependency`: `store` or `redis`), with `Retry-After`.",
    response_model=Readiness,
    responses=problem_responses(503),
)
async def readyz(request: Request) -> Readiness | Response:
    # No dependencies: FastAPI would resolve a sync one in the thread pool this probe must not wait for.
    holder: StoreHolder = request.app.state.store_holder
    settings: Settings = request.app.state.settings
    checks = _checks(request)
    running = checks.start(lambda: check_dependencies(holder, settings))
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)), READY_WITHIN_S)
    except TimeoutError:
        silent = f"dependency 'store' ({holder.where}) did not answer within {READY_WITHIN_S:g} s"
        return _unavailable(request, checks.last_down or DependencyDown("store", silent))
    except DependencyDown as down:
        return _unavailable(request, down)
    return Readiness(store=public_location(holder.where))
