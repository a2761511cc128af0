"""The batch writer of clicks, over a real SQLite store: prompt, ordered, patient while the store is down,
bounded in memory, and honest about what a shutdown could not write."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from engine.clicks import ClickRecorder
from graph.errors import StoreUnavailable
from graph.program import Click
from graph.program_store import Store
from graph.sqlite_store import SqliteStore
from tests.contract.conftest import Scene, set_scene
from tests.program_factories import make_click


class CountingStore(SqliteStore):
    """The real SQLite store, noting the size of each batch it is asked to write."""

    batches: list[int]

    def record_clicks(self, clicks: Sequence[Click]) -> None:
        self.batches.append(len(clicks))
        super().record_clicks(clicks)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[CountingStore]:
    opened = CountingStore(tmp_path / "clicks.db")
    opened.batches = []
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def scene(store: SqliteStore) -> Scene:
    return set_scene(store)


class Switch:
    """The store as `StoreHolder.get` hands it out: unavailable while `down` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = threading.Event()

    def __call__(self) -> Store:
        if self.down.is_set():
            raise StoreUnavailable("the store is down (test)")
        return self.store


def recorder_over(switch: Switch, **options: float) -> ClickRecorder:
    return ClickRecorder(switch, **options)  # type: ignore[arg-type]


def test_a_submitted_click_is_in_the_store_after_flush(store: SqliteStore, scene: Scene) -> None:
    recorder = ClickRecorder(lambda: store, max_delay_s=0.05)
    click = make_click(scene.code)
    try:
        recorder.submit(click)
        assert recorder.flush(5)
        assert store.get_click(click.id) == click
    finally:
        recorder.close()


def test_clicks_arriving_together_are_written_in_one_transaction(store: CountingStore, scene: Scene) -> None:
    recorder = ClickRecorder(lambda: store, max_delay_s=0.5)
    clicks = [make_click(scene.code) for _ in range(40)]
    try:
        for click in clicks:
            recorder.submit(click)
        assert recorder.flush(5)
    finally:
        recorder.close()
    assert sum(store.batches) == 40
    assert len(store.batches) <= 2, store.batches
    assert all(store.get_click(c.id) == c for c in clicks)


def test_without_flush_a_click_still_lands_within_its_delay(store: SqliteStore, scene: Scene) -> None:
    recorder = ClickRecorder(lambda: store, max_delay_s=0.02)
    click = make_click(scene.code)
    try:
        recorder.submit(click)
        landed = threading.Event()
        for _ in range(200):
            if store.get_click(click.id) is not None:
                landed.set()
                break
            landed.wait(0.01)
        assert landed.is_set()
    finally:
        recorder.close()


def test_while_the_store_is_down_clicks_wait_and_are_written_in_order_once_it_is_back(
    store: SqliteStore, scene: Scene
) -> None:
    switch = Switch(store)
    switch.down.set()
    recorder = recorder_over(switch, max_delay_s=0.01)
    clicks = [make_click(scene.code) for _ in range(5)]
    try:
        for click in clicks:
            recorder.submit(click)
        assert not recorder.flush(0.3), "nothing can be written while the store is down"
        assert all(store.get_click(c.id) is None for c in clicks)
        switch.down.clear()
        assert recorder.flush(10)
    finally:
        recorder.close()
    assert all(store.get_click(c.id) == c for c in clicks)
    assert recorder.pending == 0


def test_beyond_its_capacity_the_recorder_refuses_with_a_503(store: SqliteStore, scene: Scene) -> None:
    switch = Switch(store)
    switch.down.set()
    recorder = recorder_over(switch, max_delay_s=0.01, capacity=3)
    try:
        for _ in range(3):
            recorder.submit(make_click(scene.code))
        with pytest.raises(StoreUnavailable) as refused:
            recorder.submit(make_click(scene.code))
        assert "try the link again" in refused.value.public
    finally:
        switch.down.clear()
        recorder.close()


def test_a_shutdown_writes_what_is_pending(store: SqliteStore, scene: Scene) -> None:
    recorder = ClickRecorder(lambda: store, max_delay_s=60)
    clicks = [make_click(scene.code) for _ in range(3)]
    for click in clicks:
        recorder.submit(click)
    recorder.close(5)
    assert all(store.get_click(c.id) == c for c in clicks)
    with pytest.raises(StoreUnavailable):
        recorder.submit(make_click(scene.code))


def test_a_shutdown_with_the_store_down_logs_the_clicks_it_lost(
    store: SqliteStore, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    switch = Switch(store)
    switch.down.set()
    recorder = recorder_over(switch, max_delay_s=0.01)
    for _ in range(4):
        recorder.submit(make_click(scene.code))
    with caplog.at_level(logging.ERROR, logger="engine.clicks"):
        recorder.close(2)
    assert any("4 clicks" in r.getMessage() and "lost" in r.getMessage() for r in caplog.records), caplog.text


def test_a_batch_the_store_refuses_for_good_is_dropped_and_later_clicks_still_land(
    store: SqliteStore, scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    unstorable = make_click(scene.code).model_copy(update={"at": None})  # skips validation; the store raises
    good = make_click(scene.code)
    recorder = ClickRecorder(lambda: store, max_delay_s=0.01)
    try:
        with caplog.at_level(logging.ERROR, logger="engine.clicks"):
            recorder.submit(unstorable)
            assert recorder.flush(5)
        recorder.submit(good)
        assert recorder.flush(5)
    finally:
        recorder.close()
    assert store.get_click(good.id) == good
    assert "dropped 1 clicks" in caplog.text
