"""`SqliteOutreach`: the outreach half of `SqliteStore` (the `OutreachStore` protocol).

Like `graph.sqlite_program.SqliteProgram`, it runs over the host's `_run`. Templates, plans and outbox messages
are pydantic JSON in `body`, beside indexed columns for what queries filter and sort on; `_save_message` writes
both, so they never disagree. Claiming and finishing read and update inside one `BEGIN IMMEDIATE` transaction:
the write lock is held from the read on, so of several workers claiming one key (threads or processes) exactly
one sees it claimable. A `sending` message whose `lease_until` is at or before the claim time is claimable again.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from graph.errors import InvalidInput, NotFound
from graph.model import ContactChannel, _utc
from graph.outbox import check_outcome, claimable, claimed, finished
from graph.outreach import (
    HoldReason,
    MessageStatus,
    OutboxCounts,
    OutboxMessage,
    Outreach,
    Suppression,
    Template,
    TemplatePurpose,
    customer_key,
    without_person,
)
from graph.program_store import ERASED
from graph.sqlite_program import _at, _opt_us, _to_us, _where

T = TypeVar("T")
Row = tuple[Any, ...]

SCHEMA_V3: Final = (
    """CREATE TABLE IF NOT EXISTS templates (
        id TEXT PRIMARY KEY NOT NULL,
        purpose TEXT NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS templates_by_purpose ON templates(purpose, id)",
    """CREATE TABLE IF NOT EXISTS outreach (
        id TEXT PRIMARY KEY NOT NULL,
        campaign_id TEXT NOT NULL REFERENCES campaigns(id),
        created_at_us INTEGER NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS outreach_by_creation ON outreach(created_at_us, id)",
    "CREATE INDEX IF NOT EXISTS outreach_by_campaign ON outreach(campaign_id)",
    # No foreign keys: a message outlives nothing it names, and invitations go to people who are not customers.
    """CREATE TABLE IF NOT EXISTS outbox (
        key TEXT PRIMARY KEY NOT NULL,
        outreach_id TEXT NOT NULL,
        variant_id TEXT NOT NULL,
        person_key TEXT NOT NULL,
        customer_id TEXT,
        status TEXT NOT NULL,
        reason TEXT,
        not_before_us INTEGER NOT NULL,
        lease_until_us INTEGER,
        body TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS outbox_by_outreach ON outbox(outreach_id, key)",
    "CREATE INDEX IF NOT EXISTS outbox_by_status ON outbox(outreach_id, status, key)",
    "CREATE INDEX IF NOT EXISTS outbox_by_variant ON outbox(outreach_id, variant_id, status, reason)",
    "CREATE INDEX IF NOT EXISTS outbox_by_person ON outbox(person_key)",
    "CREATE INDEX IF NOT EXISTS outbox_by_customer ON outbox(customer_id) WHERE customer_id IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS outbox_queued ON outbox(not_before_us, key) WHERE status = 'queued'",
    "CREATE INDEX IF NOT EXISTS outbox_leased ON outbox(lease_until_us, key) WHERE status = 'sending'",
    # `channel` is '' for a suppression of every channel: primary-key columns cannot be NULL here.
    """CREATE TABLE IF NOT EXISTS suppressions (
        person_key TEXT NOT NULL,
        channel TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_us INTEGER NOT NULL,
        PRIMARY KEY (person_key, channel)
    ) WITHOUT ROWID""",
)
"""The outreach tables (schema version 3); `SqliteStore` runs them as the migration from version 2."""

OUTREACH_TABLES: Final = ("outbox", "suppressions", "outreach", "templates")
"""Children before parents: `outreach` refers to the programme's `campaigns`, so it goes before them."""

_MESSAGE_COLUMNS = (
    "key, outreach_id, variant_id, person_key, customer_id, status, reason, not_before_us, lease_until_us, body"
)
_INSERT_MESSAGE = (
    f"INSERT INTO outbox ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING"  # noqa: S608
)
_UPDATE_MESSAGE = """
    UPDATE outbox SET outreach_id = ?2, variant_id = ?3, person_key = ?4, customer_id = ?5, status = ?6, reason = ?7,
        not_before_us = ?8, lease_until_us = ?9, body = ?10
    WHERE key = ?1
"""
_DUE_QUEUED = """
    SELECT not_before_us, key, body FROM outbox
    WHERE status = 'queued' AND not_before_us <= ?1 AND (?2 IS NULL OR outreach_id = ?2)
    ORDER BY not_before_us, key LIMIT ?3
"""
_DUE_ABANDONED = """
    SELECT not_before_us, key, body FROM outbox
    WHERE status = 'sending' AND lease_until_us <= ?1 AND (?2 IS NULL OR outreach_id = ?2)
    ORDER BY not_before_us, key LIMIT ?3
"""
# A second record for the same (person, channel) replaces the first only when it is earlier.
_SUPPRESS = """
    INSERT INTO suppressions (person_key, channel, reason, at_us) VALUES (?, ?, ?, ?)
    ON CONFLICT (person_key, channel) DO UPDATE SET reason = excluded.reason, at_us = excluded.at_us
    WHERE excluded.at_us < suppressions.at_us
"""


def _message_row(message: OutboxMessage) -> Row:
    return (
        message.key,
        message.outreach_id,
        message.variant_id,
        message.person_key,
        message.customer_id,
        message.status.value,
        None if message.reason is None else message.reason.value,
        _to_us(message.not_before),
        _opt_us(message.lease_until),
        message.model_dump_json(),
    )


def _save_message(conn: sqlite3.Connection, message: OutboxMessage) -> None:
    conn.execute(_UPDATE_MESSAGE, _message_row(message))


def _load_message(conn: sqlite3.Connection, key: str) -> OutboxMessage | None:
    row = conn.execute("SELECT body FROM outbox WHERE key = ?", (key,)).fetchone()
    return None if row is None else OutboxMessage.model_validate_json(row[0])


def _suppression_from(row: Row) -> Suppression:
    return Suppression(person_key=row[0], channel=row[1] or None, reason=HoldReason(row[2]), at=_at(row[3]))


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise InvalidInput(f"limit must be zero or more, not {limit}")


def templates_in(conn: sqlite3.Connection, purpose: TemplatePurpose | None) -> list[Template]:
    """`list_templates` on a connection, so `kit_reads` reads them in its own transaction."""
    where, params = _where((("purpose = ?", None if purpose is None else purpose.value),))
    rows = conn.execute(f"SELECT body FROM templates WHERE {where} ORDER BY id", params)  # noqa: S608 - constant
    return [Template.model_validate_json(row[0]) for row in rows]


class SqliteOutreach:
    """`OutreachStore` over the host's `_run`; see the module docstring."""

    def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool, begin: bool = True) -> T:
        raise NotImplementedError

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """A one-statement read outside any explicit transaction."""
        rows: list[Row] = self._run(lambda conn: conn.execute(sql, params).fetchall(), write=False, begin=False)
        return rows

    # --- templates -------------------------------------------------------------------------------------------
    def save_template(self, template: Template) -> None:
        row = (template.id, template.purpose.value, template.model_dump_json())
        self._run(
            lambda conn: conn.execute(
                "INSERT INTO templates (id, purpose, body) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET purpose = excluded.purpose, body = excluded.body",
                row,
            ),
            write=True,
        )

    def get_template(self, template_id: str) -> Template:
        rows = self._read("SELECT body FROM templates WHERE id = ?", (template_id,))
        if not rows:
            raise NotFound(f"no template {template_id!r}")
        return Template.model_validate_json(rows[0][0])

    def list_templates(self, purpose: TemplatePurpose | None = None) -> list[Template]:
        return self._run(lambda conn: templates_in(conn, purpose), write=False, begin=False)

    def delete_template(self, template_id: str) -> None:
        def work(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM templates WHERE id = ?", (template_id,)).rowcount == 0:
                raise NotFound(f"no template {template_id!r}")

        self._run(work, write=True)

    # --- outreach plans --------------------------------------------------------------------------------------
    def save_outreach(self, outreach: Outreach) -> None:
        row = (outreach.id, outreach.campaign_id, _to_us(outreach.created_at), outreach.model_dump_json())

        def work(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM campaigns WHERE id = ?", (outreach.campaign_id,)).fetchone() is None:
                raise NotFound(f"no campaign {outreach.campaign_id!r} for outreach {outreach.id!r}")
            conn.execute(
                "INSERT INTO outreach (id, campaign_id, created_at_us, body) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET campaign_id = excluded.campaign_id,"
                " created_at_us = excluded.created_at_us, body = excluded.body",
                row,
            )

        self._run(work, write=True)

    def get_outreach(self, outreach_id: str) -> Outreach:
        rows = self._read("SELECT body FROM outreach WHERE id = ?", (outreach_id,))
        if not rows:
            raise NotFound(f"no outreach {outreach_id!r}")
        return Outreach.model_validate_json(rows[0][0])

    def list_outreach(self) -> list[Outreach]:
        rows = self._read("SELECT body FROM outreach ORDER BY created_at_us, id")
        return [Outreach.model_validate_json(row[0]) for row in rows]

    # --- the outbox ------------------------------------------------------------------------------------------
    def enqueue_messages(self, messages: Sequence[OutboxMessage]) -> int:
        rows = [_message_row(message) for message in messages]
        if not rows:
            return 0

        def work(conn: sqlite3.Connection) -> int:
            before = conn.total_changes
            conn.executemany(_INSERT_MESSAGE, rows)
            return conn.total_changes - before

        return self._run(work, write=True)

    def get_message(self, key: str) -> OutboxMessage:
        message = self._run(lambda conn: _load_message(conn, key), write=False, begin=False)
        if message is None:
            raise NotFound(f"no outbox message {key!r}")
        return message

    def claim_message(self, key: str, *, at: datetime, lease_s: float) -> OutboxMessage | None:
        if not lease_s > 0:
            raise InvalidInput(f"a lease lasts more than 0 s, not {lease_s}")
        lease = timedelta(seconds=lease_s)
        at = _utc(at)

        def work(conn: sqlite3.Connection) -> OutboxMessage | None:
            message = _load_message(conn, key)
            if message is None or not claimable(message, at):
                return None
            taken = claimed(message, at, lease)
            _save_message(conn, taken)
            return taken

        return self._run(work, write=True)

    def finish_message(
        self,
        key: str,
        status: MessageStatus,
        *,
        at: datetime,
        reason: HoldReason | None = None,
        detail: str = "",
        provider_id: str | None = None,
        not_before: datetime | None = None,
    ) -> OutboxMessage:
        check_outcome(status, reason, not_before)
        at = _utc(at)

        def work(conn: sqlite3.Connection) -> OutboxMessage:
            message = _load_message(conn, key)
            if message is None:
                raise NotFound(f"no outbox message {key!r}")
            outcome = finished(
                message,
                status,
                at=at,
                reason=reason,
                detail=detail,
                provider_id=provider_id,
                not_before=not_before,
            )
            _save_message(conn, outcome)
            return outcome

        return self._run(work, write=True)

    def due_messages(self, *, now: datetime, limit: int = 1000, outreach_id: str | None = None) -> list[OutboxMessage]:
        _check_limit(limit)
        params = (_to_us(_utc(now)), outreach_id, limit)

        def work(conn: sqlite3.Connection) -> list[Row]:
            queued = conn.execute(_DUE_QUEUED, params).fetchall()
            abandoned = conn.execute(_DUE_ABANDONED, params).fetchall()
            return list(heapq.merge(queued, abandoned))[:limit]

        return [OutboxMessage.model_validate_json(row[2]) for row in self._run(work, write=False)]

    def list_messages(
        self,
        outreach_id: str,
        *,
        status: MessageStatus | None = None,
        reason: HoldReason | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[OutboxMessage]:
        _check_limit(limit)
        where, params = _where(
            (
                ("outreach_id = ?", outreach_id),
                ("status = ?", None if status is None else status.value),
                ("reason = ?", None if reason is None else reason.value),
                ("key > ?", after),
            )
        )
        sql = f"SELECT body FROM outbox WHERE {where} ORDER BY key LIMIT ?"  # noqa: S608 - constant clauses
        return [OutboxMessage.model_validate_json(row[0]) for row in self._read(sql, (*params, limit))]

    def outbox_counts(self, outreach_id: str) -> OutboxCounts:
        rows = self._read(
            "SELECT variant_id, status, reason, count(*) FROM outbox WHERE outreach_id = ?"
            " GROUP BY variant_id, status, reason",
            (outreach_id,),
        )
        by_status = dict.fromkeys(MessageStatus, 0)
        held_by_reason = dict.fromkeys(HoldReason, 0)
        by_variant: dict[str, dict[MessageStatus, int]] = {}
        for variant, raw_status, raw_reason, count in rows:
            status = MessageStatus(raw_status)
            by_status[status] += count
            by_variant.setdefault(variant, dict.fromkeys(MessageStatus, 0))[status] += count
            if status is MessageStatus.HELD and raw_reason is not None:
                held_by_reason[HoldReason(raw_reason)] += count
        return OutboxCounts(
            outreach_id=outreach_id, by_status=by_status, held_by_reason=held_by_reason, by_variant=by_variant
        )

    # --- suppressions ----------------------------------------------------------------------------------------
    def suppress(self, suppression: Suppression) -> None:
        row = (
            suppression.person_key,
            "" if suppression.channel is None else suppression.channel.value,
            suppression.reason.value,
            _to_us(suppression.at),
        )
        self._run(lambda conn: conn.execute(_SUPPRESS, row), write=True)

    def suppressions(self, person_keys: Iterable[str]) -> dict[str, list[Suppression]]:
        wanted = list(dict.fromkeys(person_keys))
        if not wanted:
            return {}
        rows = self._read(
            "SELECT person_key, channel, reason, at_us FROM suppressions"
            " WHERE person_key IN (SELECT value FROM json_each(?)) ORDER BY person_key, at_us, channel",
            (json.dumps(wanted),),
        )
        found: dict[str, list[Suppression]] = {}
        for row in rows:
            found.setdefault(row[0], []).append(_suppression_from(row))
        return found

    def lift_suppressions(self, person_key: str, channels: Collection[ContactChannel] | None, *, at: datetime) -> int:
        if channels is None:
            sql = "DELETE FROM suppressions WHERE person_key = ? AND at_us <= ?"
            params: tuple[object, ...] = (person_key, _to_us(at))
        else:
            named = sorted({ContactChannel(channel).value for channel in channels})
            if not named:
                return 0
            sql = (
                "DELETE FROM suppressions WHERE person_key = ? AND at_us <= ?"
                " AND channel IN (SELECT value FROM json_each(?))"
            )
            params = (person_key, _to_us(at), json.dumps(named))
        lifted: int = self._run(lambda conn: conn.execute(sql, params).rowcount, write=True)
        return lifted

    # --- erasure (called inside SqliteStore's transaction) ---------------------------------------------------
    @staticmethod
    def _erase_outreach_data(conn: sqlite3.Connection, customer_id: str) -> None:
        """Remove the person's messages and suppressions; invitations sent on their behalf forget them.

        Suppressions of `email:<hash>` keys stay: they honour a friend's refusal, which is not the person's data.
        """
        person = customer_key(customer_id)
        conn.execute("DELETE FROM outbox WHERE person_key = ?", (person,))
        conn.execute("DELETE FROM suppressions WHERE person_key = ?", (person,))
        plans = conn.execute("SELECT id, body FROM outreach WHERE instr(body, ?) > 0", (customer_id,)).fetchall()
        for outreach_id, body in plans:
            plan = Outreach.model_validate_json(body)
            scrubbed = without_person(plan, customer_id, ERASED)
            if scrubbed != plan:
                conn.execute("UPDATE outreach SET body = ? WHERE id = ?", (scrubbed.model_dump_json(), outreach_id))
        behalf = conn.execute("SELECT body FROM outbox WHERE customer_id = ?", (customer_id,)).fetchall()
        for (body,) in behalf:
            _save_message(conn, OutboxMessage.model_validate_json(body).model_copy(update={"customer_id": None}))
