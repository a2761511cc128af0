"""Seed selection on graphs small enough to check by hand, plus one real network against the Monte Carlo judge."""

from __future__ import annotations

import math
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from graph.diffusion import simulate_spread
from graph.errors import InvalidInput
from graph.influence import (
    CascadeGraph,
    InfluenceInputError,
    Method,
    sample_rr_sets,
    select_from_rr_sets,
    select_seeds,
)

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def two_hubs_and_a_far_one() -> nx.Graph:
    """Hub 0 (degree 6) touches hub 1 (degree 5); hub 2 (degree 4) is elsewhere."""
    g = nx.Graph()
    g.add_edge(0, 1)
    g.add_edges_from((0, leaf) for leaf in range(10, 15))
    g.add_edges_from((1, leaf) for leaf in range(20, 24))
    g.add_edges_from((2, leaf) for leaf in range(30, 34))
    return g


# ---------------------------------------------------------------- the cascade graph


def test_an_undirected_edge_becomes_two_arcs_and_self_loops_are_dropped() -> None:
    g = nx.Graph([(0, 1), (1, 2), (2, 2)])
    cg = CascadeGraph.from_networkx(g, p=0.2)
    assert cg.n_arcs == 4
    assert np.allclose(cg.probs, 0.2)
    assert cg.in_stay[1] == pytest.approx(0.8**2)


def test_weighted_cascade_gives_each_arc_one_over_the_targets_in_degree() -> None:
    g = nx.DiGraph([(0, 2), (1, 2), (3, 2), (2, 0)])
    cg = CascadeGraph.from_networkx(g, model="wc")
    into_2 = cg.in_probs[cg.in_indptr[cg.index[2]] : cg.in_indptr[cg.index[2] + 1]]
    assert np.allclose(into_2, 1 / 3)
    assert cg.in_stay[cg.index[0]] == 0.0  # node 0's only in-arc fires for sure


def test_ic_weights_scale_p_by_weight_over_the_heaviest_and_parallel_edges_add_up() -> None:
    g = nx.MultiDiGraph()
    g.add_edge("a", "b", w=1.0)
    g.add_edge("a", "b", w=1.0)
    g.add_edge("b", "c", w=4.0)
    cg = CascadeGraph.from_networkx(g, p=0.1, weight="w")
    probs = {
        (cg.nodes[u], cg.nodes[int(v)]): float(q)
        for u in range(cg.n_nodes)
        for v, q in zip(
            cg.indices[cg.indptr[u] : cg.indptr[u + 1]], cg.probs[cg.indptr[u] : cg.indptr[u + 1]], strict=True
        )
    }
    assert probs == {("a", "b"): pytest.approx(0.05), ("b", "c"): pytest.approx(0.1)}


@pytest.mark.parametrize("p", [0.0, -0.1, 1.5, float("nan")])
def test_a_probability_outside_zero_one_is_refused_clearly(p: float) -> None:
    with pytest.raises(ValueError, match=r"p must be a probability in \(0, 1\]"):
        CascadeGraph.from_networkx(nx.path_graph(3), p=p)


def test_a_non_positive_weight_is_refused() -> None:
    g = nx.Graph()
    g.add_edge(0, 1, w=-2.0)
    with pytest.raises(ValueError, match="positive finite"):
        CascadeGraph.from_networkx(g, weight="w")


# ---------------------------------------------------------------- IMM on hand-checked graphs


def test_a_star_with_certain_arcs_is_reached_whole_from_its_hub() -> None:
    cg = CascadeGraph.from_networkx(nx.star_graph(7), p=1.0)
    sel = select_seeds(cg, 1, seed=3)
    assert sel.seeds == [0]
    assert sel.estimated_spread == pytest.approx(8.0)
    assert sel.marginal_gains == [pytest.approx(8.0)]


def test_two_disjoint_stars_with_k_two_pick_both_hubs() -> None:
    g = nx.disjoint_union(nx.star_graph(5), nx.star_graph(4))  # hubs 0 and 6
    cg = CascadeGraph.from_networkx(g, p=0.5)
    sel = select_seeds(cg, 2, seed=11)
    assert set(sel.seeds) == {0, 6}
    expected = (1 + 5 * 0.5) + (1 + 4 * 0.5)  # leaves cannot pass it on further than back to the hub
    assert sel.spread_ci95 is not None
    four_se = 4 * (sel.spread_ci95[1] - sel.spread_ci95[0]) / (2 * 1.96)
    assert sel.estimated_spread == pytest.approx(expected, abs=four_se)


