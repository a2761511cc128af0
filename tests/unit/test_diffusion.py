"""The Monte Carlo judge on cascades whose expected size is known exactly."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import networkx as nx
import numpy as np
import pytest

from graph.diffusion import SpreadEstimate, _arcs_from_networkx, simulate_spread
from graph.influence import CascadeGraph


def standard_error(est: SpreadEstimate) -> float:
    """Four of these is a tolerance a correct simulator misses about once in 16,000 seeds."""
    return float(est.std / est.runs**0.5)


def test_a_star_with_certain_arcs_is_reached_whole_from_its_hub() -> None:
    est = simulate_spread(nx.star_graph(9), [0], runs=200, seed=1, p=1.0)
    assert est.mean == 10.0
    assert est.std == 0.0
    assert est.ci95 == (10.0, 10.0)


def test_a_half_probability_chain_reaches_one_plus_a_half_plus_a_quarter_on_average() -> None:
    est = simulate_spread(nx.DiGraph([(0, 1), (1, 2), (2, 3)]), [0], runs=40_000, seed=3, p=0.5)
    assert abs(est.mean - 1.875) <= 4 * standard_error(est)
    assert est.half_width < 0.02


def test_weighted_cascade_splits_a_nodes_activation_among_its_in_arcs() -> None:
    g = nx.DiGraph([(0, 2), (1, 2)])  # p(0, 2) = 1/2 under the weighted cascade
    est = simulate_spread(g, [0], runs=40_000, seed=5, model="wc")
    assert abs(est.mean - 1.5) <= 4 * standard_error(est)


def test_arcs_run_one_way_in_a_directed_graph() -> None:
    est = simulate_spread(nx.DiGraph([(1, 0)]), [0], runs=100, seed=1, p=1.0)
    assert est.mean == 1.0


def test_duplicate_seeds_count_once_and_no_seeds_reach_no_one() -> None:
    g = nx.star_graph(3)
    assert simulate_spread(g, [0, 0], runs=50, seed=1, p=1.0).mean == 4.0
    assert simulate_spread(g, [], runs=50, seed=1).mean == 0.0


def test_the_same_seed_gives_the_same_estimate_with_one_or_two_workers() -> None:
    g = nx.gnm_random_graph(200, 800, seed=2)
    one = simulate_spread(g, [0, 1, 2], runs=3_000, seed=9, p=0.1, workers=1)
    two = simulate_spread(g, [0, 1, 2], runs=3_000, seed=9, p=0.1, workers=2)
    assert one == two


def test_a_cascade_graph_and_the_networkx_graph_it_came_from_are_judged_alike() -> None:
    g = nx.gnm_random_graph(150, 600, seed=4, directed=True)
    from_nx = simulate_spread(g, [0, 5], runs=2_000, seed=2, p=0.2)
    from_cg = simulate_spread(CascadeGraph.from_networkx(g, p=0.2), [0, 5], runs=2_000, seed=2)
    assert from_nx.mean == pytest.approx(from_cg.mean, abs=from_nx.half_width + from_cg.half_width)


@pytest.mark.parametrize("model", ["ic", "wc"])
def test_the_judges_own_arc_rules_agree_with_the_cascade_graphs(model: str) -> None:
    g = nx.MultiGraph()
    rng = np.random.default_rng(0)
    for _ in range(120):
        u, v = (int(x) for x in rng.integers(0, 30, size=2))
        g.add_edge(u, v, w=float(rng.uniform(0.5, 3.0)))
    cg = CascadeGraph.from_networkx(g, model=model, p=0.3, weight="w")  # type: ignore[arg-type]
    arcs = _arcs_from_networkx(g, model, 0.3, "w")

    def as_dict(
        index: dict[Hashable, int], indptr: np.ndarray, heads: np.ndarray, probs: np.ndarray
    ) -> dict[tuple[Hashable, Hashable], float]:
        nodes = {i: v for v, i in index.items()}
        return {
            (nodes[u], nodes[int(heads[a])]): round(float(probs[a]), 12)
            for u in range(len(nodes))
            for a in range(indptr[u], indptr[u + 1])
        }

    assert as_dict(arcs.index, arcs.indptr, arcs.heads, arcs.probs) == as_dict(
        cg.index, cg.indptr, cg.indices, cg.probs
    )


@pytest.mark.parametrize(
    ("graph", "seeds", "kwargs", "message"),
    [
        (nx.path_graph(3), [7], {}, "not in the graph"),
        (nx.path_graph(3), [0], {"runs": 0}, "runs must be"),
        (nx.path_graph(3), [0], {"workers": 0}, "workers must be"),
        (nx.path_graph(3), [0], {"p": 2.0}, "p must be"),
        (nx.Graph(), [], {}, "no nodes"),
    ],
)
def test_bad_input_is_refused_with_a_reason(
    graph: nx.Graph, seeds: list[int], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        simulate_spread(graph, seeds, **kwargs)
