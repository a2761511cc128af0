"""Lifecycle, point reads, runs and counts."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

import pytest

from graph.errors import NotFound, StoreUnavailable
from graph.model import (
    ContactChannel,
    EdgeRecord,
    EdgeType,
    EventKind,
    GraphBatch,
    GraphStats,
    InfluenceKind,
    ReferralStatus,
)
from graph.sqlite_store import SqliteStore
from graph.store import GraphStore
from tests.factories import (
    BASE_TIME,
    make_customer,
    make_event,
    make_influence,
    make_referral,
    make_run,
    make_scores,
)
from tests.neo4j_support import NEO4J_URL

EMPTY = GraphStats(customers=0, edges={EdgeType.REFERRED.value: 0, EdgeType.INFLUENCES.value: 0})


def test_ping_answers_on_an_open_store(store: GraphStore) -> None:
    store.ping()


def test_a_closed_store_refuses_further_use_as_unavailable(store: GraphStore) -> None:
    store.close()

    with pytest.raises(StoreUnavailable, match="closed"):
        store.ping()
    with pytest.raises(StoreUnavailable):
        store.upsert_customers([make_customer()])


def test_describe_says_where_the_store_is(store: GraphStore, tmp_path) -> None:
    expected = str(tmp_path / "contract.db") if isinstance(store, SqliteStore) else NEO4J_URL.rpartition("@")[2]
    assert expected in store.describe()


def test_the_store_satisfies_the_protocol(store: GraphStore) -> None:
    assert isinstance(store, GraphStore)


def test_a_new_store_is_empty(store: GraphStore) -> None:
    assert store.stats() == EMPTY
    assert store.list_runs() == []


def test_get_customer_returns_what_was_written(store: GraphStore) -> None:
    ada = make_customer(id="ada", consent={ContactChannel.EMAIL: True, ContactChannel.PUSH: False})
    store.upsert_customers([ada, make_customer(id="bob")])

    assert store.get_customer("ada") == ada


def test_get_customer_of_an_unknown_id_raises_not_found(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada")])

    with pytest.raises(NotFound, match="nobody"):
        store.get_customer("nobody")


def test_existing_customer_ids_returns_only_the_stored_ones(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada"), make_customer(id="bob")])

    assert store.existing_customer_ids(iter(["ada", "nobody", "ada", "bob"])) == {"ada", "bob"}
    assert store.existing_customer_ids(["nobody"]) == set()
    assert store.existing_customer_ids([]) == set()


def test_get_scores_is_none_for_a_customer_never_scored(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada")])

    assert store.get_scores("ada") is None
    assert store.get_scores("nobody") is None


def test_a_saved_run_reads_back_unchanged(store: GraphStore) -> None:
    run = make_run(id="run-1", params={"k": 5, "nested": {"seeds": ["a", "b"]}}, summary={"ok": True, "n": None})

    store.save_run(run)

    assert store.get_run("run-1") == run


def test_saving_a_run_again_replaces_it(store: GraphStore) -> None:
    store.save_run(make_run(id="run-1", status="running", finished_at=None, summary={}))
    finished = make_run(id="run-1", status="finished", summary={"advocates": 3})

    store.save_run(finished)

    assert store.get_run("run-1") == finished
    assert [r.id for r in store.list_runs()] == ["run-1"]


def test_get_run_of_an_unknown_id_raises_not_found(store: GraphStore) -> None:
    store.save_run(make_run(id="run-1"))

    with pytest.raises(NotFound, match="no-such-run"):
        store.get_run("no-such-run")


def test_list_runs_is_most_recent_first_and_limited(store: GraphStore) -> None:
    for day, run_id in [(3, "r-c"), (1, "r-a"), (5, "r-e"), (2, "r-b"), (4, "r-d")]:
        store.save_run(make_run(id=run_id, started_at=BASE_TIME + timedelta(days=day)))

    assert [r.id for r in store.list_runs()] == ["r-e", "r-d", "r-c", "r-b", "r-a"]
    assert [r.id for r in store.list_runs(limit=2)] == ["r-e", "r-d"]


def test_stats_count_customers_edges_by_type_and_events_by_kind(store: GraphStore) -> None:
    a, b, c = make_customer(id="a"), make_customer(id="b"), make_customer(id="c")
    store.write_batch(
        GraphBatch(
            customers=[a, b, c],
            influences=[make_influence(a, b), make_influence(a, b, kind=InfluenceKind.MENTIONS), make_influence(b, c)],
            referrals=[make_referral(a, c)],
            events=[make_event(a), make_event(a), make_event(b, kind=EventKind.IDEA, value=None)],
        )
    )

    assert store.stats() == GraphStats(
        customers=3,
        edges={EdgeType.REFERRED.value: 1, EdgeType.INFLUENCES.value: 3},
        events={EventKind.PURCHASE.value: 2, EventKind.IDEA.value: 1},
        erased={},
    )


def test_delete_all_leaves_an_empty_store(store: GraphStore) -> None:
    a, b = make_customer(id="a"), make_customer(id="b")
    store.write_batch(
        GraphBatch(
            customers=[a, b, make_customer(id="c")],
            influences=[make_influence(a, b)],
            referrals=[make_referral(b, a)],
            events=[make_event(a)],
        )
    )
    store.write_scores([make_scores(a)])
    store.save_run(make_run())
    store.erase_customer("c")

    store.delete_all()

    assert store.stats() == EMPTY
    assert store.list_runs() == []
    assert list(store.iter_customers()) == []
    assert list(store.iter_edges()) == []
    assert list(store.iter_event_summaries()) == []
    assert list(store.iter_scores()) == []


def test_times_round_trip_as_aware_utc_datetimes(store: GraphStore) -> None:
    paris_summer = timezone(timedelta(hours=2))
    at = BASE_TIME.replace(tzinfo=paris_summer, microsecond=123456)
    later = at + timedelta(hours=5, microseconds=7)
    store.write_batch(
        GraphBatch(
            customers=[make_customer(id="a", created_at=at), make_customer(id="b")],
            influences=[make_influence("a", "b", at=later)],
            referrals=[make_referral("b", "a", at=at, status=ReferralStatus.SIGNED_UP, status_at=later)],
            events=[make_event("a", at=later)],
        )
    )
    store.save_run(make_run(id="r", started_at=at, finished_at=later))

    times = [
        store.get_customer("a").created_at,
        *(edge.at for edge in sorted(store.iter_edges())),
        *(summary.last_at for summary in store.iter_event_summaries()),
        store.get_run("r").started_at,
        store.get_run("r").finished_at,
    ]

    assert times == [at, later, at, later, at, later]
    for value in times:
        assert value is not None
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
    assert times[0] == at.astimezone(UTC)


def test_unicode_names_and_attributes_round_trip(store: GraphStore) -> None:
    names = {"u1": "Zoë Ørsted", "u2": "李小龍", "u3": "Ἀριστοτέλης 🚀", "u4": 'O\'Brien "Quote" \\ back'}
    store.upsert_customers(
        [make_customer(id=cid, name=name, attributes={"city": "Zürich", "nick": name}) for cid, name in names.items()]
    )

    back = {c.id: c for c in store.iter_customers()}

    assert {cid: c.name for cid, c in back.items()} == names
    assert all(c.attributes == {"city": "Zürich", "nick": names[c.id]} for c in back.values())


def test_referrals_from_lists_one_customers_friends_and_how_far_each_got(store: GraphStore) -> None:
    ada, bob, cy, dee = (make_customer() for _ in range(4))
    store.write_batch(
        GraphBatch(
            customers=[ada, bob, cy, dee],
            referrals=[
                make_referral(ada, cy, status=ReferralStatus.CONVERTED),
                make_referral(ada, bob, status=ReferralStatus.SIGNED_UP),
                make_referral(bob, dee),
            ],
        )
    )

    edges = store.referrals_from(ada.id)

    assert [(e.source, e.target, e.type, e.label) for e in edges] == [
        (ada.id, bob.id, EdgeType.REFERRED, ReferralStatus.SIGNED_UP.value),
        (ada.id, cy.id, EdgeType.REFERRED, ReferralStatus.CONVERTED.value),
    ]
    assert all(e.at == BASE_TIME for e in edges)
    assert store.referrals_from(dee.id) == []
    assert store.referrals_from("nobody") == []


def test_edges_of_gives_every_edge_from_or_to_one_customer_once_as_stored(store: GraphStore) -> None:
    ada, bob, cy, dee = (make_customer() for _ in range(4))
    store.write_batch(
        GraphBatch(
            customers=[ada, bob, cy, dee],
            influences=[
                make_influence(ada, bob),
                make_influence(cy, ada, kind=InfluenceKind.MENTIONS, weight=2.5, at=None),
                make_influence(bob, cy),
            ],
            referrals=[
                make_referral(ada, cy, status=ReferralStatus.CONVERTED),
                make_referral(dee, ada),
                make_referral(bob, dee),
            ],
        )
    )

    edges = store.edges_of(ada.id)

    assert len(edges) == 4
    assert set(edges) == {
        EdgeRecord(ada.id, bob.id, EdgeType.INFLUENCES, InfluenceKind.FOLLOWS.value, 0.5, BASE_TIME),
        EdgeRecord(cy.id, ada.id, EdgeType.INFLUENCES, InfluenceKind.MENTIONS.value, 2.5, None),
        EdgeRecord(ada.id, cy.id, EdgeType.REFERRED, ReferralStatus.CONVERTED.value, 1.0, BASE_TIME),
        EdgeRecord(dee.id, ada.id, EdgeType.REFERRED, ReferralStatus.CLICKED.value, 1.0, BASE_TIME),
    }
    assert {e for e in edges if e.type is EdgeType.REFERRED} == set(store.edges_of(ada.id, EdgeType.REFERRED))
    assert len(store.edges_of(ada.id, EdgeType.INFLUENCES)) == 2
    for customer in (ada, bob, cy, dee):
        touching = {e for e in store.iter_edges() if customer.id in (e.source, e.target)}
        assert set(store.edges_of(customer.id)) == touching
    assert store.edges_of("nobody") == []


def test_events_of_gives_a_customers_latest_events_newest_first(store: GraphStore) -> None:
    ada, bob = make_customer(), make_customer()
    events = [
        make_event(ada, kind=EventKind.PURCHASE, at=BASE_TIME + timedelta(days=d), attributes={"product": f"p{d}"})
        for d in range(5)
    ] + [make_event(ada, kind=EventKind.REVIEW, at=BASE_TIME), make_event(bob, at=BASE_TIME)]
    store.write_batch(GraphBatch(customers=[ada, bob], events=events))

    latest = store.events_of(ada.id, kind=EventKind.PURCHASE, limit=3)

    assert [e.attributes["product"] for e in latest] == ["p4", "p3", "p2"]
    assert latest[0] == events[4]
    assert {e.kind for e in store.events_of(ada.id)} == {EventKind.PURCHASE, EventKind.REVIEW}
    assert len(store.events_of(ada.id, limit=50)) == 6
    assert store.events_of("nobody") == []


def test_get_event_reads_one_event_by_its_id_and_the_first_stored_keeps_it(store: GraphStore) -> None:
    ada, bob = make_customer(), make_customer()
    review = make_event(ada, kind=EventKind.REVIEW, value=None, attributes={"text": "Great", "stars": 5})
    store.write_batch(GraphBatch(customers=[ada, bob], events=[review, make_event(bob)]))

    assert store.get_event(review.id) == review
    store.add_events([make_event(bob, id=review.id, value=1.0)])
    assert store.get_event(review.id) == review
    assert store.get_event("no-such-event") is None


def test_customers_are_read_many_at_once_by_id_and_unknown_ids_are_left_out(store: GraphStore) -> None:
    ada, grace = make_customer(name="Ada"), make_customer(name="Grace", email="grace@example.org")
    store.upsert_customers([ada, grace])

    found = store.get_customers([grace.id, "nobody", ada.id, grace.id])

    assert found == {ada.id: store.get_customer(ada.id), grace.id: store.get_customer(grace.id)}
    assert store.get_customers([]) == {}
