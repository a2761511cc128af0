"""Rewards and the ledger: moves only along `REWARD_TRANSITIONS`, one entry each, balances derived from entries."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from datetime import timedelta

import pytest

from graph.errors import LedgerConflict, NotFound
from graph.program import (
    Conversion,
    ConversionStatus,
    Order,
    RewardHistory,
    RewardState,
    Settlement,
    balances_from_entries,
)
from graph.program_store import Store
from tests.contract.conftest import (
    APPROVE_AFTER,
    REVIEW_DEADLINE,
    SETTLED_AT,
    RecordingPlan,
    Scene,
    add_friend,
    convert,
    make_grant,
    set_scene,
)
from tests.program_factories import make_attribution, make_order, make_refund

LATER = SETTLED_AT + timedelta(days=2)


# --- advance_rewards -------------------------------------------------------------------------------------------
def test_pending_rewards_are_approved_once_their_hold_has_passed(store: Store) -> None:
    scene = set_scene(store)
    converted = convert(store, scene)

    assert store.advance_rewards(APPROVE_AFTER - timedelta(hours=1)) == []
    moved = store.advance_rewards(APPROVE_AFTER + timedelta(hours=1))

    assert sorted(reward.id for reward in moved) == sorted(converted.reward_ids)
    for reward in moved:
        assert (reward.state, reward.updated_at) == (RewardState.APPROVED, APPROVE_AFTER + timedelta(hours=1))
        assert store.get_reward(reward.id) == reward
        last = store.ledger_entries(reward_id=reward.id)[-1]
        assert (last.from_state, last.to_state, last.at) == (
            RewardState.PENDING,
            RewardState.APPROVED,
            APPROVE_AFTER + timedelta(hours=1),
        )
    assert store.advance_rewards(APPROVE_AFTER + timedelta(days=1)) == []


def test_held_rewards_past_their_review_deadline_are_rejected_with_their_conversion(store: Store) -> None:
    scene = set_scene(store)
    held = convert(store, scene, status=ConversionStatus.HELD)
    fine = convert(store, scene, friend=add_friend(store))

    assert store.advance_rewards(REVIEW_DEADLINE - timedelta(hours=1)) == []
    moved = store.advance_rewards(REVIEW_DEADLINE + timedelta(hours=1))

    assert sorted(reward.id for reward in moved) == sorted(held.reward_ids)
    assert {reward.state for reward in moved} == {RewardState.REJECTED}
    conversion = store.get_conversion(held.id)
    assert (conversion.status, conversion.reviewed_by) == (ConversionStatus.REJECTED, "deadline")
    assert store.get_conversion(fine.id).status is ConversionStatus.ATTRIBUTED
    assert {store.get_reward(reward_id).state for reward_id in fine.reward_ids} == {RewardState.PENDING}


def test_advancing_moves_at_most_the_limit_and_the_rest_next_time(store: Store) -> None:
    scene = set_scene(store)
    converted = convert(store, scene)
    now = APPROVE_AFTER + timedelta(hours=1)

    first = store.advance_rewards(now, limit=1)
    second = store.advance_rewards(now, limit=1)

    assert len(first) == len(second) == 1
    assert sorted(reward.id for reward in first + second) == sorted(converted.reward_ids)
    assert store.advance_rewards(now, limit=1) == []


# --- transition_reward -----------------------------------------------------------------------------------------
def test_a_reward_moves_along_the_allowed_transitions_with_one_entry_each(store: Store) -> None:
    scene = set_scene(store)
    reward_id = convert(store, scene).reward_ids[0]

    approved = store.transition_reward(reward_id, RewardState.APPROVED, at=LATER, reason="checked")
    fulfilled = store.transition_reward(reward_id, RewardState.FULFILLED, at=LATER + timedelta(hours=1), reason="paid")

    assert (approved.state, approved.updated_at) == (RewardState.APPROVED, LATER)
    assert (fulfilled.state, fulfilled.updated_at) == (RewardState.FULFILLED, LATER + timedelta(hours=1))
    assert store.get_reward(reward_id) == fulfilled
    entries = store.ledger_entries(reward_id=reward_id)
    assert [(e.id, e.from_state, e.to_state, e.reason) for e in entries[1:]] == [
        (f"{reward_id}:approved", RewardState.PENDING, RewardState.APPROVED, "checked"),
        (f"{reward_id}:fulfilled", RewardState.APPROVED, RewardState.FULFILLED, "paid"),
    ]


def test_moving_a_reward_to_the_state_it_is_in_returns_it_unchanged(store: Store) -> None:
    scene = set_scene(store)
    reward_id = convert(store, scene).reward_ids[0]
    approved = store.transition_reward(reward_id, RewardState.APPROVED, at=LATER, reason="checked")

    again = store.transition_reward(reward_id, RewardState.APPROVED, at=LATER + timedelta(days=1), reason="again")

    assert again == approved
    assert len(store.ledger_entries(reward_id=reward_id)) == 2


@pytest.mark.parametrize("target", [RewardState.FULFILLED, RewardState.HELD, RewardState.REJECTED])
def test_a_move_the_transitions_do_not_allow_is_refused(store: Store, target: RewardState) -> None:
    scene = set_scene(store)
    reward_id = convert(store, scene).reward_ids[0]
    before = store.get_reward(reward_id)

    with pytest.raises(LedgerConflict):
        store.transition_reward(reward_id, target, at=LATER, reason="skip ahead")
    assert store.get_reward(reward_id) == before
    assert len(store.ledger_entries(reward_id=reward_id)) == 1


def test_a_reversed_reward_is_final(store: Store) -> None:
    scene = set_scene(store)
    reward_id = convert(store, scene).reward_ids[0]
    store.transition_reward(reward_id, RewardState.REVERSED, at=LATER, reason="goodwill refund")

    with pytest.raises(LedgerConflict):
        store.transition_reward(reward_id, RewardState.APPROVED, at=LATER, reason="undo")


def test_an_unknown_reward_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_reward("no-such-reward")
    with pytest.raises(NotFound):
        store.transition_reward("no-such-reward", RewardState.APPROVED, at=LATER, reason="")


# --- listing ---------------------------------------------------------------------------------------------------
def test_rewards_are_listed_by_creation_time_then_id_and_filtered(store: Store) -> None:
    scene = set_scene(store)
    second = add_friend(store)
    late = convert(store, scene, settled_at=LATER)
    early = convert(store, scene, friend=second, status=ConversionStatus.HELD)
    early_ids, late_ids = sorted(early.reward_ids), sorted(late.reward_ids)

    assert [r.id for r in store.list_rewards()] == early_ids + late_ids
    assert [r.id for r in store.list_rewards(limit=3)] == (early_ids + late_ids)[:3]
    assert [r.id for r in store.list_rewards(customer_id=scene.referrer.id)] == [
        f"{early.id}:referrer-credit",
        f"{late.id}:referrer-credit",
    ]
    assert [r.id for r in store.list_rewards(state=RewardState.HELD)] == early_ids
    assert [r.id for r in store.list_rewards(conversion_id=late.id)] == late_ids
    assert [r.id for r in store.list_rewards(campaign_id=scene.campaign.id, customer_id=second.id)] == [
        f"{early.id}:friend-discount"
    ]
    assert store.list_rewards(campaign_id="other-campaign") == []


def test_ledger_entries_are_ordered_by_time_then_state_then_id(store: Store) -> None:
    scene = set_scene(store)
    converted = convert(store, scene)
    referrer_reward, friend_reward = f"{converted.id}:referrer-credit", f"{converted.id}:friend-discount"
    store.transition_reward(referrer_reward, RewardState.APPROVED, at=LATER, reason="")
    store.transition_reward(referrer_reward, RewardState.FULFILLED, at=LATER, reason="")
    store.record_refund(make_refund(converted.order), at=LATER)

    assert [e.id for e in store.ledger_entries()] == [
        f"{friend_reward}:pending",
        f"{referrer_reward}:pending",
        f"{referrer_reward}:approved",
        f"{referrer_reward}:fulfilled",
        f"{friend_reward}:reversed",
        f"{referrer_reward}:reversed",
    ]
    assert [e.id for e in store.ledger_entries(customer_id=scene.friend.id)] == [
        f"{friend_reward}:pending",
        f"{friend_reward}:reversed",
    ]


# --- balances --------------------------------------------------------------------------------------------------
def test_balances_are_derived_from_entries_and_match_the_rewards_current_states(store: Store) -> None:
    scene = set_scene(store)
    friends = [add_friend(store) for _ in range(4)]
    paid = convert(store, scene, friend=friends[0])
    store.transition_reward(paid.reward_ids[0], RewardState.APPROVED, at=LATER, reason="")
    store.transition_reward(paid.reward_ids[0], RewardState.FULFILLED, at=LATER, reason="")
    convert(store, scene, friend=friends[1], status=ConversionStatus.HELD)
    refunded = convert(store, scene, friend=friends[2], currency="USD", amount_minor=9900)
    store.record_refund(make_refund(refunded.order), at=LATER)
    convert(store, scene, friend=friends[3], currency="USD")
    store.advance_rewards(APPROVE_AFTER + timedelta(hours=1), limit=1)

    for customer_id in [scene.referrer.id, *(friend.id for friend in friends)]:
        balances = store.balances(customer_id)
        assert balances == balances_from_entries(store.ledger_entries(customer_id=customer_id))
        expected: dict[str, dict[RewardState, int]] = defaultdict(lambda: dict.fromkeys(RewardState, 0))
        for reward in store.list_rewards(customer_id=customer_id):
            expected[reward.currency][reward.state] += reward.amount_minor
        assert {b.currency: b.by_state for b in balances} == expected
    assert {b.currency for b in store.balances(scene.referrer.id)} == {"EUR", "USD"}


def test_a_customer_without_rewards_has_no_balance(store: Store) -> None:
    scene = set_scene(store)

    assert store.balances(scene.friend.id) == []


# --- concurrency -----------------------------------------------------------------------------------------------
class SlowPlan(RecordingPlan):
    """Widens the window in which a second worker could read the conversion as still pending."""

    def __call__(self, history: RewardHistory) -> Settlement:
        time.sleep(0.05)
        return super().__call__(history)


def settle_from_two_threads(
    store: Store, scene: Scene, order: Order
) -> tuple[dict[str, Conversion], list[BaseException]]:
    """Both threads wait at a barrier, then settle the same order, each with a plan granting its own reward."""
    attribution = make_attribution(scene.code)
    barrier = threading.Barrier(2)
    results: dict[str, Conversion] = {}
    errors: list[BaseException] = []

    def settle(worker: str) -> None:
        grant = make_grant(order, scene.referrer.id, scene.campaign.id, id=f"{order.id}:{worker}")
        plan = SlowPlan(Settlement(status=ConversionStatus.ATTRIBUTED, attribution=attribution, grants=(grant,)))
        barrier.wait()
        try:
            results[worker] = store.settle_conversion(order.id, attribution, plan, at=SETTLED_AT)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=settle, args=(worker,)) for worker in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


def test_two_workers_settling_one_conversion_concurrently_make_one_settlement(store: Store) -> None:
    scene = set_scene(store)
    for _ in range(3):
        order = make_order(scene.friend)
        store.record_order(order)

        results, errors = settle_from_two_threads(store, scene, order)

        assert errors == []
        assert results["one"] == results["two"] == store.get_conversion(order.id)
        [reward] = store.list_rewards(conversion_id=order.id)
        assert results["one"].reward_ids == (reward.id,)
        assert len(store.ledger_entries(reward_id=reward.id)) == 1
