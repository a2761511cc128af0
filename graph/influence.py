"""Choose advocates by influence maximisation, not by raw degree.

A marketer can afford to ask only `k` customers; the question is which `k` start the largest cascade of referrals.
Under the independent cascade (IC) model that is NP-hard, so we use reverse-reachable (RR) sets (Borgs et al.
2014): the share of random RR sets that a seed set touches, times the number of customers, estimates its spread
without bias, and greedy max-coverage on enough of them is within ``1 - 1/e - epsilon`` of the best set. IMM (Tang,
Shi and Xiao, SIGMOD 2015) says how many RR sets are enough.

The certified count is tuned for the guarantee, not for the best seeds, so :func:`select_seeds` goes further:

1. IMM's bound-finding phase runs as published and gives ``theta`` (with the fix of Chen 2018 for IMM's
   martingale argument: the final greedy runs on fresh RR sets, not on the ones that found the bound).
2. The final greedy runs on ``max(theta, min_rr_sets)`` fresh RR sets, so a graph whose bound asks for few sets
   still gets enough to rank near-tied customers.
3. *Best of*: the greedy set, degree discount and top degree are scored on the bound-finding sets, which the
   greedy never saw (a held-out estimate), and the highest scorer is returned. ``params["winner"]`` says which
   one won and ``params["candidate_spreads"]`` shows every score. When a heuristic wins (at p = 0.01 on NetHEPT
   degree discount is as good as greedy on 200M RR sets), the returned set is the heuristic's, and the claim is
   "at least the IMM set's spread, up to the held-out estimate's error".

Sampling is compiled with numba and never draws what it can compute. A root's RR set is just the root with
probability ``stay`` (no in-arc fires), known in closed form, so spread is ``sum of stay over the seeds`` plus
``n * rho * P(a multi-node RR set meets the seeds)`` with ``rho`` the mean of ``1 - stay``: the single-node sets
(96% of them at p = 0.01 on NetHEPT) are integrated exactly and only the others are drawn, roots from an alias
table, walked in node order, skipping geometrically over arcs that do not fire. This is the same estimator with
less variance, so IMM's counts (in "equivalent" RR sets, ``theta * rho`` drawn) keep their guarantee: the drawn
part is a binomial with the same mean as before. Chunks of sets run on ``workers`` threads (the kernels release
the GIL), each with a SplitMix64 stream seeded from (seed, stream, chunk), so the result for a seed does not
depend on the number of workers.

:mod:`graph.diffusion` is the independent judge: forward Monte Carlo cascades with a different random generator,
no code shared with this module's sampling.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Collection, Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import networkx as nx
import numba
import numpy as np
import numpy.typing as npt

from graph.errors import InvalidInput

__all__ = [
    "CascadeGraph",
    "InfluenceInputError",
    "Method",
    "Model",
    "SeedSelection",
    "sample_rr_sets",
    "select_from_rr_sets",
    "select_seeds",
]

IntArray = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Model = Literal["ic", "wc"]
Method = Literal["imm", "degree", "pagerank", "degree_discount"]
Progress = Callable[[str, float], None]

_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(fn: _F) -> _F:
    """Compile with numba, cached on disk, releasing the GIL so chunks can run on threads."""
    return cast(_F, numba.njit(cache=True, nogil=True)(fn))


def _jit_inline(fn: _F) -> _F:
    """Compiled and inlined into its caller, so a hot helper costs no call (nor array reference counting)."""
    return cast(_F, numba.njit(cache=True, nogil=True, inline="always")(fn))


class InfluenceInputError(InvalidInput, ValueError):
    """Bad arguments to seed selection; a `ValueError` for library callers, `InvalidInput` (422) for the API."""


# ----------------------------------------------------------------------------------------------------------------
# The cascade graph


@dataclass(frozen=True, eq=False)
class CascadeGraph:
    """Arc probabilities as CSR arrays, built once from a NetworkX graph and shared by every sampler.

    Node ``i`` is ``nodes[i]``. Out-arcs (``indptr``, ``indices``, ``probs``) drive forward simulation; in-arcs
    (``in_indptr``, ``in_indices``, ``in_probs``) drive reverse-reachable sampling. ``in_uniform[v]`` is the common
    probability of ``v``'s in-arcs when they all share one (always true under uniform IC and weighted cascade;
    0 for no in-arcs, -1 when they differ), ``in_log_q[v]`` is ``log(1 - in_uniform[v])`` where that is finite
    and negative (else 0), and ``in_stay[v]`` is the chance that none of ``v``'s in-arcs fires.
    """

    nodes: list[Hashable]
    indptr: IntArray
    indices: Int32Array
    probs: FloatArray
    in_indptr: IntArray
    in_indices: Int32Array
    in_probs: FloatArray
    in_uniform: FloatArray
    in_log_q: FloatArray
    in_stay: FloatArray
    model: Model = "ic"
    p: float = 0.01
    weight: str | None = None
    index: dict[Hashable, int] = field(default_factory=dict, repr=False)

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_arcs(self) -> int:
        return int(self.indices.shape[0])

    @classmethod
    def from_networkx(
        cls,
        G: nx.Graph,  # noqa: N803 (networkx's name for the graph)
        *,
        model: Model = "ic",
        p: float = 0.01,
        weight: str | None = None,
    ) -> CascadeGraph:
        """Build the arc arrays of `G` under a diffusion model.

        Parameters
        ----------
        G : networkx graph
            Directed arcs are used as given (``u -> v``: ``u`` can influence ``v``); an undirected edge becomes two
            arcs. Self-loops are dropped; parallel edges of a multigraph collapse into one arc whose weight is
            their sum. Every node of `G` is a possible seed, including isolated ones.
        model : {"ic", "wc"}
            ``"ic"``: independent cascade with ``p`` on every arc; with `weight`, ``p(u,v) = p * w(u,v) / max w``,
            so the heaviest arc gets ``p`` and the others proportionally less. ``"wc"``: weighted cascade,
            ``p(u,v) = 1 / in-degree(v)``; with `weight`, ``w(u,v) / sum of v's in-arc weights``. ``p`` is not
            used by ``"wc"`` but is still checked.
        p : float
            Arc probability for ``"ic"``, in ``(0, 1]``.
        weight : str or None
            Edge attribute holding a positive weight (missing means 1).

        Examples
        --------
        >>> cg = CascadeGraph.from_networkx(nx.path_graph(3), p=0.5)
        >>> cg.n_nodes, cg.n_arcs, float(cg.probs[0])
        (3, 4, 0.5)
        """
        if model not in ("ic", "wc"):
            raise InfluenceInputError(f"model must be 'ic' or 'wc', got {model!r}")
        if not (isinstance(p, int | float) and 0.0 < float(p) <= 1.0):
            raise InfluenceInputError(f"p must be a probability in (0, 1], got {p!r}")
        nodes = list(G.nodes)
        index = {v: i for i, v in enumerate(nodes)}
        n = len(nodes)
        m = G.number_of_edges()
        src = np.empty(m, np.int64)
        dst = np.empty(m, np.int64)
        wts = np.ones(m, np.float64)
        if weight:
            for i, (u, v, w) in enumerate(G.edges(data=weight, default=1.0)):
                src[i], dst[i], wts[i] = index[u], index[v], float(w)
        else:
            for i, (u, v) in enumerate(G.edges()):
                src[i], dst[i] = index[u], index[v]
        if weight and m and not (np.all(np.isfinite(wts)) and np.all(wts > 0)):
            raise InfluenceInputError(f"edge attribute {weight!r} must be a positive finite number on every edge")
        if not G.is_directed():
            src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
            wts = np.concatenate([wts, wts])
        keep = src != dst
        src, dst, wts = src[keep], dst[keep], wts[keep]
        key, inverse = np.unique(src * max(n, 1) + dst, return_inverse=True)
        wts = np.bincount(inverse, weights=wts, minlength=key.shape[0]) if key.shape[0] else wts[:0]
        src, dst = key // max(n, 1), key % max(n, 1)
        if model == "ic":
            probs = np.full(key.shape[0], float(p)) if weight is None else float(p) * wts / wts.max(initial=1.0)
        else:
            in_weight = np.bincount(dst, weights=wts, minlength=n)
            probs = wts / in_weight[dst]
        return cls._from_sorted_arcs(nodes, index, src, dst, probs, model=model, p=float(p), weight=weight)

    @classmethod
    def _from_sorted_arcs(
        cls,
        nodes: list[Hashable],
        index: dict[Hashable, int],
        src: IntArray,
        dst: IntArray,
        probs: FloatArray,
        *,
        model: Model,
        p: float,
        weight: str | None,
    ) -> CascadeGraph:
        """Both CSR views from arcs already sorted by (source, target) without duplicates."""
        n = len(nodes)
        indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
        order = np.lexsort((src, dst))
        in_indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(dst, minlength=n), out=in_indptr[1:])
        in_probs = np.ascontiguousarray(probs[order], dtype=np.float64)
        in_uniform = np.zeros(n, np.float64)
        has_in = np.diff(in_indptr) > 0
        if in_probs.shape[0]:
            starts = in_indptr[:-1][has_in]
            lo = np.minimum.reduceat(in_probs, starts)
            hi = np.maximum.reduceat(in_probs, starts)
            in_uniform[has_in] = np.where(lo == hi, lo, -1.0)
        with np.errstate(divide="ignore"):
            log_stay = np.bincount(dst[order], weights=np.log1p(-in_probs), minlength=n)
        in_stay = np.exp(log_stay)
        usable = (in_uniform > 0.0) & (in_uniform < 1.0)
        in_log_q = np.zeros(n, np.float64)
        in_log_q[usable] = np.log1p(-in_uniform[usable])
        return cls(
            nodes=nodes,
            indptr=indptr,
            indices=dst.astype(np.int32),
            probs=np.ascontiguousarray(probs, dtype=np.float64),
            in_indptr=in_indptr,
            in_indices=src[order].astype(np.int32),
            in_probs=in_probs,
            in_uniform=in_uniform,
            in_log_q=in_log_q,
            in_stay=in_stay,
            model=model,
            p=p,
            weight=weight,
            index=index,
        )


# ----------------------------------------------------------------------------------------------------------------
# Reverse-reachable sampling (compiled)


@_jit
def _grow(buf: Int32Array) -> Int32Array:
    bigger = np.empty(buf.shape[0] * 2, np.int32)
    bigger[: buf.shape[0]] = buf
    return bigger


@_jit
def _alias_table(weights: FloatArray) -> tuple[FloatArray, IntArray]:
    """Vose's alias table: draw an index in proportion to `weights` with one uniform and two lookups."""
    n = weights.shape[0]
    total = weights.sum()
    scaled = weights * (n / total)
    keep = np.ones(n, np.float64)
    alias = np.arange(n).astype(np.int64)
    small = np.empty(n, np.int64)
    large = np.empty(n, np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        g = large[nl - 1]
        keep[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            nl -= 1
            small[ns] = g
            ns += 1
    return keep, alias


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


@_jit_inline
def _uniform(state: npt.NDArray[np.uint64]) -> float:
    """SplitMix64 (Steele, Lea and Flood 2014): a uniform on [0, 1) from a one-word state, inlined."""
    z = state[0] + _GOLDEN
    state[0] = z
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * _TO_UNIT


# Per-node sampling facts packed in one 64-byte row, so visiting a node touches one cache line, not seven.
_LO, _HI, _PU, _LOG_Q, _STAY, _KEEP, _ALIAS = range(7)


@_jit_inline
def _expand(
    info: npt.NDArray[np.float64],
    w: int,
    u01: float,
    stamp: int,
    in_indices: Int32Array,
    in_probs: FloatArray,
    mark: Int32Array,
    members: Int32Array,
    size: int,
    state: npt.NDArray[np.uint64],
) -> int:
    """Append the unmarked sources of the node's in-arcs that fire; `u01` decides whether any fires at all.

    ``u01 < stay`` (no arc fires, the common case at small p) costs nothing more. Otherwise ``u01 - stay`` is a
    uniform on ``[0, 1 - stay)`` that picks the first firing arc by inverse CDF, and the arcs after it are drawn
    afresh: by geometric skips when the node's in-arcs share one probability, else one coin each. The caller
    guarantees room for ``hi - lo`` more members.
    """
    stay = info[w, _STAY]
    if u01 < stay:
        return size
    lo = int(info[w, _LO])
    hi = int(info[w, _HI])
    pu = info[w, _PU]
    log_q = info[w, _LOG_Q]
    target = u01 - stay
    if pu >= 1.0:
        j = 0
    elif pu > 0.0:
        j = int(math.log1p(-target) / log_q)
    else:
        acc = 0.0
        survive = 1.0
        j = hi - lo - 1
        for t in range(hi - lo):
            acc += survive * in_probs[lo + t]
            if target < acc:
                j = t
                break
            survive *= 1.0 - in_probs[lo + t]
    pos = lo + min(j, hi - lo - 1)
    while pos < hi:
        u = in_indices[pos]
        if mark[u] != stamp:
            mark[u] = stamp
            members[size] = u
            size += 1
        pos += 1
        if pu <= 0.0:
            while pos < hi and _uniform(state) >= in_probs[pos]:
                pos += 1
        elif log_q < 0.0:
            pos += int(math.log(1.0 - _uniform(state)) / log_q)
    return size


@_jit
def _rr_multi(
    seed: int,
    count: int,
    node_info: npt.NDArray[np.float64],
    in_indices: Int32Array,
    in_probs: FloatArray,
) -> tuple[IntArray, Int32Array]:
    """`count` RR sets conditioned on holding more than their root, in CSR form (root first in each set).

    A uniform root's set is larger than the root alone with probability ``1 - stay``, so conditioning draws the
    root in proportion to that (from an alias table) and its deciding uniform from ``[stay, 1)``.
    """
    state = np.empty(1, np.uint64)
    state[0] = np.uint64(seed)
    n = node_info.shape[0]
    offsets = np.empty(count + 1, np.int64)
    offsets[0] = 0
    members = np.empty(max(64, 4 * count), np.int32)
    mark = np.zeros(n, np.int32)
    stay = node_info[:, _STAY].copy()  # compact, so the common "nothing fires" test stays in cache
    # Draw all roots first (independent lookups overlap in memory), then walk them in node order: a root's row is
    # then already in cache, which roughly halves the time per set on large graphs.
    per_root = np.zeros(n, np.int32)
    for _ in range(count):
        x = _uniform(state) * n
        v = min(int(x), n - 1)
        if x - v >= node_info[v, _KEEP]:
            v = int(node_info[v, _ALIAS])
        per_root[v] += 1
    size = 0
    r = 0
    for v in range(n):
        stay_v = node_info[v, _STAY]
        for _ in range(per_root[v]):
            r += 1
            while size + int(node_info[v, _HI] - node_info[v, _LO]) + 1 >= members.shape[0]:
                members = _grow(members)
            start = size
            members[size] = v
            size += 1
            mark[v] = r
            u01 = stay_v + _uniform(state) * (1.0 - stay_v)
            size = _expand(node_info, v, u01, r, in_indices, in_probs, mark, members, size, state)
            head = start + 1
            while head < size:
                w = members[head]
                head += 1
                u01 = _uniform(state)
                if u01 < stay[w]:
                    continue
                while size + int(node_info[w, _HI] - node_info[w, _LO]) >= members.shape[0]:
                    members = _grow(members)
                size = _expand(node_info, w, u01, r, in_indices, in_probs, mark, members, size, state)
            offsets[r] = size
    return offsets, members[:size].copy()


@dataclass(frozen=True, eq=False)
class _RRBatch:
    """Multi-node RR sets in CSR form, with how each covered set and each seed's own root count in spread units.

    Spread is ``sum(single_w[s] for s in S) + multi_w * (multi-node sets that S touches)``: the single-node sets
    are integrated exactly (``single_w = in_stay``), so only the larger sets carry sampling noise.
    """

    equivalent: int
    single_w: FloatArray
    multi_w: float
    offsets: IntArray
    members: Int32Array


def _sampler(cg: CascadeGraph) -> tuple[float, npt.NDArray[np.float64]]:
    """The share ``rho`` of RR sets holding more than their root, and the packed per-node rows to draw them."""
    n = cg.n_nodes
    go = np.clip(1.0 - cg.in_stay, 0.0, 1.0)
    total = float(go.sum())
    info = np.zeros((n, 8), np.float64)
    info[:, _LO] = cg.in_indptr[:-1]
    info[:, _HI] = cg.in_indptr[1:]
    info[:, _PU] = cg.in_uniform
    info[:, _LOG_Q] = cg.in_log_q
    info[:, _STAY] = cg.in_stay
    if total > 0.0:
        info[:, _KEEP], info[:, _ALIAS] = _alias_table(go)
    return total / n if n else 0.0, info


def _chunk_seed(root_seed: int, stream: int, chunk: int) -> int:
    """A 63-bit seed per (stream, chunk), so the sets drawn never depend on how chunks are spread over workers."""
    return int(np.random.SeedSequence(root_seed, spawn_key=(stream, chunk)).generate_state(1, np.uint64)[0] >> 1)


def _chunk_size(n: int) -> int:
    """Multi-node sets per chunk: small enough to share out between workers, large next to the O(n) setup."""
    return max(1 << 13, n // 8)


class _RRPool:
    """One stream of RR sets that grows in whole chunks of multi-node sets, sampled on `workers` threads.

    Sizes are in *equivalent* RR sets: ``theta`` uniform-root sets hold about ``theta * rho`` multi-node ones,
    where ``rho`` is the mean of ``1 - in_stay``; only those are drawn.
    """

    def __init__(self, cg: CascadeGraph, root_seed: int, stream: int, workers: int) -> None:
        self._cg = cg
        self._seed = root_seed
        self._stream = stream
        self._workers = workers
        self.rho, self._info = _sampler(cg)
        self._parts: list[tuple[IntArray, Int32Array]] = []
        self._chunk = _chunk_size(cg.n_nodes)
        self.multi = 0
        self.equivalent = 0

    def extend_to(self, equivalent: int) -> None:
        """Draw whole chunks until at least ``equivalent * rho`` multi-node sets are held."""
        self.equivalent = max(self.equivalent, int(equivalent))
        if self.rho <= 0.0:
            return
        need = -(-max(0, math.ceil(equivalent * self.rho) - self.multi) // self._chunk)
        if need == 0:
            return
        first = self.multi // self._chunk
        cg = self._cg

        def one(i: int) -> tuple[IntArray, Int32Array]:
            return _rr_multi(
                _chunk_seed(self._seed, self._stream, i),
                self._chunk,
                self._info,
                cg.in_indices,
                cg.in_probs,
            )

        ids = range(first, first + need)
        if self._workers > 1 and need > 1:
            with ThreadPoolExecutor(max_workers=self._workers) as pool:
                self._parts.extend(pool.map(one, ids))
        else:
            self._parts.extend(one(i) for i in ids)
        self.multi += need * self._chunk
        self.equivalent = max(self.equivalent, math.floor(self.multi / self.rho))

    def batch(self) -> _RRBatch:
        """All sets drawn so far, folded into one batch."""
        if len(self._parts) > 1:
            shifts = np.cumsum([0] + [m.shape[0] for _, m in self._parts[:-1]])
            offsets = np.concatenate(
                [np.zeros(1, np.int64)] + [o[1:] + s for (o, _), s in zip(self._parts, shifts, strict=True)]
            )
            self._parts = [(offsets, np.concatenate([m for _, m in self._parts]))]
        offsets, members = self._parts[0] if self._parts else (np.zeros(1, np.int64), np.zeros(0, np.int32))
        n = self._cg.n_nodes
        multi_w = n * self.rho / self.multi if self.multi else 0.0
        return _RRBatch(self.equivalent, self._cg.in_stay, multi_w, offsets, members)


def sample_rr_sets(cg: CascadeGraph, count: int, seed: int) -> tuple[IntArray, Int32Array]:
    """Sample `count` reverse-reachable sets; a pure function, so a Celery task can draw one chunk of them.

    Parameters
    ----------
    cg : CascadeGraph
    count : int
        Number of RR sets, each rooted at a node drawn uniformly.
    seed : int
        The same seed always gives the same sets.

    Returns
    -------
    offsets, members : ndarray
        Set ``i`` is ``members[offsets[i]:offsets[i + 1]]`` (node indices into ``cg.nodes``, root first). The
        single-node sets come first; coverage does not care about order.

    Examples
    --------
    >>> cg = CascadeGraph.from_networkx(nx.DiGraph([(0, 1)]), p=1.0)
    >>> offsets, members = sample_rr_sets(cg, 4, seed=1)
    >>> len(offsets) - 1  # every set holds its root, and node 1's set also holds 0, which always reaches it
    4
    >>> all(0 in members[offsets[i] : offsets[i + 1]] for i in range(4))
    True
    """
    if count < 0:
        raise InfluenceInputError(f"count must be >= 0, got {count}")
    if cg.n_nodes == 0:
        raise InfluenceInputError("the graph has no nodes, so there is nothing to sample")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7,)))
    rho, info = _sampler(cg)
    n_multi = int(rng.binomial(count, min(rho, 1.0)))
    stay = np.clip(cg.in_stay, 0.0, None)
    if count - n_multi and stay.sum() > 0:
        roots = rng.choice(cg.n_nodes, size=count - n_multi, p=stay / stay.sum()).astype(np.int32)
    else:
        roots = np.zeros(0, np.int32)
    if n_multi:
        offsets, members = _rr_multi(
            int(rng.integers(2**63)),
            n_multi,
            info,
            cg.in_indices,
            cg.in_probs,
        )
    else:
        offsets, members = np.zeros(1, np.int64), np.zeros(0, np.int32)
    all_offsets = np.concatenate([np.arange(roots.shape[0], dtype=np.int64), offsets + roots.shape[0]])
    return all_offsets, np.concatenate([roots, members]).astype(np.int32, copy=False)


# ----------------------------------------------------------------------------------------------------------------
# Greedy max-coverage and held-out scoring (compiled)


@_jit
def _greedy_cover(
    k: int,
    single_w: FloatArray,
    multi_w: float,
    offsets: IntArray,
    members: Int32Array,
    allowed: BoolArray,
    groups: IntArray,
    cap: int,
) -> tuple[IntArray, FloatArray]:
    """Greedy weighted max-coverage with a lazy max-heap and a per-group cap; ties go to the lower index."""
    n = single_w.shape[0]
    n_sets = offsets.shape[0] - 1
    ptr = np.zeros(n + 1, np.int64)
    for i in range(members.shape[0]):
        ptr[members[i] + 1] += 1
    gain = np.empty(n, np.float64)
    for v in range(n):
        gain[v] = single_w[v] + multi_w * ptr[v + 1]
        ptr[v + 1] += ptr[v]
    sets = np.empty(members.shape[0], np.int32)
    fill = ptr[:-1].copy()
    for r in range(n_sets):
        for i in range(offsets[r], offsets[r + 1]):
            v = members[i]
            sets[fill[v]] = r
            fill[v] += 1
    covered = np.zeros(n_sets, np.bool_)
    heap: list[tuple[float, int]] = [(0.0, 0) for _ in range(0)]
    for v in range(n):
        if allowed[v]:
            heap.append((-float(gain[v]), v))
    heapq.heapify(heap)
    n_groups = 1
    for v in range(n):
        n_groups = max(n_groups, groups[v] + 1)
    used = np.zeros(n_groups, np.int64)
    picks = np.empty(k, np.int64)
    gains = np.empty(k, np.float64)
    chosen = 0
    while chosen < k and len(heap) > 0:
        neg, top = heapq.heappop(heap)
        g = groups[top]
        if g >= 0 and used[g] >= cap:
            continue
        if -neg != gain[top]:
            heapq.heappush(heap, (-float(gain[top]), top))
            continue
        v = top
        picks[chosen] = v
        gains[chosen] = gain[v]
        chosen += 1
        if g >= 0:
            used[g] += 1
        for idx in range(ptr[v], ptr[v + 1]):
            r = sets[idx]
            if not covered[r]:
                covered[r] = True
                for i in range(offsets[r], offsets[r + 1]):
                    gain[members[i]] -= multi_w
    return picks[:chosen], gains[:chosen]


@_jit
def _top_k_sum(k: int, single_w: FloatArray, multi_w: float, members: Int32Array, allowed: BoolArray) -> float:
    """Sum of the `k` largest single-node coverages: an upper bound on any `k`-set's coverage, found in one pass."""
    n = single_w.shape[0]
    gain = single_w.copy()
    for i in range(members.shape[0]):
        gain[members[i]] += multi_w
    for v in range(n):
        if not allowed[v]:
            gain[v] = 0.0
    top = np.sort(gain)[::-1]
    return float(top[: min(k, n)].sum())


@_jit
def _coverage_gains(
    seeds: IntArray, single_w: FloatArray, multi_w: float, offsets: IntArray, members: Int32Array
) -> FloatArray:
    """Each seed's share of the coverage it adds first, in selection order (the sum is the set's coverage)."""
    n = single_w.shape[0]
    rank = np.full(n, -1, np.int64)
    gains = np.zeros(seeds.shape[0], np.float64)
    for i in range(seeds.shape[0]):
        s = seeds[i]
        if rank[s] < 0:
            rank[s] = i
            gains[i] += single_w[s]
    none = seeds.shape[0]
    for r in range(offsets.shape[0] - 1):
        best = none
        for i in range(offsets[r], offsets[r + 1]):
            rk = rank[members[i]]
            if 0 <= rk < best:
                best = rk
        if best < none:
            gains[best] += multi_w
    return gains


# ----------------------------------------------------------------------------------------------------------------
# Public selection


@dataclass
class SeedSelection:
    """The seeds chosen, in order, with what they are expected to achieve and how they were found.

    ``marginal_gains[i]`` is the estimated number of extra customers reached by adding ``seeds[i]`` to the seeds
    before it; they sum to ``estimated_spread`` (seeds included). Both come from RR sets the selection did not
    fit, so they are unbiased; they are ``[]`` and ``None`` for a heuristic called with ``estimate=False``.
    ``spread_ci95`` is the estimate's 95% sampling interval. ``warnings`` says when fewer than ``k`` seeds could
    be returned, and why.
    """

    seeds: list[Hashable]
    marginal_gains: list[float]
    estimated_spread: float | None
    method: str
    params: dict[str, Any]
    seconds: float
    rr_sets: int
    warnings: list[str] = field(default_factory=list)
    spread_ci95: tuple[float, float] | None = None


def _ci95(picks: IntArray, gains: FloatArray, batch: _RRBatch) -> tuple[float, float]:
    """Normal interval of a held-out estimate: only the multi-node sets are random (a binomial count of hits)."""
    total = float(gains.sum())
    sets = batch.offsets.shape[0] - 1
    if sets == 0 or batch.multi_w == 0.0:
        return total, total
    hits = (total - float(batch.single_w[np.unique(picks)].sum())) / batch.multi_w
    share = min(max(hits / sets, 0.0), 1.0)
    half = 1.96 * batch.multi_w * math.sqrt(sets * share * (1.0 - share))
    return total - half, total + half


@dataclass(frozen=True)
class _Constraints:
    allowed: BoolArray
    groups: IntArray
    cap: int
    selectable: int


def _constraints(
    cg: CascadeGraph,
    candidates: Collection[Hashable] | None,
    max_per_group: int | None,
    groups: Mapping[Hashable, int] | None,
) -> _Constraints:
    n = cg.n_nodes
    allowed = np.ones(n, np.bool_)
    if candidates is not None:
        allowed[:] = False
        unknown = [c for c in candidates if c not in cg.index]
        if unknown:
            raise InfluenceInputError(f"{len(unknown)} candidate(s) are not in the graph, e.g. {unknown[:5]!r}")
        allowed[[cg.index[c] for c in candidates]] = True
    group_of = np.full(n, -1, np.int64)
    cap = n + 1
    if max_per_group is not None:
        if groups is None:
            raise InfluenceInputError("max_per_group needs groups: a mapping from customer to community")
        if max_per_group < 1:
            raise InfluenceInputError(f"max_per_group must be >= 1, got {max_per_group}")
        cap = min(int(max_per_group), n + 1)  # above n it caps nothing, and n + 1 fits the int64 the loops use
        labels: dict[int, int] = {}
        for node, g in groups.items():
            i = cg.index.get(node)
            if i is not None:
                group_of[i] = labels.setdefault(int(g), len(labels))
    selectable = int(allowed.sum())
    if max_per_group is not None:
        free = int((allowed & (group_of < 0)).sum())
        capped = np.bincount(group_of[allowed & (group_of >= 0)], minlength=1)
        selectable = free + int(np.minimum(capped, cap).sum())
    return _Constraints(allowed, group_of, cap, selectable)


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def _default_min_rr_sets(cg: CascadeGraph) -> int:
    return max(200_000, 100 * cg.n_nodes)


def select_seeds(
    cg: CascadeGraph,
    k: int,
    *,
    method: Method = "imm",
    epsilon: float = 0.1,
    ell: float = 1.0,
    seed: int | None = None,
    candidates: Collection[Hashable] | None = None,
    max_per_group: int | None = None,
    groups: Mapping[Hashable, int] | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    min_rr_sets: int | None = None,
    estimate: bool = True,
) -> SeedSelection:
    """Choose `k` seeds that maximise the expected cascade, or a baseline's `k` seeds.

    Parameters
    ----------
    cg : CascadeGraph
        Built once with :meth:`CascadeGraph.from_networkx`.
    k : int
        Budget, >= 1. If fewer than `k` customers may be chosen, all of them are returned (in selection order)
        and ``warnings`` says so.
    method : {"imm", "degree", "pagerank", "degree_discount"}
        ``"imm"``: IMM, more RR sets, then best-of (see the module docstring). ``"degree"``: most out-arcs.
        ``"pagerank"``: ``nx.pagerank`` on the reversed arcs weighted by probability (a customer ranks high when
        they can reach customers who rank high). ``"degree_discount"``: Chen, Wang and Yang (KDD 2009); on a
        directed graph ``d_v`` is the out-degree and ``t_v`` counts seeds with an arc into ``v``; with unequal
        arc probabilities ``t_v * p`` becomes the sum of those arcs' probabilities.
    epsilon, ell : float
        IMM's accuracy and confidence: ``1 - 1/e - epsilon`` with probability ``1 - n**-ell``.
    seed : int or None
        Makes the result reproducible (for any `workers`); ``None`` draws one and records it in ``params``.
    candidates : collection or None
        Only these customers may be chosen (consenting, not excluded). Others still relay the cascade.
    max_per_group, groups : int and mapping or None
        At most `max_per_group` seeds per community; customers missing from `groups` are not capped. With a
        cap, greedy keeps a 1/2 guarantee (a partition matroid) rather than ``1 - 1/e``.
    workers : int
        Threads sampling RR sets.
    progress : callable or None
        Called as ``progress(stage, fraction_done)``.
    min_rr_sets : int or None
        Least number of RR sets for the final greedy; default ``max(200_000, 100 * n)``.
    estimate : bool
        For the baselines only: also estimate their spread on RR sets (``False`` times the heuristic alone).

    Returns
    -------
    SeedSelection

    Raises
    ------
    InfluenceInputError
        A `ValueError`: ``k < 1``, no nodes, bad `epsilon`/`ell`/`workers`, unknown candidates or method.

    Examples
    --------
    >>> star = CascadeGraph.from_networkx(nx.star_graph(5), p=1.0)
    >>> sel = select_seeds(star, 1, seed=7)
    >>> sel.seeds, round(sel.estimated_spread, 6)
    ([0], 6.0)
    >>> select_seeds(star, 1, method="degree_discount").seeds
    [0]
    """
    started = time.perf_counter()
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InfluenceInputError(f"k must be a positive integer, got {k!r}")
    if cg.n_nodes == 0:
        raise InfluenceInputError("the graph has no nodes, so there is no one to choose")
    if method not in ("imm", "degree", "pagerank", "degree_discount"):
        raise InfluenceInputError(f"unknown method {method!r}; use imm, degree, pagerank or degree_discount")
    if not 0.0 < epsilon < 1.0:
        raise InfluenceInputError(f"epsilon must be in (0, 1), got {epsilon!r}")
    if not ell > 0.0:
        raise InfluenceInputError(f"ell must be > 0, got {ell!r}")
    if workers < 1:
        raise InfluenceInputError(f"workers must be >= 1, got {workers!r}")
    if min_rr_sets is not None and min_rr_sets < 1:
        raise InfluenceInputError(f"min_rr_sets must be >= 1, got {min_rr_sets!r}")
    k = int(k)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    cons = _constraints(cg, candidates, max_per_group, groups)
    notes: list[str] = []
    if cons.selectable < k:
        notes.append(f"k={k} but only {cons.selectable} customers may be chosen under the constraints; all returned")
    report = progress or (lambda stage, done: None)
    params: dict[str, Any] = {"k": k, "seed": seed, "model": cg.model, "p": cg.p, "workers": workers}

    interval: tuple[float, float] | None = None
    if method == "imm":
        picks, gains, rr_count, more = _imm(cg, k, epsilon, ell, seed, cons, workers, min_rr_sets, report)
        interval = more.pop("spread_ci95")
        params.update(more)
        estimated: float | None = float(np.sum(gains))
    else:
        picks = _heuristic(cg, k, method, cons)
        rr_count = 0
        gains = np.zeros(0)
        estimated = None
        if estimate:
            val = _RRPool(cg, seed, 2, workers)
            val.extend_to(min_rr_sets or _default_min_rr_sets(cg))
            b = val.batch()
            gains = _coverage_gains(picks, b.single_w, b.multi_w, b.offsets, b.members)
            estimated = float(np.sum(gains))
            interval = _ci95(picks, gains, b)
            rr_count = b.equivalent
            params["validation_rr_sets"] = b.equivalent
    report("done", 1.0)
    return SeedSelection(
        seeds=[cg.nodes[i] for i in picks],
        marginal_gains=[float(g) for g in gains],
        estimated_spread=estimated,
        method=method,
        params=params,
        seconds=time.perf_counter() - started,
        rr_sets=rr_count,
        warnings=notes,
        spread_ci95=interval,
    )


def select_from_rr_sets(
    cg: CascadeGraph,
    offsets: IntArray,
    members: Int32Array,
    k: int,
    *,
    candidates: Collection[Hashable] | None = None,
    max_per_group: int | None = None,
    groups: Mapping[Hashable, int] | None = None,
) -> SeedSelection:
    """Greedy max-coverage over RR sets sampled elsewhere (e.g. by Celery tasks calling :func:`sample_rr_sets`).

    The spread estimate is in-sample (the sets the greedy fitted), so it leans optimistic; :func:`select_seeds`
    scores on held-out sets instead.

    Examples
    --------
    >>> cg = CascadeGraph.from_networkx(nx.star_graph(3), p=1.0)
    >>> offsets, members = sample_rr_sets(cg, 1000, seed=3)
    >>> select_from_rr_sets(cg, offsets, members, 1).seeds
    [0]
    """
    started = time.perf_counter()
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise InfluenceInputError(f"k must be a positive integer, got {k!r}")
    count = int(offsets.shape[0]) - 1
    if count < 1:
        raise InfluenceInputError("no RR sets given")
    cons = _constraints(cg, candidates, max_per_group, groups)
    picks, gains = _greedy_cover(
        int(k),
        np.zeros(cg.n_nodes, np.float64),
        cg.n_nodes / count,
        offsets.astype(np.int64, copy=False),
        members.astype(np.int32, copy=False),
        cons.allowed,
        cons.groups,
        cons.cap,
    )
    return SeedSelection(
        seeds=[cg.nodes[i] for i in picks],
        marginal_gains=[float(g) for g in gains],
        estimated_spread=float(gains.sum()),
        method="rr_greedy",
        params={"k": int(k), "in_sample": True},
        seconds=time.perf_counter() - started,
        rr_sets=count,
    )


def _imm(
    cg: CascadeGraph,
    k: int,
    epsilon: float,
    ell: float,
    seed: int,
    cons: _Constraints,
    workers: int,
    min_rr_sets: int | None,
    report: Progress,
) -> tuple[IntArray, FloatArray, int, dict[str, Any]]:
    """IMM's bound, then greedy on fresh sets, then the held-out best-of."""
    n = cg.n_nodes
    k_eff = max(1, min(k, int(cons.allowed.sum())))
    n_choose = max(int(cons.allowed.sum()), k_eff)
    log_n = math.log(n) if n > 1 else 0.0
    ell_p = ell * (1.0 + math.log(2.0) / log_n) if n > 1 else ell
    log_cnk = _log_comb(n_choose, k_eff)
    eps_p = math.sqrt(2.0) * epsilon
    lam_p = (2.0 + 2.0 / 3.0 * eps_p) * (log_cnk + ell_p * log_n + math.log(max(math.log2(n), 1.0))) * n / eps_p**2
    one_minus = 1.0 - 1.0 / math.e
    alpha = math.sqrt(ell_p * log_n + math.log(2.0))
    beta = math.sqrt(one_minus * (log_cnk + ell_p * log_n + math.log(2.0)))
    lam_star = 2.0 * n * (one_minus * alpha + beta) ** 2 / epsilon**2

    bound_pool = _RRPool(cg, seed, 0, workers)
    lower = 1.0
    rounds = max(1, math.ceil(math.log2(n)) - 1) if n > 1 else 0
    for i in range(1, rounds + 1):
        x = n / 2.0**i
        bound_pool.extend_to(math.ceil(lam_p / x))
        b = bound_pool.batch()
        report("imm: bounding", 0.5 * i / rounds)
        if _top_k_sum(k, b.single_w, b.multi_w, b.members, cons.allowed) < (1.0 + eps_p) * x:
            continue  # even the k best single nodes together fall short, so greedy would too
        _, gains = _greedy_cover(k, b.single_w, b.multi_w, b.offsets, b.members, cons.allowed, cons.groups, cons.cap)
        covered = float(gains.sum())
        if covered >= (1.0 + eps_p) * x:
            lower = covered / (1.0 + eps_p)
            break
    theta = math.ceil(lam_star / lower)
    target = max(theta, min_rr_sets if min_rr_sets is not None else _default_min_rr_sets(cg))

    fit = _RRPool(cg, seed, 1, workers)
    fit.extend_to(target)
    report("imm: sampling", 0.6)
    fb = fit.batch()
    greedy, _ = _greedy_cover(k, fb.single_w, fb.multi_w, fb.offsets, fb.members, cons.allowed, cons.groups, cons.cap)
    report("imm: selecting", 0.75)

    # The bound-finding sets are independent of the fitted ones, so they score the candidates without bias.
    bound_pool.extend_to(target)
    hb = bound_pool.batch()
    options: dict[str, IntArray] = {
        "rr_greedy": greedy,
        "degree_discount": _heuristic(cg, k, "degree_discount", cons),
        "degree": _heuristic(cg, k, "degree", cons),
    }
    scored = {
        name: _coverage_gains(picks, hb.single_w, hb.multi_w, hb.offsets, hb.members) for name, picks in options.items()
    }
    # Ties keep the IMM set, which carries the guarantee.
    winner = max(scored, key=lambda name: (float(scored[name].sum()), name == "rr_greedy"))
    report("imm: validating", 0.95)
    params = {
        "epsilon": epsilon,
        "ell": ell,
        "lower_bound": lower,
        "theta_imm": theta,
        "fit_rr_sets": fb.equivalent,
        "validation_rr_sets": hb.equivalent,
        "multi_node_share": bound_pool.rho,
        "winner": winner,
        "candidate_spreads": {name: float(g.sum()) for name, g in scored.items()},
        "spread_ci95": _ci95(options[winner], scored[winner], hb),
    }
    return options[winner], scored[winner], fb.equivalent + hb.equivalent, params


# ----------------------------------------------------------------------------------------------------------------
# Baselines


def _take_in_order(order: npt.NDArray[np.int64], k: int, cons: _Constraints) -> IntArray:
    """The first `k` nodes of `order` that the candidate list and group caps allow."""
    used: dict[int, int] = {}
    picks: list[int] = []
    for v in order.tolist():
        if len(picks) == k:
            break
        if not cons.allowed[v]:
            continue
        g = int(cons.groups[v])
        if g >= 0:
            if used.get(g, 0) >= cons.cap:
                continue
            used[g] = used.get(g, 0) + 1
        picks.append(v)
    return np.asarray(picks, dtype=np.int64)


def _heuristic(cg: CascadeGraph, k: int, method: str, cons: _Constraints) -> IntArray:
    if method == "degree":
        out_degree = np.diff(cg.indptr)
        return _take_in_order(np.lexsort((np.arange(cg.n_nodes), -out_degree)), k, cons)
    if method == "pagerank":
        return _pagerank_order(cg, k, cons)
    return _degree_discount(cg, k, cons)


def _pagerank_order(cg: CascadeGraph, k: int, cons: _Constraints) -> IntArray:
    n = cg.n_nodes
    src = np.repeat(np.arange(n), np.diff(cg.indptr))
    reverse = nx.DiGraph()
    reverse.add_nodes_from(range(n))
    # PageRank divides by each customer's total out-weight, so only ratios matter; scaled so the largest is 1, a
    # tiny `p` (down to the smallest subnormal float) cannot overflow that division and stall the power iteration.
    weights = cg.probs / cg.probs.max(initial=np.finfo(np.float64).tiny)
    reverse.add_weighted_edges_from(zip(cg.indices.tolist(), src.tolist(), weights.tolist(), strict=True))
    rank = nx.pagerank(reverse, weight="weight")
    score = np.fromiter((rank[i] for i in range(n)), np.float64, count=n)
    return _take_in_order(np.lexsort((np.arange(n), -score)), k, cons)


def _degree_discount(cg: CascadeGraph, k: int, cons: _Constraints) -> IntArray:
    """Chen et al.'s DegreeDiscountIC: ``dd_v = d_v - 2 t_v - (d_v - t_v) t_v p``, updated as seeds are picked."""
    n = cg.n_nodes
    d = np.diff(cg.indptr).astype(np.float64)
    t = np.zeros(n)
    pressure = np.zeros(n)  # sum of the probabilities of arcs from seeds into v: t_v * p under uniform IC
    dd = d.copy()
    open_ = cons.allowed.copy()
    used: dict[int, int] = {}
    picks: list[int] = []
    while len(picks) < k and open_.any():
        u = int(np.argmax(np.where(open_, dd, -np.inf)))
        picks.append(u)
        open_[u] = False
        g = int(cons.groups[u])
        if g >= 0:
            used[g] = used.get(g, 0) + 1
            if used[g] >= cons.cap:
                open_[cons.groups == g] = False
        lo, hi = cg.indptr[u], cg.indptr[u + 1]
        nbrs = cg.indices[lo:hi]
        t[nbrs] += 1.0
        pressure[nbrs] += cg.probs[lo:hi]
        dd[nbrs] = d[nbrs] - 2.0 * t[nbrs] - (d[nbrs] - t[nbrs]) * pressure[nbrs]
    return np.asarray(picks, dtype=np.int64)
