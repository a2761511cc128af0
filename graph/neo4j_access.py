"""`Neo4jAccess`: the `AccessStore` half of `Neo4jStore` (the nodes are drawn in `graph.access_cypher`).

`use_token_once` and `begin_idempotent` are each one managed write transaction around a `MERGE` on a uniquely
constrained key: of two transactions merging one key, the second waits for the first to commit and then finds
its node, so exactly one creates it. An existing idempotency record is locked by that `MERGE` and read in a later
statement, so the decision to replace an expired one is made on a state no one else can change meanwhile.

A `MERGE` that was waiting for a record another transaction deleted (abandoned or swept) matches nothing usable:
it reports an existing node that a later read no longer finds. `begin_idempotent` then merges again in the same
transaction, which now creates the record. The decision is made in Python on values read in the transaction, so
the driver may retry the whole function after a transient error (a deadlock between sweepers, say).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from neo4j import ManagedTransaction

from graph import access_cypher as q
from graph.access import ApiKey, IdempotencyRecord, IdempotencyState, check_response, new_claim
from graph.access_store import SWEEP_LIMIT
from graph.errors import InvalidInput, NotFound, StoreUnavailable
from graph.model import _utc
from graph.neo4j_program import from_us, to_us

T = TypeVar("T")

_CLAIM_ATTEMPTS: Final = 3
"""Merges of one key in one transaction before giving up: each retry means a concurrent delete won the race."""


def _key_from(row: dict[str, Any]) -> ApiKey:
    return ApiKey.model_validate(
        {
            **row,
            "scopes": tuple(row["scopes"]),
            "created_at": from_us(row["created_at"]),
            "revoked_at": from_us(row["revoked_at"]),
        }
    )


def _record_from(row: dict[str, Any]) -> IdempotencyRecord:
    return IdempotencyRecord.model_validate(
        {**row, "created_at": from_us(row["created_at"]), "expires_at": from_us(row["expires_at"])}
    )


def _one(tx: ManagedTransaction, query: str, **params: Any) -> dict[str, Any] | None:
    record = tx.run(query, params).single()
    return None if record is None else dict(record["row"])


class Neo4jAccess:
    """API keys, used token ids and idempotency records in Neo4j; mixed into `Neo4jStore`."""

    if TYPE_CHECKING:

        def _write(self, doing: str, work: Callable[[ManagedTransaction], T]) -> T: ...

        def _read(self, doing: str, work: Callable[[ManagedTransaction], T]) -> T: ...

    # --- API keys ------------------------------------------------------------------------------------------
    def save_api_key(self, key: ApiKey) -> None:
        params = {
            "id": key.id,
            "name": key.name,
            "scopes": list(key.scopes),
            "secret_hash": key.secret_hash,
            "created_at_us": to_us(key.created_at),
            "revoked_at_us": to_us(key.revoked_at),
        }

        def work(tx: ManagedTransaction) -> None:
            if not tx.run(q.CREATE_API_KEY, params).single(strict=True)["created"]:
                raise InvalidInput(f"an API key with id {key.id!r} exists already; keys are never replaced")

        self._write("save the API key", work)

    def get_api_key(self, key_id: str) -> ApiKey | None:
        row = self._read("read the API key", lambda tx: _one(tx, q.GET_API_KEY, id=key_id))
        return None if row is None else _key_from(row)

    def list_api_keys(self) -> list[ApiKey]:
        rows = self._read("list API keys", lambda tx: [dict(r["row"]) for r in tx.run(q.LIST_API_KEYS)])
        return [_key_from(row) for row in rows]

    def revoke_api_key(self, key_id: str, *, at: datetime) -> ApiKey:
        at_us = to_us(_utc(at))

        def work(tx: ManagedTransaction) -> dict[str, Any]:
            if not tx.run(q.LOCK_API_KEY, id=key_id).single(strict=True)["n"]:
                raise NotFound(f"no API key {key_id!r}")
            return dict(tx.run(q.REVOKE_API_KEY, id=key_id, at_us=at_us).single(strict=True)["row"])

        return _key_from(self._write("revoke the API key", work))

    # --- one-time customer tokens --------------------------------------------------------------------------
    def use_token_once(self, jti: str, *, expires_at: datetime, now: datetime) -> bool:
        expires_at, now = _utc(expires_at), _utc(now)
        expires_us, now_us = to_us(expires_at), to_us(now)

        def work(tx: ManagedTransaction) -> bool:
            tx.run(q.SWEEP_USED_TOKENS, now_us=now_us, limit=SWEEP_LIMIT).consume()
            if expires_at < now:
                return False
            return bool(tx.run(q.USE_TOKEN, jti=jti, expires_at_us=expires_us).single(strict=True)["created"])

        return self._write("use the token", work)

    # --- idempotency ---------------------------------------------------------------------------------------
    def begin_idempotent(
        self, key: str, fingerprint: str, *, now: datetime, ttl: timedelta
    ) -> IdempotencyRecord | None:
        claim = new_claim(key, fingerprint, now=_utc(now), ttl=ttl)
        now_us = to_us(claim.created_at)
        params = {
            "key": claim.key,
            "fingerprint": claim.fingerprint,
            "state": claim.state.value,
            "body": claim.body,
            "content_type": claim.content_type,
            "created_at_us": now_us,
            "expires_at_us": to_us(claim.expires_at),
        }

        def work(tx: ManagedTransaction) -> IdempotencyRecord | None:
            swept = [r["key"] for r in tx.run(q.LOCK_EXPIRED_IDEMPOTENCY, now_us=now_us, key=key, limit=SWEEP_LIMIT)]
            if swept:
                tx.run(q.DELETE_EXPIRED_IDEMPOTENCY, keys=swept, now_us=now_us).consume()
            for _ in range(_CLAIM_ATTEMPTS):
                if tx.run(q.CLAIM_IDEMPOTENCY, params).single(strict=True)["created"]:
                    return None
                row = _one(tx, q.GET_IDEMPOTENCY, key=key)
                if row is None:  # deleted while the merge waited for it: merge again
                    continue
                existing = _record_from(row)
                if existing.expires_at > claim.created_at:
                    return existing
                tx.run(q.RENEW_IDEMPOTENCY, params).consume()
                return None
            raise StoreUnavailable(f"idempotency key {key[:100]!r} kept being deleted while claimed; try again")

        return self._write("begin an idempotent request", work)

    def finish_idempotent(self, key: str, *, status: int, body: str, content_type: str) -> None:
        check_response(status, content_type)
        params = {
            "key": key,
            "state": IdempotencyState.DONE.value,
            "status": status,
            "body": body,
            "content_type": content_type,
        }
        self._write("finish an idempotent request", lambda tx: tx.run(q.FINISH_IDEMPOTENCY, params).consume())

    def abandon_idempotent(self, key: str) -> None:
        state = IdempotencyState.IN_PROGRESS.value
        self._write(
            "abandon an idempotent request", lambda tx: tx.run(q.ABANDON_IDEMPOTENCY, key=key, state=state).consume()
        )
