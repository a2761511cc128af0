"""Per-customer scores over the graphs that `graph.export` builds.

Every function takes a graph first and returns ``{customer_id: value}`` for every node of that graph. Two graphs
are used (see `graph.export`):

* ``G``, the influence graph: edge ``u -> v`` means *u influences v* (summed ``weight``), node attributes hold
  event summaries (``purchase_count``, ``rating_total`` ...), absent meaning zero;
* ``R``, the referral graph: edge ``referrer -> friend`` with a ``status`` of ``clicked``, ``signed_up``,
  ``converted`` or ``reversed``.

Summary of the definitions (each function documents its own):

=====================  =============================================================================================
influence               weighted PageRank of the *reversed* influence graph: a customer is influential when they
                        influence many customers who are themselves influential.
referral power          converted referrals; referral-tree descendants and generations over converted edges
                        (multi-hop); conversion rate smoothed towards the network's rate.
reach                   k-core number of the undirected influence graph, and influence out-degree.
community               Louvain communities (seeded, through NetworkX dispatch so a backend can take over).
bridging                participation coefficient: how evenly a customer's ties spread over communities.
prosumer                reviews + ideas + content + feedback per purchase, with additive smoothing.
advocacy propensity     satisfaction (smoothed mean NPS rating), past shares and converted referrals, in [0, 1].
risk                    reasons not to ask: detractor ratings, complaints, refunds, audience fatigue.
=====================  =============================================================================================
"""

# NetworkX convention: a graph is `G` (the referral graph `R`), a matrix `A`.
# ruff: noqa: N803, N806

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import networkx as nx
import numpy as np
import scipy.sparse as sp

from graph.errors import InvalidInput
from graph.model import EventKind, ReferralStatus

PROSUMER_WEIGHTS: Mapping[EventKind, float] = {
    EventKind.REVIEW: 1.0,
    EventKind.IDEA: 1.0,
    EventKind.CONTENT: 1.0,
    EventKind.FEEDBACK: 1.0,
}
"""Default weight of each prosumer event: all equal, so that "7 contributions" means seven things done."""

_CONVERTED = ReferralStatus.CONVERTED.value
_SIGNED_UP_OR_BETTER = frozenset(
    {ReferralStatus.SIGNED_UP.value, ReferralStatus.CONVERTED.value, ReferralStatus.REVERSED.value}
)
_REVERSED = ReferralStatus.REVERSED.value
# Attribute names as plain strings: an enum member hashes through Python code, a string in C.
_PURCHASES, _RATINGS, _RATING_SUM = "purchase_count", "rating_count", "rating_total"
_SHARES, _COMPLAINTS, _REFUNDS = "share_count", "complaint_count", "refund_count"

Adjacency = tuple[list[Hashable], sp.csr_array]
"""``(nodes, A)`` as `adjacency` returns it; pass it to the heavy scores to build it only once."""


# --- influence -------------------------------------------------------------------------------------------------


def adjacency(G: nx.Graph, *, weight: str | None = "weight") -> tuple[list[Hashable], sp.csr_array]:
    """The graph as a CSR matrix: ``A[i, j]`` is the weight of edge ``nodes[i] -> nodes[j]`` (1 without weight).

    Built in one pass over the adjacency (several times faster than `networkx.to_scipy_sparse_array`), so that the
    heavy scores loop in scipy rather than over Python dicts. An undirected graph gives a symmetric matrix.

    Parameters
    ----------
    G : nx.Graph or nx.DiGraph
        Not a multigraph.
    weight : str or None
        Edge attribute to use (missing means 1); ``None`` gives 1 for every edge.

    Returns
    -------
    (nodes, A)
        Node ``i`` is ``nodes[i]``, in the graph's node order.

    Examples
    --------
    >>> nodes, A = adjacency(nx.DiGraph([("a", "b")]))
    >>> nodes, A.toarray().tolist()
    (['a', 'b'], [[0.0, 1.0], [0.0, 0.0]])
    """
    if G.is_multigraph():
        raise InvalidInput("scores need a simple graph; collapse parallel edges first (graph.export does)")
    nodes = list(G)
    n = len(nodes)
    index = {node: i for i, node in enumerate(nodes)}
    adj = G._adj  # the raw dict of dicts: the public views cost one wrapper object per node
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.fromiter((len(adj[node]) for node in nodes), dtype=np.int64, count=n), out=indptr[1:])
    m = int(indptr[-1])
    indices = np.fromiter((index[v] for node in nodes for v in adj[node]), dtype=np.int64, count=m)
    if weight is None:
        data = np.ones(m, dtype=np.float64)
    else:
        data = np.fromiter(
            (d.get(weight, 1.0) for node in nodes for d in adj[node].values()), dtype=np.float64, count=m
        )
    matrix = sp.csr_array((data, indices, indptr), shape=(n, n))
    matrix.sort_indices()
    return nodes, matrix


