"""graph.scores on small graphs whose answers are worked out by hand in each test."""

# ruff: noqa: N806  (NetworkX names: G for a graph, R for the referral graph)

from __future__ import annotations

import random
from collections import Counter

import networkx as nx
import pytest

from graph import scores as sc
from graph.errors import InvalidInput


def referral_graph(*edges: tuple[str, str, str]) -> nx.DiGraph:
    R = nx.DiGraph()
    for referrer, friend, status in edges:
        R.add_edge(referrer, friend, status=status)
    return R


# --- influence -------------------------------------------------------------------------------------------------


def test_pagerank_of_one_influence_edge_matches_the_hand_solved_equations() -> None:
    # a influences b. Reversed, b -> a; a is dangling and spreads its rank evenly. With alpha = 0.85:
    #   x_b = 0.85 * x_a / 2 + 0.15 / 2  and  x_a + x_b = 1  =>  1.425 x_b = 0.5  =>  x_b = 0.350877, x_a = 0.649123
    pr = sc.influence_pagerank(nx.DiGraph([("a", "b")]))
    assert pr["b"] == pytest.approx(0.5 / 1.425, abs=1e-5)
    assert pr["a"] == pytest.approx(1 - 0.5 / 1.425, abs=1e-5)


def test_pagerank_passes_rank_back_in_proportion_to_tie_strength() -> None:
    # a -(3)-> b <-(1)- c. Reversed: b sends 3/4 of its rank to a and 1/4 to c; a and c are dangling.
    #   x_b = 0.05 + 0.85 (1 - x_b) / 3  =>  x_b = (0.05 + 0.85/3) / (1 + 0.85/3) = 0.259740
    #   x_a - x_c = 0.85 * (3/4 - 1/4) * x_b = 0.110390 and x_a + x_c = 1 - x_b = 0.740260
    G = nx.DiGraph()
    G.add_edge("a", "b", weight=3.0)
    G.add_edge("c", "b", weight=1.0)
    pr = sc.influence_pagerank(G)
    x_b = (0.05 + 0.85 / 3) / (1 + 0.85 / 3)
    gap = 0.85 * 0.5 * x_b
    assert pr["b"] == pytest.approx(x_b, abs=1e-5)
    assert pr["a"] == pytest.approx((1 - x_b + gap) / 2, abs=1e-5)
    assert pr["c"] == pytest.approx((1 - x_b - gap) / 2, abs=1e-5)


def test_pagerank_on_a_directed_cycle_is_uniform() -> None:
    pr = sc.influence_pagerank(nx.DiGraph([(1, 2), (2, 3), (3, 1)]))
    assert pr == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1 / 3}, abs=1e-6)


def test_pagerank_equals_networkx_pagerank_of_the_reversed_graph() -> None:
    G = nx.gnm_random_graph(120, 500, seed=4, directed=True)
    rng = random.Random(4)
    for u, v in G.edges:
        G[u][v]["weight"] = rng.uniform(0.1, 2.0)
    ours = sc.influence_pagerank(G)
    reference = nx.pagerank(G.reverse(), weight="weight")
    assert ours == pytest.approx(reference, abs=1e-8)


def test_pagerank_of_an_empty_graph_is_empty() -> None:
    assert sc.influence_pagerank(nx.DiGraph()) == {}


# --- referral power --------------------------------------------------------------------------------------------


def test_referral_counts_count_each_status_how_far_the_friend_got() -> None:
    R = referral_graph(
        ("ann", "b", "converted"),
        ("ann", "c", "signed_up"),
        ("ann", "d", "clicked"),
        ("ann", "e", "reversed"),
    )
    # sent 4; signed up or further: b, c, e = 3; still converted: b = 1; reversed: e = 1
    assert sc.referral_counts(R)["ann"] == sc.ReferralCounts(sent=4, signed_up=3, converted=1, reversed=1)
    assert sc.referral_counts(R)["b"] == sc.ReferralCounts(0, 0, 0, 0)


def test_converted_referrals_ignore_reversed_and_unfinished_ones() -> None:
    R = referral_graph(("ann", "b", "converted"), ("ann", "c", "reversed"), ("ann", "d", "clicked"))
    assert sc.converted_referrals(R) == {"ann": 1, "b": 0, "c": 0, "d": 0}


def test_a_three_customer_referral_chain_has_descendants_two_one_zero() -> None:
    R = referral_graph(("a", "b", "converted"), ("b", "c", "converted"))
    reach = sc.referral_reach(R)
    assert [reach[n].descendants for n in "abc"] == [2, 1, 0]
    assert [reach[n].generations for n in "abc"] == [2, 1, 0]


def test_referral_reach_follows_only_converted_edges_and_counts_a_friend_reached_twice_once() -> None:
    # root -> a -> c and root -> b -> c (c reached by two paths), root -> x only clicked, a -> y reversed.
    R = referral_graph(
        ("root", "a", "converted"),
        ("root", "b", "converted"),
        ("a", "c", "converted"),
        ("b", "c", "converted"),
        ("root", "x", "clicked"),
        ("a", "y", "reversed"),
    )
    reach = sc.referral_reach(R)
    assert reach["root"] == sc.ReferralReach(descendants=3, generations=2)  # {a, b, c}
    assert reach["a"] == sc.ReferralReach(descendants=1, generations=1)  # {c}; y was reversed
    assert reach["x"] == sc.ReferralReach(0, 0)


