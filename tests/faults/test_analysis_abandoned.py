"""An analysis whose process is SIGKILLed mid-run (no `except` runs, nothing is saved on the way out) is reported
`abandoned` once its heartbeat has been silent long enough, instead of `running` for ever; the scores it had
staged were never seen by readers, who keep the previous run's, and the next look at staging drops them.

The analysis runs as the real CLI in a subprocess (`tests.faults.cli_shim`: small score batches, a pause after
each, a heartbeat every 0.2 s) on a real SQLite store; the report is read through the HTTP API.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.analysis import ABANDONED_AFTER_S, as_seen, discard_dead_staging, run_analysis
from engine.settings import Settings
from graph.model import AnalysisRun, GraphBatch
from graph.sqlite_store import SqliteStore
from tests.api_support import sign_in
from tests.factories import make_customer, make_influence

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = 600
HEARTBEAT_S = 0.2


def seed(store: SqliteStore) -> None:
    ids = [f"c{i}" for i in range(CUSTOMERS)]
    influences = [make_influence(ids[i], ids[(i * 7 + 1) % CUSTOMERS]) for i in range(CUSTOMERS)]
    store.write_batch(GraphBatch(customers=[make_customer(id=cid) for cid in ids], influences=influences))


def heartbeat(run: AnalysisRun) -> datetime:
    return datetime.fromisoformat(run.summary["heartbeat_at"])


def wait_for_beats(store: SqliteStore, proc: subprocess.Popen[str], timeout_s: float) -> AnalysisRun:
    """The running record once it is writing scores and has beaten at least twice there."""
    deadline, seen = time.monotonic() + timeout_s, set()
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the analysis ended before it could be killed: {proc.communicate()}"
        runs = store.list_runs(limit=1)
        if runs and runs[0].status == "running" and runs[0].summary.get("step") == "write scores":
            seen.add(runs[0].summary["heartbeat_at"])
            if len(seen) >= 2:
                return runs[0]
        time.sleep(0.05)
    raise AssertionError("the analysis never beat twice while writing scores")


@pytest.mark.timeout(120)
def test_a_killed_analysis_is_reported_abandoned_once_its_heartbeat_is_silent(tmp_path: Path) -> None:
    path = tmp_path / "graph.db"
    store = SqliteStore(path)
    try:
        seed(store)
        first = run_analysis(store)
        env = {
            **os.environ,
            "ADVOCACY_STORE": f"sqlite:///{path}",
            "ADVOCACY_FAULT_BATCH": "10",
            "ADVOCACY_FAULT_PACE_S": "0.1",
            "ADVOCACY_FAULT_HEARTBEAT_S": str(HEARTBEAT_S),
            "PYTHONUNBUFFERED": "1",
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.cli_shim", "analyse"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            beating = wait_for_beats(store, proc, timeout_s=60)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)

        time.sleep(5 * HEARTBEAT_S)
        (left,) = store.list_runs(limit=1)
        assert left.id == beating.id != first.id
        assert left.status == "running", "a killed process saves nothing: its record says running"
        assert left.finished_at is None
        last = heartbeat(left)
        time.sleep(5 * HEARTBEAT_S)
        assert heartbeat(store.get_run(left.id)) == last, "nobody beats for a dead process"

        assert as_seen(left, now=last + timedelta(seconds=ABANDONED_AFTER_S)).status == "running"
        assert as_seen(left, now=last + timedelta(seconds=ABANDONED_AFTER_S + 1)).status == "abandoned"

        later = last + timedelta(seconds=ABANDONED_AFTER_S + 1)
        with TestClient(create_app(Settings(store=f"sqlite:///{path}"), clock=lambda: later)) as client:
            sign_in(client, ("read",))
            one = client.get(f"/v1/analysis/runs/{left.id}")
            listed = client.get("/v1/analysis/runs")
        assert one.status_code == 200, one.text
        assert one.json()["status"] == "abandoned"
        assert one.json()["summary"]["step"] == "write scores", "the record still says where it stopped"
        assert [run["status"] for run in listed.json()["items"]] == ["abandoned", "done"]

        scored_by = {scores.run_id for scores in store.iter_scores()}
        assert scored_by == {first.id}, "readers see the previous run's scores only, none of the killed run's"
        assert sum(1 for _ in store.iter_scores()) == CUSTOMERS
        assert store.staged_score_runs() == [left.id]
        assert discard_dead_staging(store, now=last + timedelta(seconds=ABANDONED_AFTER_S)) == []
        assert discard_dead_staging(store, now=later) == [left.id]
        assert store.staged_score_runs() == []
    finally:
        store.close()
