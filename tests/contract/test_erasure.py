"""Erasure (GDPR art. 17): nothing personal survives anywhere in the store, only anonymous counts."""

from __future__ import annotations

import pytest

from graph.errors import NotFound
from graph.model import EdgeType, EventKind, GraphBatch, InfluenceKind
from graph.store import GraphStore
from tests.contract.conftest import find_stored
from tests.factories import make_customer, make_event, make_influence, make_referral, make_scores

VICTIM = make_customer(id="zoe-4711", name="Zoë Quartermaine", email="zoe.q@example.org", phone="+33612345678")


def network_around_the_victim() -> GraphBatch:
    bob, cy = make_customer(id="bob"), make_customer(id="cy")
    return GraphBatch(
        customers=[VICTIM, bob, cy],
        influences=[
            make_influence(VICTIM, bob),
            make_influence(VICTIM, bob, kind=InfluenceKind.SHARES),
            make_influence(cy, VICTIM),
            make_influence(bob, cy),
        ],
        referrals=[make_referral(VICTIM, cy), make_referral(bob, VICTIM), make_referral(cy, bob)],
        events=[
            make_event(VICTIM, id="zoe-order-1"),
            make_event(VICTIM, id="zoe-order-2"),
            make_event(VICTIM, id="zoe-review", kind=EventKind.REVIEW, attributes={"text": "Zoë loves it"}),
            make_event(bob, id="bob-order"),
        ],
    )


def test_erasure_leaves_no_personal_data_behind(store: GraphStore) -> None:
    store.write_batch(network_around_the_victim())
    store.write_scores([make_scores(VICTIM), make_scores("bob")])
    personal = [VICTIM.id, "Zoë", "Quartermaine", "zoe.q@example.org", "+33612345678", "zoe-order", "zoe-review"]
    before = find_stored(store, personal)
    assert all(any(p in place for place in before) for p in personal), "the search must see the data first"

    report = store.erase_customer(VICTIM.id)

    assert (report.customer_id, report.edges_removed, report.events_removed) == (VICTIM.id, 5, 3)
    with pytest.raises(NotFound):
        store.get_customer(VICTIM.id)
    assert store.get_scores(VICTIM.id) is None
    assert store.existing_customer_ids([VICTIM.id, "bob", "cy"]) == {"bob", "cy"}
    assert sorted((e.source, e.target) for e in store.iter_edges()) == [("bob", "cy"), ("cy", "bob")]
    assert [s.customer_id for s in store.iter_event_summaries()] == ["bob"]
    assert find_stored(store, personal) == []


def test_erasure_keeps_only_anonymous_counts(store: GraphStore) -> None:
    store.write_batch(network_around_the_victim())

    store.erase_customer(VICTIM.id)

    stats = store.stats()
    assert stats.customers == 2
    assert stats.edges == {EdgeType.REFERRED.value: 1, EdgeType.INFLUENCES.value: 1}
    assert stats.events == {EventKind.PURCHASE.value: 1}
    assert stats.erased == {
        "customers": 1,
        "edges.REFERRED": 2,
        "edges.INFLUENCES": 3,
        "events.purchase": 2,
        "events.review": 1,
    }


def test_erasure_counts_add_up_over_several_erasures(store: GraphStore) -> None:
    store.write_batch(network_around_the_victim())

    store.erase_customer(VICTIM.id)
    store.erase_customer("bob")

    erased = store.stats().erased
    assert erased["customers"] == 2
    assert erased["edges.REFERRED"] == 3
    assert erased["edges.INFLUENCES"] == 4
    assert erased["events.purchase"] == 3


def test_erasing_an_unknown_customer_raises_not_found_and_counts_nothing(store: GraphStore) -> None:
    store.write_batch(network_around_the_victim())
    before = store.stats()

    with pytest.raises(NotFound, match="nobody"):
        store.erase_customer("nobody")

    assert store.stats() == before


def test_an_erased_customer_can_be_imported_again_as_a_new_person(store: GraphStore) -> None:
    store.write_batch(network_around_the_victim())
    store.erase_customer(VICTIM.id)

    store.upsert_customers([make_customer(id=VICTIM.id, name="New Person")])

    assert store.get_customer(VICTIM.id).name == "New Person"
    assert store.get_scores(VICTIM.id) is None
    assert not [e for e in store.iter_edges() if VICTIM.id in (e.source, e.target)]