def _distinct_ties(A: sp.csr_array, directed: bool) -> sp.csr_array:
    """Symmetric 0/1 matrix of distinct neighbours in either direction, without the diagonal."""
    pattern = sp.csr_array((np.ones(A.nnz, dtype=np.int32), A.indices, A.indptr), shape=A.shape)
    both = (pattern + pattern.T if directed else pattern).tocoo()
    off = both.row != both.col
    ties = sp.csr_array((np.ones(int(off.sum()), dtype=np.int8), (both.row[off], both.col[off])), shape=A.shape)
    ties.sort_indices()
    return ties


def influence_pagerank(
    G: nx.DiGraph,
    *,
    alpha: float = 0.85,
    weight: str | None = "weight",
    tol: float = 1.0e-6,
    max_iter: int = 100,
    prebuilt: Adjacency | None = None,
) -> dict[Hashable, float]:
    """Weighted PageRank of the reversed influence graph.

    An edge ``u -> v`` means *u influences v*. Plain PageRank would reward the customers who are influenced; on the
    reversed graph rank flows from the influenced back to their influencers, so a customer ranks high when they
    influence many customers who themselves influence many. Customers with no edge keep the teleport share, and
    rank at a customer who influences nobody is spread evenly, as in `networkx.pagerank` (whose result on
    ``G.reverse()`` this equals; the power iteration runs on a scipy matrix instead of copying the graph).

    Parameters
    ----------
    G : nx.DiGraph
        Influence graph (``u -> v``: u influences v).
    alpha : float
        Damping factor.
    weight : str or None
        Edge attribute holding the tie strength; ``None`` counts every edge as 1.
    tol, max_iter
        Stop when the L1 change is below ``N * tol``; fail after ``max_iter`` iterations.
    prebuilt : (nodes, A), optional
        ``adjacency(G, weight=weight)`` already built for another score.

    Returns
    -------
    dict
        ``{customer_id: pagerank}``, summing to 1 (empty for an empty graph).

    Raises
    ------
    networkx.PowerIterationFailedConvergence
        When ``max_iter`` iterations do not converge.

    Examples
    --------
    >>> G = nx.DiGraph([("hub", "a"), ("hub", "b"), ("hub", "c")])
    >>> pr = influence_pagerank(G)
    >>> max(pr, key=pr.get)
    'hub'
    >>> round(sum(pr.values()), 6)
    1.0
    """
    n = G.number_of_nodes()
    if n == 0:
        return {}
    nodes, A = prebuilt or adjacency(G, weight=weight)
    # Reversed graph: influenced v passes rank to influencer u along u -> v, so v's "out-strength" is its in-strength.
    strength = np.asarray(A.sum(axis=0)).ravel()
    dangling = strength == 0
    inverse = np.divide(1.0, strength, out=np.zeros(n), where=~dangling)
    x = np.full(n, 1.0 / n)
    teleport = (1.0 - alpha) / n
    for _ in range(max_iter):
        last = x
        # (x / strength) pushed back along every edge: new[u] = sum_v A[u, v] * x[v] / strength[v]
        x = alpha * (A @ (x * inverse) + x[dangling].sum() / n) + teleport
        if np.abs(x - last).sum() < n * tol:
            return dict(zip(nodes, x.tolist(), strict=True))
    raise nx.PowerIterationFailedConvergence(max_iter)


