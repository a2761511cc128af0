"""Ingest benchmark: bulk import into Neo4j and SQLite, export back into NetworkX, against row-by-row Cypher.

    python -m bench.ingest [--sizes 10000,100000] [--neo4j-url bolt://127.0.0.1:7687] [--wipe]

For each size N: N customers and 10*N `INFLUENCES` edges (seeded, heavy-tailed: a few customers influence
many, and a few are followed by many) go through the `GraphStore` protocol in large calls (one transaction
each), first into Neo4j, then into a fresh SQLite file; then `iter_edges` streams them back into a
`networkx.DiGraph`. N = 100,000 gives the 1M-edge export. The baseline is what a first version usually does:
one `MERGE` statement per relationship through the driver, a transaction per 1,000 of them, on a sample.

The Neo4j database must hold no customers, or `--wipe` must be given: the benchmark deletes everything in it.
Writes `bench/results/ingest.json` (see `bench.common`). Never run under pytest.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import networkx as nx
import numpy as np
import numpy.typing as npt
import psutil
from neo4j import Driver, GraphDatabase, ManagedTransaction

from bench.common import Row, machine_facts, measure, print_table, write_results
from graph import cypher
from graph.model import ContactChannel, Customer, EdgeType, Influence, InfluenceKind
from graph.neo4j_store import Neo4jStore
from graph.store import GraphStore

AVG_DEGREE = 10
CUSTOMER_CALL = 10_000
EDGE_CALL = 50_000
KINDS = list(InfluenceKind)
START = datetime(2023, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

ROW_BY_ROW = cypher.MERGE_INFLUENCES.replace("UNWIND $rows AS row", "WITH $row AS row")
"""The naive baseline: the bulk statement's exact text, sent once per relationship."""


class Workload:
    """N customers and about `AVG_DEGREE * N` distinct (source, target, kind) edges, from one seed."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.ids = [f"c{i:07d}" for i in range(n)]
        rng = np.random.default_rng(seed)
        reach = rng.pareto(1.5, n) + 1.0  # out-degree: heavy tail
        attention = rng.pareto(2.0, n) + 1.0  # in-degree: heavy tail, milder
        wanted = AVG_DEGREE * n
        keys = np.empty(0, dtype=np.int64)
        while keys.size < wanted:
            draw = int((wanted - keys.size) * 1.3) + 1_000
            s = rng.choice(n, size=draw, p=reach / reach.sum())
            t = rng.choice(n, size=draw, p=attention / attention.sum())
            k = rng.integers(0, len(KINDS), size=draw)
            fresh = ((s.astype(np.int64) * n + t) * len(KINDS) + k)[s != t]
            merged = np.concatenate([keys, fresh])
            _, first = np.unique(merged, return_index=True)
            keys = merged[np.sort(first)]
        self.keys: npt.NDArray[np.int64] = keys[:wanted]
        self.weights = np.round(rng.uniform(0.05, 1.0, size=wanted), 3)
        self.at_s = rng.integers(0, 730 * 86_400, size=wanted)

    @property
    def edge_count(self) -> int:
        return int(self.keys.size)

    def customers(self) -> Iterator[list[Customer]]:
        for start in range(0, self.n, CUSTOMER_CALL):
            yield [
                Customer.model_construct(
                    id=cid,
                    name=f"Customer {cid}",
                    email=f"{cid}@example.com",
                    phone=None,
                    locale="en",
                    timezone="UTC",
                    consent={ContactChannel.EMAIL: i % 3 != 0},
                    attributes={"tier": "gold" if i % 10 == 0 else "basic"},
                    created_at=START + timedelta(seconds=i),
                )
                for i, cid in enumerate(self.ids[start : start + CUSTOMER_CALL], start=start)
            ]

    def edges(self, keys: npt.NDArray[np.int64] | None = None, size: int = EDGE_CALL) -> Iterator[list[Influence]]:
        keys = self.keys if keys is None else keys
        for start in range(0, keys.size, size):
            chunk = keys[start : start + size]
            kind, pair = chunk % len(KINDS), chunk // len(KINDS)
            source, target = pair // self.n, pair % self.n
            yield [
                Influence.model_construct(
                    source_id=self.ids[s],
                    target_id=self.ids[t],
                    kind=KINDS[k],
                    weight=w,
                    at=START + timedelta(seconds=a),
                )
                for s, t, k, w, a in zip(
                    source.tolist(),
                    target.tolist(),
                    kind.tolist(),
                    self.weights[start : start + size].tolist(),
                    self.at_s[start : start + size].tolist(),
                    strict=True,
                )
            ]

    def extra_keys(self, count: int, seed: int) -> npt.NDArray[np.int64]:
        """`count` new distinct edge keys, none already in the workload (for the row-by-row baseline)."""
        rng = np.random.default_rng(seed)
        draw = count * 3
        s, t = rng.integers(0, self.n, size=draw), rng.integers(0, self.n, size=draw)
        k = rng.integers(0, len(KINDS), size=draw)
        keys = ((s.astype(np.int64) * self.n + t) * len(KINDS) + k)[s != t]
        keys = keys[~np.isin(keys, self.keys)]
        _, first = np.unique(keys, return_index=True)
        fresh: npt.NDArray[np.int64] = keys[np.sort(first)][:count]
        return fresh


def _size_label(n: int) -> str:
    return f"{n // 1000}k" if n % 1000 == 0 and n < 1_000_000 else f"{n / 1e6:g}m"


def server_process(url: str) -> psutil.Process | None:
    """The local process listening on the Bolt port, to count the server's CPU time too (None if not local)."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    port = parts.port or 7687
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        return None
    return None


