"""Property: for any small batch, writing it twice leaves the store exactly as writing it once."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graph.model import (
    Customer,
    Event,
    EventKind,
    GraphBatch,
    Influence,
    InfluenceKind,
    Referral,
    ReferralStatus,
)
from graph.store import GraphStore

IDS = ["a", "b", "c", "d", "e"]
times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC))
names = st.none() | st.text(min_size=1, max_size=12).map(str.strip).filter(bool)
pairs = st.tuples(st.sampled_from(IDS), st.sampled_from(IDS)).filter(lambda p: p[0] != p[1])

influences = st.builds(
    lambda p, kind, weight, at: Influence(source_id=p[0], target_id=p[1], kind=kind, weight=weight, at=at),
    pairs,
    st.sampled_from(InfluenceKind),
    st.floats(min_value=0.001, max_value=1000, allow_nan=False),
    st.none() | times,
)
referrals = st.builds(
    lambda p, status, at, status_at: Referral(
        referrer_id=p[0], friend_id=p[1], status=status, at=at, status_at=status_at
    ),
    pairs,
    st.sampled_from(ReferralStatus),
    times,
    st.none() | times,
)
events = st.builds(
    lambda eid, cid, kind, at, value: Event(id=eid, customer_id=cid, kind=kind, at=at, value=value),
    st.sampled_from(["e1", "e2", "e3", "e4"]),
    st.sampled_from(IDS),
    st.sampled_from(EventKind),
    times,
    st.none() | st.integers(min_value=-1000, max_value=1000).map(float),
)


@st.composite
def batches(draw: st.DrawFn) -> GraphBatch:
    """Edges only among the batch's own customers; duplicate keys on purpose, to exercise last/first wins."""
    customers = [Customer(id=cid, name=draw(names)) for cid in IDS]
    return GraphBatch(
        customers=draw(st.lists(st.sampled_from(customers), min_size=0, max_size=3)) + customers,
        influences=draw(st.lists(influences, max_size=8)),
        referrals=draw(st.lists(referrals, max_size=5)),
        events=draw(st.lists(events, max_size=6)),
    )


def export(store: GraphStore) -> tuple[object, ...]:
    return (
        store.stats(),
        list(store.iter_customers(batch_size=2)),
        sorted(store.iter_edges(batch_size=3)),
        list(store.iter_event_summaries()),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches())
def test_writing_any_batch_twice_gives_the_same_export_as_writing_it_once(store: GraphStore, batch: GraphBatch) -> None:
    # The fixture's store is shared by every example, so each example starts by emptying it.
    store.delete_all()
    store.write_batch(batch)
    once = export(store)

    store.write_batch(batch)

    assert export(store) == once
    assert store.stats().customers == len(IDS)