# --- referral power --------------------------------------------------------------------------------------------


class ReferralCounts(NamedTuple):
    """A referrer's referrals by how far each friend got (``signed_up`` counts signed-up or further)."""

    sent: int
    signed_up: int
    converted: int
    reversed: int


def referral_counts(R: nx.DiGraph) -> dict[Hashable, ReferralCounts]:
    """Count each customer's referrals by status.

    ``sent`` is every referral edge out of the customer; ``signed_up`` those whose friend signed up, converted or
    was later reversed (a reversal undoes a conversion, so the friend did get that far); ``converted`` only those
    still converted; ``reversed`` those undone by a refund or fraud verdict.

    Parameters
    ----------
    R : nx.DiGraph
        Referral graph with a ``status`` on every edge.

    Returns
    -------
    dict
        ``{customer_id: ReferralCounts}`` for every node of `R`.

    Examples
    --------
    >>> R = nx.DiGraph()
    >>> R.add_edge("ann", "bob", status="converted")
    >>> R.add_edge("ann", "cat", status="clicked")
    >>> referral_counts(R)["ann"]
    ReferralCounts(sent=2, signed_up=1, converted=1, reversed=0)
    """
    result: dict[Hashable, ReferralCounts] = {}
    for node, friends in R._adj.items():
        signed = converted = undone = 0
        for data in friends.values():
            value = data.get("status")
            if value in _SIGNED_UP_OR_BETTER:
                signed += 1
                if value == _CONVERTED:
                    converted += 1
                elif value == _REVERSED:
                    undone += 1
        result[node] = ReferralCounts(len(friends), signed, converted, undone)
    return result


def converted_referrals(R: nx.DiGraph) -> dict[Hashable, int]:
    """Number of referrals that converted (and were not reversed), per customer.

    Examples
    --------
    >>> R = nx.DiGraph()
    >>> R.add_edge("ann", "bob", status="converted")
    >>> R.add_edge("ann", "cat", status="reversed")
    >>> converted_referrals(R)
    {'ann': 1, 'bob': 0, 'cat': 0}
    """
    return {node: sum(1 for data in R.succ[node].values() if data.get("status") == _CONVERTED) for node in R}


class ReferralReach(NamedTuple):
    """How far a customer's converted referrals spread: distinct customers, and the depth in generations."""

    descendants: int
    generations: int


def referral_reach(R: nx.DiGraph) -> dict[Hashable, ReferralReach]:
    """Referral-tree reach over converted referrals, multi-hop.

    ``descendants`` counts the distinct customers reachable from a customer along converted referral edges (friends,
    friends of friends ...), the customer excluded; ``generations`` is the longest such chain in edges. A customer
    reached by two paths counts once. Cycles cannot happen with real conversions, but if the data holds one, its
    members are each other's descendants and the cycle counts as one generation.

    Parameters
    ----------
    R : nx.DiGraph
        Referral graph with a ``status`` on every edge; only ``converted`` edges are followed.

    Returns
    -------
    dict
        ``{customer_id: ReferralReach(descendants, generations)}`` for every node of `R`.

    Examples
    --------
    A chain ann -> bob -> cat of converted referrals:

    >>> R = nx.DiGraph()
    >>> R.add_edge("ann", "bob", status="converted")
    >>> R.add_edge("bob", "cat", status="converted")
    >>> {n: tuple(r) for n, r in sorted(referral_reach(R).items())}
    {'ann': (2, 2), 'bob': (1, 1), 'cat': (0, 0)}
    """
    converted = nx.DiGraph()
    converted.add_nodes_from(R)
    converted.add_edges_from((u, v) for u, v, s in R.edges(data="status") if s == _CONVERTED)
    dag = nx.condensation(converted)
    members: Mapping[int, set[Hashable]] = nx.get_node_attributes(dag, "members")
    waiting = {c: dag.in_degree(c) for c in dag}  # parents still to read a component's set
    below: dict[int, frozenset[Hashable]] = {}
    depth: dict[int, int] = {}
    empty: frozenset[Hashable] = frozenset()
    result: dict[Hashable, ReferralReach] = {}
    for comp in reversed(list(nx.topological_sort(dag))):
        group = members[comp]
        cycle = 1 if len(group) > 1 else 0  # members of a referral cycle reached each other: one generation
        children = list(dag.succ[comp])
        if children:
            reach: set[Hashable] = set()
            for child in children:
                reach.update(members[child])
                reach.update(below[child])
                waiting[child] -= 1
                if waiting[child] == 0:
                    del below[child]  # every parent has read it: free the memory
            reach_set: frozenset[Hashable] = frozenset(reach)
            depth[comp] = cycle + 1 + max(depth[child] for child in children)
        else:
            reach_set = empty
            depth[comp] = cycle
        if waiting[comp]:
            below[comp] = reach_set
        for node in group:
            result[node] = ReferralReach(len(reach_set) + len(group) - 1, depth[comp])
    return result


