"""Reverse-reachable sampling spread over Celery workers, so a bigger graph needs more workers, not new code.

Sampling RR sets is embarrassingly parallel and is where IMM spends its time; the greedy cover that follows is
cheap. So the coordinator sends each worker only ids and numbers (store URL, model, chunk size, seed), every worker
builds the same cascade graph from the store and returns its chunk of sets, and the coordinator runs the greedy on
all of them. A fingerprint of the node order guards against a graph that changed between coordinator and worker.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from celery import Celery

from graph.errors import InvalidInput, StoreUnavailable
from graph.export import export_graphs
from graph.factory import open_store
from graph.influence import CascadeGraph, SeedSelection, sample_rr_sets, select_from_rr_sets
from graph.store import GraphStore

TASK_NAME = "advocacy.sample_rr_chunk"


@dataclass(frozen=True, slots=True)
class _Cached:
    key: tuple[Any, ...]
    graph: CascadeGraph
    fingerprint: str


_cache: _Cached | None = None
_cache_lock = threading.Lock()


def fingerprint(cg: CascadeGraph) -> str:
    """Identifies the node order and arcs, which RR-set member indices depend on."""
    digest = hashlib.sha256()
    digest.update("\x1f".join(map(str, cg.nodes)).encode())
    digest.update(np.ascontiguousarray(cg.in_indices).tobytes())
    return digest.hexdigest()[:32]


def cascade_graph_of(store: GraphStore, *, model: str, p: float, weight: str | None) -> tuple[CascadeGraph, str]:
    """The cascade graph of the store's influence edges, and its fingerprint."""
    graphs = export_graphs(store, referrals=False, events=False)
    cg = CascadeGraph.from_networkx(graphs.influence, model=model, p=p, weight=weight)  # type: ignore[arg-type]
    return cg, fingerprint(cg)


def _worker_graph(store_url: str, database: str, model: str, p: float, weight: str | None) -> _Cached:
    """One cascade graph per worker process, rebuilt only when the store's counts change."""
    global _cache
    store = open_store(store_url, database=database)
    try:
        stats = store.stats()
        key = (store_url, database, model, p, weight, stats.customers, tuple(sorted(stats.edges.items())))
        with _cache_lock:
            if _cache is not None and _cache.key == key:
                return _cache
            cg, print_ = cascade_graph_of(store, model=model, p=p, weight=weight)
            _cache = _Cached(key, cg, print_)
            return _cache
    finally:
        store.close()


def _encode(array: np.ndarray[Any, Any]) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _decode(text: str, dtype: type[np.generic]) -> np.ndarray[Any, Any]:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


def sample_chunk(
    store_url: str, database: str, *, model: str, p: float, weight: str | None, count: int, seed: int
) -> dict[str, Any]:
    """What one worker returns: `count` RR sets as base64 arrays (JSON-safe), with the graph's fingerprint."""
    cached = _worker_graph(store_url, database, model, p, weight)
    offsets, members = sample_rr_sets(cached.graph, count, seed)
    return {
        "fingerprint": cached.fingerprint,
        "count": int(offsets.shape[0]) - 1,
        "offsets": _encode(offsets.astype(np.int64, copy=False)),
        "members": _encode(members.astype(np.int32, copy=False)),
    }


def chunk_seeds(seed: int, chunks: int) -> list[int]:
    """Independent seeds per chunk, fixed by the root seed, so a rerun draws the same sets."""
    return [int(s.generate_state(1, np.uint64)[0] >> 1) for s in np.random.SeedSequence(seed).spawn(chunks)]


def merge_chunks(results: list[dict[str, Any]], expected_fingerprint: str) -> tuple[np.ndarray[Any, Any], Any]:
    """Concatenate the workers' RR sets into one (offsets, members) pair."""
    offsets_parts: list[np.ndarray[Any, Any]] = [np.zeros(1, np.int64)]
    members_parts: list[np.ndarray[Any, Any]] = []
    shift = 0
    for result in results:
        if result["fingerprint"] != expected_fingerprint:
            raise StoreUnavailable(
                "the influence graph changed while workers were sampling it; run the selection again"
            )
        offsets = _decode(result["offsets"], np.int64)
        members = _decode(result["members"], np.int32)
        offsets_parts.append(offsets[1:] + shift)
        members_parts.append(members)
        shift += int(members.shape[0])
    members_all = np.concatenate(members_parts) if members_parts else np.zeros(0, np.int32)
    return np.concatenate(offsets_parts), members_all


@dataclass(frozen=True, slots=True)
class WorkerSampling:
    """Where and how much to sample on Celery workers; the workers open the store at `store_url` themselves."""

    celery: Celery
    store_url: str
    database: str = "neo4j"
    rr_sets: int = 200_000
    chunks: int = 8
    timeout_s: float = 600.0


def select_on_workers(
    sampling: WorkerSampling,
    cg: CascadeGraph,
    *,
    k: int,
    seed: int = 0,
    candidates: Collection[Hashable] | None = None,
    groups: Mapping[Hashable, int] | None = None,
    max_per_group: int | None = None,
) -> SeedSelection:
    """Sample RR sets of `cg` in Celery tasks and choose `k` seeds by greedy cover here.

    `cg` must be the cascade graph of the store's influence edges as `cascade_graph_of` builds it (the workers
    build theirs the same way; the fingerprint check refuses anything else).
    """
    chunks, rr_sets = sampling.chunks, sampling.rr_sets
    if chunks < 1 or rr_sets < chunks:
        raise InvalidInput(f"need at least one RR set per chunk (rr_sets={rr_sets}, chunks={chunks})")
    model, p, weight, expected = cg.model, cg.p, cg.weight, fingerprint(cg)
    per_chunk = [rr_sets // chunks + (1 if i < rr_sets % chunks else 0) for i in range(chunks)]
    pending = [
        sampling.celery.send_task(
            TASK_NAME, args=[sampling.store_url, sampling.database, model, p, weight, count, chunk_seed]
        )
        for count, chunk_seed in zip(per_chunk, chunk_seeds(seed, chunks), strict=True)
    ]
    try:
        results = [result.get(timeout=sampling.timeout_s) for result in pending]
    except Exception as exc:  # Celery raises the worker's exception or its own timeout/connection errors
        raise StoreUnavailable(f"sampling on Celery workers failed: {type(exc).__name__}: {exc}") from exc
    offsets, members = merge_chunks(results, expected)
    selection = select_from_rr_sets(
        cg, offsets, members, k, candidates=candidates, groups=groups, max_per_group=max_per_group
    )
    selection.params.update({"sampler": "celery", "chunks": chunks, "seed": seed, "model": model, "p": p})
    return selection
