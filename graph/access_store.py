"""The `AccessStore` protocol: API keys, used token ids and idempotency records, beside the graph.

Both stores implement it and pass `tests/contract/test_access_store.py`. The two deciding writes,
`use_token_once` and `begin_idempotent`, are atomic across threads and processes (SQLite: one `BEGIN IMMEDIATE`
transaction; Neo4j: a `MERGE` on a uniquely constrained key, which serialises creators), so of two requests
racing with one token or one idempotency key exactly one goes ahead.

Times: a remembered token id lives while `now <= expires_at`; an idempotency record while `now < expires_at`.
Both deciding writes also delete a bounded number of records that have expired, so the tables stay small
without a sweeper.

None of this is personal data keyed by a customer, so `GraphStore.erase_customer` leaves it alone. A stored
response body may mention a customer id; it is gone once its record expires and a later `begin_idempotent`
sweeps it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final, Protocol, runtime_checkable

from graph.access import ApiKey, IdempotencyRecord

SWEEP_LIMIT: Final = 1000
"""Expired records deleted per deciding write, at most: enough to keep up, never a long transaction."""


@runtime_checkable
class AccessStore(Protocol):
    # --- API keys ------------------------------------------------------------------------------------------
    def save_api_key(self, key: ApiKey) -> None:
        """Insert a new key. An id that exists (revoked or not) raises `InvalidInput`: keys are never replaced."""

    def get_api_key(self, key_id: str) -> ApiKey | None: ...

    def list_api_keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, by `created_at` then id."""

    def revoke_api_key(self, key_id: str, *, at: datetime) -> ApiKey:
        """Set `revoked_at = at` and return the key; `NotFound` if unknown. Revoking again keeps the first time."""

    # --- one-time customer tokens --------------------------------------------------------------------------
    def use_token_once(self, jti: str, *, expires_at: datetime, now: datetime) -> bool:
        """True the first time `jti` is seen, False on every later call, atomically.

        The id is remembered until `expires_at` (the token's expiry), then forgotten: remembered ids whose
        `expires_at < now` are deleted. A token already expired (`expires_at < now`) cannot be accepted and is
        refused with False without being remembered; callers check expiry first anyway.
        """

    # --- idempotency ---------------------------------------------------------------------------------------
    def begin_idempotent(
        self, key: str, fingerprint: str, *, now: datetime, ttl: timedelta
    ) -> IdempotencyRecord | None:
        """Claim `key` for one request, atomically.

        Without a live record (none, or `expires_at <= now`), store an `in_progress` one (`created_at = now`,
        `expires_at = now + ttl`) and return None: the caller owns the key and must `finish_idempotent` or
        `abandon_idempotent` it. Otherwise return the live record, whatever its state and fingerprint; the
        caller replays it, answers 409 (in progress) or 422 (another body). `InvalidInput` unless `ttl > 0`.
        """

    def finish_idempotent(self, key: str, *, status: int, body: str, content_type: str) -> None:
        """Store the response and mark the record `done`, keeping its expiry. No record (it expired and was
        swept) changes nothing: the response still goes out, only a replay of it is lost."""

    def abandon_idempotent(self, key: str) -> None:
        """Delete an `in_progress` record (the request failed and may be retried); absent or done: no-op."""