def conversion_rates(
    R: nx.DiGraph,
    *,
    prior_rate: float | None = None,
    prior_weight: float = 2.0,
    counts: Mapping[Any, ReferralCounts] | None = None,
) -> dict[Hashable, float]:
    """Share of a customer's referrals that converted, smoothed towards the network's rate.

    ``(converted + prior_weight * prior_rate) / (sent + prior_weight)``: one referral out of one is not yet a 100%
    converter. ``prior_rate`` defaults to the whole graph's converted / sent (0 when nothing was sent); a customer
    who sent nothing gets the prior itself. Reversed referrals count as sent, not converted.

    Parameters
    ----------
    R : nx.DiGraph
        Referral graph with a ``status`` on every edge.
    prior_rate : float, optional
        Rate to shrink towards; by default the graph's own.
    prior_weight : float
        How many referrals' worth of weight the prior has.
    counts : mapping, optional
        ``referral_counts(R)`` already computed.

    Returns
    -------
    dict
        ``{customer_id: rate in [0, 1]}`` for every node of `R`.

    Examples
    --------
    >>> R = nx.DiGraph()
    >>> R.add_edge("ann", "bob", status="converted")
    >>> R.add_edge("ann", "cat", status="clicked")
    >>> conversion_rates(R, prior_rate=0.5, prior_weight=2)["ann"]
    0.5
    """
    counts = referral_counts(R) if counts is None else counts
    if prior_rate is None:
        sent = sum(c.sent for c in counts.values())
        prior_rate = sum(c.converted for c in counts.values()) / sent if sent else 0.0
    return {
        node: (c.converted + prior_weight * prior_rate) / (c.sent + prior_weight) if c.sent + prior_weight else 0.0
        for node, c in counts.items()
    }


# --- reach -----------------------------------------------------------------------------------------------------


