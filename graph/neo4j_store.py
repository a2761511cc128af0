"""`Neo4jStore`: the production `GraphStore`, on the official Neo4j Python driver.

The graph model (labels, properties, identities) is documented with the queries in `graph.cypher`.

Transactions: every protocol write is one managed write transaction (`session.execute_write`), so it is all or
nothing and the driver retries it on transient errors (deadlocks, leader switches). Large inputs are sent as
several `UNWIND` statements of `_CHUNK` rows inside that one transaction: a single 1M-row parameter would be
slow to pack and hard on the server's heap, while `CALL { ... } IN TRANSACTIONS` would break all-or-nothing.
The statements are pipelined: their results are consumed only at the end, so Python packs the next chunk while
the server is still writing the previous one.

Streaming exports (`iter_*`) read pages of customers in id order (keyset paging on the unique index, one
record per page) inside one explicit read transaction, asking for the next page before yielding the current
one; memory stays at two pages. They cannot use `execute_read`: a managed transaction may be retried, and a
retry would yield rows the caller has already seen. Neo4j reads are read-committed, so a write committed while
an export runs may or may not be seen by it.

Times go in as integer microseconds and come out the same way (see `graph.cypher`): the driver's own
conversion of `datetime` values costs about 100 us each, which would dominate both imports and exports.

Erasure deletes the customer's node, edges and events in one transaction and adds to anonymous
`(:ErasureCount)` nodes; the same transaction deletes their programme data and leaves their rewards, ledger
entries and attributions under the tombstone `ERASED` (`graph.program_cypher.ERASE_PROGRAM`), and their outbox
messages and `customer:<id>` suppressions (`graph.outreach_cypher.ERASE_OUTREACH`). Like SQLite's
write-ahead log, Neo4j's transaction log keeps the deleted values until it is rotated (the bundled server keeps
two log files); the live graph has none of them immediately.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

from neo4j import (
    READ_ACCESS,
    Driver,
    GraphDatabase,
    ManagedTransaction,
    NotificationMinimumSeverity,
    Result,
    RoutingControl,
)
from neo4j.exceptions import (
    AuthError,
    ClientError,
    ConfigurationError,
    DriverError,
    Forbidden,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)

from graph import access_cypher, cypher, outreach_cypher, program_cypher
from graph.errors import AdvocacyError, InvalidInput, NotFound, StoreUnavailable
from graph.factory import redact
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
from graph.neo4j_access import Neo4jAccess
from graph.neo4j_outreach import Neo4jOutreach, _template_from
from graph.neo4j_program import EPOCH, Neo4jProgram, _code_from, from_us, to_us
from graph.outreach import Outreach, TemplatePurpose, customer_key, without_person
from graph.program import FraudVerdict, scrub_text, scrub_verdict
from graph.program_store import ERASED, KitReads
from graph.store import RowWriter

T = TypeVar("T")

_CHUNK: Final = 10_000
"""Rows per `UNWIND` statement inside one write transaction (measured: 5k-20k all do about equally well)."""

_SHOWN_MISSING: Final = 20
_SUMMARY_PAGE = 10_000
"""Customers per page of `iter_event_summaries` (the protocol gives it no batch size)."""
_EPOCH: Final = EPOCH
_KINDS: Final = {kind.value: kind for kind in EventKind}
_SCHEMA_RACES: Final = frozenset(
    {
        "Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists",
        "Neo.ClientError.Schema.ConstraintAlreadyExists",
        "Neo.ClientError.Schema.IndexAlreadyExists",
    }
)


_us = to_us
_from_us = from_us
_SCHEMA: Final = (
    cypher.SCHEMA + program_cypher.PROGRAM_SCHEMA + outreach_cypher.OUTREACH_SCHEMA + access_cypher.ACCESS_SCHEMA
)
_SCHEMA_NAMES: Final = (
    cypher.SCHEMA_NAMES
    + program_cypher.PROGRAM_SCHEMA_NAMES
    + outreach_cypher.OUTREACH_SCHEMA_NAMES
    + access_cypher.ACCESS_SCHEMA_NAMES
)


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} cannot be stored as JSON: {exc}") from exc


def _score_row(s: CustomerScores) -> dict[str, Any]:
    return {
        "customer_id": s.customer_id,
        "run_id": s.run_id,
        "segment": str(s.segment),
        "explanation": s.explanation,
        "community": s.community,
        "scores": {f"{cypher.SCORE_PREFIX}{name}": float(value) for name, value in s.scores.items()},
    }


def _written(result: Result) -> int:
    return int(result.single(strict=True)["written"])


PUBLISH_SLICE: Final = 10_000
"""Customers whose scores one transaction of `Neo4jStore.publish_scores` moves from staging onto them."""


def _run_params(run: AnalysisRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "started_at_us": _us(run.started_at),
        "finished_at_us": _us(run.finished_at),
        "status": run.status,
        "params_json": _json(run.params, f"params of run {run.id}"),
        "timings_json": _json(run.timings, f"timings of run {run.id}"),
        "summary_json": _json(run.summary, f"summary of run {run.id}"),
    }


def _why(exc: BaseException) -> str:
    """The server's message, or the driver's own text (whose `message` is a generic GQL status), on one line."""
    text = exc.message if isinstance(exc, Neo4jError) and exc.message else str(exc)
    lines = [line.strip().rstrip(":") for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def _redacted(url: str) -> str:
    try:
        return redact(url)
    except ValueError:  # not even parseable: show the scheme at most
        return url.partition("://")[0] + "://..."


def _chunks(rows: Sequence[T], size: int = _CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


# --- rows in and out --------------------------------------------------------------------------------------------
def _customer_row(c: Customer) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": c.id,
        "name": c.name,
        "email": c.email,
        "phone": c.phone,
        "locale": c.locale,
        "timezone": c.timezone,
        "attributes_json": _json(c.attributes, f"attributes of customer {c.id}") if c.attributes else None,
        "created_at_us": _us(c.created_at),
    }
    for channel, prop in cypher.CONSENT_PROPERTIES.items():
        row[prop] = c.consent.get(channel)
    return row


def _customer_from(row: list[Any]) -> Customer:
    consent = {channel: row[8 + i] for i, channel in enumerate(cypher.CONSENT_PROPERTIES) if row[8 + i] is not None}
    return Customer.model_validate(
        {
            "id": row[0],
            "name": row[1],
            "email": row[2],
            "phone": row[3],
            "locale": row[4],
            "timezone": row[5],
            "attributes": json.loads(row[6]) if row[6] else {},
            "created_at": _from_us(row[7]),
            "consent": consent,
        }
    )


def _scores_from(row: list[Any]) -> CustomerScores:
    return CustomerScores.model_validate(
        {
            "customer_id": row[0],
            "run_id": row[1],
            "segment": row[2],
            "explanation": row[3],
            "community": row[4],
            "scores": dict(row[5]),
        }
    )


def _run_from(row: list[Any]) -> AnalysisRun:
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


def _edge_converter(edge_type: EdgeType) -> Callable[[list[Any]], list[EdgeRecord]]:
    """Converts a whole page at once: list comprehensions, not generators, because this runs a million times."""
    epoch, micros, record = _EPOCH, timedelta, EdgeRecord

    def convert(rows: list[Any]) -> list[EdgeRecord]:
        return [
            record(source, target, edge_type, label, weight, None if at is None else epoch + micros(0, 0, at))
            for source, edges in rows
            for target, label, weight, at in edges
        ]

    return convert


def _referral(referrer_id: str, row: list[Any]) -> EdgeRecord:
    friend_id, status, at_us = row
    return EdgeRecord(referrer_id, friend_id, EdgeType.REFERRED, status, 1.0, _from_us(at_us))


def _event(
    event_id: str, customer_id: str, kind: str, at_us: int, value: float | None, attributes: str | None
) -> Event:
    return Event(
        id=event_id,
        customer_id=customer_id,
        kind=EventKind(kind),
        at=_from_us(at_us),
        value=value,
        attributes=json.loads(attributes or "{}"),
    )


def _each(convert: Callable[[list[Any]], T]) -> Callable[[list[Any]], list[T]]:
    return lambda rows: [convert(row) for row in rows]


def _summaries_from(rows: list[Any]) -> list[EventSummary]:
    return [
        EventSummary(customer_id, _KINDS[kind], count, float(total), _from_us(last_us))
        for customer_id, summaries in rows
        for kind, count, total, last_us in summaries
    ]


def translate(exc: Exception, where: str, doing: str) -> Exception:
    """The `graph.errors` exception for a driver exception, saying where and why on one line.

    Unreachable, unauthenticated, busy or broken servers are `StoreUnavailable` (callers may retry); data the
    server refuses (constraint violations, values it cannot store) is `InvalidInput`. Anything that is not a
    driver exception is returned unchanged.
    """
    if isinstance(exc, AdvocacyError):
        return exc
    if isinstance(exc, AuthError):
        return StoreUnavailable(f"{where}: authentication failed (check the user and password): {_why(exc)}")
    if isinstance(exc, Forbidden):
        return StoreUnavailable(f"{where}: not allowed to {doing}: {_why(exc)}")
    if isinstance(exc, (ServiceUnavailable, SessionExpired)):
        return StoreUnavailable(
            f"{where} is unavailable ({doing}; is the server running at that address?): {_why(exc)}"
        )
    if isinstance(exc, ClientError):
        if exc.code == "Neo.ClientError.Database.DatabaseNotFound":
            return StoreUnavailable(f"{where}: the database does not exist")
        return InvalidInput(f"{where} refused to {doing}: {_why(exc)}")
    if isinstance(exc, TransientError):
        return StoreUnavailable(f"{where} is busy ({doing}), try again: {_why(exc)}")
    if isinstance(exc, (Neo4jError, DriverError, OSError)):
        return StoreUnavailable(f"{where} failed to {doing}: {_why(exc)}")
    return exc


def _scrub_mentions(tx: ManagedTransaction, customer_id: str) -> None:
    """Rewrite fraud details and review notes of other people's conversions that name the erased person."""
    rows = []
    for record in tx.run(program_cypher.CONVERSIONS_MENTIONING, id=customer_id):
        verdict_json, note = record["verdict_json"], record["review_note"]
        if verdict_json is not None:
            verdict = scrub_verdict(FraudVerdict.model_validate_json(verdict_json), customer_id, ERASED)
            verdict_json = verdict.model_dump_json()
        if note is not None:
            note = scrub_text(note, customer_id, ERASED)
        notes = [scrub_text(line, customer_id, ERASED) for line in record["notes"] or []]
        rows.append({"order_id": record["order_id"], "verdict_json": verdict_json, "review_note": note, "notes": notes})
    if rows:
        tx.run(program_cypher.REWRITE_CONVERSION_TEXT, rows=rows).consume()


