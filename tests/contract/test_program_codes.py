"""Campaigns, referral codes and clicks: keyed, idempotent, and refusing what would corrupt attribution."""

from __future__ import annotations

from datetime import timedelta

import pytest

from graph.errors import LedgerConflict, NotFound
from graph.program import CampaignStatus, CodeStatus
from graph.program_store import Store
from tests.contract.conftest import add_friend, set_scene
from tests.factories import BASE_TIME
from tests.program_factories import make_campaign, make_click, make_code


def test_a_saved_campaign_reads_back_equal_and_saving_again_replaces_it(store: Store) -> None:
    campaign = make_campaign()
    store.save_campaign(campaign)
    assert store.get_campaign(campaign.id) == campaign

    paused = campaign.model_copy(update={"status": CampaignStatus.PAUSED, "name": "Paused spring"})
    store.save_campaign(paused)

    assert store.get_campaign(campaign.id) == paused
    assert store.list_campaigns() == [paused]


def test_campaigns_are_listed_oldest_first(store: Store) -> None:
    late = make_campaign(created_at=BASE_TIME + timedelta(days=2))
    early = make_campaign(created_at=BASE_TIME)
    middle = make_campaign(created_at=BASE_TIME + timedelta(days=1))
    for campaign in (late, early, middle):
        store.save_campaign(campaign)

    assert [c.id for c in store.list_campaigns()] == [early.id, middle.id, late.id]


def test_an_unknown_campaign_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_campaign("no-such-campaign")


def test_a_created_code_reads_back_equal(store: Store) -> None:
    scene = set_scene(store)
    vanity = make_code(
        scene.referrer, scene.campaign, code="JANE10", vanity=True, expires_at=BASE_TIME + timedelta(days=90)
    )

    assert store.create_code(vanity) == vanity
    assert store.get_code("JANE10") == vanity
    assert store.get_code(scene.code.code) == scene.code


def test_a_code_that_exists_is_refused_whoever_owns_it_and_in_any_campaign(store: Store) -> None:
    scene = set_scene(store)
    other_campaign = make_campaign()
    store.save_campaign(other_campaign)

    with pytest.raises(LedgerConflict):
        store.create_code(make_code(scene.referrer, scene.campaign, code=scene.code.code))
    with pytest.raises(LedgerConflict):
        store.create_code(make_code(scene.friend, other_campaign, code=scene.code.code))
    assert store.get_code(scene.code.code) == scene.code


def test_a_code_for_an_unknown_customer_or_campaign_is_not_found(store: Store) -> None:
    scene = set_scene(store)

    with pytest.raises(NotFound):
        store.create_code(make_code("nobody", scene.campaign))
    with pytest.raises(NotFound):
        store.create_code(make_code(scene.referrer, "no-such-campaign"))
    assert [c.code for c in store.list_codes()] == [scene.code.code]


def test_an_unknown_code_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_code("NOSUCHCODE")
    with pytest.raises(NotFound):
        store.set_code_status("NOSUCHCODE", CodeStatus.PAUSED, at=BASE_TIME)


def test_codes_are_listed_oldest_first_and_filtered_by_owner_and_campaign(store: Store) -> None:
    scene = set_scene(store)
    other_campaign = make_campaign()
    store.save_campaign(other_campaign)
    later = store.create_code(make_code(scene.referrer, other_campaign, created_at=BASE_TIME + timedelta(days=3)))
    friends = store.create_code(make_code(scene.friend, scene.campaign, created_at=BASE_TIME + timedelta(days=1)))

    assert [c.code for c in store.list_codes()] == [scene.code.code, friends.code, later.code]
    assert [c.code for c in store.list_codes(customer_id=scene.referrer.id)] == [scene.code.code, later.code]
    assert [c.code for c in store.list_codes(campaign_id=scene.campaign.id)] == [scene.code.code, friends.code]
    assert store.list_codes(customer_id=scene.referrer.id, campaign_id=other_campaign.id) == [later]
    assert store.list_codes(customer_id="nobody") == []


def test_a_status_change_records_when_it_happened_and_the_replacement(store: Store) -> None:
    scene = set_scene(store)
    replacement = store.create_code(make_code(scene.referrer, scene.campaign))
    revoked_at = BASE_TIME + timedelta(days=2)

    revoked = store.set_code_status(scene.code.code, CodeStatus.REVOKED, at=revoked_at, replaced_by=replacement.code)

    assert (revoked.status, revoked.status_at, revoked.replaced_by) == (
        CodeStatus.REVOKED,
        revoked_at,
        replacement.code,
    )
    assert store.get_code(scene.code.code) == revoked


def test_setting_the_status_a_code_already_has_changes_nothing(store: Store) -> None:
    scene = set_scene(store)
    paused = store.set_code_status(scene.code.code, CodeStatus.PAUSED, at=BASE_TIME + timedelta(days=1))

    again = store.set_code_status(scene.code.code, CodeStatus.PAUSED, at=BASE_TIME + timedelta(days=5))

    assert again == paused
    assert store.get_code(scene.code.code).status_at == BASE_TIME + timedelta(days=1)


def test_a_resumed_code_is_active_again(store: Store) -> None:
    scene = set_scene(store)
    store.set_code_status(scene.code.code, CodeStatus.PAUSED, at=BASE_TIME + timedelta(days=1))

    resumed = store.set_code_status(scene.code.code, CodeStatus.ACTIVE, at=BASE_TIME + timedelta(days=2))

    assert resumed.status is CodeStatus.ACTIVE
    assert resumed.usable_at(BASE_TIME + timedelta(days=3))
    assert store.get_code(scene.code.code) == resumed


def test_a_recorded_click_reads_back_equal(store: Store) -> None:
    scene = set_scene(store)
    anonymous = make_click(scene.code, source=None, ip_hash=None)
    known = make_click(scene.code, customer_id=scene.friend.id)

    store.record_click(anonymous)
    store.record_click(known)

    assert store.get_click(anonymous.id) == anonymous
    assert store.get_click(known.id) == known
    assert store.get_click("clickunknown") is None


def test_a_click_id_seen_before_changes_nothing(store: Store) -> None:
    scene = set_scene(store)
    click = make_click(scene.code)
    store.record_click(click)

    store.record_click(click.model_copy(update={"visitor": "someone-else", "at": click.at + timedelta(hours=5)}))

    assert store.get_click(click.id) == click
    assert store.code_activity(scene.code.code, since=BASE_TIME).clicks == 1


def test_a_click_on_an_unknown_code_is_not_found(store: Store) -> None:
    set_scene(store)
    click = make_click("NOSUCHCODE")

    with pytest.raises(NotFound):
        store.record_click(click)
    assert store.get_click(click.id) is None


def test_codes_of_several_owners_live_side_by_side(store: Store) -> None:
    scene = set_scene(store)
    third = add_friend(store)
    mine = store.create_code(make_code(third, scene.campaign))

    assert store.get_code(mine.code).customer_id == third.id
    assert {c.customer_id for c in store.list_codes(campaign_id=scene.campaign.id)} == {
        scene.referrer.id,
        third.id,
    }