def core_numbers(G: nx.Graph, *, prebuilt: Adjacency | None = None) -> dict[Hashable, int]:
    """k-core number of each customer in the undirected influence graph.

    Direction and weight are ignored: a customer is in the k-core when they keep at least k distinct ties inside a
    group where everyone does. High core numbers mark customers embedded in dense circles rather than at a
    periphery; isolated customers have 0. Same result as `networkx.core_number` on the undirected graph, computed by
    peeling on a scipy matrix (every customer whose degree falls below k is removed in one vectorised step).

    Parameters
    ----------
    G : nx.Graph or nx.DiGraph
        Influence graph without self-loops (`graph.export` drops them).
    prebuilt : (nodes, A), optional
        ``adjacency(G)`` already built for another score (weights are ignored).

    Returns
    -------
    dict
        ``{customer_id: core number}``.

    Raises
    ------
    InvalidInput
        When the graph holds a self-loop.

    Examples
    --------
    A triangle with a tail: the triangle is the 2-core.

    >>> G = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")])
    >>> core_numbers(G)
    {'a': 2, 'b': 2, 'c': 2, 'd': 1}
    """
    n = G.number_of_nodes()
    if n == 0:
        return {}
    nodes, A = prebuilt or adjacency(G, weight=None)
    if A.diagonal().any():
        raise InvalidInput("the influence graph has self-loops; drop them before computing core numbers")
    ties = _distinct_ties(A, G.is_directed())
    indptr, indices = ties.indptr, ties.indices
    degree = np.diff(indptr).astype(np.int64)
    core = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    k = 0
    while alive.any():
        k = max(k + 1, int(degree[alive].min()) + 1)
        doomed = np.flatnonzero(alive & (degree < k))
        while doomed.size:
            core[doomed] = k - 1
            alive[doomed] = False
            starts, ends = indptr[doomed], indptr[doomed + 1]
            lengths = ends - starts
            if not lengths.sum():
                break
            # Every neighbour slot of the removed customers, gathered without a Python loop.
            offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
            touched = indices[offsets]
            touched = touched[alive[touched]]
            np.subtract.at(degree, touched, 1)
            candidates = np.unique(touched)
            doomed = candidates[degree[candidates] < k]
    return dict(zip(nodes, core.tolist(), strict=True))


def out_degrees(G: nx.DiGraph) -> dict[Hashable, int]:
    """How many customers each customer directly influences.

    Examples
    --------
    >>> out_degrees(nx.DiGraph([("a", "b"), ("a", "c")]))
    {'a': 2, 'b': 0, 'c': 0}
    """
    return {node: len(nbrs) for node, nbrs in G.succ.items()}


# --- communities and bridging ----------------------------------------------------------------------------------


def community_membership(
    G: nx.Graph,
    *,
    seed: int | None = 0,
    resolution: float = 1.0,
    weight: str | None = "weight",
    backend: str | None = None,
    prebuilt: Adjacency | None = None,
) -> dict[Hashable, int]:
    """Louvain community of each customer, numbered by size (0 is the largest).

    Runs `networkx.community.louvain_communities` through NetworkX's dispatch: ``backend`` names an installed
    backend (``"parallel"`` for nx-parallel, ``"cugraph"`` ...); ``None`` lets NetworkX choose by its
    ``nx.config.backend_priority``. Communities are those of the undirected graph, the weights of ``u -> v`` and
    ``v -> u`` summed: a tie binds two customers whichever way it points, and undirected Louvain runs markedly
    faster than directed modularity on the same graph. The graph handed to Louvain has integer nodes (they hash
    faster than customer ids). Communities of equal size are ordered by their smallest member, so the numbering is
    reproducible for a given seed.

    Parameters
    ----------
    G : nx.Graph or nx.DiGraph
        Influence graph.
    seed : int or None
        Random seed of Louvain's node order.
    resolution : float
        Above 1 favours smaller communities, below 1 larger ones.
    weight : str or None
        Edge attribute of tie strength.
    backend : str or None
        NetworkX backend to dispatch to.
    prebuilt : (nodes, A), optional
        ``adjacency(G, weight=weight)`` already built for another score.

    Returns
    -------
    dict
        ``{customer_id: community index}``.

    Raises
    ------
    InvalidInput
        When the named backend is not installed.

    Examples
    --------
    Two triangles joined by one edge form two communities:

    >>> G = nx.Graph([(1, 2), (2, 3), (3, 1), (4, 5), (5, 6), (6, 4), (3, 4)])
    >>> membership = community_membership(G, seed=1)
    >>> membership[1] == membership[2] == membership[3] != membership[4] == membership[5] == membership[6]
    True
    """
    if G.number_of_nodes() == 0:
        return {}
    nodes, A = prebuilt or adjacency(G, weight=weight)
    summed = sp.triu(A + A.T if G.is_directed() else A, k=1).tocoo()
    undirected = nx.Graph()
    undirected.add_nodes_from(range(len(nodes)))
    undirected.add_weighted_edges_from(zip(summed.row.tolist(), summed.col.tolist(), summed.data.tolist(), strict=True))
    del summed
    try:
        found = nx.community.louvain_communities(
            undirected, weight="weight", resolution=resolution, seed=seed, backend=backend
        )
    except ImportError as exc:
        raise InvalidInput(f"NetworkX backend {backend!r} is not installed ({exc})") from exc
    del undirected
    labelled = [[nodes[i] for i in members] for members in found]
    labelled.sort(key=lambda members: (-len(members), min(map(str, members))))
    return {node: index for index, members in enumerate(labelled) for node in members}


