"""Writes: idempotent, all-or-nothing, and keyed the way the model says."""

from __future__ import annotations

from datetime import timedelta

import pytest

from graph.errors import InvalidInput
from graph.model import (
    ContactChannel,
    EdgeType,
    EventKind,
    GraphBatch,
    InfluenceKind,
    ReferralStatus,
    Segment,
)
from graph.store import GraphStore
from tests.factories import (
    BASE_TIME,
    make_customer,
    make_event,
    make_influence,
    make_referral,
    make_scores,
)


def snapshot(store: GraphStore) -> tuple[object, ...]:
    """Everything a reader can see, in a comparable form."""
    return (
        store.stats(),
        list(store.iter_customers()),
        sorted(store.iter_edges()),
        list(store.iter_event_summaries()),
        list(store.iter_scores()),
    )


def small_network() -> GraphBatch:
    ada, bob, cy = make_customer(id="ada"), make_customer(id="bob"), make_customer(id="cy")
    return GraphBatch(
        customers=[ada, bob, cy],
        influences=[make_influence(ada, bob), make_influence(bob, cy, kind=InfluenceKind.SHARES, weight=2.0)],
        referrals=[make_referral(ada, cy, status=ReferralStatus.SIGNED_UP, status_at=BASE_TIME)],
        events=[make_event(ada, id="ev-1"), make_event(cy, id="ev-2", kind=EventKind.REVIEW, value=4.0)],
    )


def test_reimporting_the_same_rows_changes_nothing(store: GraphStore) -> None:
    batch = small_network()
    store.write_batch(batch)
    store.write_scores([make_scores("ada")])
    first = snapshot(store)

    store.write_batch(batch)
    store.write_scores([make_scores("ada")])

    assert snapshot(store) == first
    assert store.stats().customers == 3


def test_a_batch_with_one_edge_to_a_missing_customer_writes_nothing(store: GraphStore) -> None:
    store.write_batch(small_network())
    before = snapshot(store)
    dan, eve = make_customer(id="dan"), make_customer(id="eve")
    bad = GraphBatch(
        customers=[dan, eve, make_customer(id="ada", name="Changed Name")],
        influences=[make_influence(dan, eve), make_influence(eve, "ghost")],
        referrals=[make_referral(dan, "bob")],
        events=[make_event(dan, id="ev-dan")],
    )

    with pytest.raises(InvalidInput, match="ghost"):
        store.write_batch(bad)

    assert snapshot(store) == before
    assert store.existing_customer_ids(["dan", "eve"]) == set()
    assert store.get_customer("ada").name == "Customer ada"


def test_missing_customers_are_named_twenty_at_most_with_a_count(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="hub")])
    ghosts = [f"ghost{i:02d}" for i in range(25)]

    with pytest.raises(InvalidInput) as raised:
        store.add_influences([make_influence("hub", ghost) for ghost in ghosts])

    message = str(raised.value)
    assert "25" in message
    assert all(ghost in message for ghost in ghosts[:20])
    assert not any(ghost in message for ghost in ghosts[20:])
    assert "5 more" in message
    assert store.stats().edges[EdgeType.INFLUENCES] == 0


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda s: s.add_influences([make_influence("ada", "nobody")]), id="add_influences"),
        pytest.param(lambda s: s.add_referrals([make_referral("nobody", "ada")]), id="add_referrals"),
        pytest.param(lambda s: s.add_events([make_event("nobody")]), id="add_events"),
    ],
)
def test_every_add_method_refuses_rows_for_a_missing_customer(store: GraphStore, write) -> None:
    store.upsert_customers([make_customer(id="ada")])
    before = snapshot(store)

    with pytest.raises(InvalidInput, match="nobody"):
        write(store)

    assert snapshot(store) == before