def test_a_referral_cycle_counts_as_one_generation() -> None:
    R = referral_graph(("a", "b", "converted"), ("b", "a", "converted"), ("x", "a", "converted"))
    reach = sc.referral_reach(R)
    assert reach["a"] == sc.ReferralReach(descendants=1, generations=1)
    assert reach["x"] == sc.ReferralReach(descendants=2, generations=2)


def test_conversion_rates_shrink_towards_the_network_rate() -> None:
    # 2 of 3 referrals converted: prior 2/3 with the weight of 2 referrals.
    #   ann: (1 + 2 * 2/3) / (2 + 2) = 0.583333;  bob: (1 + 4/3) / (1 + 2) = 0.777778;  cat: prior 2/3
    R = referral_graph(("ann", "bob", "converted"), ("ann", "cat", "clicked"), ("bob", "dan", "converted"))
    rates = sc.conversion_rates(R)
    assert rates["ann"] == pytest.approx((1 + 4 / 3) / 4)
    assert rates["bob"] == pytest.approx((1 + 4 / 3) / 3)
    assert rates["cat"] == pytest.approx(2 / 3)


def test_conversion_rate_without_any_referral_is_zero() -> None:
    R = nx.DiGraph()
    R.add_node("lonely")
    assert sc.conversion_rates(R) == {"lonely": 0.0}


# --- reach -----------------------------------------------------------------------------------------------------


def test_core_numbers_of_a_four_clique_with_a_pendant_and_an_isolated_customer() -> None:
    G = nx.DiGraph([(a, b) for a in "abcd" for b in "abcd" if a < b])
    G.add_edge("d", "e")
    G.add_node("f")
    assert sc.core_numbers(G) == {"a": 3, "b": 3, "c": 3, "d": 3, "e": 1, "f": 0}


def test_core_numbers_count_a_reciprocal_tie_once() -> None:
    assert sc.core_numbers(nx.DiGraph([("a", "b"), ("b", "a")])) == {"a": 1, "b": 1}


def test_core_numbers_match_networkx_on_random_graphs() -> None:
    for seed in range(5):
        G = nx.gnm_random_graph(150, 600, seed=seed, directed=True)
        assert sc.core_numbers(G) == nx.core_number(G.to_undirected())


def test_core_numbers_refuse_self_loops() -> None:
    with pytest.raises(InvalidInput, match="self-loops"):
        sc.core_numbers(nx.DiGraph([("a", "a"), ("a", "b")]))


def test_out_degree_counts_the_customers_directly_influenced() -> None:
    G = nx.DiGraph([("a", "b"), ("a", "c"), ("b", "a")])
    assert sc.out_degrees(G) == {"a": 2, "b": 1, "c": 0}


# --- communities and bridging ----------------------------------------------------------------------------------


def two_cliques() -> nx.DiGraph:
    """A 4-clique and a triangle joined by one edge d -> x."""
    G = nx.DiGraph([(a, b) for a in "abcd" for b in "abcd" if a < b])
    G.add_edges_from([("x", "y"), ("y", "z"), ("z", "x"), ("d", "x")])
    return G


def test_louvain_finds_the_two_cliques_and_numbers_the_larger_first() -> None:
    membership = sc.community_membership(two_cliques(), seed=3)
    assert {membership[n] for n in "abcd"} == {0}
    assert {membership[n] for n in "xyz"} == {1}


def test_louvain_with_the_same_seed_gives_the_same_communities() -> None:
    G = nx.gnm_random_graph(200, 800, seed=1, directed=True)
    assert sc.community_membership(G, seed=5) == sc.community_membership(G, seed=5)


def test_an_unknown_networkx_backend_is_a_clear_error() -> None:
    with pytest.raises(InvalidInput, match="backend 'no-such-backend' is not installed"):
        sc.community_membership(two_cliques(), backend="no-such-backend")


def test_participation_coefficient_by_hand() -> None:
    # b: neighbours a (0) and c (1)            -> 1 - (1/2)^2 - (1/2)^2 = 0.5
    # h: neighbours in communities 0, 1 and 2  -> 1 - 3 * (1/3)^2 = 2/3
    # a: its only neighbours b and h are in community 0 -> 0 ; q: isolated -> 0
    # c <-> b reciprocal counts once for both.
    G = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "b"), ("h", "a"), ("h", "c"), ("h", "d")])
    G.add_node("q")
    membership = {"a": 0, "b": 0, "c": 1, "h": 0, "d": 2, "q": 3}
    p = sc.participation_coefficients(G, membership)
    assert p["b"] == pytest.approx(0.5)
    assert p["h"] == pytest.approx(2 / 3)
    assert p["a"] == pytest.approx(0.0)
    assert p["q"] == 0.0