def _cpu(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    times = proc.cpu_times()
    return float(times.user + times.system)


def import_and_export(
    store: GraphStore, work: Workload, name: str, rows: list[Row], server: psutil.Process | None = None
) -> None:
    """Customers, then edges, through the protocol; then all edges back into a DiGraph.

    With `server` (the local Neo4j process) its CPU time is recorded too: on a shared machine, rels per
    server-CPU-second says more about the server's cost than rels per wall-clock second.
    """
    label = _size_label(work.n)
    in_store = 0.0
    for customers in work.customers():
        wall0 = time.perf_counter()
        store.upsert_customers(customers)
        in_store += time.perf_counter() - wall0
    rows.append(Row(f"{name}_import_customers_per_s_{label}", work.n / in_store, "customers/s"))
    print(f"  {name}: {work.n:,} customers in {in_store:.1f} s", flush=True)

    # Only the time inside the store counts: building the Influence objects stands in for parsing a file.
    stored, in_store, client_cpu = 0, 0.0, 0.0
    server_cpu = _cpu(server)
    with measure() as m:
        for chunk in work.edges():
            wall0, cpu0 = time.perf_counter(), time.process_time()
            stored += store.add_influences(chunk)
            in_store += time.perf_counter() - wall0
            client_cpu += time.process_time() - cpu0
    server_cpu = _cpu(server) - server_cpu
    assert stored == work.edge_count
    edges_stats = store.stats().edges[EdgeType.INFLUENCES.value]
    assert edges_stats == work.edge_count, (edges_stats, work.edge_count)
    rate = work.edge_count / in_store
    rows.append(Row(f"{name}_import_rels_per_s_{label}", rate, "rels/s"))
    rows.append(Row(f"{name}_import_rels_s_{label}", in_store, "s"))
    rows.append(Row(f"{name}_import_peak_rss_mib_{label}", m.peak_rss_mib, "MiB"))
    rows.append(Row(f"{name}_import_client_cpu_s_{label}", client_cpu, "s"))
    if server is not None:
        rows.append(Row(f"{name}_import_server_cpu_s_{label}", server_cpu, "s"))
        rows.append(Row(f"{name}_import_rels_per_server_cpu_s_{label}", work.edge_count / server_cpu, "rels/cpu-s"))
    print(
        f"  {name}: {work.edge_count:,} edges in {in_store:.1f} s ({rate:,.0f}/s; "
        f"CPU: client {client_cpu:.1f} s" + (f", server {server_cpu:.1f} s)" if server else ")"),
        flush=True,
    )

    with measure() as m:
        streamed = sum(1 for _ in store.iter_edges(EdgeType.INFLUENCES))
    assert streamed == work.edge_count
    rows.append(Row(f"{name}_iter_edges_s_{label}", m.seconds, "s"))
    rows.append(Row(f"{name}_iter_edges_cpu_s_{label}", m.cpu_seconds, "s"))

    with measure() as m:
        graph = nx.DiGraph()
        graph.add_edges_from(
            (e.source, e.target, {"weight": e.weight, "kind": e.label}) for e in store.iter_edges(EdgeType.INFLUENCES)
        )
        pairs = graph.number_of_edges()
    del graph
    rows.append(Row(f"{name}_export_edges_to_networkx_s_{label}", m.seconds, "s"))
    rows.append(Row(f"{name}_export_edges_per_s_{label}", m.per_second(work.edge_count), "edges/s"))
    rows.append(Row(f"{name}_export_peak_rss_mib_{label}", m.peak_rss_mib, "MiB"))
    rows.append(Row(f"{name}_export_cpu_s_{label}", m.cpu_seconds, "s"))
    print(f"  {name}: exported into NetworkX in {m.seconds:.1f} s ({pairs:,} distinct pairs)", flush=True)


def _us(at: datetime) -> int:
    return (at - EPOCH) // timedelta(microseconds=1)


def _driver(url: str) -> Driver:
    parts = urlsplit(url)
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return GraphDatabase.driver(parts.geturl(), auth=auth)


def server_version(url: str, database: str) -> str:
    with _driver(url) as driver:
        records, _, _ = driver.execute_query(
            "CALL dbms.components() YIELD name, versions, edition RETURN name, versions[0] AS v, edition",
            database_=database,
        )
    return ", ".join(f"{r['name']} {r['v']} {r['edition']}" for r in records)


def row_by_row(url: str, database: str, work: Workload, count: int, seed: int, rows: list[Row]) -> None:
    """The same statement as the bulk path, one relationship each, a transaction per 1,000 (the naive way)."""
    keys = work.extra_keys(count, seed)
    with _driver(url) as driver, driver.session(database=database) as session, measure() as m:
        for chunk in work.edges(keys, size=1_000):
            rows_of_chunk = [[e.source_id, e.target_id, str(e.kind), e.weight, _us(e.at)] for e in chunk if e.at]

            def work_tx(tx: ManagedTransaction, batch: list[list[Any]] = rows_of_chunk) -> None:
                for row in batch:
                    tx.run(ROW_BY_ROW, row=row).consume()

            session.execute_write(work_tx)
    rows.append(Row("neo4j_row_by_row_rels_per_s", m.per_second(keys.size), "rels/s"))
    print(f"  neo4j row by row: {keys.size:,} edges in {m.seconds:.1f} s ({m.per_second(keys.size):,.0f}/s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="customer counts, comma-separated")
    parser.add_argument("--neo4j-url", default=os.environ.get("ADVOCACY_TEST_NEO4J_URL", "bolt://127.0.0.1:7687"))
    parser.add_argument("--database", default="neo4j")
    parser.add_argument("--wipe", action="store_true", help="delete everything in the Neo4j database first")
    parser.add_argument("--row-by-row", type=int, default=20_000, help="edges in the row-by-row baseline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="results file (default bench/results/ingest.json)")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))

    machine = machine_facts(
        sizes=sizes, avg_degree=AVG_DEGREE, customer_call=CUSTOMER_CALL, edge_call=EDGE_CALL, seed=args.seed
    )
    print(f"load average at start: {machine['load_average_1m_at_start']} on {machine['cpus']} CPUs")
    neo4j = Neo4jStore(args.neo4j_url, database=args.database)
    if neo4j.stats().customers and not args.wipe:
        print(f"{neo4j.describe()} is not empty; pass --wipe to let the benchmark delete everything in it")
        return 2
    server = server_process(args.neo4j_url)
    machine["neo4j_server"] = server_version(args.neo4j_url, args.database)
    machine["neo4j_server_is_local"] = server is not None
    rows: list[Row] = []
    try:
        for i, n in enumerate(sizes):
            t0 = time.perf_counter()
            work = Workload(n, args.seed + i)
            print(f"N = {n:,}: {work.edge_count:,} edges generated in {time.perf_counter() - t0:.1f} s", flush=True)
            neo4j.delete_all()
            import_and_export(neo4j, work, "neo4j", rows, server)
            if i == 0 and args.row_by_row:
                row_by_row(args.neo4j_url, args.database, work, args.row_by_row, args.seed + 100, rows)
            if not args.no_sqlite:
                from graph.sqlite_store import SqliteStore

                with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
                    sqlite = SqliteStore(Path(tmp) / "bench.db")
                    try:
                        import_and_export(sqlite, work, "sqlite", rows)
                    finally:
                        sqlite.close()
        neo4j.delete_all()
    finally:
        neo4j.close()
    machine["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    rows = headline(rows, sizes) + rows
    print_table(rows, "ingest")
    written = write_results("ingest", rows, machine, args.out)
    print(f"\nwrote {written}")
    return 0


def headline(rows: list[Row], sizes: list[int]) -> list[Row]:
    """The figures the goals are stated in, at the largest size, each against its peer."""
    by_metric = {row.metric: row for row in rows}
    label = _size_label(sizes[-1])
    picks = [
        ("neo4j_import_rels_per_s", f"neo4j_import_rels_per_s_{label}", "neo4j_row_by_row_rels_per_s"),
        ("sqlite_import_rels_per_s", f"sqlite_import_rels_per_s_{label}", "neo4j_import_rels_per_s"),
    ]
    out = [
        Row(name, by_metric[source].value, by_metric[source].unit, baseline)
        for name, source, baseline in picks
        if source in by_metric
    ]
    if sizes[-1] * AVG_DEGREE >= 1_000_000:
        for store in ("neo4j", "sqlite"):
            source = by_metric.get(f"{store}_export_edges_to_networkx_s_{label}")
            if source is not None:
                name = "export_1m_edges_to_networkx_s" if store == "neo4j" else "sqlite_export_1m_edges_to_networkx_s"
                peer = "sqlite_export_1m_edges_to_networkx_s" if store == "neo4j" else None
                out.append(Row(name, source.value, "s", peer))
    return out


if __name__ == "__main__":
    sys.exit(main())
