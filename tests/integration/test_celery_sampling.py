"""RR sampling spread over real Celery worker processes on a real Redis."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engine.analysis import AnalysisParams, run_analysis
from engine.celery_app import make_celery
from engine.sampling import (
    WorkerSampling,
    cascade_graph_of,
    chunk_seeds,
    merge_chunks,
    sample_chunk,
    select_on_workers,
)
from engine.settings import Settings
from engine.targeting import choose_targets
from graph.factory import open_store
from graph.generator import generate_network
from graph.influence import select_from_rr_sets, select_seeds
from graph.model import Segment

pytestmark = [pytest.mark.redis, pytest.mark.celery]


def _seeded_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'net.db'}"
    store = open_store(url)
    try:
        for batch in generate_network(1500, seed=11):
            store.write_batch(batch)
    finally:
        store.close()
    return url


def test_sampling_on_celery_workers_chooses_the_same_seeds_as_sampling_the_same_chunks_here(
    tmp_path: Path, celery_settings: Settings, celery_worker: subprocess.Popen[bytes]
) -> None:
    url = _seeded_store(tmp_path)
    app = make_celery(celery_settings)
    store = open_store(url)
    try:
        cg, print_ = cascade_graph_of(store, model="ic", p=0.05, weight=None)
        sampling = WorkerSampling(app, url, database="neo4j", rr_sets=40_000, chunks=4)
        remote = select_on_workers(sampling, cg, k=10, seed=5)
        sizes = [10_000] * 4
        here = [
            sample_chunk(url, "neo4j", model="ic", p=0.05, weight=None, count=n, seed=s)
            for n, s in zip(sizes, chunk_seeds(5, 4), strict=True)
        ]
        offsets, members = merge_chunks(here, print_)
        local = select_from_rr_sets(cg, offsets, members, 10)
        assert remote.seeds == local.seeds
        assert remote.rr_sets == 40_000
        assert remote.params["sampler"] == "celery"
        # and the distributed choice is as good as the in-process IMM's, judged on the same estimate scale
        imm = select_seeds(cg, 10, seed=5, workers=2)
        assert remote.estimated_spread == pytest.approx(imm.estimated_spread, rel=0.1)
    finally:
        store.close()
        app.close()
    assert celery_worker.poll() is None


def test_targets_chosen_on_celery_workers_respect_the_analysis_constraints(
    tmp_path: Path, celery_settings: Settings, celery_worker: subprocess.Popen[bytes]
) -> None:
    url = _seeded_store(tmp_path)
    app = make_celery(celery_settings)
    store = open_store(url)
    try:
        run_analysis(store, params=AnalysisParams())
        sampling = WorkerSampling(app, url, rr_sets=20_000, chunks=2)
        choice = choose_targets(store, k=8, seed=3, mc_runs=500, worker_sampling=sampling, baselines=())
        segments = {s.customer_id: s.segment for s in store.iter_scores()}
    finally:
        store.close()
        app.close()
    seeds = choice.seeds
    assert len(set(seeds)) == 8
    assert all(segments[c] is not Segment.DO_NOT_ASK for c in seeds)
    assert choice.ci95[0] <= choice.expected_spread <= choice.ci95[1]