def test_participation_coefficients_match_the_definition_on_a_random_graph() -> None:
    G = nx.gnm_random_graph(80, 250, seed=2, directed=True)
    membership = {n: n % 5 for n in G}
    p = sc.participation_coefficients(G, membership)
    for node in G:
        neighbours = (set(G.succ[node]) | set(G.pred[node])) - {node}
        k = len(neighbours)
        shares = Counter(membership[v] for v in neighbours).values()
        expected = 1 - sum((c / k) ** 2 for c in shares) if k else 0.0
        assert p[node] == pytest.approx(expected)


# --- prosumer, advocacy, risk ----------------------------------------------------------------------------------


def customers(**nodes: dict[str, float]) -> nx.DiGraph:
    G = nx.DiGraph()
    for name, attrs in nodes.items():
        G.add_node(name, **attrs)
    return G


def test_prosumer_score_is_contributions_per_smoothed_purchase() -> None:
    G = customers(
        ann={"review_count": 3, "idea_count": 1, "purchase_count": 3},  # 4 / (3 + 1) = 1.0
        bob={"content_count": 2, "feedback_count": 1},  # 3 / (0 + 1) = 3.0
        cat={"purchase_count": 9, "rating_count": 4},  # 0
    )
    assert sc.prosumer_contributions(G) == {"ann": 4.0, "bob": 3.0, "cat": 0.0}
    assert sc.prosumer_scores(G) == pytest.approx({"ann": 1.0, "bob": 3.0, "cat": 0.0})
    assert sc.prosumer_scores(G, smoothing=3.0)["ann"] == pytest.approx(4 / 6)


def test_prosumer_smoothing_must_be_positive() -> None:
    with pytest.raises(InvalidInput):
        sc.prosumer_scores(customers(ann={}), smoothing=0)


def test_mean_ratings_are_none_for_customers_who_never_rated() -> None:
    G = customers(ann={"rating_count": 4, "rating_total": 30.0}, bob={})
    assert sc.mean_ratings(G) == {"ann": 7.5, "bob": None}


def test_advocacy_propensity_by_hand() -> None:
    # ann: satisfaction (9 + 10 + 7) / 3 / 10 = 0.866667; shares 2 / (2 + 2) = 0.5; referrals 1 / (1 + 1) = 0.5
    #      0.5 * 0.866667 + 0.25 * 0.5 + 0.25 * 0.5 = 0.683333
    # bob: no signal at all: 0.5 * 0.7 = 0.35
    # cat: one rating of 0: (0 + 7) / 2 / 10 = 0.35 -> 0.175
    G = customers(ann={"rating_count": 2, "rating_total": 19.0, "share_count": 2}, bob={}, cat={"rating_count": 1})
    propensity = sc.advocacy_propensity(G, {"ann": 1})
    assert propensity["ann"] == pytest.approx(0.5 * 26 / 30 + 0.125 + 0.125)
    assert propensity["bob"] == pytest.approx(0.35)
    assert propensity["cat"] == pytest.approx(0.175)


def test_advocacy_weights_must_make_sense() -> None:
    with pytest.raises(InvalidInput):
        sc.advocacy_propensity(customers(ann={}), {}, weights=(0.0, 0.0, 0.0))


def test_risk_flags_name_every_reason_and_respect_the_boundaries() -> None:
    G = customers(
        at_six={"rating_count": 2, "rating_total": 12.0},  # mean 6.0: detractor (0-6)
        above={"rating_count": 2, "rating_total": 13.0},  # mean 6.5: fine
        complainer={"complaint_count": 2},
        half_refunded={"refund_count": 1, "purchase_count": 2},  # 1/2 >= 0.5
        third_refunded={"refund_count": 1, "purchase_count": 3},  # 1/3 < 0.5
        refund_only={"refund_count": 1},  # 1 / max(0, 1) = 1
        fatigued={},
        nearly={},
        heard={},
    )
    R = nx.DiGraph()
    for i in range(10):
        R.add_edge("fatigued", f"f{i}", status="clicked")
        R.add_edge("heard", f"h{i}", status="signed_up" if i == 0 else "clicked")
    for i in range(9):
        R.add_edge("nearly", f"n{i}", status="clicked")
    flags = sc.risk_flags(G, R)
    assert flags["at_six"] == ("detractor: average rating 6.0/10",)
    assert flags["above"] == ()
    assert flags["complainer"] == ("2 complaints",)
    assert flags["half_refunded"] == ("1 refund for 2 purchases",)
    assert flags["third_refunded"] == ()
    assert flags["refund_only"] == ("1 refund for 0 purchases",)
    assert flags["fatigued"] == ("fatigued: 10 referral clicks and no sign-up",)
    assert flags["nearly"] == ()
    assert flags["heard"] == ()


def test_risk_thresholds_are_configurable() -> None:
    G = customers(ann={"complaint_count": 1})
    assert sc.risk_flags(G)["ann"] == ("1 complaint",)
    assert sc.risk_flags(G, min_complaints=2)["ann"] == ()


def test_adjacency_refuses_multigraphs() -> None:
    with pytest.raises(InvalidInput, match="simple graph"):
        sc.adjacency(nx.MultiDiGraph([("a", "b"), ("a", "b")]))
