"""What every `bench/<topic>.py` shares: machine facts, timing with peak memory, the table, the results file.

Results go to `bench/results/<topic>.json` in one format so figures can be compared across changes:

    {"machine": {...}, "rows": [{"metric": "...", "value": 1.0, "unit": "...", "baseline": "other_metric" | null}]}

`baseline` names the metric (in the same file) this one is compared against: the peer store, or the naive way
of doing the same work. Memory is the peak growth of this process's resident set while a step ran, sampled by a
thread (tracemalloc would slow allocation-heavy code several-fold and distort the timings next to it).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Row:
    """One measured figure. `baseline` is the metric name of the peer it is compared to, if any."""

    metric: str
    value: float
    unit: str
    baseline: str | None = None


@dataclass(slots=True)
class Measurement:
    """Filled in when the `measure` block ends."""

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def per_second(self, count: float) -> float:
        return count / self.seconds if self.seconds > 0 else float("inf")


@contextmanager
def measure(sample_every_s: float = 0.02) -> Iterator[Measurement]:
    """Wall time, this process's CPU time, and peak RSS growth (MiB) of the block."""
    proc = psutil.Process()
    start_rss = proc.memory_info().rss
    peak = start_rss
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(sample_every_s):
            peak = max(peak, proc.memory_info().rss)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    result = Measurement()
    cpu0, t0 = time.process_time(), time.perf_counter()
    sampler.start()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - t0
        result.cpu_seconds = time.process_time() - cpu0
        done.set()
        sampler.join()
        peak = max(peak, proc.memory_info().rss)
        result.peak_rss_mib = (peak - start_rss) / 2**20


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_facts(**extra: Any) -> dict[str, Any]:
    """Enough to tell whether two result files are comparable; `extra` adds the benchmark's own settings."""
    cpu_model = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    facts: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        # Other work on the machine depresses every figure; record how busy it was.
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "packages": {name: _package(name) for name in ("neo4j", "neo4j-rust-ext", "networkx", "numpy", "pydantic")},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    facts.update(extra)
    return facts


def _format(value: float) -> str:
    if value != value or value in (float("inf"), float("-inf")):  # NaN / inf
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def print_table(rows: Sequence[Row], title: str | None = None) -> None:
    """A plain-text table: metric, value, unit, baseline (with the baseline's value and the ratio)."""
    by_metric = {row.metric: row for row in rows}
    lines = [("metric", "value", "unit", "vs baseline")]
    for row in rows:
        versus = ""
        peer = by_metric.get(row.baseline) if row.baseline else None
        if peer is not None and peer.value:
            versus = f"{row.baseline} = {_format(peer.value)} ({row.value / peer.value:.2f}x)"
        elif row.baseline:
            versus = row.baseline
        lines.append((row.metric, _format(row.value), row.unit, versus))
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    if title:
        print(f"\n{title}")
    for i, line in enumerate(lines):
        print(f"{line[0]:<{widths[0]}}  {line[1]:>{widths[1]}}  {line[2]:<{widths[2]}}  {line[3]}".rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def write_results(topic: str, rows: Sequence[Row], machine: dict[str, Any], path: Path | None = None) -> Path:
    """Write `bench/results/<topic>.json` (or `path`) and return where it went."""
    target = path or RESULTS_DIR / f"{topic}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "rows": [asdict(row) for row in rows]}
    target.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    return target
