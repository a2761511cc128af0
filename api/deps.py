"""Dependencies wired once: the app's one store, opened lazily so the app starts even when the store is down.

`create_app`'s lifespan tries to open the store at startup; if Neo4j (or the SQLite file) cannot be reached it
logs that and the app serves anyway: `/healthz` answers 200, `/readyz` and every route that needs the store answer
503 with `Retry-After`, and the next request tries to open the store again. Shutdown closes it.

Outreach shares more than the store across requests: the contact limiter (its SQLite file or Redis pool), the
channel adapters (an SMTP connection), the kit renderer (compiled templates) and, when sending through workers,
the Celery app. `ContactHolder` builds them on first use and closes them at shutdown; the `OutreachService` over
them is built per request, which costs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Final

import redis
from celery import Celery
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from kombu.exceptions import OperationalError

from engine.celery_app import make_celery
from engine.channels import ChannelAdapter, make_adapters
from engine.clicks import ClickRecorder
from engine.dispatch import InlineDispatcher
from engine.fulfilment import Fulfiller, make_fulfiller
from engine.kits import KitRenderer
from engine.limits import ContactLimiter, make_limiter
from engine.outreach import OutreachService
from engine.referrals import ReferralService
from engine.settings import Settings
from graph.errors import StoreUnavailable
from graph.factory import open_store, redact
from graph.model import ContactChannel
from graph.program_store import Store

log = logging.getLogger(__name__)


def _shutting_down() -> StoreUnavailable:
    message = "the application is shutting down"
    return StoreUnavailable(message, public=message)


class StoreHolder:
    """Owns the app's store: opens it on first use (retrying after failures) and closes it at shutdown."""

    RETRY_BACKOFF_S = 1.0

    def __init__(self, settings: Settings) -> None:
        self._url = settings.store
        self._database = settings.neo4j.database
        self._link_cache_s = settings.referral.link_cache_s
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._closed = False
        self._failed_at = -1e9
        self._failure: StoreUnavailable | None = None

    @property
    def where(self) -> str:
        """The store's URL without its password, for messages."""
        return redact(self._url)

    def current(self) -> Store | None:
        """The store when it is open, without waiting on anything."""
        return self._store

    def get(self) -> Store:
        """The open store; raises `StoreUnavailable` (503) while it cannot be opened."""
        store = self._store
        if store is not None:
            return store
        with self._lock:
            if self._closed:
                raise _shutting_down()
            if self._store is None:
                self._store = self._open()
            return self._store

    def _open(self) -> Store:
        """Open the store, but not more than once per back-off period after a failure (no connect storms)."""
        if self._failure is not None and time.monotonic() - self._failed_at < self.RETRY_BACKOFF_S:
            raise self._failure
        try:
            store = open_store(self._url, database=self._database)
        except StoreUnavailable as exc:
            self._failure, self._failed_at = exc, time.monotonic()
            raise
        self._failure = None
        store.links.ttl_s = self._link_cache_s
        log.info("store opened: %s", store.describe())
        return store

    def try_open(self) -> None:
        """Open at startup when possible; an unreachable store is logged, not fatal (a bad URL still is)."""
        try:
            self.get()
        except StoreUnavailable as exc:
            log.warning("store %s not reachable at startup, will retry on demand: %s", self.where, exc.detail)

    def ping(self) -> None:
        """Raise `StoreUnavailable` naming the store unless it opens and answers a trivial query."""
        try:
            self.get().ping()
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"dependency 'store' ({self.where}) is not answering: {exc.detail}") from exc

    def close(self) -> None:
        with self._lock:
            self._closed = True
            store, self._store = self._store, None
        if store is not None:
            store.close()
            log.info("store closed")


def holder_of(request: Request) -> StoreHolder:
    holder: StoreHolder = request.app.state.store_holder
    return holder


# Dependencies that do no I/O are `async def`: FastAPI runs a plain `def` dependency in the threadpool, a hop that
# was a sizeable part of a `/r/{code}` redirect's time.
async def get_store(request: Request) -> Store:
    """The open store at no cost; opening it (a network connection, a file) runs in the threadpool.

    This and the services below read the app's state themselves rather than through sub-dependencies: FastAPI
    spends tens of microseconds on each dependency of each request."""
    holder = holder_of(request)
    store = holder.current()
    return store if store is not None else await run_in_threadpool(holder.get)


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Clock = Callable[[], datetime]


def app_clock(request: Request) -> Clock:
    """The time the referral programme sees: `create_app(clock=...)` (a test's clock), else `utcnow`.

    It is app state rather than a dependency so the hot routes' guard and services read it without FastAPI solving
    one more dependency per request."""
    clock: Clock = request.app.state.clock
    return clock


async def get_clock(request: Request) -> Clock:
    return app_clock(request)


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ClockDep = Annotated[Clock, Depends(get_clock)]


def click_recorder(settings: Settings, holder: StoreHolder) -> ClickRecorder | None:
    """The app's batch writer of clicks, or None when `referral.click_batch_ms` is 0 (each click written inline)."""
    delay_ms = settings.referral.click_batch_ms
    if delay_ms <= 0:
        return None
    return ClickRecorder(holder.get, max_delay_s=delay_ms / 1000, capacity=settings.referral.click_buffer)


async def get_clicks(request: Request) -> ClickRecorder | None:
    clicks: ClickRecorder | None = request.app.state.clicks
    return clicks


ClicksDep = Annotated[ClickRecorder | None, Depends(get_clicks)]


