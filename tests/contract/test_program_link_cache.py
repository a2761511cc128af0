"""What a referral link reads and writes: `link_code`/`link_campaign` (cached per store handle, never stale on its
own writes) and `record_clicks` (a batch in one transaction)."""

from __future__ import annotations

import pytest

from graph.errors import NotFound
from graph.link_cache import LinkCache
from graph.program import CampaignStatus, CodeStatus
from graph.program_store import Store
from graph.sqlite_store import SqliteStore
from tests.contract.conftest import set_scene
from tests.factories import BASE_TIME
from tests.neo4j_support import open_neo4j
from tests.program_factories import make_click


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def other_handle(store: Store) -> Store:
    """A second handle on the same data, as another process would hold."""
    if isinstance(store, SqliteStore):
        return SqliteStore(store.describe().removeprefix("sqlite:///"))
    return open_neo4j()


def test_the_store_s_own_writes_show_at_once_through_the_link_reads(store: Store) -> None:
    scene = set_scene(store)
    assert store.link_code(scene.code.code) == scene.code
    assert store.link_campaign(scene.campaign.id) == scene.campaign

    store.set_code_status(scene.code.code, CodeStatus.PAUSED, at=BASE_TIME)
    paused_campaign = scene.campaign.model_copy(update={"status": CampaignStatus.PAUSED})
    store.save_campaign(paused_campaign)

    assert store.link_code(scene.code.code).status is CodeStatus.PAUSED
    assert store.link_campaign(scene.campaign.id) == paused_campaign


def test_an_erased_customer_s_code_is_gone_from_the_link_reads(store: Store) -> None:
    scene = set_scene(store)
    store.link_code(scene.code.code)

    store.erase_customer(scene.referrer.id)

    with pytest.raises(NotFound):
        store.link_code(scene.code.code)


def test_another_handle_s_change_shows_once_the_cache_time_is_up(store: Store) -> None:
    scene = set_scene(store)
    ticks = Ticks()
    store.links = LinkCache(2.0, clock=ticks)
    assert store.link_code(scene.code.code).status is CodeStatus.ACTIVE

    other = other_handle(store)
    try:
        other.set_code_status(scene.code.code, CodeStatus.REVOKED, at=BASE_TIME)
    finally:
        other.close()

    assert store.link_code(scene.code.code).status is CodeStatus.ACTIVE, "within the cache time"
    ticks.now += 2.0
    assert store.link_code(scene.code.code).status is CodeStatus.REVOKED


def test_a_batch_of_clicks_is_stored_once_and_a_click_on_a_vanished_code_is_dropped(store: Store) -> None:
    scene = set_scene(store)
    kept = [make_click(scene.code, id=f"batch-click-{i}") for i in range(3)]
    orphan = make_click("GONE42", id="batch-click-orphan")

    store.record_clicks([*kept, orphan])
    store.record_clicks(kept)  # delivered again: changes nothing

    assert [store.get_click(c.id) for c in kept] == kept
    assert store.get_click(orphan.id) is None
    touches = store.touches_for(scene.friend.id, click_ids=[c.id for c in kept], since=BASE_TIME)
    assert sorted(t.click_id for t in touches if t.click_id) == sorted(c.id for c in kept)
