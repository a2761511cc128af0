"""What only Neo4j can get wrong: connecting, schema, big transactions, Cypher injection, the graph marketers see.

The shared behaviour of every store is in `tests/contract/`; these tests need the real server
(`bash scripts/neo4j-up.sh`, or `ADVOCACY_TEST_NEO4J_URL`).
"""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from neo4j import Driver
from neo4j.exceptions import AuthError, ConstraintError, ServiceUnavailable, TransientError

from engine.analysis import finish_publications
from graph import cypher, neo4j_store
from graph.errors import InvalidInput, NotFound, StoreUnavailable
from graph.model import Customer, Event, EventKind, GraphBatch, Influence, InfluenceKind
from graph.neo4j_store import Neo4jStore, translate
from tests.factories import BASE_TIME, make_customer, make_event, make_influence, make_run, make_scores
from tests.neo4j_support import NEO4J_URL, fresh_neo4j, open_neo4j, query, raw_driver

pytestmark = pytest.mark.neo4j

INJECTION = "x'}) DETACH DELETE n //"


@pytest.fixture
def store() -> Iterator[Neo4jStore]:
    with fresh_neo4j() as opened:
        yield opened


@pytest.fixture
def driver() -> Iterator[Driver]:
    with raw_driver() as raw:
        yield raw


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- connecting -----------------------------------------------------------------------------------------------
def test_opening_a_closed_port_fails_at_once_naming_the_url_without_its_password() -> None:
    url = f"bolt://neo4j:s3cret-pw@127.0.0.1:{_free_port()}"
    started = time.monotonic()

    with pytest.raises(StoreUnavailable) as caught:
        Neo4jStore(url)

    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert f"bolt://neo4j:***@127.0.0.1:{url.rsplit(':', 1)[1]}" in message
    assert "s3cret-pw" not in message
    assert "Connection refused" in message
    assert "\n" not in message


@pytest.mark.parametrize("scheme", ["bolt", "neo4j"])
def test_opening_a_server_that_never_answers_gives_up_within_seconds(scheme: str) -> None:
    with socket.socket() as silent:  # accepts TCP connections, never speaks Bolt
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        started = time.monotonic()

        with pytest.raises(StoreUnavailable, match=f"{scheme}://127.0.0.1:{port}"):
            Neo4jStore(f"{scheme}://127.0.0.1:{port}", connection_timeout_s=1.0)

        assert time.monotonic() - started < 6


def test_a_database_that_does_not_exist_is_reported_as_such() -> None:
    with pytest.raises(StoreUnavailable, match="database does not exist"):
        Neo4jStore(NEO4J_URL, database="no-such-db")


@pytest.mark.parametrize(
    "url", ["bolt://127.0.0.1:7687/neo4j", "bolt://127.0.0.1:notaport", "bolt://u:pw@[::1:7687", "neo4j+x://h:1"]
)
def test_a_url_neo4j_cannot_use_is_invalid_input(url: str) -> None:
    with pytest.raises(InvalidInput, match="not a usable Neo4j URL") as caught:
        Neo4jStore(url)

    assert ":pw@" not in str(caught.value)


def test_driver_errors_become_store_errors() -> None:
    where = "Neo4j at bolt://u:***@db:7687"

    def hydrate(code: str, message: str) -> Exception:
        from neo4j.exceptions import Neo4jError

        with pytest.warns(DeprecationWarning, match="hydrate"):
            return Neo4jError.hydrate(message=message, code=code)

    auth = hydrate("Neo.ClientError.Security.Unauthorized", "The client is unauthorized")
    constraint = hydrate("Neo.ClientError.Schema.ConstraintValidationFailed", "already exists")
    transient = hydrate("Neo.TransientError.Transaction.DeadlockDetected", "deadlock")
    assert isinstance(auth, AuthError)
    assert isinstance(constraint, ConstraintError)
    assert isinstance(transient, TransientError)

    assert isinstance(translate(auth, where, "connect"), StoreUnavailable)
    assert "authentication failed" in str(translate(auth, where, "connect"))
    assert isinstance(translate(constraint, where, "write"), InvalidInput)
    assert isinstance(translate(transient, where, "write"), StoreUnavailable)
    gone = translate(ServiceUnavailable("Connection refused"), where, "read")  # type: ignore[no-untyped-call]
    assert isinstance(gone, StoreUnavailable)
    assert str(gone).startswith(where)
    bug = KeyError("mine")
    assert translate(bug, where, "read") is bug