def participation_coefficients(
    G: nx.Graph, membership: Mapping[Any, int], *, prebuilt: Adjacency | None = None
) -> dict[Hashable, float]:
    """How evenly each customer's ties spread over communities (bridging).

    ``1 - sum_c (k_c / k) ** 2`` where ``k`` counts the customer's distinct neighbours in either direction and
    ``k_c`` those in community ``c`` (Guimerà and Amaral's participation coefficient, unweighted). 0 means every tie
    stays in one community; it approaches 1 for ties spread over many. Customers with no tie get 0.

    Parameters
    ----------
    G : nx.Graph or nx.DiGraph
        Influence graph.
    membership : mapping
        ``{customer_id: community}`` as from `community_membership`; a customer missing from it counts as a
        community of their own.
    prebuilt : (nodes, A), optional
        ``adjacency(G)`` already built for another score (weights are ignored).

    Returns
    -------
    dict
        ``{customer_id: coefficient in [0, 1)}``.

    Examples
    --------
    ``b`` has one neighbour in each of two communities:

    >>> G = nx.DiGraph([("a", "b"), ("b", "c")])
    >>> participation_coefficients(G, {"a": 0, "b": 0, "c": 1})["b"]
    0.5
    """
    n = G.number_of_nodes()
    if n == 0:
        return {}
    nodes, A = prebuilt or adjacency(G, weight=None)
    ties = _distinct_ties(A, G.is_directed())
    # A customer missing from `membership` is a community of their own.
    raw = np.fromiter((membership.get(node, -1 - i) for i, node in enumerate(nodes)), dtype=np.int64, count=n)
    _, label = np.unique(raw, return_inverse=True)
    one_hot = sp.csr_array((np.ones(n), (np.arange(n), label.ravel())), shape=(n, int(label.max()) + 1))
    per_community = ties.astype(np.float64) @ one_hot  # [i, c]: i's neighbours in community c
    k = np.asarray(ties.sum(axis=1), dtype=np.float64).ravel()
    squares = np.asarray(per_community.multiply(per_community).sum(axis=1)).ravel()
    coefficient = np.divide(squares, k * k, out=np.ones(n), where=k > 0)
    return dict(zip(nodes, (1.0 - coefficient).tolist(), strict=True))


# --- prosumer, advocacy, risk ----------------------------------------------------------------------------------


def _weighted_keys(weights: Mapping[EventKind, float]) -> list[tuple[str, float]]:
    return [(f"{EventKind(kind).value}_count", float(w)) for kind, w in weights.items()]


def prosumer_contributions(
    G: nx.Graph, *, weights: Mapping[EventKind, float] = PROSUMER_WEIGHTS
) -> dict[Hashable, float]:
    """Weighted count of a customer's reviews, ideas, content and feedback.

    Examples
    --------
    >>> G = nx.Graph()
    >>> G.add_node("ann", review_count=2, idea_count=1)
    >>> prosumer_contributions(G)
    {'ann': 3.0}
    """
    keys = _weighted_keys(weights)
    return {node: float(sum(w * attrs.get(key, 0) for key, w in keys)) for node, attrs in G._node.items()}


