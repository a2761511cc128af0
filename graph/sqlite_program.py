"""`SqliteProgram`: the referral programme half of `SqliteStore` (the `ProgramStore` protocol).

The host class supplies `_run`, which runs one function in one transaction on the thread's connection. Every
method that writes runs with `write=True`, that is `BEGIN IMMEDIATE`: the write lock is taken before the first
read, so two workers settling, refunding or reviewing the same conversion (in threads or processes) run one
after the other and the second reads what the first wrote. That lock is the whole locking story here.

Conversions, campaigns and rewards are stored as pydantic JSON in `body`, beside real indexed columns for
everything a query filters or sorts on; one `_save_*` helper per table writes both, so they never disagree.
The time encoding lives here and `graph.sqlite_store` imports it, so the two halves share one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from graph.errors import InvalidInput, LedgerConflict, NotFound
from graph.link_cache import CachedLinks
from graph.program import (
    Attribution,
    Balance,
    Campaign,
    Click,
    CodeActivity,
    CodeStatus,
    Conversion,
    ConversionStatus,
    FraudContext,
    FraudSettings,
    LedgerEntry,
    Order,
    ProgramCounts,
    ReferralCode,
    ReferralLink,
    Refund,
    Reward,
    RewardHistory,
    RewardSide,
    RewardState,
    Settlement,
    Signal,
    SignalKind,
    Signup,
    Touch,
    TouchKind,
    balances_from_entries,
    check_transition,
    ledger_entry_id,
    scrub_conversion,
)
from graph.program_store import ERASED, Plan

T = TypeVar("T")
Row = tuple[Any, ...]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _to_us(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _opt_us(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def _from_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def _at(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


SCHEMA_V2: Final = (
    """CREATE TABLE IF NOT EXISTS campaigns (
        id TEXT PRIMARY KEY NOT NULL,
        created_at_us INTEGER NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS campaigns_by_creation ON campaigns(created_at_us, id)",
    """CREATE TABLE IF NOT EXISTS codes (
        code TEXT PRIMARY KEY NOT NULL,
        customer_id TEXT NOT NULL REFERENCES customers(id),
        campaign_id TEXT NOT NULL REFERENCES campaigns(id),
        status TEXT NOT NULL,
        vanity INTEGER NOT NULL,
        created_at_us INTEGER NOT NULL,
        expires_at_us INTEGER,
        status_at_us INTEGER,
        replaced_by TEXT
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS codes_by_customer ON codes(customer_id, created_at_us)",
    "CREATE INDEX IF NOT EXISTS codes_by_campaign ON codes(campaign_id, created_at_us)",
    "CREATE INDEX IF NOT EXISTS codes_by_creation ON codes(created_at_us, code)",
    # No foreign key on customer_id: a click may name a signed-in visitor before the merchant syncs them.
    """CREATE TABLE IF NOT EXISTS clicks (
        id TEXT PRIMARY KEY NOT NULL,
        code TEXT NOT NULL REFERENCES codes(code),
        at_us INTEGER NOT NULL,
        visitor TEXT NOT NULL,
        ip_hash TEXT,
        source TEXT,
        customer_id TEXT
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS clicks_by_code ON clicks(code, at_us)",
    "CREATE INDEX IF NOT EXISTS clicks_by_time ON clicks(at_us)",
    "CREATE INDEX IF NOT EXISTS clicks_by_customer ON clicks(customer_id) WHERE customer_id IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS signals (
        customer_id TEXT NOT NULL REFERENCES customers(id),
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (customer_id, kind, value)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS signals_by_value ON signals(kind, value)",
    """CREATE TABLE IF NOT EXISTS signups (
        customer_id TEXT PRIMARY KEY NOT NULL REFERENCES customers(id),
        at_us INTEGER NOT NULL,
        code TEXT,
        click_id TEXT
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS signups_by_code ON signups(code) WHERE code IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS signups_by_click ON signups(click_id) WHERE click_id IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS conversions (
        order_id TEXT PRIMARY KEY NOT NULL,
        buyer_id TEXT NOT NULL REFERENCES customers(id),
        order_at_us INTEGER NOT NULL,
        status TEXT NOT NULL,
        referrer_id TEXT,
        campaign_id TEXT,
        code TEXT,
        body TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS conversions_by_buyer ON conversions(buyer_id)",
    "CREATE INDEX IF NOT EXISTS conversions_by_referrer ON conversions(referrer_id, campaign_id)",
    "CREATE INDEX IF NOT EXISTS conversions_by_campaign ON conversions(campaign_id, order_at_us)",
    "CREATE INDEX IF NOT EXISTS conversions_by_code ON conversions(code, order_at_us)",
    "CREATE INDEX IF NOT EXISTS conversions_by_status ON conversions(status)",
    "CREATE INDEX IF NOT EXISTS conversions_by_time ON conversions(order_at_us, order_id)",
    """CREATE TABLE IF NOT EXISTS refunds (
        id TEXT PRIMARY KEY NOT NULL,
        order_id TEXT NOT NULL REFERENCES conversions(order_id),
        amount_minor INTEGER NOT NULL,
        at_us INTEGER NOT NULL,
        reason TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS refunds_by_order ON refunds(order_id)",
    # customer_id carries no foreign key: rewards outlive an erased person as `erased`.
    """CREATE TABLE IF NOT EXISTS rewards (
        id TEXT PRIMARY KEY NOT NULL,
        customer_id TEXT NOT NULL,
        campaign_id TEXT NOT NULL,
        side TEXT NOT NULL,
        conversion_id TEXT NOT NULL,
        state TEXT NOT NULL,
        amount_minor INTEGER NOT NULL,
        currency TEXT NOT NULL,
        created_at_us INTEGER NOT NULL,
        approve_after_us INTEGER NOT NULL,
        review_deadline_us INTEGER,
        body TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS rewards_by_customer ON rewards(customer_id, campaign_id, side)",
    "CREATE INDEX IF NOT EXISTS rewards_by_campaign ON rewards(campaign_id)",
    "CREATE INDEX IF NOT EXISTS rewards_by_conversion ON rewards(conversion_id)",
    "CREATE INDEX IF NOT EXISTS rewards_by_creation ON rewards(created_at_us, id)",
    "CREATE INDEX IF NOT EXISTS rewards_to_approve ON rewards(approve_after_us) WHERE state = 'pending'",
    "CREATE INDEX IF NOT EXISTS rewards_to_expire ON rewards(review_deadline_us) WHERE state = 'held'",
    """CREATE TABLE IF NOT EXISTS ledger_entries (
        id TEXT PRIMARY KEY NOT NULL,
        reward_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        from_state TEXT,
        to_state TEXT NOT NULL,
        state_rank INTEGER NOT NULL,
        amount_minor INTEGER NOT NULL,
        currency TEXT NOT NULL,
        at_us INTEGER NOT NULL,
        reason TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS ledger_by_customer ON ledger_entries(customer_id, at_us)",
    "CREATE INDEX IF NOT EXISTS ledger_by_reward ON ledger_entries(reward_id)",
    "CREATE INDEX IF NOT EXISTS ledger_by_time ON ledger_entries(at_us, state_rank, id)",
)
"""The programme tables (schema version 2); `SqliteStore` runs them as the migration from version 1."""

SCHEMA_V5: Final = (
    "CREATE INDEX IF NOT EXISTS codes_by_advocate ON codes(customer_id, campaign_id, created_at_us)",
    "DROP INDEX IF EXISTS codes_by_customer",
)
"""An advocate's codes in one campaign by one index: with only `codes_by_customer` and `codes_by_campaign`, and no
statistics, SQLite searched the campaign's index and read every code of the campaign for each kit."""

PROGRAM_TABLES: Final = (
    "ledger_entries",
    "rewards",
    "refunds",
    "conversions",
    "signups",
    "signals",
    "clicks",
    "codes",
    "campaigns",
)
"""Children before parents, so deleting in this order never trips a foreign key."""

_STATE_RANK: Final = {state: rank for rank, state in enumerate(RewardState)}
_LIVE_CONVERSIONS: Final = (ConversionStatus.ATTRIBUTED.value, ConversionStatus.HELD.value)
_SETTLED: Final = tuple(
    s.value
    for s in (ConversionStatus.ATTRIBUTED, ConversionStatus.HELD, ConversionStatus.REJECTED, ConversionStatus.REVERSED)
)
_MAX_NEIGHBOURHOOD_EDGES: Final = 5_000
"""Stop widening a fraud neighbourhood past this many edges: a ring is small, a hub's network is not."""
_PAGE: Final = 1_000
_MAX_REASON: Final = 500
"""`LedgerEntry.reason`'s limit; reasons the store composes from refund ids and texts are cut to it."""

_CODE_COLUMNS = (
    "code, customer_id, campaign_id, status, vanity, created_at_us, expires_at_us, status_at_us, replaced_by"
)
_KEYED_CODE_COLUMNS = ", ".join(f"k.{column.strip()}" for column in _CODE_COLUMNS.split(","))
_CLICK_COLUMNS = "id, code, at_us, visitor, ip_hash, source, customer_id"
_RECORD_CLICKS: Final = (
    f"INSERT INTO clicks ({_CLICK_COLUMNS}) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7"  # noqa: S608 - constant
    " WHERE EXISTS (SELECT 1 FROM codes WHERE code = ?2) ON CONFLICT (id) DO NOTHING"
)
_ENTRY_COLUMNS = "id, reward_id, customer_id, from_state, to_state, amount_minor, currency, at_us, reason"
_UPSERT_CONVERSION = """
    INSERT INTO conversions (order_id, buyer_id, order_at_us, status, referrer_id, campaign_id, code, body)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (order_id) DO UPDATE SET
        buyer_id = excluded.buyer_id, order_at_us = excluded.order_at_us, status = excluded.status,
        referrer_id = excluded.referrer_id, campaign_id = excluded.campaign_id, code = excluded.code,
        body = excluded.body
"""
_UPSERT_REWARD = """
    INSERT INTO rewards (id, customer_id, campaign_id, side, conversion_id, state, amount_minor, currency,
                         created_at_us, approve_after_us, review_deadline_us, body)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        customer_id = excluded.customer_id, state = excluded.state, approve_after_us = excluded.approve_after_us,
        review_deadline_us = excluded.review_deadline_us, body = excluded.body
"""
_INSERT_SIGNAL = "INSERT INTO signals (customer_id, kind, value) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
# A new edge starts at `signed_up`; an existing one moves forward from `clicked` only.
_SIGNED_UP_EDGE = """
    INSERT INTO referrals (referrer_id, friend_id, code, status, at_us, status_at_us)
    VALUES (?, ?, ?, 'signed_up', ?, ?)
    ON CONFLICT (referrer_id, friend_id) DO UPDATE SET status = 'signed_up', status_at_us = excluded.status_at_us
    WHERE referrals.status = 'clicked'
"""
# Written only when the referrer still exists: an erased referrer's conversion gets no edge back.
_CONVERTED_EDGE = """
    INSERT INTO referrals (referrer_id, friend_id, code, status, at_us, status_at_us)
    SELECT ?1, ?2, ?3, 'converted', ?4, ?5 WHERE EXISTS (SELECT 1 FROM customers WHERE id = ?1)
    ON CONFLICT (referrer_id, friend_id) DO UPDATE SET status = 'converted', status_at_us = excluded.status_at_us
"""
# Metrics for one campaign (`?1`) or, when `?1` is NULL, for all.
_COUNTS: Final = {
    "advocates_with_code": "SELECT count(DISTINCT customer_id) FROM codes WHERE ?1 IS NULL OR campaign_id = ?1",
    "advocates_sharing": "SELECT count(DISTINCT k.customer_id) FROM codes AS k WHERE (?1 IS NULL OR k.campaign_id = ?1)"
    " AND EXISTS (SELECT 1 FROM clicks AS c WHERE c.code = k.code)",
    "clicks": "SELECT count(*) FROM clicks WHERE code IN (SELECT code FROM codes WHERE ?1 IS NULL OR campaign_id = ?1)",
    "distinct_visitors": "SELECT count(DISTINCT visitor) FROM clicks"
    " WHERE code IN (SELECT code FROM codes WHERE ?1 IS NULL OR campaign_id = ?1)",
    "signups": "SELECT count(*) FROM signups WHERE ?1 IS NULL"
    " OR code IN (SELECT code FROM codes WHERE campaign_id = ?1)"
    " OR click_id IN (SELECT c.id FROM clicks AS c JOIN codes AS k USING (code) WHERE k.campaign_id = ?1)",
}
_CONVERSIONS_BY_STATUS = "SELECT status, count(*) FROM conversions WHERE ?1 IS NULL OR campaign_id = ?1 GROUP BY status"
_REWARD_COST = """
    SELECT currency, state, sum(amount_minor) FROM rewards WHERE ?1 IS NULL OR campaign_id = ?1
    GROUP BY currency, state
"""
_REVERSE_EDGE = "UPDATE referrals SET status = 'reversed', status_at_us = ? WHERE referrer_id = ? AND friend_id = ?"


def _code_from(row: Row) -> ReferralCode:
    return ReferralCode(
        code=row[0],
        customer_id=row[1],
        campaign_id=row[2],
        status=CodeStatus(row[3]),
        vanity=bool(row[4]),
        created_at=_at(row[5]),
        expires_at=_from_us(row[6]),
        status_at=_from_us(row[7]),
        replaced_by=row[8],
    )


def _click_from(row: Row) -> Click:
    return Click(
        id=row[0],
        code=row[1],
        at=_at(row[2]),
        visitor=row[3],
        ip_hash=row[4],
        source=row[5],
        customer_id=row[6],
    )


def _entry_from(row: Row) -> LedgerEntry:
    return LedgerEntry(
        id=row[0],
        reward_id=row[1],
        customer_id=row[2],
        from_state=None if row[3] is None else RewardState(row[3]),
        to_state=RewardState(row[4]),
        amount_minor=row[5],
        currency=row[6],
        at=_at(row[7]),
        reason=row[8],
    )


def _save_conversion(conn: sqlite3.Connection, conversion: Conversion) -> None:
    order, attribution = conversion.order, conversion.attribution
    conn.execute(
        _UPSERT_CONVERSION,
        (
            order.id,
            order.customer_id,
            _to_us(order.at),
            conversion.status.value,
            None if attribution is None else attribution.referrer_id,
            None if attribution is None else attribution.campaign_id,
            None if attribution is None else attribution.code,
            conversion.model_dump_json(),
        ),
    )


def _save_reward(conn: sqlite3.Connection, reward: Reward) -> None:
    conn.execute(
        _UPSERT_REWARD,
        (
            reward.id,
            reward.customer_id,
            reward.campaign_id,
            reward.side.value,
            reward.conversion_id,
            reward.state.value,
            reward.amount_minor,
            reward.currency,
            _to_us(reward.created_at),
            _to_us(reward.approve_after),
            _opt_us(reward.review_deadline),
            reward.model_dump_json(),
        ),
    )


def _write_entry(conn: sqlite3.Connection, entry: LedgerEntry) -> None:
    conn.execute(
        "INSERT INTO ledger_entries (id, reward_id, customer_id, from_state, to_state, state_rank, amount_minor,"
        " currency, at_us, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.id,
            entry.reward_id,
            entry.customer_id,
            None if entry.from_state is None else entry.from_state.value,
            entry.to_state.value,
            _STATE_RANK[entry.to_state],
            entry.amount_minor,
            entry.currency,
            _to_us(entry.at),
            entry.reason,
        ),
    )


def _move(conn: sqlite3.Connection, reward: Reward, to_state: RewardState, *, at: datetime, reason: str) -> Reward:
    """One move along `REWARD_TRANSITIONS`: the reward's new state and its ledger entry."""
    check_transition(reward.id, reward.state, to_state)
    moved = reward.model_copy(update={"state": to_state, "updated_at": at})
    _save_reward(conn, moved)
    _write_entry(
        conn,
        LedgerEntry(
            id=ledger_entry_id(reward.id, to_state),
            reward_id=reward.id,
            customer_id=reward.customer_id,
            from_state=reward.state,
            to_state=to_state,
            amount_minor=reward.amount_minor,
            currency=reward.currency,
            at=at,
            reason=reason[:_MAX_REASON],
        ),
    )
    return moved


def _exists(conn: sqlite3.Connection, sql: str, key: str) -> bool:
    return conn.execute(sql, (key,)).fetchone() is not None


def _require_customer(conn: sqlite3.Connection, customer_id: str) -> None:
    if not _exists(conn, "SELECT 1 FROM customers WHERE id = ?", customer_id):
        raise NotFound(f"no customer {customer_id!r}")


def _find_conversion(conn: sqlite3.Connection, order_id: str) -> Conversion | None:
    row = conn.execute("SELECT body FROM conversions WHERE order_id = ?", (order_id,)).fetchone()
    return None if row is None else Conversion.model_validate_json(row[0])


def _load_conversion(conn: sqlite3.Connection, order_id: str) -> Conversion:
    conversion = _find_conversion(conn, order_id)
    if conversion is None:
        raise NotFound(f"no conversion for order {order_id!r}")
    return conversion


def _load_reward(conn: sqlite3.Connection, reward_id: str) -> Reward | None:
    row = conn.execute("SELECT body FROM rewards WHERE id = ?", (reward_id,)).fetchone()
    return None if row is None else Reward.model_validate_json(row[0])


def _rewards(conn: sqlite3.Connection, where: str, params: Sequence[object], limit: int = -1) -> list[Reward]:
    """Rewards matching a constant `where`, by creation time then id; a negative limit means all."""
    sql = f"SELECT body FROM rewards WHERE {where} ORDER BY created_at_us, id LIMIT ?"  # noqa: S608 - constant clauses
    return [Reward.model_validate_json(row[0]) for row in conn.execute(sql, (*params, limit))]


def _reverse_edge(conn: sqlite3.Connection, conversion: Conversion, at: datetime) -> None:
    attribution = conversion.attribution
    if attribution is not None and attribution.referrer_id != conversion.order.customer_id:
        conn.execute(_REVERSE_EDGE, (_to_us(at), attribution.referrer_id, conversion.order.customer_id))


def codes_in(conn: sqlite3.Connection, customer_id: str | None, campaign_id: str | None) -> list[ReferralCode]:
    """`list_codes` on a connection, so `kit_reads` reads them in its own transaction."""
    where, params = _where((("customer_id = ?", customer_id), ("campaign_id = ?", campaign_id)))
    sql = f"SELECT {_CODE_COLUMNS} FROM codes WHERE {where} ORDER BY created_at_us, code"  # noqa: S608
    return [_code_from(row) for row in conn.execute(sql, params)]


def _where(filters: Iterable[tuple[str, object]]) -> tuple[str, list[object]]:
    """`WHERE` text and parameters for the filters that were given (value not None); clause text is constant.

    A clause with several `?` takes its value once for each.
    """
    given = [(clause, value) for clause, value in filters if value is not None]
    text = " AND ".join(clause for clause, _ in given) or "1"
    return text, [value for clause, value in given for _ in range(clause.count("?"))]


class SqliteProgram(CachedLinks):
    """`ProgramStore` over the host's `_run`; see the module docstring."""

    def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool, begin: bool = True) -> T:
        raise NotImplementedError

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """A one-statement read outside any explicit transaction."""
        rows: list[Row] = self._run(lambda conn: conn.execute(sql, params).fetchall(), write=False, begin=False)
        return rows

    def _row(self, sql: str, params: Sequence[object]) -> Row | None:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    # --- campaigns -------------------------------------------------------------------------------------------
    def save_campaign(self, campaign: Campaign) -> None:
        row = (campaign.id, _to_us(campaign.created_at), campaign.model_dump_json())
        try:
            self._run(
                lambda conn: conn.execute(
                    "INSERT INTO campaigns (id, created_at_us, body) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                    " created_at_us = excluded.created_at_us, body = excluded.body",
                    row,
                ),
                write=True,
            )
        finally:
            self.links.forget_campaign(campaign.id)

    def get_campaign(self, campaign_id: str) -> Campaign:
        row = self._row("SELECT body FROM campaigns WHERE id = ?", (campaign_id,))
        if row is None:
            raise NotFound(f"no campaign {campaign_id!r}")
        return Campaign.model_validate_json(row[0])

    def list_campaigns(self) -> list[Campaign]:
        rows = self._rows("SELECT body FROM campaigns ORDER BY created_at_us, id")
        return [Campaign.model_validate_json(row[0]) for row in rows]

    # --- codes and clicks ------------------------------------------------------------------------------------
    def create_code(self, code: ReferralCode) -> ReferralCode:
        row = (
            code.code,
            code.customer_id,
            code.campaign_id,
            code.status.value,
            int(code.vanity),
            _to_us(code.created_at),
            _opt_us(code.expires_at),
            _opt_us(code.status_at),
            code.replaced_by,
        )

        def work(conn: sqlite3.Connection) -> ReferralCode:
            if _exists(conn, "SELECT 1 FROM codes WHERE code = ?", code.code):
                raise LedgerConflict(f"the referral code {code.code!r} is taken")
            _require_customer(conn, code.customer_id)
            if not _exists(conn, "SELECT 1 FROM campaigns WHERE id = ?", code.campaign_id):
                raise NotFound(f"no campaign {code.campaign_id!r}")
            conn.execute(f"INSERT INTO codes ({_CODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", row)  # noqa: S608
            return code

        try:
            return self._run(work, write=True)
        finally:
            self.links.forget_code(code.code)

    @staticmethod
    def _code_in(conn: sqlite3.Connection, code: str) -> ReferralCode:
        row = conn.execute(f"SELECT {_CODE_COLUMNS} FROM codes WHERE code = ?", (code,)).fetchone()  # noqa: S608
        if row is None:
            raise NotFound(f"no referral code {code!r}")
        return _code_from(row)

    def get_code(self, code: str) -> ReferralCode:
        return self._run(lambda conn: self._code_in(conn, code), write=False, begin=False)

    def list_codes(self, *, customer_id: str | None = None, campaign_id: str | None = None) -> list[ReferralCode]:
        return self._run(lambda conn: codes_in(conn, customer_id, campaign_id), write=False, begin=False)

    def set_code_status(
        self, code: str, status: CodeStatus, *, at: datetime, replaced_by: str | None = None
    ) -> ReferralCode:
        def work(conn: sqlite3.Connection) -> ReferralCode:
            current = self._code_in(conn, code)
            if current.status is status:
                return current
            changed = current.model_copy(
                update={"status": status, "status_at": at, "replaced_by": replaced_by or current.replaced_by}
            )
            conn.execute(
                "UPDATE codes SET status = ?, status_at_us = ?, replaced_by = ? WHERE code = ?",
                (status.value, _to_us(at), changed.replaced_by, code),
            )
            return changed

        try:
            return self._run(work, write=True)
        finally:
            self.links.forget_code(code)

    def record_click(self, click: Click) -> None:
        row = (click.id, click.code, _to_us(click.at), click.visitor, click.ip_hash, click.source, click.customer_id)

        def work(conn: sqlite3.Connection) -> None:
            if not _exists(conn, "SELECT 1 FROM codes WHERE code = ?", click.code):
                raise NotFound(f"no referral code {click.code!r}")
            conn.execute(
                f"INSERT INTO clicks ({_CLICK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",  # noqa: S608
                row,
            )

        self._run(work, write=True)

    def record_clicks(self, clicks: Sequence[Click]) -> None:
        rows = [(c.id, c.code, _to_us(c.at), c.visitor, c.ip_hash, c.source, c.customer_id) for c in clicks]
        if rows:
            self._run(lambda conn: conn.executemany(_RECORD_CLICKS, rows), write=True)

    def get_click(self, click_id: str) -> Click | None:
        row = self._row(f"SELECT {_CLICK_COLUMNS} FROM clicks WHERE id = ?", (click_id,))  # noqa: S608
        return None if row is None else _click_from(row)

    # --- signups and attribution -----------------------------------------------------------------------------
    def record_signup(self, signup: Signup, attribution: Attribution | None) -> None:
        friend = signup.customer_id

        def work(conn: sqlite3.Connection) -> None:
            _require_customer(conn, friend)
            conn.execute(
                "INSERT INTO signups (customer_id, at_us, code, click_id) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (friend, _to_us(signup.at), signup.code, signup.click_id),
            )
            conn.executemany(_INSERT_SIGNAL, [(friend, s.kind.value, s.value) for s in signup.signals])
            if attribution is not None and attribution.referrer_id != friend:
                _require_customer(conn, attribution.referrer_id)
                conn.execute(
                    _SIGNED_UP_EDGE,
                    (
                        attribution.referrer_id,
                        friend,
                        attribution.code,
                        _to_us(attribution.touched_at),
                        _to_us(signup.at),
                    ),
                )

        self._run(work, write=True)

    def touches_for(self, customer_id: str, *, click_ids: Sequence[str], since: datetime) -> list[Touch]:
        def work(conn: sqlite3.Connection) -> list[Touch]:
            signup = conn.execute(
                "SELECT at_us, code, click_id FROM signups WHERE customer_id = ?", (customer_id,)
            ).fetchone()
            wanted = list(dict.fromkeys(click_ids))
            if signup is not None and signup[2] is not None:
                wanted.append(signup[2])
            rows = conn.execute(
                f"SELECT {_KEYED_CODE_COLUMNS}, c.id, c.at_us FROM clicks AS c JOIN codes AS k ON k.code = c.code"  # noqa: S608
                " WHERE (c.id IN (SELECT value FROM json_each(?)) OR c.customer_id = ?) AND c.at_us >= ?",
                (json.dumps(wanted), customer_id, _to_us(since)),
            ).fetchall()
            touches = [_touch(_code_from(row[:9]), TouchKind.CLICK, _at(row[10]), row[9]) for row in rows]
            if signup is not None and signup[1] is not None and signup[0] >= _to_us(since):
                row = conn.execute(f"SELECT {_CODE_COLUMNS} FROM codes WHERE code = ?", (signup[1],)).fetchone()  # noqa: S608
                if row is not None:
                    touches.append(_touch(_code_from(row), TouchKind.SIGNUP_CODE, _at(signup[0]), None))
            return sorted(touches, key=lambda t: (t.at, t.kind.value, t.click_id or "", t.code))

        return self._run(work, write=False)

    # --- conversions -----------------------------------------------------------------------------------------
    def record_order(self, order: Order) -> Conversion:
        def work(conn: sqlite3.Connection) -> Conversion:
            stored = _find_conversion(conn, order.id)
            if stored is not None:
                was = stored.order
                if (was.customer_id, was.amount_minor, was.currency) != (
                    order.customer_id,
                    order.amount_minor,
                    order.currency,
                ):
                    raise LedgerConflict(
                        f"order {order.id!r} was delivered before with another buyer, amount or currency"
                    )
                return stored
            _require_customer(conn, order.customer_id)
            conversion = Conversion(order=order)
            _save_conversion(conn, conversion)
            conn.executemany(_INSERT_SIGNAL, [(order.customer_id, s.kind.value, s.value) for s in order.signals])
            return conversion

        return self._run(work, write=True)

    def get_conversion(self, order_id: str) -> Conversion:
        return self._run(lambda conn: _load_conversion(conn, order_id), write=False, begin=False)

    def list_conversions(
        self,
        *,
        status: ConversionStatus | None = None,
        campaign_id: str | None = None,
        customer_id: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[Conversion]:
        if limit < 0:
            raise InvalidInput(f"limit must be zero or more, not {limit}")
        where, params = _where(
            (
                ("status = ?", None if status is None else status.value),
                ("campaign_id = ?", campaign_id),
                ("(buyer_id = ? OR referrer_id = ?)", customer_id),
                ("order_id > ?", after),
            )
        )
        sql = f"SELECT body FROM conversions WHERE {where} ORDER BY order_id LIMIT ?"  # noqa: S608
        return [Conversion.model_validate_json(row[0]) for row in self._rows(sql, [*params, limit])]

    def fraud_context(self, order: Order, attribution: Attribution, settings: FraudSettings) -> FraudContext:
        friend, referrer = order.customer_id, attribution.referrer_id

        def work(conn: sqlite3.Connection) -> FraudContext:
            referrer_signals = _signals_of(conn, referrer)
            friend_signals = tuple(dict.fromkeys((*_signals_of(conn, friend), *order.signals)))
            shared: dict[SignalKind, list[str]] = {}
            payload = json.dumps([[s.kind.value, s.value] for s in friend_signals])
            for kind, holder in conn.execute(
                "SELECT DISTINCT s.kind, s.customer_id FROM json_each(?) AS j JOIN signals AS s"
                " ON s.kind = json_extract(j.value, '$[0]') AND s.value = json_extract(j.value, '$[1]')"
                " WHERE s.customer_id != ? ORDER BY s.kind, s.customer_id",
                (payload, friend),
            ):
                shared.setdefault(SignalKind(kind), []).append(holder)
            created = conn.execute("SELECT created_at_us FROM customers WHERE id = ?", (friend,)).fetchone()
            window_start = order.at - timedelta(hours=settings.velocity_window_hours)
            in_window = conn.execute(
                "SELECT count(*) FROM conversions WHERE code = ? AND order_at_us BETWEEN ? AND ? AND order_id != ?"
                " AND status IN (SELECT value FROM json_each(?))",
                (attribution.code, _to_us(window_start), _to_us(order.at), order.id, json.dumps(_SETTLED)),
            ).fetchone()[0]
            links = _neighbourhood(conn, {referrer, friend}, settings.ring_max_hops)
            people = sorted({link.referrer_id for link in links} | {link.friend_id for link in links})
            created_at = {
                row[0]: _from_us(row[1])
                for row in conn.execute(
                    "SELECT c.id, c.created_at_us FROM json_each(?) AS j JOIN customers AS c ON c.id = j.value",
                    (json.dumps(people),),
                )
            }
            return FraudContext(
                order=order,
                attribution=attribution,
                referrer_signals=referrer_signals,
                friend_signals=friend_signals,
                shared_signals={kind: tuple(ids) for kind, ids in shared.items()},
                friend_created_at=None if created is None else _from_us(created[0]),
                code_conversions_in_window=in_window,
                neighbourhood=tuple(links),
                customer_created_at={person: created_at.get(person) for person in people},
            )

        return self._run(work, write=False)

    def settle_conversion(
        self, order_id: str, attribution: Attribution | None, plan: Plan, *, at: datetime
    ) -> Conversion:
        def work(conn: sqlite3.Connection) -> Conversion:
            conversion = _load_conversion(conn, order_id)
            if conversion.status is not ConversionStatus.PENDING:
                return conversion
            friend = conversion.order.customer_id
            settlement = plan(_history(conn, friend, attribution))
            settled = conversion.model_copy(
                update={
                    "status": settlement.status,
                    "attribution": settlement.attribution,
                    "verdict": settlement.verdict,
                    "settled_at": at,
                    "reward_ids": tuple(grant.id for grant in settlement.grants),
                    "notes": settlement.notes,
                }
            )
            _save_conversion(conn, settled)
            _issue(conn, settlement, at)
            _settle_edge(conn, settled, at)
            return settled

        return self._run(work, write=True)

    def record_refund(self, refund: Refund, *, at: datetime) -> Conversion:
        def work(conn: sqlite3.Connection) -> Conversion:
            conversion = _load_conversion(conn, refund.order_id)
            if _exists(conn, "SELECT 1 FROM refunds WHERE id = ?", refund.id):
                return conversion
            conn.execute(
                "INSERT INTO refunds (id, order_id, amount_minor, at_us, reason) VALUES (?, ?, ?, ?, ?)",
                (refund.id, refund.order_id, refund.amount_minor, _to_us(refund.at), refund.reason),
            )
            refunded = conversion.refunded_minor + refund.amount_minor
            update: dict[str, object] = {"refunded_minor": refunded}
            reverses = refunded >= conversion.order.amount_minor and conversion.status is not ConversionStatus.REVERSED
            if reverses:
                update["status"] = ConversionStatus.REVERSED
            changed = conversion.model_copy(update=update)
            _save_conversion(conn, changed)
            if reverses:
                reason = f"refund {refund.id}: {refund.reason}"
                for reward in _rewards(conn, "conversion_id = ?", (conversion.id,)):
                    _claw_back(conn, reward, at=at, reason=reason)
                if not _has_other_live_conversion(conn, changed):
                    _reverse_edge(conn, changed, at)
            return changed

        return self._run(work, write=True)

    def review_conversion(
        self,
        order_id: str,
        *,
        approve: bool,
        reviewer: str,
        note: str,
        at: datetime,
        approve_after: datetime,
    ) -> Conversion:
        def work(conn: sqlite3.Connection) -> Conversion:
            conversion = _load_conversion(conn, order_id)
            if conversion.status is not ConversionStatus.HELD:
                raise LedgerConflict(f"conversion {order_id!r} is {conversion.status.value}, not held")
            if not approve:
                return _reject_held(conn, conversion, reviewer=reviewer, note=note, at=at)[0]
            reviewed = conversion.model_copy(
                update={"status": ConversionStatus.ATTRIBUTED, "reviewed_by": reviewer, "review_note": note}
            )
            _save_conversion(conn, reviewed)
            for reward in _rewards(conn, "conversion_id = ? AND state = 'held'", (order_id,)):
                released = reward.model_copy(update={"approve_after": approve_after})
                _move(conn, released, RewardState.PENDING, at=at, reason=f"approved by {reviewer}")
            return reviewed

        return self._run(work, write=True)

    # --- rewards and the ledger ------------------------------------------------------------------------------
    def advance_rewards(self, now: datetime, *, limit: int = 1000) -> list[Reward]:
        if limit < 0:
            raise InvalidInput(f"limit must be zero or more, not {limit}")
        now_us = _to_us(now)

        def work(conn: sqlite3.Connection) -> list[Reward]:
            due = _rewards(conn, "state = 'pending' AND approve_after_us <= ?", (now_us,), limit)
            moved = [_move(conn, reward, RewardState.APPROVED, at=now, reason="hold period over") for reward in due]
            expired = _rewards(conn, "state = 'held' AND review_deadline_us <= ?", (now_us,), limit - len(moved))
            for reward in expired:
                if len(moved) >= limit:
                    break
                if any(done.id == reward.id for done in moved):
                    continue
                conversion = _find_conversion(conn, reward.conversion_id)
                if conversion is None or conversion.status is not ConversionStatus.HELD:
                    moved.append(_move(conn, reward, RewardState.REJECTED, at=now, reason="review deadline passed"))
                    continue
                together = _rewards(conn, "conversion_id = ? AND state = 'held'", (conversion.id,))
                if moved and len(moved) + len(together) > limit:
                    break
                _, rejected = _reject_held(conn, conversion, reviewer="deadline", note="not reviewed in time", at=now)
                moved.extend(rejected)
            return moved

        return self._run(work, write=True)

    def transition_reward(self, reward_id: str, to_state: RewardState, *, at: datetime, reason: str) -> Reward:
        if len(reason) > _MAX_REASON:
            raise InvalidInput(f"a ledger reason is at most {_MAX_REASON} characters")

        def work(conn: sqlite3.Connection) -> Reward:
            reward = _load_reward(conn, reward_id)
            if reward is None:
                raise NotFound(f"no reward {reward_id!r}")
            if reward.state is to_state:
                return reward
            return _move(conn, reward, to_state, at=at, reason=reason)

        return self._run(work, write=True)

    def get_reward(self, reward_id: str) -> Reward:
        reward = self._run(lambda conn: _load_reward(conn, reward_id), write=False, begin=False)
        if reward is None:
            raise NotFound(f"no reward {reward_id!r}")
        return reward

    def list_rewards(
        self,
        *,
        customer_id: str | None = None,
        campaign_id: str | None = None,
        state: RewardState | None = None,
        conversion_id: str | None = None,
        limit: int = 1000,
    ) -> list[Reward]:
        if limit < 0:
            raise InvalidInput(f"limit must be zero or more, not {limit}")
        where, params = _where(
            (
                ("customer_id = ?", customer_id),
                ("campaign_id = ?", campaign_id),
                ("state = ?", None if state is None else state.value),
                ("conversion_id = ?", conversion_id),
            )
        )
        return self._run(lambda conn: _rewards(conn, where, params, limit), write=False, begin=False)

    def ledger_entries(self, *, customer_id: str | None = None, reward_id: str | None = None) -> list[LedgerEntry]:
        where, params = _where((("customer_id = ?", customer_id), ("reward_id = ?", reward_id)))
        sql = f"SELECT {_ENTRY_COLUMNS} FROM ledger_entries WHERE {where} ORDER BY at_us, state_rank, id"  # noqa: S608
        return [_entry_from(row) for row in self._rows(sql, params)]

    def balances(self, customer_id: str) -> list[Balance]:
        return balances_from_entries(self.ledger_entries(customer_id=customer_id))

    # --- fraud scanning and metrics --------------------------------------------------------------------------
    def code_activity(self, code: str, *, since: datetime) -> CodeActivity:
        return self._run(lambda conn: _activity(conn, self._code_in(conn, code), _to_us(since)), write=False)

    def iter_code_activity(self, *, since: datetime, min_clicks: int = 1) -> Iterator[CodeActivity]:
        codes = self._rows(
            "SELECT code FROM codes AS k WHERE ?2 <= 0 OR (SELECT count(*) FROM clicks AS c"
            " WHERE c.code = k.code AND c.at_us >= ?1) >= ?2 ORDER BY code",
            (_to_us(since), min_clicks),
        )
        for (code,) in codes:
            try:
                yield self.code_activity(code, since=since)
            except NotFound:
                continue

    def program_counts(self, campaign_id: str | None = None) -> ProgramCounts:
        def work(conn: sqlite3.Connection) -> ProgramCounts:
            key = (campaign_id,)
            values = {name: int(conn.execute(sql, key).fetchone()[0]) for name, sql in _COUNTS.items()}
            values["customers"] = int(conn.execute("SELECT count(*) FROM customers").fetchone()[0])
            conversions = dict.fromkeys(ConversionStatus, 0)
            for status, count in conn.execute(_CONVERSIONS_BY_STATUS, key):
                conversions[ConversionStatus(status)] = count
            costs: dict[str, dict[RewardState, int]] = {}
            for currency, state, total in conn.execute(_REWARD_COST, key):
                costs.setdefault(currency, dict.fromkeys(RewardState, 0))[RewardState(state)] = total
            return ProgramCounts(campaign_id=campaign_id, conversions=conversions, reward_cost_minor=costs, **values)

        return self._run(work, write=False)

    def iter_conversions(self, campaign_id: str | None = None) -> Iterator[Conversion]:
        """Pages by (order time, order id), one short read each: no connection is held between pages."""
        sql = (
            "SELECT order_at_us, order_id, body FROM conversions WHERE (?1 IS NULL OR campaign_id = ?1)"
            " AND (order_at_us, order_id) > (?2, ?3) ORDER BY order_at_us, order_id LIMIT ?4"
        )
        last: tuple[int, str] = (-(2**62), "")
        while True:
            params = (campaign_id, *last, _PAGE)
            rows = self._rows(sql, params)
            for row in rows:
                yield Conversion.model_validate_json(row[2])
            if len(rows) < _PAGE:
                return
            last = (rows[-1][0], rows[-1][1])

    # --- erasure and wiping (called inside SqliteStore's transactions) --------------------------------------
    @staticmethod
    def _erase_program_data(conn: sqlite3.Connection, customer_id: str) -> None:
        """Remove what is the person's; keep rewards and entries for the accounts under the tombstone."""
        key = (customer_id,)
        own_orders = "SELECT order_id FROM conversions WHERE buyer_id = ?"
        conn.execute("DELETE FROM clicks WHERE code IN (SELECT code FROM codes WHERE customer_id = ?)", key)
        conn.execute("DELETE FROM codes WHERE customer_id = ?", key)
        conn.execute("UPDATE clicks SET customer_id = NULL WHERE customer_id = ?", key)
        conn.execute("DELETE FROM signals WHERE customer_id = ?", key)
        conn.execute("DELETE FROM signups WHERE customer_id = ?", key)
        conn.execute(f"DELETE FROM refunds WHERE order_id IN ({own_orders})", key)  # noqa: S608 - constant
        conn.execute("DELETE FROM conversions WHERE buyer_id = ?", key)
        # Their id as referrer, and in the fraud details and review notes of other people's conversions.
        mentioned = conn.execute(
            "SELECT body FROM conversions WHERE referrer_id = ? OR instr(body, ?) > 0", (customer_id, customer_id)
        ).fetchall()
        for (body,) in mentioned:
            conversion = Conversion.model_validate_json(body)
            scrubbed = scrub_conversion(conversion, customer_id, ERASED)
            if scrubbed != conversion:
                _save_conversion(conn, scrubbed)
        for reward in _rewards(conn, "customer_id = ?", key):
            _save_reward(conn, reward.model_copy(update={"customer_id": ERASED}))
        conn.execute("UPDATE ledger_entries SET customer_id = ? WHERE customer_id = ?", (ERASED, customer_id))


# --- helpers that run inside a transaction ---------------------------------------------------------------------
def _touch(code: ReferralCode, kind: TouchKind, at: datetime, click_id: str | None) -> Touch:
    return Touch(
        kind=kind,
        code=code.code,
        referrer_id=code.customer_id,
        campaign_id=code.campaign_id,
        at=at,
        usable=code.usable_at(at),
        click_id=click_id,
    )


def _signals_of(conn: sqlite3.Connection, customer_id: str) -> tuple[Signal, ...]:
    rows = conn.execute(
        "SELECT kind, value FROM signals WHERE customer_id = ? ORDER BY kind, value", (customer_id,)
    ).fetchall()
    return tuple(Signal(kind=SignalKind(kind), value=value) for kind, value in rows)


def _neighbourhood(conn: sqlite3.Connection, seeds: set[str], hops: int) -> list[ReferralLink]:
    """Live `REFERRED` edges within `hops` undirected steps of `seeds`, breadth first, at most a few thousand."""
    seen = set(seeds)
    frontier = sorted(seeds)
    links: dict[tuple[str, str], ReferralLink] = {}
    for _ in range(hops):
        room = _MAX_NEIGHBOURHOOD_EDGES - len(links)
        if not frontier or room <= 0:
            break
        rows = conn.execute(
            "SELECT referrer_id, friend_id, at_us FROM referrals WHERE status != 'reversed'"
            " AND referrer_id IN (SELECT value FROM json_each(?1))"
            " UNION SELECT referrer_id, friend_id, at_us FROM referrals WHERE status != 'reversed'"
            " AND friend_id IN (SELECT value FROM json_each(?1)) LIMIT ?2",
            (json.dumps(frontier), room),
        ).fetchall()
        frontier = []
        for referrer, friend, at_us in rows:
            links.setdefault((referrer, friend), ReferralLink(referrer_id=referrer, friend_id=friend, at=_at(at_us)))
            for person in (referrer, friend):
                if person not in seen:
                    seen.add(person)
                    frontier.append(person)
    return [links[key] for key in sorted(links)]


def _history(conn: sqlite3.Connection, friend: str, attribution: Attribution | None) -> RewardHistory:
    if attribution is None:
        return RewardHistory(successful_referrals=0, referrer_rewards=(), friend_rewards=())
    referrer, campaign = attribution.referrer_id, attribution.campaign_id
    successes = conn.execute(
        "SELECT count(DISTINCT buyer_id) FROM conversions WHERE referrer_id = ? AND campaign_id = ?"
        " AND buyer_id != ? AND status IN (?, ?)",
        (referrer, campaign, friend, *_LIVE_CONVERSIONS),
    ).fetchone()[0]
    return RewardHistory(
        successful_referrals=successes,
        referrer_rewards=tuple(
            _rewards(
                conn,
                "customer_id = ? AND campaign_id = ? AND side = ?",
                (referrer, campaign, RewardSide.REFERRER.value),
            )
        ),
        friend_rewards=tuple(
            _rewards(
                conn, "customer_id = ? AND campaign_id = ? AND side = ?", (friend, campaign, RewardSide.FRIEND.value)
            )
        ),
    )


def _issue(conn: sqlite3.Connection, settlement: Settlement, at: datetime) -> None:
    """Each grant with a new id becomes a reward and its first entry; a known id is left as it is."""
    for grant in settlement.grants:
        if _load_reward(conn, grant.id) is not None:
            continue
        check_transition(grant.id, None, grant.state)
        reward = Reward(**grant.model_dump(), created_at=at, updated_at=at)
        _save_reward(conn, reward)
        _write_entry(
            conn,
            LedgerEntry(
                id=ledger_entry_id(grant.id, grant.state),
                reward_id=grant.id,
                customer_id=grant.customer_id,
                from_state=None,
                to_state=grant.state,
                amount_minor=grant.amount_minor,
                currency=grant.currency,
                at=at,
                reason=f"issued for conversion {grant.conversion_id}"[:_MAX_REASON],
            ),
        )


def _settle_edge(conn: sqlite3.Connection, conversion: Conversion, at: datetime) -> None:
    attribution, friend = conversion.attribution, conversion.order.customer_id
    if attribution is None or attribution.referrer_id == friend:
        return
    if conversion.status in (ConversionStatus.ATTRIBUTED, ConversionStatus.HELD):
        conn.execute(
            _CONVERTED_EDGE,
            (attribution.referrer_id, friend, attribution.code, _to_us(attribution.touched_at), _to_us(at)),
        )
    elif conversion.status is ConversionStatus.REJECTED and not _has_other_live_conversion(conn, conversion):
        _reverse_edge(conn, conversion, at)


def _claw_back(conn: sqlite3.Connection, reward: Reward, *, at: datetime, reason: str) -> None:
    """A refund reverses a live reward; a held one cannot be reversed, so it is rejected instead."""
    if reward.state in (RewardState.PENDING, RewardState.APPROVED, RewardState.FULFILLED):
        _move(conn, reward, RewardState.REVERSED, at=at, reason=reason)
    elif reward.state is RewardState.HELD:
        _move(conn, reward, RewardState.REJECTED, at=at, reason=reason)


def _has_other_live_conversion(conn: sqlite3.Connection, conversion: Conversion) -> bool:
    if conversion.attribution is None:
        return False
    row = conn.execute(
        "SELECT 1 FROM conversions WHERE buyer_id = ? AND referrer_id = ? AND order_id != ? AND status IN (?, ?)"
        " LIMIT 1",
        (conversion.order.customer_id, conversion.attribution.referrer_id, conversion.id, *_LIVE_CONVERSIONS),
    ).fetchone()
    return row is not None


def _reject_held(
    conn: sqlite3.Connection, conversion: Conversion, *, reviewer: str, note: str, at: datetime
) -> tuple[Conversion, list[Reward]]:
    """Reject a held conversion with its held rewards and reverse its edge."""
    rejected = conversion.model_copy(
        update={"status": ConversionStatus.REJECTED, "reviewed_by": reviewer, "review_note": note}
    )
    _save_conversion(conn, rejected)
    moved = [
        _move(conn, reward, RewardState.REJECTED, at=at, reason=f"rejected by {reviewer}")
        for reward in _rewards(conn, "conversion_id = ? AND state = 'held'", (conversion.id,))
    ]
    if not _has_other_live_conversion(conn, rejected):
        _reverse_edge(conn, rejected, at)
    return rejected, moved


def _activity(conn: sqlite3.Connection, code: ReferralCode, since_us: int) -> CodeActivity:
    key = (code.code, since_us)
    clicks, visitors, ips = conn.execute(
        "SELECT count(*), count(DISTINCT visitor), count(DISTINCT ip_hash) FROM clicks WHERE code = ? AND at_us >= ?",
        key,
    ).fetchone()
    sources = dict(
        conn.execute(
            "SELECT coalesce(source, ''), count(*) FROM clicks WHERE code = ? AND at_us >= ?"
            " GROUP BY coalesce(source, '') ORDER BY 1",
            key,
        ).fetchall()
    )
    signups = conn.execute(
        "SELECT count(*) FROM signups WHERE at_us >= ?2"
        " AND (code = ?1 OR click_id IN (SELECT id FROM clicks WHERE code = ?1))",
        key,
    ).fetchone()[0]
    conversions = conn.execute("SELECT count(*) FROM conversions WHERE code = ? AND order_at_us >= ?", key).fetchone()[
        0
    ]
    return CodeActivity(
        code=code.code,
        customer_id=code.customer_id,
        campaign_id=code.campaign_id,
        status=code.status,
        clicks=clicks,
        distinct_visitors=visitors,
        distinct_ips=ips,
        sources=sources,
        signups=signups,
        conversions=conversions,
    )
