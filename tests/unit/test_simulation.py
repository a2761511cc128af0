"""The demo's programme simulation goes through the real rules and is reproducible by seed."""

from __future__ import annotations

from pathlib import Path

from engine.metrics import cascade_report
from engine.simulation import simulate_programme
from graph.model import EdgeType
from graph.program import ConversionStatus
from graph.sqlite_store import SqliteStore
from tests.factories import make_customer
from tests.program_factories import make_campaign


def play(path: Path, seed: int) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
    store = SqliteStore(path)
    try:
        store.upsert_customers([make_customer(id=f"adv{i}") for i in range(12)])
        store.save_campaign(make_campaign(id="demo"))
        report = simulate_programme(store, "demo", [f"adv{i}" for i in range(12)], seed=seed, generations=3)
        assert report.orders > 0
        edges = sorted((e.source, e.target, e.label) for e in store.iter_edges(EdgeType.REFERRED))
        cascades = cascade_report(store.iter_edges(EdgeType.REFERRED), store.list_rewards(), store.iter_conversions())
        assert cascades.depth >= 2, "friends of friends refer too"
        self_order = store.get_conversion(f"sim-self-{seed}")
        assert self_order.status is ConversionStatus.REJECTED
        assert self_order.verdict is not None
        assert self_order.verdict.reasons
        return report.by_status, edges
    finally:
        store.close()


def test_a_simulated_programme_cascades_through_the_real_rules_and_replays_by_seed(tmp_path: Path) -> None:
    first = play(tmp_path / "a.db", seed=3)
    again = play(tmp_path / "b.db", seed=3)
    other = play(tmp_path / "c.db", seed=4)
    assert first[1] == again[1]
    assert first[0] == again[0]
    assert first[1] != other[1]
    assert first[0].get(ConversionStatus.ATTRIBUTED.value, 0) > 0