def test_edges_may_point_at_customers_stored_by_an_earlier_call(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada"), make_customer(id="bob")])

    store.write_batch(GraphBatch(influences=[make_influence("ada", "bob")], events=[make_event("bob")]))

    assert [(e.source, e.target) for e in store.iter_edges()] == [("ada", "bob")]
    assert store.stats().events == {EventKind.PURCHASE.value: 1}


def test_upserting_a_customer_replaces_every_field(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada")])
    replacement = make_customer(
        id="ada",
        name="Ada Lovelace",
        email=None,
        phone=None,
        locale="fr-FR",
        timezone="America/New_York",
        consent={ContactChannel.WHATSAPP: True},
        attributes={"vip": True, "score": 1.5, "note": None},
        created_at=BASE_TIME + timedelta(days=3),
    )

    count = store.upsert_customers([replacement])

    assert count == 1
    assert store.get_customer("ada") == replacement
    assert store.stats().customers == 1


def test_the_last_of_several_rows_for_one_customer_wins(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada", name="First"), make_customer(id="ada", name="Second")])

    assert store.get_customer("ada").name == "Second"


def test_upsert_customers_returns_how_many_rows_were_given(store: GraphStore) -> None:
    assert store.upsert_customers([make_customer(), make_customer(), make_customer()]) == 3


def test_an_event_id_already_stored_is_left_as_it_is(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada"), make_customer(id="bob")])
    store.add_events([make_event("ada", id="order-1", value=10.0)])

    store.add_events([make_event("bob", id="order-1", value=99.0, kind=EventKind.REFUND, at=BASE_TIME)])

    [summary] = store.iter_event_summaries()
    assert (summary.customer_id, summary.kind, summary.count, summary.total) == ("ada", EventKind.PURCHASE, 1, 10.0)
    assert summary.last_at == make_event("ada").at
    assert store.stats().events == {EventKind.PURCHASE.value: 1}


def test_the_first_of_several_events_with_one_id_in_a_batch_wins(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada")])

    store.add_events([make_event("ada", id="e1", value=1.0), make_event("ada", id="e1", value=2.0)])

    assert [s.total for s in store.iter_event_summaries()] == [1.0]


def test_a_referral_status_update_changes_the_one_edge_in_place(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada"), make_customer(id="bob")])
    store.add_referrals([make_referral("ada", "bob", code="ADA10")])
    converted_at = BASE_TIME + timedelta(days=2)

    store.add_referrals(
        [make_referral("ada", "bob", code="ADA10", status=ReferralStatus.CONVERTED, status_at=converted_at)]
    )

    [edge] = store.iter_edges(EdgeType.REFERRED)
    assert (edge.source, edge.target, edge.label) == ("ada", "bob", ReferralStatus.CONVERTED.value)
    assert store.stats().edges[EdgeType.REFERRED] == 1


def test_two_influence_kinds_between_one_pair_are_two_edges(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada"), make_customer(id="bob")])

    store.add_influences(
        [
            make_influence("ada", "bob", kind=InfluenceKind.FOLLOWS, weight=1.0),
            make_influence("ada", "bob", kind=InfluenceKind.MENTIONS, weight=3.0),
        ]
    )

    labels = sorted((e.label, e.weight) for e in store.iter_edges(EdgeType.INFLUENCES))
    assert labels == [(InfluenceKind.FOLLOWS.value, 1.0), (InfluenceKind.MENTIONS.value, 3.0)]
    assert store.stats().edges[EdgeType.INFLUENCES] == 2


def test_an_influence_written_again_updates_its_weight(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada"), make_customer(id="bob")])
    store.add_influences([make_influence("ada", "bob", weight=1.0)])

    store.add_influences([make_influence("ada", "bob", weight=7.5)])

    assert [e.weight for e in store.iter_edges()] == [7.5]


def test_write_scores_replaces_earlier_scores(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada")])
    store.write_scores([make_scores("ada", run_id="run-1", scores={"pagerank": 0.1, "reach": 12.0})])
    newer = make_scores(
        "ada",
        run_id="run-2",
        segment=Segment.INFLUENCER,
        explanation="Reaches many.",
        scores={"pagerank": 0.3},
        community=None,
    )

    store.write_scores([newer])

    assert store.get_scores("ada") == newer
    assert list(store.iter_scores()) == [newer]


def test_upserting_a_customer_keeps_their_scores(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada")])
    scores = make_scores("ada")
    store.write_scores([scores])

    store.upsert_customers([make_customer(id="ada", name="Renamed")])

    assert store.get_scores("ada") == scores


def test_scores_for_an_unknown_customer_are_dropped_rather_than_creating_them(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="ada")])

    written = store.write_scores([make_scores("ada"), make_scores("erased-meanwhile")])

    assert written == 1
    assert store.get_scores("erased-meanwhile") is None
    assert store.existing_customer_ids(["erased-meanwhile"]) == set()
    assert [s.customer_id for s in store.iter_scores()] == ["ada"]


def test_empty_writes_are_accepted_and_change_nothing(store: GraphStore) -> None:
    store.write_batch(small_network())
    before = snapshot(store)

    store.write_batch(GraphBatch())
    assert store.upsert_customers([]) == 0
    assert store.add_influences([]) == 0
    assert store.add_referrals([]) == 0
    assert store.add_events([]) == 0
    assert store.write_scores([]) == 0

    assert snapshot(store) == before