async def get_service(request: Request) -> ReferralService:
    """One service per request: it holds nothing beyond the app's store and settings, so building it is free."""
    store = await get_store(request)
    state = request.app.state
    return ReferralService(store, state.settings.referral, clock=state.clock, clicks=state.clicks)


def get_fulfiller(settings: SettingsDep) -> Fulfiller:
    """Built only for a payout run: a webhook fulfiller resolves and checks the merchant's host when it is built."""
    return make_fulfiller(settings.referral)


def get_paying_service(
    store: StoreDep,
    settings: SettingsDep,
    clock: ClockDep,
    fulfiller: Annotated[Fulfiller, Depends(get_fulfiller)],
    clicks: ClicksDep,
) -> ReferralService:
    return ReferralService(store, settings.referral, clock=clock, fulfiller=fulfiller, clicks=clicks)


ServiceDep = Annotated[ReferralService, Depends(get_service)]
PayingServiceDep = Annotated[ReferralService, Depends(get_paying_service)]
"""The service with the configured fulfiller, for the route that pays rewards out."""


# --- outreach ------------------------------------------------------------------------------------------------
PLAN_TASK: Final = "advocacy.plan_outreach"
"""Plans an outreach on a worker and fans out one send task per message due (`engine.tasks.plan_outreach`)."""
DISPATCH_DUE_TASK: Final = "advocacy.dispatch_due"
"""Sends what came due, for every outreach (`engine.tasks.dispatch_due`, also run by Celery beat)."""


@dataclass(frozen=True, slots=True)
class Contact:
    """What every outreach service of the app shares."""

    limiter: ContactLimiter
    adapters: Mapping[ContactChannel, ChannelAdapter]
    renderer: KitRenderer


class ContactHolder:
    """Owns the app's `Contact` (and its Celery app when dispatching through workers): built on first use, closed
    at shutdown. A limiter that cannot be opened (a locked file, a bad path) is tried again on the next request."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._contact: Contact | None = None
        self._celery: Celery | None = None
        self._closed = False

    def current(self) -> Contact | None:
        """The contact parts once built, without waiting on anything."""
        return self._contact

    def get(self) -> Contact:
        contact = self._contact
        if contact is not None:
            return contact
        with self._lock:
            if self._closed:
                raise _shutting_down()
            if self._contact is None:
                self._contact = self._build()
            return self._contact

    def _build(self) -> Contact:
        limiter = make_limiter(self._settings)
        try:
            adapters = make_adapters(self._settings)
            renderer = KitRenderer()
        except BaseException:
            limiter.close()
            raise
        log.info("contact limiter (%s) and channels %s ready", self._settings.contact.backend, sorted(adapters))
        return Contact(limiter, adapters, renderer)

    def celery(self) -> Celery:
        """The Celery app that plans and sends on workers (`contact.dispatch = celery`)."""
        with self._lock:
            if self._closed:
                raise _shutting_down()
            if self._celery is None:
                self._celery = make_celery(self._settings)
            return self._celery

    def queue(self, task: str, *args: str) -> str:
        """Send `task` to the workers, naming this app's store so they work on the same one; the task's id.

        A broker that cannot be reached is a 503 (`StoreUnavailable`): nothing was planned, so trying again is safe.
        """
        try:
            result = self.celery().send_task(
                task,
                args=list(args),
                kwargs={"store_url": self._settings.store, "database": self._settings.neo4j.database},
                ignore_result=True,  # the API never reads results; subscribing to them fails while Redis is down
            )
        except (OperationalError, redis.RedisError, OSError) as exc:
            log.warning("task broker %s not answering: %s", redact(self._settings.broker_url), exc)
            raise StoreUnavailable(
                "the task broker is not answering; nothing was queued",
                public="the task broker is not answering; nothing was queued",
            ) from exc
        return str(result.id)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            contact, self._contact = self._contact, None
            celery, self._celery = self._celery, None
        if contact is not None:
            for adapter in contact.adapters.values():
                close = getattr(adapter, "close", None)
                if callable(close):
                    close()
            contact.limiter.close()
            log.info("contact limiter and channels closed")
        if celery is not None:
            celery.close()


async def get_contact_holder(request: Request) -> ContactHolder:
    holder: ContactHolder = request.app.state.contact_holder
    return holder


ContactHolderDep = Annotated[ContactHolder, Depends(get_contact_holder)]


async def get_outreach_service(request: Request) -> OutreachService:
    """One per request, over the app's store and shared contact parts, reading the app's clock."""
    store = await get_store(request)
    holder: ContactHolder = request.app.state.contact_holder
    settings: Settings = request.app.state.settings
    contact = holder.current()
    if contact is None:
        contact = await run_in_threadpool(holder.get)
    return OutreachService(
        store,
        settings,
        limiter=contact.limiter,
        adapters=contact.adapters,
        renderer=contact.renderer,
        clock=app_clock(request),
    )


OutreachServiceDep = Annotated[OutreachService, Depends(get_outreach_service)]


def send_due(
    service: OutreachService,
    *,
    outreach_id: str | None = None,
    batch: int = 200,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Embedded mode's sending: every message due now goes out from this process, a batch at a time.

    Stops at a batch with nothing new, so a message that came back due (a worker's lapsed lease) is tried once
    here and left to `advocacy outreach dispatch-due` after that. Returns how many messages were tried.
    """
    dispatcher = InlineDispatcher(service)
    tried: set[str] = set()
    while True:
        keys = [key for key in service.due(limit=batch, outreach_id=outreach_id) if key not in tried]
        if not keys:
            return len(tried)
        dispatcher.dispatch(keys)
        tried.update(keys)
        if progress is not None:
            progress(len(keys))
