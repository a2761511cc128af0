"""Dependencies wired once: the app's one store, opened lazily so the app starts even when the store is down.

`create_app`'s lifespan tries to open the store at startup; if Neo4j (or the SQLite file) cannot be reached it
logs that and the app serves anyway: `/healthz` answers 200, `/readyz` and every route that needs the store answer
503 with `Retry-After`, and the next request tries to open the store again. Shutdown closes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from engine.fulfilment import Fulfiller, make_fulfiller
from engine.referrals import ReferralService
from engine.settings import Settings
from graph.errors import StoreUnavailable
from graph.factory import open_store, redact
from graph.model import utcnow
from graph.program_store import Store

log = logging.getLogger(__name__)


class StoreHolder:
    """Owns the app's store: opens it on first use (retrying after failures) and closes it at shutdown."""

    RETRY_BACKOFF_S = 1.0

    def __init__(self, settings: Settings) -> None:
        self._url = settings.store
        self._database = settings.neo4j.database
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._closed = False
        self._failed_at = -1e9
        self._failure: StoreUnavailable | None = None

    @property
    def where(self) -> str:
        """The store's URL without its password, for messages."""
        return redact(self._url)

    def get(self) -> Store:
        """The open store; raises `StoreUnavailable` (503) while it cannot be opened."""
        store = self._store
        if store is not None:
            return store
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the application is shutting down")
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


def get_holder(request: Request) -> StoreHolder:
    holder: StoreHolder = request.app.state.store_holder
    return holder


def get_store(holder: Annotated[StoreHolder, Depends(get_holder)]) -> Store:
    return holder.get()


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Clock = Callable[[], datetime]


def get_clock() -> Clock:
    """The time the referral programme sees; tests replace it with `app.dependency_overrides[get_clock]`."""
    return utcnow


HolderDep = Annotated[StoreHolder, Depends(get_holder)]
StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
ClockDep = Annotated[Clock, Depends(get_clock)]


def get_service(store: StoreDep, settings: SettingsDep, clock: ClockDep) -> ReferralService:
    """One service per request: it holds nothing beyond the app's store and settings, so building it is free."""
    return ReferralService(store, settings.referral, clock=clock)


def get_fulfiller(settings: SettingsDep) -> Fulfiller:
    """Built only for a payout run: a webhook fulfiller resolves and checks the merchant's host when it is built."""
    return make_fulfiller(settings.referral)


def get_paying_service(
    store: StoreDep, settings: SettingsDep, clock: ClockDep, fulfiller: Annotated[Fulfiller, Depends(get_fulfiller)]
) -> ReferralService:
    return ReferralService(store, settings.referral, clock=clock, fulfiller=fulfiller)


ServiceDep = Annotated[ReferralService, Depends(get_service)]
PayingServiceDep = Annotated[ReferralService, Depends(get_paying_service)]
"""The service with the configured fulfiller, for the route that pays rewards out."""
