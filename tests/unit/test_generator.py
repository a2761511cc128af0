"""The synthetic network: reproducible, valid, sized right, heavy-tailed, clustered, with its minorities."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from engine.ingest import load_synthetic
from graph.factory import open_store
from graph.generator import generate_network
from graph.model import ContactChannel, Customer, Event, EventKind, GraphBatch, Influence, Referral, ReferralStatus

N = 3_000


class Collected:
    """All rows of one generated network, with the batches' sizes and order."""

    def __init__(self, customers: int = N, seed: int = 11, **params) -> None:
        self.batches = list(generate_network(customers, seed=seed, **params))
        self.customers: list[Customer] = [c for b in self.batches for c in b.customers]
        self.influences: list[Influence] = [e for b in self.batches for e in b.influences]
        self.referrals: list[Referral] = [r for b in self.batches for r in b.referrals]
        self.events: list[Event] = [e for b in self.batches for e in b.events]
        self.role = {c.id: c.attributes["planted_role"] for c in self.customers}
        self.community = {c.id: int(str(c.attributes["planted_community"])) for c in self.customers}


@pytest.fixture(scope="module")
def net() -> Collected:
    return Collected()


def test_the_same_seed_gives_the_same_network_whatever_the_chunk_size(net: Collected) -> None:
    again = Collected(chunk_size=777)
    assert [c.model_dump() for c in again.customers] == [c.model_dump() for c in net.customers]
    assert [e.model_dump() for e in again.influences] == [e.model_dump() for e in net.influences]
    assert [r.model_dump() for r in again.referrals] == [r.model_dump() for r in net.referrals]
    assert [e.model_dump() for e in again.events] == [e.model_dump() for e in net.events]
    other = Collected(seed=12)
    assert [e.model_dump() for e in other.influences] != [e.model_dump() for e in net.influences]


def test_every_row_is_valid_under_the_models(net: Collected) -> None:
    for batch in net.batches:
        assert GraphBatch.model_validate(batch.model_dump()) == batch


def test_sizes_and_order_let_each_batch_be_written_as_it_comes(net: Collected) -> None:
    assert len(net.customers) == N
    assert len({c.id for c in net.customers}) == N
    assert 8 * N < len(net.influences) < 12 * N  # about ten influence edges per customer
    assert all(len(b) <= 20_000 for b in net.batches)
    seen: set[str] = set()
    for batch in net.batches:
        seen.update(c.id for c in batch.customers)
        refs = [x for e in batch.influences for x in (e.source_id, e.target_id)]
        refs += [x for r in batch.referrals for x in (r.referrer_id, r.friend_id)]
        refs += [e.customer_id for e in batch.events]
        assert set(refs) <= seen  # customers always come before anything that points at them
    keys = [(e.source_id, e.target_id, e.kind) for e in net.influences]
    assert len(keys) == len(set(keys))
    assert len({e.id for e in net.events}) == len(net.events)
    assert {e.kind for e in net.influences} == {"follows", "mentions", "shares", "co_purchase"}