def test_a_half_probability_chain_is_best_started_at_its_head_with_spread_one_plus_a_half_plus_a_quarter() -> None:
    cg = CascadeGraph.from_networkx(nx.DiGraph([(0, 1), (1, 2), (2, 3)]), p=0.5)
    sel = select_seeds(cg, 1, seed=5, min_rr_sets=400_000)
    assert sel.seeds == [0]
    assert sel.estimated_spread == pytest.approx(1.875, abs=0.02)


def test_the_same_seed_gives_the_same_selection_with_one_or_two_workers() -> None:
    g = nx.gnm_random_graph(300, 1200, seed=1, directed=True)
    cg = CascadeGraph.from_networkx(g, p=0.05)
    one = select_seeds(cg, 5, seed=42, workers=1, min_rr_sets=300_000)
    two = select_seeds(cg, 5, seed=42, workers=2, min_rr_sets=300_000)
    assert one.seeds == two.seeds
    assert one.estimated_spread == two.estimated_spread
    assert one.params["seed"] == 42


def test_a_graph_without_arcs_reaches_exactly_its_seeds() -> None:
    g = nx.empty_graph(5)
    sel = select_seeds(CascadeGraph.from_networkx(g), 3, seed=1)
    assert len(sel.seeds) == 3
    assert sel.estimated_spread == pytest.approx(3.0)


def test_imm_reports_its_bound_and_the_best_of_step() -> None:
    cg = CascadeGraph.from_networkx(two_hubs_and_a_far_one(), p=0.3)
    sel = select_seeds(cg, 2, seed=9)
    assert sel.params["winner"] in sel.params["candidate_spreads"]
    assert sel.params["theta_imm"] > 0
    assert sel.estimated_spread == pytest.approx(max(sel.params["candidate_spreads"].values()))
    assert sel.rr_sets == sel.params["fit_rr_sets"] + sel.params["validation_rr_sets"]


def test_progress_is_reported_in_stages_and_ends_done() -> None:
    seen: list[tuple[str, float]] = []
    cg = CascadeGraph.from_networkx(nx.star_graph(5), p=0.5)
    select_seeds(cg, 1, seed=1, progress=lambda stage, done: seen.append((stage, done)))
    fractions = [done for _, done in seen]
    assert fractions == sorted(fractions)
    assert seen[-1] == ("done", 1.0)
    assert any(stage.startswith("imm:") for stage, _ in seen)


# ---------------------------------------------------------------- constraints


def test_only_candidates_are_chosen() -> None:
    cg = CascadeGraph.from_networkx(nx.star_graph(6), p=0.5)
    methods: tuple[Method, ...] = ("imm", "degree", "pagerank", "degree_discount")
    for method in methods:
        sel = select_seeds(cg, 2, method=method, seed=1, candidates={3, 4, 5})
        assert set(sel.seeds) <= {3, 4, 5}
        assert len(sel.seeds) == 2


def test_max_per_group_caps_the_seeds_from_one_community() -> None:
    g = nx.disjoint_union_all([nx.star_graph(8), nx.star_graph(7), nx.star_graph(2)])  # hubs 0, 9 and 17
    groups = {v: (0 if v < 17 else 1) for v in g}
    cg = CascadeGraph.from_networkx(g, p=0.5)
    methods: tuple[Method, ...] = ("imm", "degree", "degree_discount")
    for method in methods:
        uncapped = select_seeds(cg, 2, method=method, seed=2)
        assert uncapped.seeds == [0, 9]
        capped = select_seeds(cg, 2, method=method, seed=2, max_per_group=1, groups=groups)
        assert capped.seeds == [0, 17]


def test_k_above_the_number_of_candidates_returns_them_all_with_a_warning() -> None:
    cg = CascadeGraph.from_networkx(nx.path_graph(6), p=0.1)
    sel = select_seeds(cg, 5, seed=1, candidates=[1, 4])
    assert len(sel.seeds) == 2
    assert set(sel.seeds) == {1, 4}
    assert sel.warnings
    assert "only 2" in sel.warnings[0]


# ---------------------------------------------------------------- baselines


def test_degree_discount_passes_over_the_neighbour_of_a_chosen_hub() -> None:
    cg = CascadeGraph.from_networkx(two_hubs_and_a_far_one(), p=0.01)
    assert select_seeds(cg, 2, method="degree", estimate=False).seeds == [0, 1]
    # After hub 0: dd(1) = 5 - 2*1 - (5 - 1)*1*0.01 = 2.96 < dd(2) = 4.
    assert select_seeds(cg, 2, method="degree_discount", estimate=False).seeds == [0, 2]


