"""Edge lists of public networks: headers, comments, line ends, self-loops, repeats and malformed lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.ingest import load_network
from graph.datasets import read_edge_list
from graph.errors import InvalidInput
from graph.factory import open_store
from graph.model import InfluenceKind
from graph.store import GraphStore

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="the shared network files are not present")


def write(tmp_path: Path, text: str | bytes, name: str = "net.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def arcs(net) -> set[tuple[str, str, float]]:
    return {
        (net.nodes[u], net.nodes[v], w)
        for u, v, w in zip(net.sources.tolist(), net.targets.tolist(), net.weights.tolist(), strict=True)
    }


@pytest.fixture
def store(tmp_path: Path) -> Iterator[GraphStore]:
    s = open_store(f"sqlite:///{tmp_path / 'graph.db'}")
    try:
        yield s
    finally:
        s.close()


def test_a_nethept_header_is_recognised_and_not_read_as_an_edge(tmp_path: Path) -> None:
    path = write(tmp_path, "4 5\n0 1 0.5\n0 1 0.25\n1 2 0.5\n2 2 1\n2 3 0.125\n")
    net = read_edge_list(path, directed=True)
    assert net.header == (4, 5)
    assert net.nodes == ["0", "1", "2", "3"]
    assert arcs(net) == {("0", "1", 0.75), ("1", "2", 0.5), ("2", "3", 0.125)}  # repeats summed
    assert (net.lines, net.self_loops, net.duplicates) == (5, 1, 1)


def test_a_two_column_file_keeps_its_first_line_as_an_edge(tmp_path: Path) -> None:
    net = read_edge_list(write(tmp_path, "7 8\n8 9\n"), directed=True)
    assert net.header is None
    assert arcs(net) == {("7", "8", 1.0), ("8", "9", 1.0)}


def test_snap_comments_blank_lines_and_odd_line_ends_are_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, b"# Directed graph\r\n# Nodes: 3\r\r\n1\t2\r\r\n\r\n2\t3\r\r\n% matrix-market style\n")
    net = read_edge_list(path, directed=True)
    assert arcs(net) == {("1", "2", 1.0), ("2", "3", 1.0)}
    assert net.lines == 2


def test_undirected_edges_give_both_arcs_and_repeats_collapse(tmp_path: Path) -> None:
    net = read_edge_list(write(tmp_path, "a b\nb a\nb c\nc c\n"), directed=False)
    assert arcs(net) == {("a", "b", 2.0), ("b", "a", 2.0), ("b", "c", 1.0), ("c", "b", 1.0)}
    assert (net.self_loops, net.duplicates) == (1, 2)
    assert net.nodes == ["a", "b", "c"]  # a node seen only in a self-loop is still a customer


def test_malformed_lines_are_all_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "1 2\n3\n4 5 heavy\n6 7 -1\n8 9 1 2\nbad/id 3\n10 11\n")
    with pytest.raises(InvalidInput) as excinfo:
        read_edge_list(path, directed=False)
    found = {(p.source, p.line): p.reason for p in excinfo.value.problems}
    assert set(found) == {(str(path), n) for n in (2, 3, 4, 5, 6)}
    assert found[(str(path), 2)] == "expected 'u v' or 'u v w', found 1 fields"
    assert "not a number" in found[(str(path), 3)]
    assert "must be > 0" in found[(str(path), 4)]
    assert "cannot be a customer id" in found[(str(path), 6)]


def test_loading_writes_customers_then_edges_in_chunks(tmp_path: Path, store: GraphStore) -> None:
    path = write(tmp_path, "".join(f"{i} {i + 1}\n" for i in range(30)))
    seen: list[tuple[str, int, int | None]] = []
    report = load_network(
        store,
        path,
        directed=False,
        kind=InfluenceKind.MENTIONS,
        chunk_rows=7,
        progress=lambda task, done, total: seen.append((task, done, total)),
    )
    assert (report.customers, report.influences) == (31, 60)
    stats = store.stats()
    assert (stats.customers, stats.edges["INFLUENCES"]) == (31, 60)
    assert {e.label for e in store.iter_edges()} == {"mentions"}
    assert seen[-1] == ("loading net.txt", 91, 91)
    load_network(store, path, directed=False, kind=InfluenceKind.MENTIONS)  # a rerun changes nothing
    assert store.stats() == stats


def _independent_count(path: Path, *, directed: bool, header: bool) -> tuple[int, int, int]:
    """Nodes, distinct non-self-loop arcs and self-loop lines, counted the plain way."""
    nodes: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    loops = 0
    lines = [ln.split() for ln in path.read_bytes().decode().splitlines()]
    lines = [f for f in lines if f and not f[0].startswith("#")]
    for fields in lines[1:] if header else lines:
        u, v = fields[0], fields[1]
        nodes.update((u, v))
        if u == v:
            loops += 1
            continue
        pairs.add((u, v))
        if not directed:
            pairs.add((v, u))
    return len(nodes), len(pairs), loops


@needs_data
@pytest.mark.parametrize(
    ("name", "directed", "header"),
    [("NetHEPT.txt", False, True), ("email-Eu-core.txt", True, False), ("facebook_combined.txt", False, False)],
)
def test_the_shared_networks_read_as_counted_independently(name: str, directed: bool, header: bool) -> None:
    path = DATA / name
    net = read_edge_list(path, directed=directed)
    assert (len(net.nodes), net.arcs, net.self_loops) == _independent_count(path, directed=directed, header=header)
    assert (net.header is not None) == header