def test_out_degree_is_heavy_tailed(net: Collected) -> None:
    degree = np.bincount(
        [int(e.source_id[1:]) for e in net.influences], minlength=N
    )  # ids are c0000.. c2999 in index order
    mean = degree.mean()
    assert degree.max() > 10 * mean
    assert degree.var() > 5 * mean  # a Poisson (random) graph would have variance == mean
    top = np.sort(degree)[::-1]
    assert top[: N // 100].sum() > 0.08 * degree.sum()  # the top 1% hold well over 1% of the edges


def test_communities_are_planted_and_recoverable(net: Collected) -> None:
    inside = sum(net.community[e.source_id] == net.community[e.target_id] for e in net.influences)
    assert inside / len(net.influences) > 0.75
    parts: defaultdict[int, set[str]] = defaultdict(set)
    for cid, community in net.community.items():
        parts[community].add(cid)
    assert len(parts) >= 10
    graph = nx.Graph((e.source_id, e.target_id) for e in net.influences)
    graph.add_nodes_from(net.community)
    assert nx.community.modularity(graph, parts.values()) > 0.5


def test_influencers_prosumers_and_unhappy_customers_are_minorities_that_behave_so(net: Collected) -> None:
    roles = Counter(net.role.values())
    assert 0.01 * N <= roles["influencer"] <= 0.03 * N
    assert 0.05 * N <= roles["prosumer"] <= 0.11 * N
    assert 0.03 * N <= roles["unhappy"] <= 0.09 * N

    def per_customer(role: str, counts: Counter[str]) -> float:
        return sum(counts[c] for c, r in net.role.items() if r == role) / roles[role]

    out_degree = Counter(e.source_id for e in net.influences)
    assert per_customer("influencer", out_degree) > 4 * per_customer("regular", out_degree)
    converted = Counter(r.referrer_id for r in net.referrals if r.status is ReferralStatus.CONVERTED)
    assert per_customer("influencer", converted) > 10 * per_customer("regular", converted)
    assert per_customer("unhappy", converted) == 0
    kinds = {k: Counter(e.customer_id for e in net.events if e.kind is k) for k in EventKind}
    prosumer_signals = kinds[EventKind.REVIEW] + kinds[EventKind.IDEA] + kinds[EventKind.CONTENT]
    assert per_customer("prosumer", prosumer_signals) > 4 * per_customer("regular", prosumer_signals)
    assert per_customer("unhappy", kinds[EventKind.COMPLAINT]) > 10 * per_customer(
        "regular", kinds[EventKind.COMPLAINT]
    )
    assert per_customer("unhappy", kinds[EventKind.REFUND]) > 3 * per_customer("regular", kinds[EventKind.REFUND])
    ratings: defaultdict[object, list[float]] = defaultdict(list)
    for e in net.events:
        if e.kind is EventKind.RATING:
            assert e.value is not None
            ratings[net.role[e.customer_id]].append(e.value)
    assert max(ratings["unhappy"]) <= 4 < np.mean(ratings["regular"])


def test_referrals_form_time_consistent_trees_with_multi_hop_chains(net: Collected) -> None:
    created = {c.id: c.created_at for c in net.customers if c.created_at is not None}
    assert len(created) == N
    parent: dict[str, str] = {}
    for r in net.referrals:
        assert r.referrer_id != r.friend_id
        assert r.friend_id not in parent  # one referrer per friend: a forest
        parent[r.friend_id] = r.referrer_id
        assert created[r.referrer_id] < r.at < created[r.friend_id]
        assert net.community[r.referrer_id] == net.community[r.friend_id]
    assert 0.15 * N < len(parent) < 0.35 * N

    def depth(cid: str) -> int:
        hops = 0
        while cid in parent:
            cid, hops = parent[cid], hops + 1
            assert hops <= N  # no cycles
        return hops

    depths = Counter(depth(f) for f in parent)
    assert depths[1] > 0
    assert sum(v for k, v in depths.items() if k >= 2) > 0.05 * len(parent)
    assert {r.status for r in net.referrals} == set(ReferralStatus)


def test_customers_have_names_contacts_locales_and_consent_per_channel(net: Collected) -> None:
    assert all(c.name for c in net.customers)
    assert 0.85 < sum(c.email is not None for c in net.customers) / N < 0.97
    assert len({c.timezone for c in net.customers}) >= 8
    email_consent = sum(bool(c.consent.get(ContactChannel.EMAIL)) for c in net.customers) / N
    assert 0.5 < email_consent < 0.8
    purchases = [e for e in net.events if e.kind is EventKind.PURCHASE]
    assert len(purchases) > N
    assert all(e.value is not None and e.value > 0 for e in purchases)
    months = {(e.at.year, e.at.month) for e in purchases}
    assert len(months) >= 20  # purchases spread over time


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        generate_network(1, seed=1)
    with pytest.raises(ValueError, match="mixing"):
        generate_network(100, seed=1, mixing=2.0)


def test_a_generated_network_loads_into_a_store_with_the_counts_it_reports(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'g.db'}")
    try:
        report = load_synthetic(store, 500, seed=5, chunk_rows=4_000)
        stats = store.stats()
    finally:
        store.close()
    assert stats.customers == report.customers == 500
    assert stats.edges["INFLUENCES"] == report.influences
    assert stats.edges["REFERRED"] == report.referrals
    assert sum(stats.events.values()) == report.events