def test_pagerank_ranks_the_customer_who_reaches_many_first() -> None:
    g = nx.DiGraph([(0, v) for v in range(1, 8)] + [(8, 1)])
    sel = select_seeds(CascadeGraph.from_networkx(g, p=0.1), 1, method="pagerank", estimate=False)
    assert sel.seeds == [0]
    assert sel.estimated_spread is None


def test_a_baseline_can_also_estimate_its_spread() -> None:
    cg = CascadeGraph.from_networkx(nx.star_graph(4), p=1.0)
    sel = select_seeds(cg, 1, method="degree", seed=1)
    assert sel.estimated_spread == pytest.approx(5.0)


# ---------------------------------------------------------------- the Celery hook


def test_rr_sets_on_a_certain_chain_hold_the_root_and_everyone_upstream() -> None:
    cg = CascadeGraph.from_networkx(nx.DiGraph([(0, 1), (1, 2)]), p=1.0)
    offsets, members = sample_rr_sets(cg, 300, seed=4)
    assert len(offsets) == 301
    for i in range(300):
        found = sorted(members[offsets[i] : offsets[i + 1]].tolist())
        root = members[offsets[i]]
        assert found == list(range(root + 1))
    again = sample_rr_sets(cg, 300, seed=4)
    assert np.array_equal(again[0], offsets)
    assert np.array_equal(again[1], members)


def test_plain_rr_sets_from_elsewhere_can_be_covered_greedily() -> None:
    cg = CascadeGraph.from_networkx(nx.star_graph(5), p=0.3)
    offsets, members = sample_rr_sets(cg, 50_000, seed=8)
    sel = select_from_rr_sets(cg, offsets, members, 1)
    assert sel.seeds == [0]
    assert sel.estimated_spread == pytest.approx(1 + 5 * 0.3, rel=0.05)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_k_must_be_a_positive_integer(k: object) -> None:
    cg = CascadeGraph.from_networkx(nx.path_graph(3))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        select_seeds(cg, k)  # type: ignore[arg-type]


def test_an_empty_graph_is_refused_as_invalid_input() -> None:
    cg = CascadeGraph.from_networkx(nx.Graph())
    with pytest.raises(InvalidInput, match="no nodes"):
        select_seeds(cg, 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"ell": -1.0}, "ell"),
        ({"workers": 0}, "workers"),
        ({"method": "celf"}, "unknown method"),
        ({"candidates": ["nobody"]}, "not in the graph"),
        ({"max_per_group": 1}, "needs groups"),
        ({"max_per_group": 0, "groups": {0: 1}}, "max_per_group must be"),
    ],
)
def test_bad_arguments_are_named_in_the_error(kwargs: dict[str, object], message: str) -> None:
    cg = CascadeGraph.from_networkx(nx.path_graph(3))
    with pytest.raises(InfluenceInputError, match=message):
        select_seeds(cg, 1, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- one real network, against the judge


@pytest.mark.slow
def test_imm_on_email_eu_core_matches_the_monte_carlo_judge_and_is_no_worse_than_degree_discount() -> None:
    path = DATA / "email-Eu-core.txt"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (the benchmark networks live in ../shared/data)")
    g = nx.read_edgelist(path, nodetype=int, create_using=nx.DiGraph)
    cg = CascadeGraph.from_networkx(g, p=0.01)
    ours = select_seeds(cg, 50, seed=2026, workers=2)
    dd = select_seeds(cg, 50, method="degree_discount", estimate=False)
    judged = simulate_spread(g, ours.seeds, runs=10_000, seed=7, workers=2)
    judged_dd = simulate_spread(g, dd.seeds, runs=10_000, seed=7, workers=2)
    assert ours.estimated_spread is not None
    assert ours.spread_ci95 is not None
    # The two estimates are independent: their difference is within 1.96 combined standard errors.
    rr_se = (ours.spread_ci95[1] - ours.spread_ci95[0]) / (2 * 1.96)
    mc_se = judged.half_width / 1.96
    assert abs(ours.estimated_spread - judged.mean) <= 1.96 * math.hypot(rr_se, mc_se)
    assert judged.mean >= judged_dd.mean - (judged.half_width + judged_dd.half_width)
