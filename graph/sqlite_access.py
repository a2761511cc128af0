"""`SqliteAccess`: the `AccessStore` half of `SqliteStore` (API keys, used token ids, idempotency records).

Like `graph.sqlite_outreach.SqliteOutreach`, it runs over the host's `_run`. The deciding writes read and write
inside one `BEGIN IMMEDIATE` transaction: the write lock is held from the first statement, so of several
requests (threads or processes) racing with one token id or idempotency key exactly one sees it new.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

from graph.access import ApiKey, IdempotencyRecord, IdempotencyState, check_response, new_claim
from graph.access_store import SWEEP_LIMIT
from graph.errors import InvalidInput, NotFound
from graph.model import _utc
from graph.sqlite_program import _at, _opt_us, _to_us

T = TypeVar("T")
Row = tuple[Any, ...]

SCHEMA_V4: Final = (
    """CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL,
        scopes TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at_us INTEGER NOT NULL,
        revoked_at_us INTEGER
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS api_keys_by_creation ON api_keys(created_at_us, id)",
    """CREATE TABLE IF NOT EXISTS used_tokens (
        jti TEXT PRIMARY KEY NOT NULL,
        expires_at_us INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS used_tokens_by_expiry ON used_tokens(expires_at_us)",
    # A rowid table: response bodies may be large, which WITHOUT ROWID tables handle badly.
    """CREATE TABLE IF NOT EXISTS idempotency (
        key TEXT NOT NULL UNIQUE,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL,
        status INTEGER,
        body TEXT NOT NULL,
        content_type TEXT NOT NULL,
        created_at_us INTEGER NOT NULL,
        expires_at_us INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS idempotency_by_expiry ON idempotency(expires_at_us)",
)
"""The access tables (schema version 4); `SqliteStore` runs them as the migration from version 3."""

ACCESS_TABLES: Final = ("api_keys", "used_tokens", "idempotency")

_KEY_COLUMNS = "id, name, scopes, secret_hash, created_at_us, revoked_at_us"
_RECORD_COLUMNS = "key, fingerprint, state, status, body, content_type, created_at_us, expires_at_us"
_SWEEP_TOKENS = """
    DELETE FROM used_tokens WHERE jti IN (
        SELECT jti FROM used_tokens WHERE expires_at_us < ?1 ORDER BY expires_at_us LIMIT ?2
    )
"""
_SWEEP_RECORDS = """
    DELETE FROM idempotency WHERE rowid IN (
        SELECT rowid FROM idempotency WHERE expires_at_us <= ?1 ORDER BY expires_at_us LIMIT ?2
    )
"""


def _key_from(row: Row) -> ApiKey:
    return ApiKey(
        id=row[0],
        name=row[1],
        scopes=tuple(json.loads(row[2])),
        secret_hash=row[3],
        created_at=_at(row[4]),
        revoked_at=None if row[5] is None else _at(row[5]),
    )


def _record_from(row: Row) -> IdempotencyRecord:
    return IdempotencyRecord(
        key=row[0],
        fingerprint=row[1],
        state=IdempotencyState(row[2]),
        status=row[3],
        body=row[4],
        content_type=row[5],
        created_at=_at(row[6]),
        expires_at=_at(row[7]),
    )