def test_a_closed_store_refuses_work_clearly() -> None:
    opened = open_neo4j()
    opened.close()

    with pytest.raises(StoreUnavailable, match="has been closed"):
        opened.ping()
    with pytest.raises(StoreUnavailable, match="has been closed"):
        opened.iter_edges()


# --- schema -----------------------------------------------------------------------------------------------------
def test_constraints_exist_after_open_and_reopening_changes_nothing(driver: Driver) -> None:
    open_neo4j().close()
    before = query(driver, cypher.SHOW_CONSTRAINTS)

    for _ in range(2):
        open_neo4j().close()

    after = query(driver, cypher.SHOW_CONSTRAINTS)
    assert sorted(map(str, after)) == sorted(map(str, before))
    unique = {(tuple(row["labelsOrTypes"]), tuple(row["properties"])) for row in after}
    for label, prop in [("Customer", "id"), ("Event", "id"), ("AnalysisRun", "id"), ("ErasureCount", "key")]:
        assert ((label,), (prop,)) in unique
    online = query(driver, cypher.ONLINE_INDEXES, names=list(cypher.SCHEMA_NAMES))
    assert sorted(row["name"] for row in online) == sorted(cypher.SCHEMA_NAMES)


def test_the_unique_constraint_is_enforced_by_the_server(store: Neo4jStore, driver: Driver) -> None:
    store.upsert_customers([make_customer(id="only-once")])

    with pytest.raises(ConstraintError):
        query(driver, "CREATE (:Customer {id: 'only-once'})")


