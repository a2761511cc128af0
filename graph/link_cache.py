"""Campaigns and codes as a referral link reads them, kept a few seconds per process.

Every click on `/r/{code}` reads its code and campaign, which change rarely; reading them from the store was a
third of a redirect's cost. A store keeps one `LinkCache`, forgets an entry the moment it writes that code or
campaign itself, and otherwise trusts an entry for `ttl_s`: a code paused or a campaign ended by another process
(a worker, the CLI, a second API worker) reaches this process's redirects within that time. Misses are never
cached, so a code issued elsewhere works at once.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Generic, TypeVar

from graph.program import Campaign, ReferralCode

LINK_CACHE_S: Final = 5.0
"""How stale another process's change to a code or campaign may look to this process's redirects."""
MAX_ENTRIES: Final = 50_000

V = TypeVar("V")


class _Entries(Generic[V]):
    """A bounded map of values with the monotonic time each was read, oldest first."""

    def __init__(self, max_entries: int) -> None:
        self.items: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self.max_entries = max_entries

    def put(self, key: str, value: V, at: float, ttl_s: float) -> None:
        """Keep `value`, and let go of the entries whose time is up: they would only be read again from the store,
        and each (a model the garbage collector tracks) costs every full collection of the process."""
        self.items[key] = (at, value)
        self.items.move_to_end(key)
        while len(self.items) > self.max_entries:
            self.items.popitem(last=False)
        while self.items and at - next(iter(self.items.values()))[0] >= ttl_s:
            self.items.popitem(last=False)


class LinkCache:
    """Thread-safe; a read that raced a write of the same store is not kept (a generation counter says so)."""

    def __init__(
        self,
        ttl_s: float = LINK_CACHE_S,
        *,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._generation = 0
        self._codes: _Entries[ReferralCode] = _Entries(max_entries)
        self._campaigns: _Entries[Campaign] = _Entries(max_entries)

    def code(self, code: str, load: Callable[[str], ReferralCode]) -> ReferralCode:
        return self._through(self._codes, code, load)

    def campaign(self, campaign_id: str, load: Callable[[str], Campaign]) -> Campaign:
        return self._through(self._campaigns, campaign_id, load)

    def peek(self, code: str) -> tuple[ReferralCode, Campaign] | None:
        """The code and its campaign if both are fresh here: a link answered without touching the store."""
        now = self._clock()
        with self._lock:
            found = self._codes.items.get(code)
            if found is None or now - found[0] >= self.ttl_s:
                return None
            campaign = self._campaigns.items.get(found[1].campaign_id)
            if campaign is None or now - campaign[0] >= self.ttl_s:
                return None
            return found[1], campaign[1]

    def _through(self, entries: _Entries[V], key: str, load: Callable[[str], V]) -> V:
        now = self._clock()
        with self._lock:
            found = entries.items.get(key)
            if found is not None and now - found[0] < self.ttl_s:
                return found[1]
            generation = self._generation
        value = load(key)  # raises NotFound for a miss, which is never kept
        with self._lock:
            if generation == self._generation and self.ttl_s > 0:
                entries.put(key, value, now, self.ttl_s)
        return value

    def forget_code(self, code: str) -> None:
        with self._lock:
            self._generation += 1
            self._codes.items.pop(code, None)

    def forget_campaign(self, campaign_id: str) -> None:
        with self._lock:
            self._generation += 1
            self._campaigns.items.pop(campaign_id, None)

    def clear(self) -> None:
        """After an erasure, a wipe or a restore: cheaper to reread everything than to know what went."""
        with self._lock:
            self._generation += 1
            self._codes.items.clear()
            self._campaigns.items.clear()


class CachedLinks:
    """The `link_code`/`link_campaign` half of `ProgramStore`, for a store that sets `links` when it opens."""

    links: LinkCache

    if TYPE_CHECKING:

        def get_code(self, code: str) -> ReferralCode: ...

        def get_campaign(self, campaign_id: str) -> Campaign: ...

    def link_code(self, code: str) -> ReferralCode:
        return self.links.code(code, self.get_code)

    def link_campaign(self, campaign_id: str) -> Campaign:
        return self.links.campaign(campaign_id, self.get_campaign)
