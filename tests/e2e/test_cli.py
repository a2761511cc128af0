"""The real `advocacy` command on a temporary SQLite store: loads, imports, stats, and clear failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from api.routes.health import public_location

ROOT = Path(__file__).resolve().parents[2]
ADVOCACY = Path(sys.executable).parent / "advocacy"
EXAMPLES = ROOT / "examples"
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="the shared network files are not present")
pytestmark = pytest.mark.skipif(not ADVOCACY.exists(), reason="run `pip install -e .` to get the advocacy command")


class Cli:
    """Runs `advocacy --store sqlite:///<tmp>/graph.db ...` from an empty directory with no ADVOCACY_* settings."""

    def __init__(self, tmp_path: Path) -> None:
        self.cwd = tmp_path
        self.store = f"sqlite:///{tmp_path / 'graph.db'}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ADVOCACY_")}

    def __call__(self, *args: str | Path, store: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [str(ADVOCACY), "--store", store or self.store, *map(str, args)]
        return subprocess.run(
            command, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=600, check=False
        )

    def stats(self) -> dict[str, Any]:
        done = self("stats", "--json")
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)  # exactly one JSON object, nothing else
        return result


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def assert_clear_failure(done: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ")
    for text in expected:
        assert text in done.stderr, done.stderr


def empty(stats: dict[str, Any]) -> bool:
    return stats["customers"] == 0 and not any(stats["edges"].values()) and not any(stats["events"].values())


def distinct_nodes_and_arcs(path: Path, *, directed: bool) -> tuple[int, int]:
    nodes: set[str] = set()
    arcs: set[tuple[str, str]] = set()
    for raw in path.read_bytes().splitlines():
        fields = raw.split()
        if not fields or fields[0].startswith(b"#"):
            continue
        u, v = fields[0].decode(), fields[1].decode()
        nodes.update((u, v))
        if u != v:
            arcs.add((u, v))
            if not directed:
                arcs.add((v, u))
    return len(nodes), len(arcs)


def test_help_lists_every_command_in_one_line_each(cli: Cli) -> None:
    done = cli("--help")
    assert done.returncode == 0
    for command in ("import", "load-network", "generate", "stats", "serve"):
        assert command in done.stdout
    assert "ADVOCACY_STORE" in done.stdout
    assert "--skip-bad-rows" in cli("import", "--help").stdout


@needs_data
def test_load_network_then_stats_gives_the_counts_of_the_file(cli: Cli) -> None:
    path = DATA / "email-Eu-core.txt"
    done = cli("load-network", path, "--directed")
    assert done.returncode == 0, done.stderr
    nodes, arcs = distinct_nodes_and_arcs(path, directed=True)
    stats = cli.stats()
    assert stats["customers"] == nodes
    assert stats["edges"] == {"INFLUENCES": arcs, "REFERRED": 0}


def test_the_example_files_import_and_count(cli: Cli) -> None:
    files = sorted([*EXAMPLES.glob("*.csv"), *EXAMPLES.glob("*.jsonl")])
    done = cli("import", *files)
    assert done.returncode == 0, done.stderr
    assert "customers imported" in done.stdout

    def rows(name: str, header: int) -> int:
        return len((EXAMPLES / name).read_text().splitlines()) - header

    stats = cli.stats()
    assert stats["customers"] == rows("customers.csv", 1)
    assert stats["edges"] == {"INFLUENCES": rows("influences.csv", 1), "REFERRED": rows("referrals.csv", 1)}
    assert sum(stats["events"].values()) == rows("events.jsonl", 0)


BAD_INPUTS = {
    "unknown column": ("c.csv", "id,name,shoe_size\na,A,42\n", ":1: unknown column 'shoe_size'"),
    "missing column": ("r.csv", "referrer_id,friend_id\na,b\n", ":1: missing required column 'at'"),
    "malformed csv": ("c.csv", 'id,name\na,A\nb,"B"oops\n', ":3: malformed CSV"),
    "duplicate id": ("c.csv", "id\na\nb\na\n", ":4: duplicate customer id 'a'"),
    "missing customer": ("i.csv", "source_id,target_id\nx,y\n", ":2: customers 'x' and 'y' are neither"),
    "bad timezone": ("c.csv", "id,timezone\na,UTC\nb,Moon/Base\n", ":3: bad value for 'timezone'"),
    "bad json": ("e.jsonl", '{"id": "e1", "customer_id": "c", "kind": }\n', ":1: not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_each_bad_input_fails_clearly_naming_file_and_line_and_imports_nothing(cli: Cli, case: str) -> None:
    name, text, expected = BAD_INPUTS[case]
    path = cli.cwd / name
    path.write_text(text)
    customers = cli.cwd / "customers.csv"
    customers.write_text("id\nc\n")  # a good file alongside: it must not be imported either
    done = cli("import", customers, path)
    assert_clear_failure(done, f"{path}{expected}")
    assert empty(cli.stats())


def test_skip_bad_rows_imports_the_good_rows_and_lists_the_skipped(cli: Cli) -> None:
    path = cli.cwd / "c.csv"
    path.write_text("id,timezone\na,UTC\nb,Moon/Base\nc,Europe/Rome\n")
    done = cli("import", path, "--skip-bad-rows")
    assert done.returncode == 0, done.stderr
    assert f"{path}:3:" in done.stderr
    assert "2 customers imported" in done.stdout
    assert cli.stats()["customers"] == 2


def test_a_missing_file_fails_clearly(cli: Cli) -> None:
    assert_clear_failure(cli("import", cli.cwd / "nope.csv"), "nope.csv", "No such file")
    assert_clear_failure(cli("load-network", cli.cwd / "nope.txt"), "nope.txt", "No such file")


def test_a_malformed_edge_list_fails_clearly(cli: Cli) -> None:
    path = cli.cwd / "net.txt"
    path.write_text("1 2\n3\n")
    assert_clear_failure(cli("load-network", path), f"{path}:2: expected 'u v'")
    assert empty(cli.stats())


def test_an_unknown_store_url_fails_with_one_clear_message(cli: Cli) -> None:
    done = cli("stats", store="foo://x")
    assert_clear_failure(done, "foo://x", "sqlite:///")
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unreachable_neo4j_fails_with_one_clear_message(cli: Cli) -> None:
    done = cli("stats", store="bolt://127.0.0.1:1")
    assert_clear_failure(done, "bolt://127.0.0.1:1")
    assert len(done.stderr.strip().splitlines()) == 1


def test_generate_is_reproducible_into_the_store(cli: Cli, tmp_path: Path) -> None:
    done = cli("generate", "--customers", "300", "--seed", "3")
    assert done.returncode == 0, done.stderr
    first = cli.stats()
    assert first["customers"] == 300
    assert first["edges"]["INFLUENCES"] > 2_000
    (tmp_path / "other").mkdir()
    other = Cli(tmp_path / "other")
    assert other("generate", "--customers", "300", "--seed", "3").returncode == 0
    assert other.stats() == first


@needs_data
@pytest.mark.slow
def test_an_undirected_snap_network_loads_both_arcs(cli: Cli) -> None:
    path = DATA / "facebook_combined.txt"
    assert cli("load-network", path).returncode == 0
    nodes, arcs = distinct_nodes_and_arcs(path, directed=False)
    stats = cli.stats()
    assert (stats["customers"], stats["edges"]["INFLUENCES"]) == (nodes, arcs)


def test_serve_runs_the_api_on_the_store_given_on_the_command_line(cli: Cli) -> None:
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(ADVOCACY), "--store", cli.store, "serve", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, cwd=cli.cwd, env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    body = json.loads(response.read())
                    break
            except OSError:
                time.sleep(0.3)
        assert body is not None, f"serve did not answer (exit code {server.poll()})"
        assert body["store"] == public_location(cli.store)  # the file's name: the probe is public, paths are not
        assert body["store"].endswith(cli.store.rsplit("/", 1)[1])
    finally:
        server.terminate()
        server.wait(timeout=30)
