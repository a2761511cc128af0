"""Analysis at scale: the whole `run_analysis` (export, scores, segments, write-back) at 10k, 100k and 1M customers.

    python -m bench.analysis_scale [--sizes 10000,100000,1000000] [--workdir /tmp/advocacy-bench] [--seed 7]

Each size is a synthetic network from `graph.generator.generate_network(n, seed=7)` (about 10 influence edges per
customer, referral trees and two years of events) in a SQLite store under `--workdir`, built once and reused (a
`.done` file marks a complete build). The analysis runs in a fresh child process per size, so its peak resident
memory (`ru_maxrss`, the whole process: interpreter, graph, scores) is the analysis's alone.

Baseline, in the same run for sizes up to `--reference-max`: the three scores computed here on scipy arrays
(PageRank of the reversed graph, k-core numbers, participation coefficients) against the plain NetworkX calls
they replace (`nx.pagerank(G.reverse())`, `nx.core_number(G.to_undirected())`, a per-node participation loop).

Wall and CPU seconds are both recorded: the machine is shared, so wall time depends on what else runs (see
`load_average_1m_at_start`); CPU time is the steadier figure. Results: `bench/results/analysis_scale.json` and a
plot of cost against size, `bench/results/analysis_scale.png`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, Row, machine_facts, measure, print_table, write_results

TOPIC = "analysis_scale"
SIZES = (10_000, 100_000, 1_000_000)
STEPS = ("export", "pagerank", "communities", "segments", "write scores")


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else f"{n // 1000}k"


def build_store(n: int, seed: int, workdir: Path) -> Path:
    """The synthetic network of `n` customers in a SQLite file, built unless a complete one is there."""
    from graph.generator import generate_network
    from graph.sqlite_store import SqliteStore

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"analysis_{n}_seed{seed}.db"
    done = path.with_suffix(".db.done")
    if path.exists() and done.exists():
        return path
    for stale in (path, path.with_suffix(".db-wal"), path.with_suffix(".db-shm")):
        stale.unlink(missing_ok=True)
    started = time.perf_counter()
    store = SqliteStore(path)
    try:
        for batch in generate_network(n, seed=seed):
            store.write_batch(batch)
        stats = store.stats()
    finally:
        store.close()
    done.write_text(
        json.dumps({"customers": stats.customers, "edges": stats.edges, "seconds": time.perf_counter() - started})
    )
    print(
        f"built {path} in {time.perf_counter() - started:.0f}s: {stats.customers:,} customers, {stats.edges}",
        flush=True,
    )
    return path


def _reference_scores(path: Path) -> dict[str, float]:
    """Seconds of the array-based scores against the plain NetworkX calls, on the same exported graph."""
    import networkx as nx

    from graph import scores as sc
    from graph.export import export_graphs
    from graph.sqlite_store import SqliteStore

    store = SqliteStore(path)
    try:
        G = export_graphs(store, referrals=False, events=False).influence  # noqa: N806
    finally:
        store.close()
    membership = {node: i % 50 for i, node in enumerate(G)}

    t0 = time.process_time()
    prebuilt = sc.adjacency(G)
    sc.influence_pagerank(G, prebuilt=prebuilt)
    sc.core_numbers(G, prebuilt=prebuilt)
    sc.participation_coefficients(G, membership, prebuilt=prebuilt)
    fast = time.process_time() - t0

    t0 = time.process_time()
    nx.pagerank(G.reverse(copy=False), weight="weight")
    nx.core_number(G.to_undirected(as_view=True))
    for node in G:
        neighbours = (set(G.succ[node]) | set(G.pred[node])) - {node}
        k = len(neighbours)
        if k:
            _ = 1 - sum((c / k) ** 2 for c in Counter(membership[v] for v in neighbours).values())
    slow = time.process_time() - t0
    return {"fast_cpu_seconds": fast, "networkx_cpu_seconds": slow}


def child(path: Path, reference: bool) -> None:
    """Run one analysis on `path` and print its figures as one JSON line (run in a fresh process)."""
    from engine.analysis import run_analysis
    from graph.sqlite_store import SqliteStore

    store = SqliteStore(path)
    try:
        with measure() as m:
            run = run_analysis(store)
    finally:
        store.close()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result: dict[str, Any] = {
        "seconds": m.seconds,
        "cpu_seconds": m.cpu_seconds,
        "peak_rss_mib": peak_mib,
        "rss_growth_mib": m.peak_rss_mib,
        "timings": run.timings,
        "customers": run.summary["customers"],
        "influence_edges": run.summary["influence_edges"],
        "referral_edges": run.summary["referral_edges"],
        "communities": run.summary["communities"],
        "segments": run.summary["segments"],
    }
    if reference:
        result["reference"] = _reference_scores(path)
    print(json.dumps(result), flush=True)


def _measure_size(path: Path, reference: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.analysis_scale", "--child", str(path)]
    if reference:
        command.append("--reference")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"analysis of {path} failed:\n{done.stderr[-4000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _size_of(metric: str) -> int:
    label = metric.rsplit("_", 1)[-1]
    return int(label[:-1]) * (1_000_000 if label.endswith("m") else 1000)


def _previous(exclude: list[int]) -> tuple[dict[int, dict[str, Any]], list[Row]]:
    """Figures and rows of the sizes not being measured now, from the results file if there is one."""
    path = RESULTS_DIR / f"{TOPIC}.json"
    if not path.exists():
        return {}, []
    saved = json.loads(path.read_text())
    figures = {int(n): f for n, f in saved["machine"].get("figures", {}).items() if int(n) not in exclude}
    rows = [Row(**row) for row in saved["rows"] if _size_of(row["metric"]) in figures]
    return figures, rows


def plot(results: dict[int, dict[str, Any]], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.plot(sizes, [results[n]["seconds"] for n in sizes], "o-", label="total, wall")
    left.plot(sizes, [results[n]["cpu_seconds"] for n in sizes], "s--", label="total, CPU")
    for step in ("export", "communities"):
        left.plot(sizes, [results[n]["timings"].get(step, 0.0) for n in sizes], ".:", label=f"{step}, wall")
    left.set(xscale="log", yscale="log", xlabel="customers (about 10 influence edges each)", ylabel="seconds")
    left.set_title("run_analysis time")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    right.plot(sizes, [results[n]["peak_rss_mib"] for n in sizes], "o-", color="tab:red")
    for n in sizes:
        right.annotate(f"{results[n]['peak_rss_mib']:,.0f} MiB", (n, results[n]["peak_rss_mib"]), fontsize=8)
    right.set(xscale="log", yscale="log", xlabel="customers", ylabel="peak RSS (MiB)")
    right.set_title("run_analysis peak memory (whole process)")
    right.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/advocacy-bench"))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reference-max", type=int, default=100_000)
    parser.add_argument(
        "--merge", action="store_true", help="Keep the other sizes' figures already in the results file."
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.reference)
        return

    sizes = [int(s) for s in args.sizes.split(",") if s]
    machine = machine_facts(sizes=sizes, seed=args.seed, generator="graph.generator.generate_network")
    results: dict[int, dict[str, Any]] = {}
    rows: list[Row] = []
    if args.merge:
        results, rows = _previous(exclude=sizes)
    for n in sizes:
        path = build_store(n, args.seed, args.workdir)
        print(f"analysing {n:,} customers ...", flush=True)
        figures = _measure_size(path, reference=n <= args.reference_max)
        results[n] = figures
        label = _label(n)
        rows += [
            Row(f"analysis_seconds_{label}", round(figures["seconds"], 2), "s"),
            Row(f"analysis_cpu_seconds_{label}", round(figures["cpu_seconds"], 2), "s"),
            Row(f"analysis_peak_mb_{label}", round(figures["peak_rss_mib"], 1), "MiB"),
            Row(f"influence_edges_{label}", figures["influence_edges"], "edges"),
        ]
        rows += [
            Row(f"analysis_{step.replace(' ', '_')}_seconds_{label}", round(figures["timings"].get(step, 0.0), 2), "s")
            for step in STEPS
        ]
        reference = figures.get("reference")
        if reference:
            rows += [
                Row(f"scores_networkx_cpu_seconds_{label}", round(reference["networkx_cpu_seconds"], 2), "s"),
                Row(
                    f"scores_arrays_cpu_seconds_{label}",
                    round(reference["fast_cpu_seconds"], 2),
                    "s",
                    baseline=f"scores_networkx_cpu_seconds_{label}",
                ),
            ]
        print_table(rows, title=f"after {n:,} customers")
    ordered = sorted(results)
    machine["sizes"] = ordered
    machine["figures"] = {str(n): results[n] for n in ordered}  # per size, as measured: the plot is redrawn from it
    rows.sort(key=lambda row: _size_of(row.metric))
    target = write_results(TOPIC, rows, machine)
    plot(results, RESULTS_DIR / f"{TOPIC}.png")
    print(f"\nwrote {target} and {RESULTS_DIR / f'{TOPIC}.png'}")


if __name__ == "__main__":
    main()
