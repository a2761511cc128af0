"""Neo4j SIGKILLed in the middle of `advocacy import` and of `advocacy analyse`, then restarted: the command says
what failed (one line, non-zero exit, no traceback), and running it again leaves every row and every score once.
An analysis cut off while it stages its scores leaves the previous run's scores whole: no customer shows a mix.

The commands run as the real CLI in a subprocess (`tests.faults.cli_shim`: small write batches and a short pause
after each, so the kill lands between or inside transactions rather than after the last one) on a private Neo4j.
The network is email-Eu-core from /work/shared/data: 1,005 customers, its first 6,000 arcs, 2,000 events.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from neo4j import Driver, GraphDatabase

from engine.analysis import ABANDONED_AFTER_S, discard_dead_staging, run_analysis
from engine.ingest import import_files
from graph.model import utcnow
from graph.neo4j_store import Neo4jStore
from tests.faults.conftest import ROOT, Neo4jServer

pytestmark = [pytest.mark.neo4j, pytest.mark.slow]

DATA = ROOT.parent / "shared" / "data"
EMAIL_EU = DATA / "email-Eu-core.txt"
EMAIL_EU_LABELS = DATA / "email-Eu-core-department-labels.txt"
ARCS = 6_000
EVENTS = 2_000


def write_network(directory: Path) -> tuple[Path, Path, Path, int, set[tuple[str, str]]]:
    """Customers, influences and events files from the real network; the customer count and the distinct arcs."""
    if not EMAIL_EU.exists():
        pytest.fail(f"{EMAIL_EU} is missing (see /work/shared/data/README.md)")
    nodes = [line.split()[0] for line in EMAIL_EU_LABELS.read_text().splitlines() if line.strip()]
    arcs: dict[tuple[str, str], None] = {}
    for line in EMAIL_EU.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        source, target = line.split()[:2]
        if source != target:
            arcs.setdefault((f"eu{source}", f"eu{target}"))
        if len(arcs) == ARCS:
            break
    customers, influences, events = directory / "customers.csv", directory / "influences.csv", directory / "events.csv"
    with customers.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "name", "email", "consent_email"])
        out.writerows([f"eu{n}", f"Person {n}", f"eu{n}@example.org", "true"] for n in nodes)
    with influences.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["source_id", "target_id", "kind", "weight"])
        out.writerows([source, target, "mentions", "1.0"] for source, target in arcs)
    with events.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "customer_id", "kind", "at", "value"])
        out.writerows(
            [f"ev{i}", f"eu{nodes[i % len(nodes)]}", "purchase", f"2024-0{1 + i % 9}-01T10:00:00Z", "25"]
            for i in range(EVENTS)
        )
    return customers, influences, events, len(nodes), set(arcs)


def cli(server: Neo4jServer, *args: str, batch: int = 250, pace_s: float = 0.05) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "ADVOCACY_STORE": server.url,
        "ADVOCACY_FAULT_BATCH": str(batch),
        "ADVOCACY_FAULT_PACE_S": str(pace_s),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.faults.cli_shim", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def count(server: Neo4jServer, query: str) -> int:
    with GraphDatabase.driver(server.url, notifications_min_severity="OFF") as driver:
        return _count(driver, query)


def _count(driver: Driver, query: str) -> int:
    records, _, _ = driver.execute_query(query, database_="neo4j")
    return int(records[0][0])


def kill_when(server: Neo4jServer, proc: subprocess.Popen[str], query: str, at_least: int, timeout_s: float) -> None:
    """SIGKILL the server as soon as `query` counts `at_least` (the command is half way); fail if it ended first."""
    deadline = time.monotonic() + timeout_s
    with GraphDatabase.driver(server.url, notifications_min_severity="OFF") as driver:
        while _count(driver, query) < at_least:
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"the command ended before the kill (exit {proc.returncode}):\n{out}\n{err}")
            assert time.monotonic() < deadline, "the command never got half way"
            time.sleep(0.02)
        server.stop(crash=True)


def assert_failed_clearly(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 2, f"a store that is down exits 2 (exit {proc.returncode}):\n{out}\n{err}"
    assert "Traceback" not in err, err
    assert "Traceback" not in out, out
    # The driver logs its retries above it (see the report); the command's own word is the last line.
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: Neo4j at bolt://127.0.0.1:"), err
    assert "is unavailable" in last, err
    return last


@pytest.mark.timeout(300)
def test_an_import_cut_off_by_a_neo4j_crash_completes_on_rerun_with_every_row_once(
    fresh_neo4j: Neo4jServer, tmp_path: Path
) -> None:
    customers, influences, events, n_customers, arcs = write_network(tmp_path)
    files = [customers, influences, events]

    proc = cli(fresh_neo4j, "import", *map(str, files))
    kill_when(fresh_neo4j, proc, "MATCH ()-[r:INFLUENCES]->() RETURN count(r)", 1000, 120)
    assert_failed_clearly(proc)

    fresh_neo4j.start()
    written = count(fresh_neo4j, "MATCH ()-[r:INFLUENCES]->() RETURN count(r)")
    assert 1000 <= written < len(arcs), "the crash cut the import short"
    assert count(fresh_neo4j, "MATCH (e:Event) RETURN count(e)") == 0

    store = Neo4jStore(fresh_neo4j.url)
    try:
        reports = import_files(store, files)  # what `advocacy import` runs, run again
    finally:
        store.close()
    assert [report.imported for report in reports] == [n_customers, len(arcs), EVENTS]

    assert count(fresh_neo4j, "MATCH (c:Customer) RETURN count(c)") == n_customers
    assert count(fresh_neo4j, "MATCH (c:Customer) RETURN count(DISTINCT c.id)") == n_customers
    assert count(fresh_neo4j, "MATCH ()-[r:INFLUENCES]->() RETURN count(r)") == len(arcs)
    distinct_edges = "MATCH (s)-[r:INFLUENCES]->(t) WITH DISTINCT s.id AS s, t.id AS t, r.kind AS k RETURN count(*)"
    assert count(fresh_neo4j, distinct_edges) == len(arcs), "one edge per (source, target, kind)"
    assert count(fresh_neo4j, "MATCH (e:Event) RETURN count(e)") == EVENTS
    assert count(fresh_neo4j, "MATCH (e:Event) RETURN count(DISTINCT e.id)") == EVENTS
    assert count(fresh_neo4j, "MATCH (e:Event) WHERE COUNT { ()-[:PERFORMED]->(e) } <> 1 RETURN count(e)") == 0


@pytest.mark.timeout(300)
def test_an_analysis_cut_off_during_write_back_is_never_marked_done_and_a_rerun_scores_everyone_once(
    fresh_neo4j: Neo4jServer, tmp_path: Path
) -> None:
    customers, influences, events, n_customers, _ = write_network(tmp_path)
    store = Neo4jStore(fresh_neo4j.url)
    try:
        import_files(store, [customers, influences, events])
        first = run_analysis(store)
    finally:
        store.close()

    proc = cli(fresh_neo4j, "analyse", "--json", batch=50)
    half_way = "MATCH (r:AnalysisRun {status: 'running'}) MATCH (s:StagedScores {scored_run_id: r.id}) RETURN count(s)"
    kill_when(fresh_neo4j, proc, half_way, 100, 120)
    assert_failed_clearly(proc)

    fresh_neo4j.start()
    store = Neo4jStore(fresh_neo4j.url)
    try:
        cut = next(run for run in store.list_runs() if run.id != first.id)
        assert cut.status != "done", "a run cut off during write-back is never recorded as complete"
        staged = count(fresh_neo4j, f"MATCH (s:StagedScores {{scored_run_id: '{cut.id}'}}) RETURN count(s)")
        assert 100 <= staged < n_customers, "the crash came half way through the write-back"
        by_first = f"MATCH (c:Customer {{scored_run_id: '{first.id}'}}) RETURN count(c)"
        assert count(fresh_neo4j, by_first) == n_customers, "the first run's scores stay whole, none of the cut one's"
        assert store.staged_score_runs() == [cut.id]

        rerun = run_analysis(store)  # what `advocacy analyse` runs, run again
        runs = store.list_runs()
        assert [run.id for run in runs if run.status == "done"] == [rerun.id, first.id]
        assert len(runs) == 3
        assert rerun.summary["scores_written"] == n_customers
        assert count(fresh_neo4j, "MATCH (c:Customer) RETURN count(DISTINCT c.scored_run_id)") == 1
        by_rerun = f"MATCH (c:Customer {{scored_run_id: '{rerun.id}'}}) RETURN count(c)"
        assert count(fresh_neo4j, by_rerun) == n_customers, "every customer holds the rerun's scores"
        assert sum(1 for _ in store.iter_scores()) == n_customers, "one score set per customer"
        assert count(fresh_neo4j, "MATCH (c:Customer) WHERE c.staged_for IS NOT NULL RETURN count(c)") == 0

        # The cut run beat moments ago, so the rerun left its staging alone; once it is abandoned, it goes.
        assert store.staged_score_runs() == [cut.id]
        assert discard_dead_staging(store, now=utcnow() + timedelta(seconds=ABANDONED_AFTER_S + 60)) == [cut.id]
        assert count(fresh_neo4j, "MATCH (s:StagedScores) RETURN count(s)") == 0
    finally:
        store.close()