class SqliteAccess:
    """`AccessStore` over the host's `_run`; see the module docstring."""

    if TYPE_CHECKING:

        def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool, begin: bool = True) -> T: ...

    def _access_rows(self, sql: str, params: tuple[object, ...] = ()) -> list[Row]:
        rows: list[Row] = self._run(lambda conn: conn.execute(sql, params).fetchall(), write=False, begin=False)
        return rows

    # --- API keys --------------------------------------------------------------------------------------------
    def save_api_key(self, key: ApiKey) -> None:
        row: Row = (
            key.id,
            key.name,
            json.dumps(list(key.scopes)),
            key.secret_hash,
            _to_us(key.created_at),
            _opt_us(key.revoked_at),
        )

        def work(conn: sqlite3.Connection) -> None:
            inserted = conn.execute(
                f"INSERT INTO api_keys ({_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",  # noqa: S608 - constant columns
                row,
            ).rowcount
            if not inserted:
                raise InvalidInput(f"an API key with id {key.id!r} exists already; keys are never replaced")

        self._run(work, write=True)

    def get_api_key(self, key_id: str) -> ApiKey | None:
        rows = self._access_rows(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,))  # noqa: S608 - constant columns
        return _key_from(rows[0]) if rows else None

    def list_api_keys(self) -> list[ApiKey]:
        rows = self._access_rows(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at_us, id")  # noqa: S608 - constant columns
        return [_key_from(row) for row in rows]

    def revoke_api_key(self, key_id: str, *, at: datetime) -> ApiKey:
        at_us = _to_us(_utc(at))

        def work(conn: sqlite3.Connection) -> ApiKey:
            conn.execute(
                "UPDATE api_keys SET revoked_at_us = ?2 WHERE id = ?1 AND revoked_at_us IS NULL", (key_id, at_us)
            )
            row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()  # noqa: S608 - constant columns
            if row is None:
                raise NotFound(f"no API key {key_id!r}")
            return _key_from(row)

        return self._run(work, write=True)

    # --- one-time customer tokens ----------------------------------------------------------------------------
    def use_token_once(self, jti: str, *, expires_at: datetime, now: datetime) -> bool:
        expires_us, now_us = _to_us(_utc(expires_at)), _to_us(_utc(now))

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute(_SWEEP_TOKENS, (now_us, SWEEP_LIMIT))
            if expires_us < now_us:
                return False
            inserted: int = conn.execute(
                "INSERT INTO used_tokens (jti, expires_at_us) VALUES (?, ?) ON CONFLICT (jti) DO NOTHING",
                (jti, expires_us),
            ).rowcount
            return inserted == 1

        return self._run(work, write=True)

    # --- idempotency -----------------------------------------------------------------------------------------
    def begin_idempotent(
        self, key: str, fingerprint: str, *, now: datetime, ttl: timedelta
    ) -> IdempotencyRecord | None:
        claim = new_claim(key, fingerprint, now=_utc(now), ttl=ttl)
        now_us = _to_us(claim.created_at)

        def work(conn: sqlite3.Connection) -> IdempotencyRecord | None:
            conn.execute("DELETE FROM idempotency WHERE key = ? AND expires_at_us <= ?", (key, now_us))
            conn.execute(_SWEEP_RECORDS, (now_us, SWEEP_LIMIT))
            row = conn.execute(f"SELECT {_RECORD_COLUMNS} FROM idempotency WHERE key = ?", (key,)).fetchone()  # noqa: S608 - constant columns
            if row is not None:
                return _record_from(row)
            conn.execute(
                f"INSERT INTO idempotency ({_RECORD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - constant columns
                (
                    claim.key,
                    claim.fingerprint,
                    claim.state.value,
                    claim.status,
                    claim.body,
                    claim.content_type,
                    now_us,
                    _to_us(claim.expires_at),
                ),
            )
            return None

        return self._run(work, write=True)

    def finish_idempotent(self, key: str, *, status: int, body: str, content_type: str) -> None:
        check_response(status, content_type)
        self._run(
            lambda conn: conn.execute(
                "UPDATE idempotency SET state = ?2, status = ?3, body = ?4, content_type = ?5 WHERE key = ?1",
                (key, IdempotencyState.DONE.value, status, body, content_type),
            ),
            write=True,
        )

    def abandon_idempotent(self, key: str) -> None:
        self._run(
            lambda conn: conn.execute(
                "DELETE FROM idempotency WHERE key = ? AND state = ?", (key, IdempotencyState.IN_PROGRESS.value)
            ),
            write=True,
        )