def prosumer_scores(
    G: nx.Graph,
    *,
    weights: Mapping[EventKind, float] = PROSUMER_WEIGHTS,
    smoothing: float = 1.0,
    contributions: Mapping[Any, float] | None = None,
) -> dict[Hashable, float]:
    """Contributions per purchase: ``contributions / (purchases + smoothing)``.

    A prosumer produces as well as consumes. Dividing by purchases rewards customers whose contribution is large
    for their buying; the additive ``smoothing`` keeps a customer with no purchase finite and stops a single review
    after a single purchase from looking like a prolific contributor (1 / (1 + 1) = 0.5).

    Parameters
    ----------
    G : nx.Graph
        Graph whose nodes carry ``<kind>_count`` attributes.
    weights : mapping
        Weight of each prosumer event kind.
    smoothing : float
        Added to the purchase count; must be positive.
    contributions : mapping, optional
        ``prosumer_contributions(G, weights=weights)`` already computed.

    Returns
    -------
    dict
        ``{customer_id: score >= 0}``.

    Examples
    --------
    >>> G = nx.Graph()
    >>> G.add_node("ann", review_count=3, idea_count=1, purchase_count=3)
    >>> G.add_node("bob", purchase_count=9)
    >>> prosumer_scores(G)
    {'ann': 1.0, 'bob': 0.0}
    """
    if smoothing <= 0:
        raise InvalidInput("prosumer smoothing must be positive")
    if contributions is None:
        contributions = prosumer_contributions(G, weights=weights)
    return {node: contributions[node] / (attrs.get(_PURCHASES, 0) + smoothing) for node, attrs in G._node.items()}


def mean_ratings(G: nx.Graph) -> dict[Hashable, float | None]:
    """Average NPS rating (0-10) of each customer, ``None`` when they never rated.

    Examples
    --------
    >>> G = nx.Graph()
    >>> G.add_node("ann", rating_count=2, rating_total=17.0)
    >>> G.add_node("bob")
    >>> mean_ratings(G)
    {'ann': 8.5, 'bob': None}
    """
    result: dict[Hashable, float | None] = {}
    for node, attrs in G._node.items():
        n = attrs.get(_RATINGS, 0)
        result[node] = attrs.get(_RATING_SUM, 0.0) / n if n else None
    return result


def advocacy_propensity(
    G: nx.Graph,
    converted: Mapping[Any, int],
    *,
    prior_rating: float = 7.0,
    prior_weight: float = 1.0,
    share_half: float = 2.0,
    referral_half: float = 1.0,
    weights: tuple[float, float, float] = (0.5, 0.25, 0.25),
) -> dict[Hashable, float]:
    """How likely a customer is to speak for the brand if asked, in [0, 1].

    A weighted mean of three signals, each in [0, 1]:

    * satisfaction: mean NPS rating smoothed towards ``prior_rating`` with ``prior_weight`` ratings' worth of
      weight, divided by 10 (a customer who never rated gets ``prior_rating / 10``);
    * shares: ``shares / (shares + share_half)`` (``share_half`` shares give 0.5);
    * proven referrals: ``converted / (converted + referral_half)``.

    ``weights`` weigh them in that order (default satisfaction 0.5, shares 0.25, referrals 0.25).

    Parameters
    ----------
    G : nx.Graph
        Graph whose nodes carry ``rating_*`` and ``share_count`` attributes.
    converted : mapping
        ``{customer_id: converted referrals}``; customers absent have none.

    Returns
    -------
    dict
        ``{customer_id: propensity}``.

    Examples
    --------
    Ratings 9 and 10, two shares and one converted referral:

    >>> G = nx.Graph()
    >>> G.add_node("ann", rating_count=2, rating_total=19.0, share_count=2)
    >>> round(advocacy_propensity(G, {"ann": 1})["ann"], 4)
    0.6833
    """
    w_sat, w_share, w_ref = weights
    total_w = w_sat + w_share + w_ref
    if total_w <= 0 or min(weights) < 0:
        raise InvalidInput("advocacy weights must be non-negative and add up to more than 0")
    if prior_weight <= 0 or share_half <= 0 or referral_half <= 0:
        raise InvalidInput("prior_weight, share_half and referral_half must be positive")
    prior = prior_rating * prior_weight
    result: dict[Hashable, float] = {}
    for node, attrs in G._node.items():
        satisfaction = (attrs.get(_RATING_SUM, 0.0) + prior) / (attrs.get(_RATINGS, 0) + prior_weight) / 10.0
        satisfaction = min(max(satisfaction, 0.0), 1.0)
        shares = attrs.get(_SHARES, 0)
        conv = converted.get(node, 0)
        result[node] = (
            w_sat * satisfaction + w_share * shares / (shares + share_half) + w_ref * conv / (conv + referral_half)
        ) / total_w
    return result