class Neo4jStore(Neo4jAccess, Neo4jOutreach, Neo4jProgram, RowWriter):
    """The customer graph, the referral programme and its outreach in Neo4j 5; see the module docstring for
    transactions, `graph.cypher`, `graph.program_cypher` and `graph.outreach_cypher` for the model.

    `url` is `bolt://` or `neo4j://` (with `+s` / `+ssc` for TLS) and may carry `user:password@`; without
    credentials (and no `auth`) the driver connects without authentication.
    """

    local_reads = False

    def __init__(
        self,
        url: str,
        *,
        database: str = "neo4j",
        auth: tuple[str, str] | None = None,
        connection_timeout_s: float = 3.0,
        retry_time_s: float = 10.0,
    ) -> None:
        self._url = url
        self._database = database
        self._closed = False
        self.links = LinkCache()
        bad_url = f"store URL {_redacted(url)!r} is not a usable Neo4j URL"
        try:
            parts = urlsplit(url)
            if parts.username is not None:
                auth = auth or (unquote(parts.username), unquote(parts.password or ""))
                parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
            if parts.path not in ("", "/"):
                raise ValueError("it has a path; the database is chosen with `database=`, not in the URL")
            self._driver: Driver = GraphDatabase.driver(
                parts.geturl(),
                auth=auth,
                connection_timeout=connection_timeout_s,
                connection_acquisition_timeout=connection_timeout_s + 2.0,
                max_transaction_retry_time=retry_time_s,
                user_agent="advocacy-network",
                # Warnings such as "property key not in the database" are normal for an empty graph.
                notifications_min_severity=NotificationMinimumSeverity.OFF,
            )
        except (ConfigurationError, ValueError) as exc:
            raise InvalidInput(f"{bad_url}: {_why(exc)}") from exc
        try:
            with self._errors("connect"):
                try:
                    self._driver.verify_connectivity()
                except ValueError as exc:  # e.g. "Cannot resolve address host:notaport"
                    raise InvalidInput(f"{bad_url}: {_why(exc)}") from exc
                self._set_up()
        except BaseException:
            self._driver.close()
            raise

    # --- plumbing ----------------------------------------------------------------------------------------------
    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Raise driver exceptions as `graph.errors` (see `translate`)."""
        try:
            yield
        except Exception as exc:
            translated = translate(exc, f"Neo4j at {_redacted(self._url)} (database {self._database!r})", doing)
            if translated is exc:
                raise
            raise translated from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"the store {self.describe()} has been closed")

    def _write(self, doing: str, work: Callable[[ManagedTransaction], T]) -> T:
        self._check_open()
        with self._errors(doing), self._driver.session(database=self._database) as session:
            try:
                return session.execute_write(work)
            except (TypeError, OverflowError) as exc:  # the driver cannot pack a value (rows built unvalidated)
                raise InvalidInput(f"{self.describe()} cannot store a value ({doing}): {exc}") from exc

    def _read(self, doing: str, work: Callable[[ManagedTransaction], T]) -> T:
        self._check_open()
        with self._errors(doing), self._driver.session(database=self._database) as session:
            return session.execute_read(work)

    def _set_up(self) -> None:
        """Create constraints and indexes (idempotent), then wait until they are online.

        A store is opened often (each CLI command, each test), so the usual case costs one round trip.
        """
        online = self._driver.execute_query(
            cypher.ONLINE_INDEXES, {"names": list(_SCHEMA_NAMES)}, database_=self._database
        ).records
        if len(online) == len(_SCHEMA_NAMES):
            return
        for statement in _SCHEMA:
            try:
                self._driver.execute_query(statement, database_=self._database)
            except ClientError as exc:  # another process created the same rule at the same moment
                if exc.code not in _SCHEMA_RACES:
                    raise
        for name in _SCHEMA_NAMES:
            self._driver.execute_query(cypher.AWAIT_INDEX, {"name": name, "timeout_s": 300}, database_=self._database)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def close(self) -> None:
        self._closed = True
        self._driver.close()

    def ping(self) -> None:
        self._check_open()
        with self._errors("answer a ping"):
            self._driver.execute_query(cypher.PING, database_=self._database, routing_=RoutingControl.READ)

    def describe(self) -> str:
        return f"{_redacted(self._url)} (database {self._database!r})"

    @property
    def driver(self) -> Driver:
        """The driver this store opened and set up, for whole-database work such as `graph.backup`'s dump."""
        return self._driver

    @property
    def database(self) -> str:
        return self._database

    # --- writes --------------------------------------------------------------------------------------------------
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
        influence_rows = [[e.source_id, e.target_id, str(e.kind), float(e.weight), _us(e.at)] for e in influences]
        referral_rows = [
            [r.referrer_id, r.friend_id, r.code, str(r.status), _us(r.at), _us(r.status_at)] for r in referrals
        ]
        # The first of several events with one id wins, as it would had they arrived one by one.
        first_events: dict[str, Event] = {}
        for event in events:
            first_events.setdefault(event.id, event)
        event_rows = [
            [
                e.customer_id,
                e.id,
                str(e.kind),
                _us(e.at),
                e.value,
                _json(e.attributes, f"attributes of event {e.id}") if e.attributes else None,
            ]
            for e in first_events.values()
        ]
        referenced = {e.source_id for e in influences} | {e.target_id for e in influences}
        referenced |= {r.referrer_id for r in referrals} | {r.friend_id for r in referrals}
        referenced |= {e.customer_id for e in events}
        referenced -= {c.id for c in customers}
        wanted = sorted(referenced)

        def work(tx: ManagedTransaction) -> None:
            missing = [
                rec["id"] for ids in _chunks(wanted, 50_000) for rec in tx.run(cypher.MISSING_CUSTOMERS, ids=ids)
            ]
            if missing:
                raise self._missing(missing)
            pending: list[Result] = []
            for query, rows in (
                (cypher.MERGE_CUSTOMERS, customer_rows),
                (cypher.MERGE_INFLUENCES, influence_rows),
                (cypher.MERGE_REFERRALS, referral_rows),
                (cypher.CREATE_EVENTS, event_rows),
            ):
                pending.extend(tx.run(query, rows=chunk) for chunk in _chunks(rows))
            for result in pending:
                result.consume()

        self._write("write the batch", work)

    @staticmethod
    def _missing(missing: list[str]) -> InvalidInput:
        shown = ", ".join(missing[:_SHOWN_MISSING])
        more = f" (and {len(missing) - _SHOWN_MISSING} more)" if len(missing) > _SHOWN_MISSING else ""
        return InvalidInput(
            f"{len(missing)} referenced customer id(s) are neither stored nor in this batch, so nothing was "
            f"written: {shown}{more}"
        )

    def write_scores(self, scores: Sequence[CustomerScores]) -> int:
        rows = [_score_row(s) for s in scores]
        if not rows:
            return 0

        def work(tx: ManagedTransaction) -> int:
            return sum(_written(tx.run(cypher.WRITE_SCORES, rows=chunk)) for chunk in _chunks(rows))

        return self._write("write scores", work)

    def stage_scores(self, scores: Sequence[CustomerScores]) -> int:
        last = {(s.customer_id, s.run_id): s for s in scores}  # the last of one customer's rows in a run wins
        if not last:
            return 0
        keys = [list(key) for key in last]
        rows = [_score_row(s) for s in last.values()]

        def work(tx: ManagedTransaction) -> int:
            for chunk in _chunks(keys):  # every delete before any create: see cypher.STAGE_SCORES
                tx.run(cypher.UNSTAGE_SCORES, keys=chunk).consume()
            return sum(_written(tx.run(cypher.STAGE_SCORES, rows=chunk)) for chunk in _chunks(rows))

        return self._write("stage scores", work)

    def publish_scores(self, run: AnalysisRun) -> int:
        """In slices of `PUBLISH_SLICE` customers, one transaction each, behind a marker holding the final record:
        one transaction for every customer needs some 5 KiB of transaction memory per customer (150,000 customers
        overran the 819 MiB a 2 GiB heap allows). While it runs a reader may see both runs' scores; a publish
        cut off half way is finished by calling this again, or by `unfinished_publications` and the next run."""
        params = _run_params(run)  # refuses a record that cannot be stored before anything moves
        run_json = run.model_dump_json()
        self._write(
            "publish scores", lambda tx: tx.run(cypher.MARK_PUBLISHING, run_id=run.id, run_json=run_json).consume()
        )

        def move_slice(tx: ManagedTransaction) -> tuple[int, int]:
            record = tx.run(cypher.PUBLISH_SLICE, run_id=run.id, limit=PUBLISH_SLICE).single(strict=True)
            return int(record["moved"]), int(record["published"])

        published = 0
        while True:
            moved, count = self._write("publish scores", move_slice)
            published += count
            if moved < PUBLISH_SLICE:
                break

        def finish(tx: ManagedTransaction) -> None:
            tx.run(cypher.MERGE_RUN, params).consume()
            tx.run(cypher.FINISH_PUBLISHING, run_id=run.id).consume()

        self._write("publish scores", finish)
        return published

    def unfinished_publications(self) -> list[AnalysisRun]:
        found = self._read(
            "list unfinished publications",
            lambda tx: [str(record["json"]) for record in tx.run(cypher.UNFINISHED_PUBLISHING)],
        )
        return [AnalysisRun.model_validate_json(text) for text in found]

    def staged_score_runs(self) -> list[str]:
        return self._read(
            "list staged runs", lambda tx: [str(record["run_id"]) for record in tx.run(cypher.STAGED_RUNS)]
        )

    def discard_staged_scores(self, run_ids: Collection[str]) -> int:
        if not run_ids:
            return 0
        ids = sorted(run_ids)
        return self._write(
            "discard staged scores",
            lambda tx: int(tx.run(cypher.DISCARD_STAGED, run_ids=ids).single(strict=True)["discarded"]),
        )

    def save_run(self, run: AnalysisRun) -> None:
        params = _run_params(run)
        self._write("save the run", lambda tx: tx.run(cypher.MERGE_RUN, params).consume())

    def erase_customer(self, customer_id: str) -> ErasureReport:
        def work(tx: ManagedTransaction) -> ErasureReport:
            found = tx.run(cypher.ERASURE_FOOTPRINT, id=customer_id).single()
            if found is None:
                raise NotFound(f"no customer {customer_id!r}")
            referred, influences = int(found["referred"]), int(found["influences"])
            events: dict[str, int] = {}
            for kind in found["event_kinds"]:
                events[kind] = events.get(kind, 0) + 1
            tx.run(program_cypher.ERASE_PROGRAM, id=customer_id, erased=ERASED).consume()
            tx.run(outreach_cypher.ERASE_OUTREACH, id=customer_id, person_key=customer_key(customer_id)).consume()
            for record in list(tx.run(outreach_cypher.OUTREACH_MENTIONING, id=customer_id)):
                plan = Outreach.model_validate_json(record["json"])
                scrubbed = without_person(plan, customer_id, ERASED)
                if scrubbed != plan:
                    tx.run(
                        outreach_cypher.SET_OUTREACH_JSON, id=record["id"], json=scrubbed.model_dump_json()
                    ).consume()
            _scrub_mentions(tx, customer_id)
            tx.run(cypher.ERASE_STAGED_SCORES, id=customer_id).consume()
            tx.run(cypher.ERASE_CUSTOMER, id=customer_id).consume()
            tally = [
                {"key": "customers", "n": 1},
                {"key": f"edges.{EdgeType.REFERRED.value}", "n": referred},
                {"key": f"edges.{EdgeType.INFLUENCES.value}", "n": influences},
            ] + [{"key": f"events.{kind}", "n": n} for kind, n in sorted(events.items())]
            tx.run(cypher.TALLY_ERASURE, rows=tally).consume()
            return ErasureReport(
                customer_id=customer_id, edges_removed=referred + influences, events_removed=sum(events.values())
            )

        try:
            return self._write("erase the customer", work)
        finally:
            self.links.clear()

    def delete_all(self) -> None:
        """Deletes in slices of 10,000 nodes (one transaction each): unlike the other writes, not all-or-nothing."""
        self._check_open()
        with self._errors("delete everything"), self._driver.session(database=self._database) as session:
            session.run(cypher.DELETE_ALL).consume()
            session.run(program_cypher.DELETE_PROGRAM).consume()
            session.run(outreach_cypher.DELETE_OUTREACH).consume()
            session.run(access_cypher.DELETE_ACCESS).consume()
        self.links.clear()

    # --- reads -----------------------------------------------------------------------------------------------------
    def get_customer(self, customer_id: str) -> Customer:
        def work(tx: ManagedTransaction) -> list[Any] | None:
            record = tx.run(cypher.GET_CUSTOMER, id=customer_id).single()
            return None if record is None else list(record["row"])

        row = self._read("read a customer", work)
        if row is None:
            raise NotFound(f"no customer {customer_id!r}")
        return _customer_from(row)

    def existing_customer_ids(self, customer_ids: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(customer_ids))
        if not wanted:
            return set()

        def work(tx: ManagedTransaction) -> set[str]:
            return {rec["id"] for ids in _chunks(wanted, 50_000) for rec in tx.run(cypher.EXISTING_CUSTOMERS, ids=ids)}

        return self._read("look up customers", work)

    def get_customers(self, customer_ids: Iterable[str]) -> dict[str, Customer]:
        wanted = list(dict.fromkeys(customer_ids))
        if not wanted:
            return {}

        def work(tx: ManagedTransaction) -> list[list[Any]]:
            return [
                list(rec["row"]) for ids in _chunks(wanted, 10_000) for rec in tx.run(cypher.GET_CUSTOMERS, ids=ids)
            ]

        return {customer.id: customer for customer in map(_customer_from, self._read("read customers", work))}

    def referrals_from(self, customer_id: str) -> list[EdgeRecord]:
        def work(tx: ManagedTransaction) -> list[EdgeRecord]:
            return [_referral(customer_id, record["row"]) for record in tx.run(cypher.REFERRALS_FROM, id=customer_id)]

        return self._read("read a customer's referrals", work)

    def edges_of(self, customer_id: str, edge_type: EdgeType | None = None) -> list[EdgeRecord]:
        types = [t.value for t in EdgeType if edge_type in (None, t)]

        def work(tx: ManagedTransaction) -> list[EdgeRecord]:
            rows = (record["row"] for record in tx.run(cypher.EDGES_OF, id=customer_id, types=types))
            return [
                EdgeRecord(source, target, EdgeType(kind), label, float(weight), _from_us(at))
                for source, target, kind, label, weight, at in rows
            ]

        return self._read("read a customer's edges", work)

    def events_of(self, customer_id: str, *, kind: EventKind | None = None, limit: int = 50) -> list[Event]:
        if limit < 0:
            raise InvalidInput(f"limit must be zero or more, not {limit}")

        def work(tx: ManagedTransaction) -> list[Event]:
            params = {"id": customer_id, "kind": None if kind is None else kind.value, "limit": limit}
            return [
                _event(event_id, customer_id, event_kind, at, value, attributes)
                for event_id, event_kind, at, value, attributes in (r["row"] for r in tx.run(cypher.EVENTS_OF, params))
            ]

        return self._read("read a customer's events", work)

    def get_event(self, event_id: str) -> Event | None:
        def work(tx: ManagedTransaction) -> list[Any] | None:
            record = tx.run(cypher.GET_EVENT, id=event_id).single()
            return None if record is None else list(record["row"])

        row = self._read("read an event", work)
        return None if row is None else _event(event_id, *row)

    def get_scores(self, customer_id: str) -> CustomerScores | None:
        def work(tx: ManagedTransaction) -> list[Any] | None:
            record = tx.run(cypher.GET_SCORES, id=customer_id).single()
            return None if record is None else list(record["row"])

        row = self._read("read scores", work)
        return None if row is None else _scores_from(row)

    def kit_reads(self, customer_id: str, campaign_id: str, *, purchases: int = 20) -> KitReads:
        if purchases < 0:
            raise InvalidInput(f"purchases must be zero or more, not {purchases}")
        params = {
            "id": customer_id,
            "campaign_id": campaign_id,
            "kind": EventKind.PURCHASE.value,
            "limit": purchases,
            "purpose": TemplatePurpose.SHARE.value,
        }

        def work(tx: ManagedTransaction) -> dict[str, Any] | None:
            record = tx.run(program_cypher.KIT_READS, params).single()
            return None if record is None else record.data()

        found = self._read("read a customer's kit", work)
        if found is None:
            raise NotFound(f"no customer {customer_id!r}")
        return KitReads(
            customer=_customer_from(found["customer"]),
            scores=None if found["scores"] is None else _scores_from(found["scores"]),
            codes=tuple(map(_code_from, found["codes"])),
            referrals=tuple(_referral(customer_id, row) for row in found["referrals"]),
            purchases=tuple(_event(event_id, customer_id, *rest) for event_id, *rest in found["purchases"]),
            share_templates=tuple(map(_template_from, found["templates"])),
        )

    def get_run(self, run_id: str) -> AnalysisRun:
        def work(tx: ManagedTransaction) -> list[Any] | None:
            record = tx.run(cypher.GET_RUN, id=run_id).single()
            return None if record is None else list(record["row"])

        row = self._read("read the run", work)
        if row is None:
            raise NotFound(f"no analysis run {run_id!r}")
        return _run_from(row)

    def list_runs(self, limit: int = 50) -> list[AnalysisRun]:
        if limit < 0:
            raise InvalidInput(f"limit must be zero or more, not {limit}")

        def work(tx: ManagedTransaction) -> list[list[Any]]:
            return [list(rec["row"]) for rec in tx.run(cypher.LIST_RUNS, limit=limit)]

        return [_run_from(row) for row in self._read("list runs", work)]

    def stats(self) -> GraphStats:
        def work(tx: ManagedTransaction) -> GraphStats:
            customers = tx.run(cypher.COUNT_CUSTOMERS).single(strict=True)["n"]
            edges = {t.value: int(tx.run(q).single(strict=True)["n"]) for t, q in cypher.COUNT_EDGES.items()}
            events = {rec["kind"]: int(rec["n"]) for rec in tx.run(cypher.COUNT_EVENTS_BY_KIND)}
            erased = {rec["key"]: int(rec["n"]) for rec in tx.run(cypher.ERASURE_COUNTS)}
            return GraphStats(customers=customers, edges=edges, events=events, erased=erased)

        return self._read("count the graph", work)

    # --- streaming export ------------------------------------------------------------------------------------------
    def iter_customers(self, batch_size: int = 10_000) -> Iterator[Customer]:
        return self._stream([(cypher.ITER_CUSTOMERS, _each(_customer_from))], batch_size)

    def iter_edges(self, edge_type: EdgeType | None = None, batch_size: int = 50_000) -> Iterator[EdgeRecord]:
        types = list(EdgeType) if edge_type is None else [EdgeType(edge_type)]
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, not {batch_size}")
        customers_per_page = max(1, batch_size // cypher.EDGES_PER_CUSTOMER)
        return self._stream([(cypher.EXPORT_EDGES[t], _edge_converter(t)) for t in types], customers_per_page)

    def iter_event_summaries(self) -> Iterator[EventSummary]:
        return self._stream([(cypher.EVENT_SUMMARIES, _summaries_from)], _SUMMARY_PAGE)

    def iter_scores(self, batch_size: int = 10_000) -> Iterator[CustomerScores]:
        return self._stream([(cypher.ITER_SCORES, _each(_scores_from))], batch_size)

    def _stream(self, queries: Sequence[tuple[str, Callable[[list[Any]], list[T]]]], batch_size: int) -> Iterator[T]:
        """Check arguments now, so mistakes surface at the call rather than at the first `next()`."""
        if batch_size < 1:
            raise InvalidInput(f"batch_size must be at least 1, not {batch_size}")
        self._check_open()
        return self._stream_rows(queries, batch_size)

    def _stream_rows(
        self, queries: Sequence[tuple[str, Callable[[list[Any]], list[T]]]], page_size: int
    ) -> Iterator[T]:
        """Read page after page (see `graph.cypher._page`) in one transaction.

        The next page is asked for before this one is handed out, so the server reads it while the caller works.
        """
        with (
            self._errors("export"),
            self._driver.session(database=self._database, default_access_mode=READ_ACCESS) as session,
            session.begin_transaction() as tx,
        ):
            for query, convert in queries:
                result = tx.run(query, after="", limit=page_size)
                while True:
                    page = result.single(strict=True)
                    last, rows = page["last"], page["rows"]
                    if last is None:
                        break
                    result = tx.run(query, after=last, limit=page_size)
                    yield from convert(rows)
