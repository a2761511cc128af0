"""`SqliteStore`: the embedded default `GraphStore`, one SQLite file shared by the API and the workers.

Concurrency: each thread of each process gets its own connection (a `threading.local`, rebuilt after a fork),
so FastAPI's threadpool and Celery's forked workers never share one. The file runs in WAL mode, so readers never
wait for the single writer. Every write is one `BEGIN IMMEDIATE` transaction: it takes the write lock up front,
so a transaction never fails half-way on lock upgrade. SQLite's busy handler waits for the lock; if it still
reports busy, the whole transaction is retried with jittered back-off until `lock_timeout_s` has passed, then
`StoreUnavailable` is raised. "database is locked" never reaches a caller.

Streaming exports open a dedicated connection for the life of the iterator: one consistent snapshot, and the
iterator may be advanced from any thread (Starlette streams sync iterators through its threadpool).

Times are stored as integer microseconds since the Unix epoch (UTC): exact, compact, and ordered for `MAX`.

The referral programme (`ProgramStore`) lives in the same file; its methods are `graph.sqlite_program.SqliteProgram`.
So do templates, outreach plans, the outbox and suppressions (`OutreachStore`): `graph.sqlite_outreach.SqliteOutreach`,
and API keys, used token ids and idempotency records (`AccessStore`): `graph.sqlite_access.SqliteAccess`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any, TypeVar

from graph.errors import AdvocacyError, InvalidInput, NotFound, StoreUnavailable
from graph.link_cache import LinkCache
from graph.model import (
    AnalysisRun,
    Customer,
    CustomerScores,
    EdgeRecord,
    EdgeType,
    ErasureReport,
    Event,
    EventKind,
    EventSummary,
    GraphStats,
    Influence,
    Referral,
)
from graph.outreach import TemplatePurpose
from graph.program_store import KitReads
from graph.sqlite_access import ACCESS_TABLES, SCHEMA_V4, SqliteAccess
from graph.sqlite_outreach import OUTREACH_TABLES, SCHEMA_V3, SqliteOutreach, templates_in
from graph.sqlite_program import (
    _EPOCH,
    PROGRAM_TABLES,
    SCHEMA_V2,
    SCHEMA_V5,
    SqliteProgram,
    _from_us,
    _opt_us,
    _to_us,
    codes_in,
)
from graph.store import RowWriter

SCHEMA_VERSION = 6
"""Stored in `PRAGMA user_version`; bump it and add a step to `_MIGRATIONS` when the schema changes."""

_SCHEMA_V1 = (
    """CREATE TABLE IF NOT EXISTS customers (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT,
        email TEXT,
        phone TEXT,
        locale TEXT NOT NULL,
        timezone TEXT NOT NULL,
        consent TEXT NOT NULL,
        attributes TEXT NOT NULL,
        created_at_us INTEGER
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS influences (
        source_id TEXT NOT NULL REFERENCES customers(id),
        target_id TEXT NOT NULL REFERENCES customers(id),
        kind TEXT NOT NULL,
        weight REAL NOT NULL,
        at_us INTEGER,
        PRIMARY KEY (source_id, target_id, kind)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS influences_by_target ON influences(target_id)",
    """CREATE TABLE IF NOT EXISTS referrals (
        referrer_id TEXT NOT NULL REFERENCES customers(id),
        friend_id TEXT NOT NULL REFERENCES customers(id),
        code TEXT,
        status TEXT NOT NULL,
        at_us INTEGER NOT NULL,
        status_at_us INTEGER,
        PRIMARY KEY (referrer_id, friend_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS referrals_by_friend ON referrals(friend_id)",
    "CREATE INDEX IF NOT EXISTS referrals_by_code ON referrals(code) WHERE code IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY NOT NULL,
        customer_id TEXT NOT NULL REFERENCES customers(id),
        kind TEXT NOT NULL,
        at_us INTEGER NOT NULL,
        value REAL,
        attributes TEXT NOT NULL
    ) WITHOUT ROWID""",
    # Covering index: the per-customer GROUP BY of `iter_event_summaries` reads only this index, in order.
    "CREATE INDEX IF NOT EXISTS events_by_customer ON events(customer_id, kind, at_us, value)",
    """CREATE TABLE IF NOT EXISTS scores (
        customer_id TEXT PRIMARY KEY NOT NULL REFERENCES customers(id),
        run_id TEXT NOT NULL,
        segment TEXT NOT NULL,
        explanation TEXT NOT NULL,
        scores TEXT NOT NULL,
        community INTEGER
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY NOT NULL,
        started_at_us INTEGER NOT NULL,
        finished_at_us INTEGER,
        status TEXT NOT NULL,
        params TEXT NOT NULL,
        timings TEXT NOT NULL,
        summary TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS runs_by_start ON runs(started_at_us, id)",
    """CREATE TABLE IF NOT EXISTS erasure_tally (
        key TEXT PRIMARY KEY NOT NULL,
        count INTEGER NOT NULL
    ) WITHOUT ROWID""",
)

_SCHEMA_V6 = (
    """CREATE TABLE IF NOT EXISTS staged_scores (
        run_id TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        segment TEXT NOT NULL,
        explanation TEXT NOT NULL,
        scores TEXT NOT NULL,
        community INTEGER,
        PRIMARY KEY (run_id, customer_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS staged_scores_by_customer ON staged_scores(customer_id)",
)
"""A run's scores while it writes them: no reader sees them until `publish_scores` makes them the live ones."""

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: _SCHEMA_V1,
    2: SCHEMA_V2,
    3: SCHEMA_V3,
    4: SCHEMA_V4,
    5: SCHEMA_V5,
    6: _SCHEMA_V6,
}
"""Statements that bring a file from version n-1 to version n."""

_UPSERT_CUSTOMER = """
    INSERT INTO customers (id, name, email, phone, locale, timezone, consent, attributes, created_at_us)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        name = excluded.name, email = excluded.email, phone = excluded.phone, locale = excluded.locale,
        timezone = excluded.timezone, consent = excluded.consent, attributes = excluded.attributes,
        created_at_us = excluded.created_at_us
"""
_UPSERT_INFLUENCE = """
    INSERT INTO influences (source_id, target_id, kind, weight, at_us) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (source_id, target_id, kind) DO UPDATE SET weight = excluded.weight, at_us = excluded.at_us
"""
_UPSERT_REFERRAL = """
    INSERT INTO referrals (referrer_id, friend_id, code, status, at_us, status_at_us) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (referrer_id, friend_id) DO UPDATE SET
        code = excluded.code, status = excluded.status, at_us = excluded.at_us, status_at_us = excluded.status_at_us
"""
_INSERT_EVENT = """
    INSERT INTO events (id, customer_id, kind, at_us, value, attributes) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO NOTHING
"""
# Scores for a customer erased while the analysis ran are dropped rather than bringing the id back.
_UPSERT_SCORES = """
    INSERT INTO scores (customer_id, run_id, segment, explanation, scores, community)
    SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE EXISTS (SELECT 1 FROM customers WHERE id = ?1)
    ON CONFLICT (customer_id) DO UPDATE SET
        run_id = excluded.run_id, segment = excluded.segment, explanation = excluded.explanation,
        scores = excluded.scores, community = excluded.community
"""
_STAGE_SCORES = """
    INSERT INTO staged_scores (run_id, customer_id, segment, explanation, scores, community)
    VALUES (?2, ?1, ?3, ?4, ?5, ?6)
    ON CONFLICT (run_id, customer_id) DO UPDATE SET
        segment = excluded.segment, explanation = excluded.explanation, scores = excluded.scores,
        community = excluded.community
"""
_PUBLISH_SCORES = """
    INSERT INTO scores (customer_id, run_id, segment, explanation, scores, community)
    SELECT s.customer_id, s.run_id, s.segment, s.explanation, s.scores, s.community
    FROM staged_scores AS s JOIN customers AS c ON c.id = s.customer_id
    WHERE s.run_id = ?
    ON CONFLICT (customer_id) DO UPDATE SET
        run_id = excluded.run_id, segment = excluded.segment, explanation = excluded.explanation,
        scores = excluded.scores, community = excluded.community
"""
_UPSERT_RUN = """
    INSERT INTO runs (id, started_at_us, finished_at_us, status, params, timings, summary)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET
        started_at_us = excluded.started_at_us, finished_at_us = excluded.finished_at_us, status = excluded.status,
        params = excluded.params, timings = excluded.timings, summary = excluded.summary
"""
_MISSING_CUSTOMERS = """
    SELECT j.value FROM json_each(?) AS j
    WHERE NOT EXISTS (SELECT 1 FROM customers AS c WHERE c.id = j.value)
    ORDER BY j.value
"""
_TALLY = "INSERT INTO erasure_tally (key, count) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET count = count + ?2"
_CUSTOMER_COLUMNS = "id, name, email, phone, locale, timezone, consent, attributes, created_at_us"
_CUSTOMER_COLUMNS_OF_C = ", ".join(f"c.{column.strip()}" for column in _CUSTOMER_COLUMNS.split(","))
_SCORE_COLUMNS = "customer_id, run_id, segment, explanation, scores, community"
_RUN_COLUMNS = "id, started_at_us, finished_at_us, status, params, timings, summary"

# Primary result codes (the low byte of an extended code), see https://sqlite.org/rescode.html.
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_CONSTRAINT, _SQLITE_NOTADB = 19, 26

_SHOWN_MISSING = 20

_INHERITED: list[object] = []
"""Connections a forked child inherited; see `ThreadConnections`."""

T = TypeVar("T")
Row = tuple[Any, ...]


class _Connection(sqlite3.Connection):
    """A plain connection that can be weakly referenced, so `close()` reaches every thread's connection."""


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} cannot be stored as JSON: {exc}") from exc


def _primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _is_busy(exc: sqlite3.Error) -> bool:
    if _primary_code(exc) in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return True
    text = str(exc).lower()
    return "database is locked" in text or "database table is locked" in text or "database is busy" in text


def _customer_row(c: Customer) -> Row:
    return (
        c.id,
        c.name,
        c.email,
        c.phone,
        c.locale,
        c.timezone,
        _json(c.consent, f"consent of customer {c.id}"),
        _json(c.attributes, f"attributes of customer {c.id}"),
        _opt_us(c.created_at),
    )


def _customer_from(row: Row) -> Customer:
    return Customer.model_validate(
        {
            "id": row[0],
            "name": row[1],
            "email": row[2],
            "phone": row[3],
            "locale": row[4],
            "timezone": row[5],
            "consent": json.loads(row[6]),
            "attributes": json.loads(row[7]),
            "created_at": _from_us(row[8]),
        }
    )


def _run_row(run: AnalysisRun) -> Row:
    return (
        run.id,
        _to_us(run.started_at),
        _opt_us(run.finished_at),
        run.status,
        _json(run.params, f"params of run {run.id}"),
        _json(run.timings, f"timings of run {run.id}"),
        _json(run.summary, f"summary of run {run.id}"),
    )


def _scores_from(row: Row) -> CustomerScores:
    return CustomerScores.model_validate(
        {
            "customer_id": row[0],
            "run_id": row[1],
            "segment": row[2],
            "explanation": row[3],
            "scores": json.loads(row[4]),
            "community": row[5],
        }
    )


def _run_from(row: Row) -> AnalysisRun:
    return AnalysisRun.model_validate(
        {
            "id": row[0],
            "started_at": _from_us(row[1]),
            "finished_at": _from_us(row[2]),
            "status": row[3],
            "params": json.loads(row[4]),
            "timings": json.loads(row[5]),
            "summary": json.loads(row[6]),
        }
    )


def _influence_edge(row: Row) -> EdgeRecord:
    at = row[4]
    return EdgeRecord(
        row[0], row[1], EdgeType.INFLUENCES, row[2], row[3], None if at is None else _EPOCH + timedelta(microseconds=at)
    )


def _referral_edge(row: Row) -> EdgeRecord:
    return EdgeRecord(row[0], row[1], EdgeType.REFERRED, row[2], 1.0, _EPOCH + timedelta(microseconds=row[3]))


_EDGE_QUERIES: dict[EdgeType, tuple[str, Callable[[Row], EdgeRecord]]] = {
    EdgeType.INFLUENCES: ("SELECT source_id, target_id, kind, weight, at_us FROM influences", _influence_edge),
    EdgeType.REFERRED: ("SELECT referrer_id, friend_id, status, at_us FROM referrals", _referral_edge),
}
_EDGES_OF: dict[EdgeType, str] = {
    EdgeType.INFLUENCES: " WHERE source_id = ?1 OR target_id = ?1",
    EdgeType.REFERRED: " WHERE referrer_id = ?1 OR friend_id = ?1",
}
"""Each answered from the primary key (first column) and the index on the second, as one OR-by-union lookup."""
_EVENT_COLUMNS = "id, customer_id, kind, at_us, value, attributes"
_CUSTOMER_SQL = f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = ?"  # noqa: S608 - constant columns
_SCORES_SQL = f"SELECT {_SCORE_COLUMNS} FROM scores WHERE customer_id = ?"  # noqa: S608 - constant columns
_REFERRALS_FROM_SQL = (
    "SELECT referrer_id, friend_id, status, at_us FROM referrals WHERE referrer_id = ? ORDER BY friend_id"
)
_EVENTS_OF_SQL = (
    f"SELECT {_EVENT_COLUMNS} FROM events WHERE customer_id = ?1"  # noqa: S608 - constant columns
    " AND (?2 IS NULL OR kind = ?2) ORDER BY at_us DESC, id LIMIT ?3"
)


def _event_from(row: Row) -> Event:
    return Event(
        id=row[0], customer_id=row[1], kind=row[2], at=_from_us(row[3]), value=row[4], attributes=json.loads(row[5])
    )


class _Held:
    """A thread's connection, closed as soon as the thread ends and its `threading.local` entry goes.

    A `sqlite3.Connection` refers to itself through its statement cache, so without this only a full garbage
    collection would free it: a web server's thread pool, which retires idle threads and starts new ones, then
    leaks a connection (its file descriptors and page cache) per retired thread. A forked child leaves its
    parent's connections alone.
    """

    __slots__ = ("conn", "pid")

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()

    def __del__(self) -> None:
        if os.getpid() == self.pid:
            with contextlib.suppress(Exception):
                self.conn.close()


class ThreadConnections:
    """One connection per thread to one SQLite file, for the store and the SQLite contact limiter alike.

    A thread's connection is opened by `open_connection` on first use and closed as soon as the thread ends (see
    `_Held`); `close` closes every one. A forked child opens its own and keeps the ones it inherited referenced
    instead of closing them: SQLite must not close (and so possibly checkpoint) another process's connection.
    """

    _pid: int
    _local: threading.local
    _lock: threading.Lock
    _open_now: weakref.WeakSet[_Connection]

    def __init__(self, open_connection: Callable[[], _Connection]) -> None:
        self._open_connection = open_connection
        self._reset()

    def _reset(self) -> None:
        if hasattr(self, "_local"):
            _INHERITED.append((self._local, list(self._open_now)))
        self._pid = os.getpid()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open_now = weakref.WeakSet()

    def __len__(self) -> int:
        """How many connections are open."""
        return len(self._open_now)

    def get(self) -> _Connection:
        """This thread's connection."""
        if os.getpid() != self._pid:
            self._reset()
        held: _Held | None = getattr(self._local, "held", None)
        if held is None:
            held = _Held(self._open_connection())
            with self._lock:
                self._open_now.add(held.conn)
            self._local.held = held
        return held.conn

    def close(self) -> None:
        with self._lock:
            connections = list(self._open_now)
            self._open_now = weakref.WeakSet()
        for conn in connections:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()


class SqliteStore(SqliteAccess, SqliteOutreach, SqliteProgram, RowWriter):
    """The customer graph, the referral programme and outreach in one SQLite file; see the module docstring."""

    local_reads = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lock_timeout_s: float = 30.0,
        busy_timeout_ms: int = 2_000,
        cache_mib: int = 64,
    ) -> None:
        raw = os.fspath(path)
        if raw in ("", ":memory:") or raw.startswith("file:"):
            raise InvalidInput(
                f"SQLite store path {raw!r} is not a file path: give a file such as advocacy.db "
                "(an in-memory database cannot be shared between threads and processes)"
            )
        self._path = Path(raw).expanduser().absolute()
        if self._path.is_dir():
            raise InvalidInput(f"SQLite store path {self._path} is a directory, not a database file")
        if not self._path.parent.is_dir():
            raise InvalidInput(f"cannot create SQLite store {self._path}: directory {self._path.parent} does not exist")
        self._lock_timeout_s = lock_timeout_s
        self._busy_timeout_ms = busy_timeout_ms
        self._cache_kib = cache_mib * 1024
        self._closed = False
        self.links = LinkCache()
        self._connections = ThreadConnections(self._open)
        self._run(self._set_up, write=False, begin=False)

    # --- connections -----------------------------------------------------------------------------------------
    def _open(self) -> _Connection:
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
                factory=_Connection,
                cached_statements=64,
            )
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = -{int(self._cache_kib)}")
            conn.execute("PRAGMA temp_store = MEMORY")
            # Zero freed cells inside pages at no extra I/O; erasure switches to the full overwrite.
            conn.execute("PRAGMA secure_delete = FAST")
        except sqlite3.Error as exc:
            conn.close()
            raise self._translate(exc) from exc
        return conn

    def _connection(self) -> _Connection:
        if self._closed:
            raise StoreUnavailable(f"the store {self.describe()} has been closed")
        return self._connections.get()

    def _set_up(self, conn: _Connection) -> None:
        """Switch to WAL and create or migrate the schema; safe when several processes open the file at once."""
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreUnavailable(
                f"SQLite store {self._path} cannot use a write-ahead log (journal mode stays {mode!r}); "
                "is it on a read-only or network file system?"
            )
        version = self._schema_version(conn)
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._schema_version(conn)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn)
            raise

    def _schema_version(self, conn: _Connection) -> int:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise InvalidInput(
                f"SQLite store {self._path} has schema version {version}, newer than this program's "
                f"{SCHEMA_VERSION}: upgrade advocacy-network to open it"
            )
        return version

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _run(self, work: Callable[[_Connection], T], *, write: bool, begin: bool = True) -> T:
        """Run `work` in one transaction on this thread's connection, retrying while the file is locked."""
        deadline = time.monotonic() + self._lock_timeout_s
        delay = 0.005
        while True:
            conn = self._connection()
            try:
                if begin:
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = work(conn)
                    if begin:
                        conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
                return result
            except sqlite3.Error as exc:
                remaining = deadline - time.monotonic()
                if _is_busy(exc) and remaining > 0:
                    time.sleep(min(delay * random.uniform(0.5, 1.0), remaining))
                    delay = min(delay * 2, 0.25)
                    continue
                raise self._translate(exc) from exc
            except OverflowError as exc:
                raise InvalidInput(f"value cannot be stored in {self.describe()}: {exc}") from exc

    def _translate(self, exc: sqlite3.Error) -> AdvocacyError:
        """One clear `graph.errors` exception, naming the file, for any sqlite3 error."""
        where = str(self._path)
        if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc).lower():
            return StoreUnavailable(f"the store {self.describe()} has been closed")
        code = _primary_code(exc)
        if _is_busy(exc):
            return StoreUnavailable(
                f"SQLite store {where} stayed locked by another writer for {self._lock_timeout_s:g} s; try again"
            )
        if code == _SQLITE_FULL:
            return StoreUnavailable(f"SQLite store {where}: the disk is full (or the database reached its size limit)")
        if code == _SQLITE_READONLY:
            return StoreUnavailable(
                f"SQLite store {where} is read-only: check the permissions of the file and its directory"
            )
        if code in (_SQLITE_CANTOPEN, _SQLITE_PERM):
            return StoreUnavailable(
                f"cannot open SQLite store {where}: check that the path and its directory exist and are writable"
            )
        if code == _SQLITE_NOTADB:
            return InvalidInput(f"{where} is not an SQLite database")
        if code == _SQLITE_CORRUPT:
            return StoreUnavailable(f"SQLite store {where} is corrupt: restore it from a backup")
        if code == _SQLITE_IOERR:
            return StoreUnavailable(f"I/O error on SQLite store {where}: {exc}")
        if code == _SQLITE_CONSTRAINT or isinstance(exc, sqlite3.IntegrityError):
            return InvalidInput(f"rejected by SQLite store {where}: {exc}")
        if isinstance(exc, (sqlite3.DataError, sqlite3.InterfaceError)):
            return InvalidInput(f"value cannot be stored in {where}: {exc}")
        return StoreUnavailable(f"SQLite store {where} failed: {exc}")

    # --- lifecycle -------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        self._connections.close()

    def ping(self) -> None:
        self._run(lambda conn: conn.execute("SELECT count(*) FROM sqlite_schema").fetchone(), write=False)

    def describe(self) -> str:
        """`sqlite:////abs/path.db`: four slashes mean an absolute path to `graph.factory.open_store`."""
        return f"sqlite:///{self._path.as_posix()}"

    # --- writes ----------------------------------------------------------------------------------------------
    def _write_rows(
        self,
        customers: Sequence[Customer],
        influences: Sequence[Influence],
        referrals: Sequence[Referral],
        events: Sequence[Event],
    ) -> None:
        if not (customers or influences or referrals or events):
            return
        customer_rows = [_customer_row(c) for c in customers]
        influence_rows = [(e.source_id, e.target_id, e.kind.value, e.weight, _opt_us(e.at)) for e in influences]
        referral_rows = [
            (r.referrer_id, r.friend_id, r.code, r.status.value, _to_us(r.at), _opt_us(r.status_at)) for r in referrals
        ]
        event_rows = [
            (
                e.id,
                e.customer_id,
                e.kind.value,
                _to_us(e.at),
                e.value,
                _json(e.attributes, f"attributes of event {e.id}"),
            )
            for e in events
        ]
        # Sorting on the first key column turns random b-tree inserts into near-appends (1M edges: SQLite spends
        # about 4 s less CPU, the sort costs under 2 s); a tuple key sorts 4x slower for little gain. The sort is
        # stable, so the last of several rows with one key still wins.
        first_column = itemgetter(0)
        for rows in (customer_rows, influence_rows, referral_rows, event_rows):
            rows.sort(key=first_column)
        referenced = {e.source_id for e in influences} | {e.target_id for e in influences}
        referenced |= {r.referrer_id for r in referrals} | {r.friend_id for r in referrals}
        referenced |= {e.customer_id for e in events}
        referenced -= {c.id for c in customers}
        wanted = json.dumps(sorted(referenced)) if referenced else None

        def work(conn: _Connection) -> None:
            if customer_rows:
                conn.executemany(_UPSERT_CUSTOMER, customer_rows)
            if wanted is not None:
                missing = [row[0] for row in conn.execute(_MISSING_CUSTOMERS, (wanted,))]
                if missing:
                    raise self._missing(missing)
            if influence_rows:
                conn.executemany(_UPSERT_INFLUENCE, influence_rows)
            if referral_rows:
                conn.executemany(_UPSERT_REFERRAL, referral_rows)
            if event_rows:
                conn.executemany(_INSERT_EVENT, event_rows)

        self._run(work, write=True)

    @staticmethod
    def _missing(missing: list[str]) -> InvalidInput:
        shown = ", ".join(missing[:_SHOWN_MISSING])
        more = f" (and {len(missing) - _SHOWN_MISSING} more)" if len(missing) > _SHOWN_MISSING else ""
        return InvalidInput(
            f"{len(missing)} referenced customer id(s) are neither stored nor in this batch, so nothing was "
            f"written: {shown}{more}"
        )

    def write_scores(self, scores: Sequence[CustomerScores]) -> int:
        return self._write_score_rows(_UPSERT_SCORES, scores)

    def stage_scores(self, scores: Sequence[CustomerScores]) -> int:
        return self._write_score_rows(_STAGE_SCORES, scores)

    def _write_score_rows(self, sql: str, scores: Sequence[CustomerScores]) -> int:
        rows = [
            (
                s.customer_id,
                s.run_id,
                s.segment.value,
                s.explanation,
                _json(s.scores, f"scores of customer {s.customer_id}"),
                s.community,
            )
            for s in scores
        ]
        if not rows:
            return 0

        def work(conn: _Connection) -> int:
            before = conn.total_changes
            conn.executemany(sql, rows)
            return conn.total_changes - before

        return self._run(work, write=True)

    def publish_scores(self, run: AnalysisRun) -> int:
        row = _run_row(run)

        def work(conn: _Connection) -> int:
            published = conn.execute(_PUBLISH_SCORES, (run.id,)).rowcount
            conn.execute("DELETE FROM staged_scores WHERE run_id = ?", (run.id,))
            conn.execute(_UPSERT_RUN, row)
            return int(published)

        return self._run(work, write=True)

    def unfinished_publications(self) -> list[AnalysisRun]:
        return []  # `publish_scores` is one transaction: it happened or it did not

    def staged_score_runs(self) -> list[str]:
        rows: list[Row] = self._run(
            lambda conn: conn.execute("SELECT DISTINCT run_id FROM staged_scores ORDER BY run_id").fetchall(),
            write=False,
            begin=False,
        )
        return [str(row[0]) for row in rows]

    def discard_staged_scores(self, run_ids: Collection[str]) -> int:
        if not run_ids:
            return 0
        ids = json.dumps(sorted(run_ids))

        def work(conn: _Connection) -> int:
            sql = "DELETE FROM staged_scores WHERE run_id IN (SELECT value FROM json_each(?))"
            return int(conn.execute(sql, (ids,)).rowcount)

        return self._run(work, write=True)

    def save_run(self, run: AnalysisRun) -> None:
        row = _run_row(run)
        self._run(lambda conn: conn.execute(_UPSERT_RUN, row), write=True)

    def erase_customer(self, customer_id: str) -> ErasureReport:
        def work(conn: _Connection) -> ErasureReport:
            if conn.execute("SELECT 1 FROM customers WHERE id = ?", (customer_id,)).fetchone() is None:
                raise NotFound(f"no customer {customer_id!r}")
            key = (customer_id,)
            influences = conn.execute("DELETE FROM influences WHERE source_id = ?", key).rowcount
            influences += conn.execute("DELETE FROM influences WHERE target_id = ?", key).rowcount
            self._erase_program_data(conn, customer_id)
            self._erase_outreach_data(conn, customer_id)
            referrals = conn.execute("DELETE FROM referrals WHERE referrer_id = ?", key).rowcount
            referrals += conn.execute("DELETE FROM referrals WHERE friend_id = ?", key).rowcount
            event_counts: list[tuple[str, int]] = conn.execute(
                "SELECT kind, count(*) FROM events WHERE customer_id = ? GROUP BY kind", key
            ).fetchall()
            conn.execute("DELETE FROM events WHERE customer_id = ?", key)
            conn.execute("DELETE FROM scores WHERE customer_id = ?", key)
            conn.execute("DELETE FROM staged_scores WHERE customer_id = ?", key)
            conn.execute("DELETE FROM customers WHERE id = ?", key)
            tally = [
                ("customers", 1),
                (f"edges.{EdgeType.REFERRED.value}", referrals),
                (f"edges.{EdgeType.INFLUENCES.value}", influences),
            ] + [(f"events.{kind}", n) for kind, n in event_counts]
            conn.executemany(_TALLY, tally)
            return ErasureReport(
                customer_id=customer_id,
                edges_removed=influences + referrals,
                events_removed=sum(n for _, n in event_counts),
            )

        conn = self._connection()
        try:
            conn.execute("PRAGMA secure_delete = ON")
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            report = self._run(work, write=True)
        finally:
            self.links.clear()
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA secure_delete = FAST")
        self._truncate_log(conn)
        return report

    def _truncate_log(self, conn: _Connection) -> None:
        """Best effort: drop the write-ahead log, whose older frames still hold the erased rows.

        Fails quietly while another connection is reading; SQLite then overwrites those frames later.
        """
        try:
            conn.execute("PRAGMA busy_timeout = 0")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")

    def delete_all(self) -> None:
        def work(conn: _Connection) -> None:
            graph_tables = (
                "staged_scores",
                "scores",
                "events",
                "referrals",
                "influences",
                "customers",
                "runs",
                "erasure_tally",
            )
            for table in (*ACCESS_TABLES, *OUTREACH_TABLES, *PROGRAM_TABLES, *graph_tables):
                conn.execute(f"DELETE FROM {table}")  # noqa: S608 - table names are constants

        try:
            self._run(work, write=True)
        finally:
            self.links.clear()

    # --- reads -----------------------------------------------------------------------------------------------
    def _fetch_one(self, sql: str, key: str) -> Row | None:
        """One row by primary key, read outside a write transaction."""
        row: Row | None = self._run(lambda conn: conn.execute(sql, (key,)).fetchone(), write=False, begin=False)
        return row

    def get_customer(self, customer_id: str) -> Customer:
        row = self._fetch_one(_CUSTOMER_SQL, customer_id)
        if row is None:
            raise NotFound(f"no customer {customer_id!r}")
        return _customer_from(row)

    def existing_customer_ids(self, customer_ids: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(customer_ids))
        if not wanted:
            return set()
        payload = json.dumps(wanted)
        rows: list[Row] = self._run(
            lambda conn: conn.execute(
                "SELECT c.id FROM json_each(?) AS j JOIN customers AS c ON c.id = j.value", (payload,)
            ).fetchall(),
            write=False,
            begin=False,
        )
        return {row[0] for row in rows}

    def get_customers(self, customer_ids: Iterable[str]) -> dict[str, Customer]:
        wanted = list(dict.fromkeys(customer_ids))
        if not wanted:
            return {}
        sql = f"SELECT {_CUSTOMER_COLUMNS_OF_C} FROM json_each(?) AS j JOIN customers AS c ON c.id = j.value"  # noqa: S608
        rows: list[Row] = self._run(
            lambda conn: conn.execute(sql, (json.dumps(wanted),)).fetchall(), write=False, begin=False
        )
        return {customer.id: customer for customer in map(_customer_from, rows)}

    def referrals_from(self, customer_id: str) -> list[EdgeRecord]:
        rows: list[Row] = self._run(
            lambda conn: conn.execute(_REFERRALS_FROM_SQL, (customer_id,)).fetchall(), write=False, begin=False
        )
        return [_referral_edge(row) for row in rows]

    def edges_of(self, customer_id: str, edge_type: EdgeType | None = None) -> list[EdgeRecord]:
        types = [t for t in _EDGE_QUERIES if edge_type in (None, t)]

        def work(conn: _Connection) -> list[EdgeRecord]:
            found: list[EdgeRecord] = []
            for t in types:
                sql, convert = _EDGE_QUERIES[t]
                found.extend(convert(row) for row in conn.execute(sql + _EDGES_OF[t], (customer_id,)))
            return found

        return self._run(work, write=False)

    def events_of(self, customer_id: str, *, kind: EventKind | None = None, limit: int = 50) -> list[Event]:
        if limit < 0:
            raise InvalidInput(f"limit must be zero or more, not {limit}")
        params = (customer_id, None if kind is None else kind.value, limit)
        rows: list[Row] = self._run(
            lambda conn: conn.execute(_EVENTS_OF_SQL, params).fetchall(), write=False, begin=False
        )
        return [_event_from(row) for row in rows]

    def get_event(self, event_id: str) -> Event | None:
        row = self._fetch_one(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id = ?", event_id)  # noqa: S608 - constant columns
        return None if row is None else _event_from(row)

    def get_scores(self, customer_id: str) -> CustomerScores | None:
        row = self._fetch_one(_SCORES_SQL, customer_id)
        return None if row is None else _scores_from(row)

    def kit_reads(self, customer_id: str, campaign_id: str, *, purchases: int = 20) -> KitReads:
        if purchases < 0:
            raise InvalidInput(f"purchases must be zero or more, not {purchases}")

        def work(conn: _Connection) -> KitReads:
            row = conn.execute(_CUSTOMER_SQL, (customer_id,)).fetchone()
            if row is None:
                raise NotFound(f"no customer {customer_id!r}")
            scores = conn.execute(_SCORES_SQL, (customer_id,)).fetchone()
            bought = conn.execute(_EVENTS_OF_SQL, (customer_id, EventKind.PURCHASE.value, purchases))
            return KitReads(
                customer=_customer_from(row),
                scores=None if scores is None else _scores_from(scores),
                codes=tuple(codes_in(conn, customer_id, campaign_id)),
                referrals=tuple(map(_referral_edge, conn.execute(_REFERRALS_FROM_SQL, (customer_id,)))),
                purchases=tuple(map(_event_from, bought)),
                share_templates=tuple(templates_in(conn, TemplatePurpose.SHARE)),
            )

        return self._run(work, write=False)

    def get_run(self, run_id: str) -> AnalysisRun:
        row = self._fetch_one(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ?", run_id)  # noqa: S608 - constant columns
        if row is None:
            raise NotFound(f"no analysis run {run_id!r}")
        return _run_from(row)

    def list_runs(self, limit: int = 50) -> list[AnalysisRun]:
        if limit < 0:
            raise InvalidInput(f"limit must be zero or more, not {limit}")
        rows: list[Row] = self._run(
            lambda conn: conn.execute(
                f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY started_at_us DESC, id DESC LIMIT ?",  # noqa: S608
                (limit,),
            ).fetchall(),
            write=False,
            begin=False,
        )
        return [_run_from(row) for row in rows]

    def stats(self) -> GraphStats:
        def work(conn: _Connection) -> GraphStats:
            customers = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
            edges = {
                EdgeType.REFERRED.value: conn.execute("SELECT count(*) FROM referrals").fetchone()[0],
                EdgeType.INFLUENCES.value: conn.execute("SELECT count(*) FROM influences").fetchone()[0],
            }
            events = dict(conn.execute("SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind").fetchall())
            erased = dict(conn.execute("SELECT key, count FROM erasure_tally ORDER BY key").fetchall())
            return GraphStats(customers=customers, edges=edges, events=events, erased=erased)

        return self._run(work, write=False)

    # --- streaming export ------------------------------------------------------------------------------------
    def iter_customers(self, batch_size: int = 10_000) -> Iterator[Customer]:
        sql = f"SELECT {_CUSTOMER_COLUMNS} FROM customers ORDER BY id"  # noqa: S608 - constant columns
        return self._stream([(sql, _customer_from)], batch_size)

    def iter_edges(self, edge_type: EdgeType | None = None, batch_size: int = 50_000) -> Iterator[EdgeRecord]:
        return self._stream([query for t, query in _EDGE_QUERIES.items() if edge_type in (None, t)], batch_size)

    def iter_event_summaries(self) -> Iterator[EventSummary]:
        sql = """
            SELECT customer_id, kind, count(*), total(value), max(at_us) FROM events
            GROUP BY customer_id, kind ORDER BY customer_id, kind
        """
        kinds = {kind.value: kind for kind in EventKind}

        def convert(row: Row) -> EventSummary:
            return EventSummary(row[0], kinds[row[1]], row[2], row[3], _from_us(row[4]))

        return self._stream([(sql, convert)], 10_000)

    def iter_scores(self, batch_size: int = 10_000) -> Iterator[CustomerScores]:
        sql = f"SELECT {_SCORE_COLUMNS} FROM scores ORDER BY customer_id"  # noqa: S608 - constant columns
        return self._stream([(sql, _scores_from)], batch_size)

    def _stream(self, queries: Sequence[tuple[str, Callable[[Row], T]]], batch_size: int) -> Iterator[T]:
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, not {batch_size}")
        if self._closed:
            raise StoreUnavailable(f"the store {self.describe()} has been closed")
        return self._stream_rows(queries, batch_size)

    def _stream_rows(self, queries: Sequence[tuple[str, Callable[[Row], T]]], batch_size: int) -> Iterator[T]:
        """Read on a dedicated connection inside one read transaction: a consistent snapshot, any thread."""
        conn = self._open()
        try:
            self._begin_read(conn)
            for sql, convert in queries:
                cursor = conn.execute(sql)
                cursor.arraysize = batch_size
                while rows := cursor.fetchmany():
                    for row in rows:
                        yield convert(row)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        finally:
            self._rollback(conn)
            conn.close()

    def _begin_read(self, conn: _Connection) -> None:
        deadline = time.monotonic() + self._lock_timeout_s
        delay = 0.005
        while True:
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1").fetchall()
                return
            except sqlite3.Error as exc:
                self._rollback(conn)
                remaining = deadline - time.monotonic()
                if not _is_busy(exc) or remaining <= 0:
                    raise
                time.sleep(min(delay * random.uniform(0.5, 1.0), remaining))
                delay = min(delay * 2, 0.25)
