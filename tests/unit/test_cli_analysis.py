"""`advocacy analyse` and `advocacy targets` through Typer's CliRunner on a temporary SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from api import cli, cli_analysis
from graph.generator import generate_network
from graph.sqlite_store import SqliteStore


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The real global options (`--store`) with just this module's commands."""
    fresh = typer.Typer()
    fresh.callback()(cli.main)
    cli_analysis.register(fresh)
    return fresh


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "graph.db"
    store = SqliteStore(path)
    for batch in generate_network(400, seed=5):
        store.write_batch(batch)
    store.close()
    return path


def invoke(app: typer.Typer, db: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--store", f"sqlite:///{db}", *args])


def test_analyse_prints_the_segment_table_and_records_the_run(app: typer.Typer, db: Path) -> None:
    result = invoke(app, db, "analyse")
    assert result.exit_code == 0, result.output
    assert "Analysis run-" in result.stdout
    for segment in ("influencer", "prosumer", "advocate", "passive", "do_not_ask"):
        assert segment in result.stdout
    assert "400 customers" in result.stdout
    store = SqliteStore(db)
    try:
        (run,) = store.list_runs()
        assert run.status == "done"
    finally:
        store.close()


def test_analyse_json_is_one_object_and_a_second_run_is_compared_with_the_first(app: typer.Typer, db: Path) -> None:
    first = invoke(app, db, "analyse", "--json")
    assert first.exit_code == 0, first.output
    record = json.loads(first.stdout)
    assert record["status"] == "done"
    assert sum(record["summary"]["segments"].values()) == 400
    assert "membership" not in record["summary"]
    second = invoke(app, db, "analyse")
    assert "0 customers changed segment" in second.stdout


def test_targets_before_any_analysis_fail_with_a_clear_message(app: typer.Typer, db: Path) -> None:
    result = invoke(app, db, "targets", "--k", "3")
    assert result.exit_code == 1
    assert "advocacy analyse" in result.stderr
    assert "Traceback" not in result.output


def test_targets_json_is_one_object_with_seeds_in_order_and_baselines(app: typer.Typer, db: Path) -> None:
    assert invoke(app, db, "analyse").exit_code == 0
    result = invoke(app, db, "targets", "--k", "3", "--json", "--seed", "1", "--mc-runs", "500")
    assert result.exit_code == 0, result.output
    choice = json.loads(result.stdout)
    assert len(choice["seeds"]) == 3
    assert len(choice["marginal_gains"]) == len(choice["explanations"]) == 3
    low, high = choice["ci95"]
    assert low <= choice["expected_spread"] <= high
    assert (choice["model"], choice["p"]) == ("ic", 0.01)
    assert choice["seconds"] > 0
    assert {b["method"] for b in choice["baselines"]} == {"degree", "pagerank", "degree_discount"}
    assert all(e.split(":")[0] in {"Influencer", "Prosumer", "Advocate", "Passive"} for e in choice["explanations"])


def test_targets_respect_excluded_segments_and_the_community_cap(app: typer.Typer, db: Path) -> None:
    assert invoke(app, db, "analyse").exit_code == 0
    result = invoke(
        app,
        db,
        "targets",
        "--k",
        "4",
        "--json",
        "--exclude-segment",
        "influencer",
        "--exclude-segment",
        "advocate",
        "--max-per-community",
        "1",
        "--model",
        "wc",
        "--mc-runs",
        "300",
    )
    assert result.exit_code == 0, result.output
    choice = json.loads(result.stdout)
    assert not {"influencer", "advocate", "do_not_ask"} & set(choice["segments"])
    communities = [c for c in choice["communities"] if c is not None]
    assert len(communities) == len(set(communities))
    assert choice["model"] == "wc"


def test_targets_table_names_each_target_and_the_expected_reach(app: typer.Typer, db: Path) -> None:
    assert invoke(app, db, "analyse").exit_code == 0
    result = invoke(app, db, "targets", "--k", "2", "--mc-runs", "300", "--seed", "2")
    assert result.exit_code == 0, result.output
    assert "expected reach" in result.stdout
    assert "vs degree:" in result.stdout


def test_targets_refuse_an_unknown_model_or_segment(app: typer.Typer, db: Path) -> None:
    assert invoke(app, db, "targets", "--k", "2", "--model", "lt").exit_code == 2
    assert invoke(app, db, "targets", "--k", "2", "--exclude-segment", "vip").exit_code == 2