# --- big transactions -------------------------------------------------------------------------------------------
def _ring(n_customers: int, n_edges: int) -> tuple[list[Customer], list[Influence]]:
    customers = [make_customer(id=f"ring-{i:05d}") for i in range(n_customers)]
    edges = [  # distinct pairs while n_edges < n_customers**2: offset 1 + i // n never reaches n
        Influence(
            source_id=customers[i % n_customers].id,
            target_id=customers[(i + 1 + i // n_customers) % n_customers].id,
            kind=InfluenceKind.FOLLOWS,
            weight=0.5,
        )
        for i in range(n_edges)
    ]
    return customers, edges


def test_twenty_thousand_edges_go_in_as_one_call(store: Neo4jStore) -> None:
    customers, edges = _ring(2_000, 20_000)
    store.upsert_customers(customers)

    assert store.add_influences(edges) == 20_000

    assert store.stats().edges["INFLUENCES"] == 20_000
    assert sum(1 for _ in store.iter_edges(batch_size=1_000)) == 20_000


def test_a_value_the_server_refuses_in_the_last_chunk_undoes_the_whole_batch(store: Neo4jStore) -> None:
    customers, edges = _ring(2_000, 25_000)  # three UNWIND statements in one transaction
    store.upsert_customers(customers[:1])
    not_a_property: Any = {"x": 1}  # Neo4j stores no maps as property values; model_construct skips validation
    poisoned = Event.model_construct(
        id="bad", customer_id=customers[-1].id, kind=EventKind.PURCHASE, at=BASE_TIME, value=not_a_property
    )
    batch = GraphBatch.model_construct(customers=customers, influences=edges, referrals=[], events=[poisoned])

    with pytest.raises(InvalidInput):
        store.write_batch(batch)

    stats = store.stats()
    assert (stats.customers, stats.edges["INFLUENCES"], stats.events) == (1, 0, {})


def test_a_missing_customer_anywhere_in_a_large_batch_writes_nothing(store: Neo4jStore) -> None:
    customers, edges = _ring(2_000, 20_000)
    edges.append(Influence(source_id=customers[0].id, target_id="nobody-9"))

    with pytest.raises(InvalidInput, match="nobody-9"):
        store.write_batch(GraphBatch(customers=customers, influences=edges))

    assert store.stats().customers == 0


# --- injection ----------------------------------------------------------------------------------------------------
def test_injection_looking_text_is_stored_verbatim_and_deletes_nothing(store: Neo4jStore, driver: Driver) -> None:
    victim, other = make_customer(id="quote-1", name=INJECTION), make_customer(id="quote-2")
    store.write_batch(
        GraphBatch(
            customers=[victim, other],
            influences=[make_influence(victim, other)],
            events=[make_event(victim, id=INJECTION, attributes={"note": INJECTION})],
        )
    )
    store.write_scores([make_scores(victim, scores={INJECTION: 1.5})])

    assert store.get_customer("quote-1").name == INJECTION
    assert store.get_scores("quote-1").scores == {INJECTION: 1.5}  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.get_customer(INJECTION)
    with pytest.raises(NotFound):
        store.erase_customer(INJECTION)
    assert store.existing_customer_ids([INJECTION, "quote-1"]) == {"quote-1"}
    assert store.add_events([make_event(victim, id=INJECTION, kind=EventKind.REFUND)]) == 1  # same id: kept as is

    stats = store.stats()
    assert (stats.customers, stats.edges["INFLUENCES"], stats.events) == (2, 1, {"purchase": 1})
    assert query(driver, "MATCH (e:Event) RETURN e.id AS id, e.attributes_json AS a") == [
        {"id": INJECTION, "a": '{"note":"x\'}) DETACH DELETE n //"}'}
    ]


# --- the graph as marketers query it --------------------------------------------------------------------------------
def test_scores_and_segments_sit_on_the_customer_node_for_cypher(store: Neo4jStore, driver: Driver) -> None:
    ann, ben = make_customer(id="ann"), make_customer(id="ben")
    store.upsert_customers([ann, ben])
    store.write_scores([make_scores(ann, segment="influencer", scores={"pagerank": 0.9, "reach": 3.0}, community=7)])
    store.write_scores([make_scores(ann, segment="advocate", scores={"pagerank": 0.4}, community=2)])

    rows = query(
        driver,
        "MATCH (c:Customer) WHERE c.segment = 'advocate' "
        "RETURN c.id AS id, c.score_pagerank AS pagerank, c.score_reach AS reach, c.community AS community",
    )
    assert rows == [{"id": "ann", "pagerank": 0.4, "reach": None, "community": 2}]
    store.upsert_customers([ann.model_copy(update={"name": "Ann Renamed"})])
    assert store.get_scores("ann") is not None, "updating a customer's details keeps their scores"


def test_events_hang_off_customers_and_are_not_counted_as_edges(store: Neo4jStore, driver: Driver) -> None:
    ann, ben = make_customer(id="ann"), make_customer(id="ben")
    store.write_batch(
        GraphBatch(customers=[ann, ben], influences=[make_influence(ann, ben)], events=[make_event(ann, id="o-1")])
    )

    rows = query(driver, "MATCH (c:Customer)-[:PERFORMED]->(e:Event) RETURN c.id AS c, e.id AS e, e.kind AS kind")
    assert rows == [{"c": "ann", "e": "o-1", "kind": "purchase"}]
    assert store.stats().edges == {"REFERRED": 0, "INFLUENCES": 1}


def test_times_are_neo4j_datetimes_in_utc(store: Neo4jStore, driver: Driver) -> None:
    ann = make_customer(id="ann")
    store.upsert_customers([ann])

    rows = query(driver, "MATCH (c:Customer {id: 'ann'}) RETURN c.created_at AS at")
    assert rows[0]["at"].to_native() == ann.created_at
    assert rows[0]["at"].utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    "at",
    [
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),  # Neo4j's epochSeconds rounds this towards zero
        datetime(1969, 12, 31, 23, 59, 59, 998_500, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2024, 3, 31, 2, 30, 0, 1, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    ],
)
def test_times_far_from_now_and_before_1970_come_back_to_the_microsecond(store: Neo4jStore, at: datetime) -> None:
    ann, ben = make_customer(id="ann", created_at=at), make_customer(id="ben")
    store.write_batch(
        GraphBatch(
            customers=[ann, ben],
            influences=[make_influence(ann, ben, at=at)],
            events=[make_event(ann, at=at)],
        )
    )

    assert store.get_customer("ann").created_at == at
    assert [e.at for e in store.iter_edges()] == [at]
    assert [s.last_at for s in store.iter_event_summaries()] == [at]


def test_exports_page_through_customers_in_id_order_whatever_the_page_size(
    store: Neo4jStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = ["b", "B", "a-1", "a", "a.b", "0", "Z9", "c@x", "c+1", "c:2"]
    customers = [make_customer(id=cid, email=None) for cid in ids]
    chain = [make_influence(a, b) for a, b in itertools.pairwise(customers)]
    events = [make_event(c, kind=kind) for c in customers[::2] for kind in (EventKind.PURCHASE, EventKind.IDEA)]
    store.write_batch(GraphBatch(customers=customers, influences=chain, events=events))
    store.write_scores([make_scores(c) for c in customers[1::3]])
    monkeypatch.setattr(neo4j_store, "_SUMMARY_PAGE", 2)

    for size in (1, 2, 3, 100):
        assert [c.id for c in store.iter_customers(batch_size=size)] == sorted(ids)
        assert [s.customer_id for s in store.iter_scores(batch_size=size)] == sorted(ids[1::3])
        edges = [(e.source, e.target) for e in store.iter_edges(batch_size=size)]
        assert sorted(edges) == sorted((a.id, b.id) for a, b in itertools.pairwise(customers))
    summaries = [(s.customer_id, s.kind.value, s.count) for s in store.iter_event_summaries()]
    assert summaries == [(cid, kind, 1) for cid in sorted(ids[::2]) for kind in ("idea", "purchase")]


def test_an_abandoned_export_releases_its_connection(store: Neo4jStore) -> None:
    customers, edges = _ring(200, 2_000)
    store.write_batch(GraphBatch(customers=customers, influences=edges))

    for _ in range(120):  # more than the driver's pool of 100 connections
        stream = store.iter_edges(batch_size=10)
        next(stream)
        stream.close()  # type: ignore[attr-defined]

    store.ping()
    assert store.add_influences(edges[:10]) == 10


# --- publishing staged scores in slices ------------------------------------------------------------------------
def test_a_publish_cut_off_between_slices_is_listed_and_finished_by_the_next_run(
    store: Neo4jStore, driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = [f"c{i}" for i in range(7)]
    store.upsert_customers([make_customer(id=cid) for cid in ids])
    store.write_scores([make_scores(cid, run_id="run-1") for cid in ids])
    store.stage_scores([make_scores(cid, run_id="run-2", scores={"reach": 2.0}, community=None) for cid in ids])
    final = make_run(id="run-2", status="done")
    monkeypatch.setattr(neo4j_store, "PUBLISH_SLICE", 3)
    writes = {"n": 0}
    original = store._write

    def cut_after_two_slices(doing: str, work: Any) -> Any:
        writes["n"] += 1
        if writes["n"] == 4:  # the marker, two slices, then the process is gone
            raise StoreUnavailable("connection lost")
        return original(doing, work)

    monkeypatch.setattr(store, "_write", cut_after_two_slices)
    with pytest.raises(StoreUnavailable):
        store.publish_scores(final)
    monkeypatch.setattr(store, "_write", original)

    assert sorted(s.run_id for s in store.iter_scores()) == ["run-1"] + ["run-2"] * 6, "two slices of three moved"
    assert store.unfinished_publications() == [final]
    assert store.staged_score_runs() == ["run-2"]
    with pytest.raises(NotFound):
        store.get_run("run-2")

    assert finish_publications(store) == ["run-2"]

    assert {s.run_id for s in store.iter_scores()} == {"run-2"}
    assert store.get_scores("c0") == make_scores("c0", run_id="run-2", scores={"reach": 2.0}, community=None)
    assert store.get_run("run-2") == final
    assert store.unfinished_publications() == []
    assert store.staged_score_runs() == []
    assert query(driver, "MATCH (m:ScoresPublishing) RETURN count(m) AS n") == [{"n": 0}]
