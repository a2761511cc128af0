"""Clicks written in batches by one background thread, so following a referral link waits on no transaction.

A redirect's own write transaction was more than half of its cost (1.3 of 2.3 CPU-ms on the 2-core machine) and
made every click queue for the store's write lock. `ClickRecorder.submit` only appends to memory; the thread
writes what gathered within `max_delay_s` (or `max_batch` clicks) in one `record_clicks` transaction.

What this trades, and how it is bounded:
- A click reaches the store up to `max_delay_s` after its redirect. A signup or order handled by the same
  process calls `flush` first, so its attribution sees every click this process took; another process (a
  second API worker) sees it after that delay, far less than a person takes from landing to signing up.
- While the store is down, clicks wait in memory (links keep working from the link cache) and are written once
  it is back, oldest first; beyond `capacity` waiting clicks, `submit` refuses with `StoreUnavailable` (503).
- At shutdown `close` writes what is pending, for at most its timeout; what it cannot write is logged as lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Final

from graph.errors import StoreUnavailable
from graph.program import Click
from graph.program_store import Store

log = logging.getLogger(__name__)

RETRY_S: Final = (0.2, 0.5, 1.0, 2.0, 5.0)
"""Waits between attempts while the store refuses a batch."""


class ClickRecorder:
    """Thread-safe; the writer thread starts with the first click."""

    def __init__(
        self,
        store: Callable[[], Store],
        *,
        max_delay_s: float = 0.05,
        capacity: int = 20_000,
        max_batch: int = 1_000,
    ) -> None:
        self._store = store
        self.max_delay_s = max_delay_s
        self.capacity = capacity
        self.max_batch = max_batch
        self._pending: deque[Click] = deque()
        self._cond = threading.Condition()
        self._submitted = 0
        self._done = 0
        self._hurry = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    @property
    def pending(self) -> int:
        """Clicks taken but not yet written (waiting, or in a batch the store has not yet taken)."""
        with self._cond:
            return self._submitted - self._done

    def submit(self, click: Click) -> None:
        with self._cond:
            if self._closed:
                message = "the application is shutting down"
                raise StoreUnavailable(message, public=message)
            if len(self._pending) >= self.capacity:
                message = "clicks cannot be stored now; try the link again shortly"
                raise StoreUnavailable(f"{len(self._pending)} clicks wait for the store", public=message)
            self._pending.append(click)
            self._submitted += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="click-recorder", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until every click submitted before this call is written (or dropped); False on timeout."""
        with self._cond:
            target = self._submitted
            if self._done >= target:
                return True
            self._hurry += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: self._done >= target, timeout_s)
            finally:
                self._hurry -= 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is pending (for at most `timeout_s`) and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        with self._cond:
            lost = len(self._pending)
            self._pending.clear()
        if lost:
            log.error("%d clicks were not written before shutdown and are lost", lost)

    # --- the writer thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._store().record_clicks(batch)
            except StoreUnavailable as exc:
                if self._give_back(batch, failures, exc):
                    failures += 1
                    continue
            except Exception:  # a batch the store refuses for good must not stop every later click
                log.exception("dropped %d clicks the store refused", len(batch))
            failures = 0
            with self._cond:
                self._done += len(batch)
                self._cond.notify_all()

    def _next_batch(self) -> list[Click] | None:
        """The clicks that gathered within `max_delay_s` of the first waiting one; None once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._pending) or self._closed)
            if not self._pending:
                return None
            deadline = time.monotonic() + self.max_delay_s
            while len(self._pending) < self.max_batch and not self._closed and not self._hurry:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            size = min(len(self._pending), self.max_batch)
            return [self._pending.popleft() for _ in range(size)]

    def _give_back(self, batch: list[Click], failures: int, exc: StoreUnavailable) -> bool:
        """Put a refused batch back in front and wait before retrying; False when closing (the batch is lost)."""
        wait = RETRY_S[min(failures, len(RETRY_S) - 1)]
        with self._cond:
            if self._closed:
                log.error("store unavailable at shutdown, %d clicks lost: %s", len(batch), exc.detail)
                return False
            self._pending.extendleft(reversed(batch))
            if failures == 0:
                log.warning("store unavailable, %d clicks wait in memory: %s", len(self._pending), exc.detail)
            self._cond.wait_for(lambda: self._closed, wait)
        return True