def _plural(n: int | float, word: str) -> str:
    return f"{n:g} {word}" if n == 1 else f"{n:g} {word}s"


def risk_flags(
    G: nx.Graph,
    R: nx.DiGraph | None = None,
    *,
    detractor_max_rating: float = 6.0,
    min_complaints: int = 1,
    refund_ratio: float = 0.5,
    fatigue_min_clicks: int = 10,
    counts: Mapping[Any, ReferralCounts] | None = None,
) -> dict[Hashable, tuple[str, ...]]:
    """Reasons not to ask a customer for anything; an empty tuple means none.

    Unhappy:

    * detractor: mean NPS rating at or below ``detractor_max_rating`` (NPS calls 0-6 detractors);
    * complaints: at least ``min_complaints`` complaint events;
    * refunds: at least one refund, and refunds / max(purchases, 1) at or above ``refund_ratio``.

    Fatigued (only signal in the data model; the engine stores no record of asks): at least ``fatigue_min_clicks``
    referrals sent (from `R`) of which no friend ever signed up, read as an audience that has stopped responding.

    Parameters
    ----------
    G : nx.Graph
        Graph whose nodes carry event-summary attributes.
    R : nx.DiGraph, optional
        Referral graph; without it there is no fatigue check.
    detractor_max_rating, min_complaints, refund_ratio, fatigue_min_clicks
        The thresholds above.
    counts : mapping, optional
        ``referral_counts(R)`` already computed.

    Returns
    -------
    dict
        ``{customer_id: (reason, ...)}`` with reasons in words, for every node of `G`.

    Examples
    --------
    >>> G = nx.Graph()
    >>> G.add_node("ann", rating_count=1, rating_total=3.0, complaint_count=2)
    >>> G.add_node("bob", rating_count=1, rating_total=9.0)
    >>> flags = risk_flags(G)
    >>> flags["ann"]
    ('detractor: average rating 3.0/10', '2 complaints')
    >>> flags["bob"]
    ()
    """
    if counts is None:
        counts = referral_counts(R) if R is not None else {}
    result: dict[Hashable, tuple[str, ...]] = {}
    none: tuple[str, ...] = ()
    for node, attrs in G._node.items():
        reasons: list[str] = []
        ratings = attrs.get(_RATINGS, 0)
        if ratings:
            mean = attrs.get(_RATING_SUM, 0.0) / ratings
            if mean <= detractor_max_rating:
                reasons.append(f"detractor: average rating {mean:.1f}/10")
        complaints = attrs.get(_COMPLAINTS, 0)
        if complaints and complaints >= min_complaints:
            reasons.append(_plural(complaints, "complaint"))
        refunds = attrs.get(_REFUNDS, 0)
        if refunds:
            purchases = attrs.get(_PURCHASES, 0)
            if refunds / max(purchases, 1) >= refund_ratio:
                reasons.append(f"{_plural(refunds, 'refund')} for {_plural(purchases, 'purchase')}")
        sent = counts.get(node)
        if sent is not None and sent.sent >= fatigue_min_clicks and sent.signed_up == 0:
            reasons.append(f"fatigued: {sent.sent} referral clicks and no sign-up")
        result[node] = tuple(reasons) if reasons else none
    return result
