"""Streaming exports for analysis: complete, ordered where promised, and aggregated by the store."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from graph.errors import InvalidInput
from graph.model import EdgeRecord, EdgeType, EventKind, EventSummary, GraphBatch, InfluenceKind, ReferralStatus
from graph.store import GraphStore
from tests.factories import BASE_TIME, make_customer, make_event, make_influence, make_referral, make_scores


def two_kinds_of_edges() -> GraphBatch:
    a, b, c = make_customer(id="a"), make_customer(id="b"), make_customer(id="c")
    return GraphBatch(
        customers=[a, b, c],
        influences=[
            make_influence(a, b, kind=InfluenceKind.FOLLOWS, weight=0.5, at=None),
            make_influence(b, c, kind=InfluenceKind.CO_PURCHASE, weight=2.0, at=BASE_TIME),
        ],
        referrals=[make_referral(a, c, status=ReferralStatus.CONVERTED, at=BASE_TIME)],
    )


def test_iter_edges_yields_every_edge_with_its_label_and_weight(store: GraphStore) -> None:
    store.write_batch(two_kinds_of_edges())

    assert sorted(store.iter_edges()) == [
        EdgeRecord("a", "b", EdgeType.INFLUENCES, InfluenceKind.FOLLOWS.value, 0.5, None),
        EdgeRecord("a", "c", EdgeType.REFERRED, ReferralStatus.CONVERTED.value, 1.0, BASE_TIME),
        EdgeRecord("b", "c", EdgeType.INFLUENCES, InfluenceKind.CO_PURCHASE.value, 2.0, BASE_TIME),
    ]


@pytest.mark.parametrize("edge_type", list(EdgeType))
def test_iter_edges_filtered_by_type_yields_only_that_type(store: GraphStore, edge_type: EdgeType) -> None:
    store.write_batch(two_kinds_of_edges())

    edges = list(store.iter_edges(edge_type, batch_size=1))

    assert edges
    assert {e.type for e in edges} == {edge_type}
    assert len(edges) == store.stats().edges[edge_type]


def test_iter_event_summaries_counts_sums_and_keeps_the_latest_time(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id="a"), make_customer(id="b")])
    store.add_events(
        [
            make_event("a", kind=EventKind.PURCHASE, value=10.0, at=BASE_TIME),
            make_event("a", kind=EventKind.PURCHASE, value=2.5, at=BASE_TIME + timedelta(days=9)),
            make_event("a", kind=EventKind.PURCHASE, value=None, at=BASE_TIME + timedelta(days=3)),
            make_event("a", kind=EventKind.IDEA, value=None, at=BASE_TIME),
            make_event("b", kind=EventKind.RATING, value=9.0, at=BASE_TIME + timedelta(hours=1)),
        ]
    )

    assert list(store.iter_event_summaries()) == [
        EventSummary("a", EventKind.IDEA, 1, 0.0, BASE_TIME),
        EventSummary("a", EventKind.PURCHASE, 3, 12.5, BASE_TIME + timedelta(days=9)),
        EventSummary("b", EventKind.RATING, 1, 9.0, BASE_TIME + timedelta(hours=1)),
    ]


def test_iter_customers_streams_every_customer_in_id_order_in_small_batches(store: GraphStore) -> None:
    customers = [make_customer(id=f"k{i:02d}") for i in range(11)]
    shuffled = customers[:]
    random.Random(3).shuffle(shuffled)
    store.upsert_customers(shuffled)

    streamed = store.iter_customers(batch_size=3)

    assert next(streamed) == customers[0]
    assert [customers[0], *streamed] == customers


def test_iter_scores_streams_latest_scores_in_customer_id_order(store: GraphStore) -> None:
    store.upsert_customers([make_customer(id=cid) for cid in ("c", "a", "b", "unscored")])
    store.write_scores([make_scores(cid, run_id="run-1") for cid in ("c", "a", "b")])
    latest_b = make_scores("b", run_id="run-2", scores={"reach": 4.0})
    store.write_scores([latest_b])

    streamed = list(store.iter_scores(batch_size=2))

    assert [s.customer_id for s in streamed] == ["a", "b", "c"]
    assert streamed[1] == latest_b


def test_a_batch_size_below_one_is_refused(store: GraphStore) -> None:
    with pytest.raises(InvalidInput):
        store.iter_customers(batch_size=0)
    with pytest.raises(InvalidInput):
        store.iter_edges(batch_size=0)
