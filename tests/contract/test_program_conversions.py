"""Settling, refunding and reviewing conversions: each decided once, under the store's lock, with its rewards."""

from __future__ import annotations

from datetime import timedelta

import pytest

from graph.errors import LedgerConflict, NotFound
from graph.model import ReferralStatus
from graph.program import (
    ConversionStatus,
    FraudAction,
    FraudVerdict,
    Reward,
    RewardHistory,
    RewardSide,
    RewardState,
    Settlement,
    TouchKind,
)
from graph.program_store import Store
from tests.contract.conftest import (
    APPROVE_AFTER,
    SETTLED_AT,
    RecordingPlan,
    add_friend,
    convert,
    double_sided_grants,
    make_grant,
    referred_edges,
    set_scene,
    settlement_for,
)
from tests.factories import BASE_TIME
from tests.program_factories import make_attribution, make_campaign, make_code, make_order, make_refund, make_signup

LATER = SETTLED_AT + timedelta(days=2)


# --- settle_conversion ---------------------------------------------------------------------------------------
def test_settling_writes_the_plans_outcome_rewards_and_first_entries(store: Store) -> None:
    scene = set_scene(store)
    order = make_order(scene.friend)
    store.record_order(order)
    attribution = make_attribution(scene.code)
    settlement = settlement_for(order, attribution)
    plan = RecordingPlan(settlement)

    settled = store.settle_conversion(order.id, attribution, plan, at=SETTLED_AT)

    assert plan.histories == [RewardHistory(successful_referrals=0, referrer_rewards=(), friend_rewards=())]
    assert (settled.status, settled.attribution, settled.verdict, settled.settled_at) == (
        ConversionStatus.ATTRIBUTED,
        attribution,
        settlement.verdict,
        SETTLED_AT,
    )
    assert settled.reward_ids == tuple(grant.id for grant in settlement.grants)
    assert settled.order == order
    assert store.get_conversion(order.id) == settled
    for grant in settlement.grants:
        assert store.get_reward(grant.id) == Reward(**grant.model_dump(), created_at=SETTLED_AT, updated_at=SETTLED_AT)
        [entry] = store.ledger_entries(reward_id=grant.id)
        assert entry.model_dump(exclude={"reason"}) == {
            "id": f"{grant.id}:pending",
            "reward_id": grant.id,
            "customer_id": grant.customer_id,
            "from_state": None,
            "to_state": RewardState.PENDING,
            "amount_minor": grant.amount_minor,
            "currency": grant.currency,
            "at": SETTLED_AT,
        }
    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): ReferralStatus.CONVERTED.value}


def test_the_plan_sees_the_referrers_successes_and_both_sides_rewards_in_the_campaign(store: Store) -> None:
    scene = set_scene(store)
    r, f = scene.referrer, scene.friend
    attributed, held, rejected, refunded = (add_friend(store) for _ in range(4))
    earlier = convert(store, scene, friend=f)
    convert(store, scene, friend=attributed)
    convert(store, scene, friend=attributed)
    convert(store, scene, friend=held, status=ConversionStatus.HELD)
    convert(store, scene, friend=rejected, status=ConversionStatus.REJECTED)
    gone = convert(store, scene, friend=refunded)
    store.record_refund(make_refund(gone.order), at=LATER)
    other_campaign = make_campaign()
    store.save_campaign(other_campaign)
    convert(store, scene, friend=add_friend(store), code=store.create_code(make_code(r, other_campaign)))
    someone = add_friend(store)
    convert(store, scene, friend=r, code=store.create_code(make_code(someone, scene.campaign)))
    order = make_order(f)
    store.record_order(order)
    plan = RecordingPlan(Settlement(status=ConversionStatus.ATTRIBUTED, attribution=make_attribution(scene.code)))

    store.settle_conversion(order.id, make_attribution(scene.code), plan, at=LATER)

    [history] = plan.histories
    assert history.successful_referrals == 2
    expected_referrer = store.list_rewards(customer_id=r.id, campaign_id=scene.campaign.id)
    expected_referrer = [reward for reward in expected_referrer if reward.side is RewardSide.REFERRER]
    assert len(expected_referrer) == 5
    assert sorted(history.referrer_rewards, key=lambda reward: reward.id) == sorted(
        expected_referrer, key=lambda reward: reward.id
    )
    assert [reward.id for reward in history.friend_rewards] == [f"{earlier.id}:friend-discount"]
    assert history.friend_rewards[0] == store.get_reward(f"{earlier.id}:friend-discount")


def test_settling_without_attribution_plans_from_an_empty_history(store: Store) -> None:
    scene = set_scene(store)
    convert(store, scene, friend=scene.friend)
    order = make_order(scene.friend)
    store.record_order(order)
    plan = RecordingPlan(Settlement(status=ConversionStatus.UNATTRIBUTED))

    settled = store.settle_conversion(order.id, None, plan, at=SETTLED_AT)

    assert plan.histories == [RewardHistory(successful_referrals=0, referrer_rewards=(), friend_rewards=())]
    assert (settled.status, settled.attribution, settled.reward_ids) == (ConversionStatus.UNATTRIBUTED, None, ())


def test_a_second_settlement_returns_the_first_without_planning_again(store: Store) -> None:
    scene = set_scene(store)
    first = convert(store, scene)
    other = RecordingPlan(Settlement(status=ConversionStatus.UNATTRIBUTED))

    again = store.settle_conversion(first.id, None, other, at=LATER)

    assert other.histories == []
    assert again == first
    assert store.get_conversion(first.id) == first
    assert len(store.list_rewards(conversion_id=first.id)) == 2


def test_a_grant_whose_reward_exists_is_left_alone(store: Store) -> None:
    scene = set_scene(store)
    first = convert(store, scene)
    existing_id = first.reward_ids[0]
    store.transition_reward(existing_id, RewardState.APPROVED, at=LATER, reason="early")
    before = store.get_reward(existing_id)
    order = make_order(scene.friend)
    store.record_order(order)
    attribution = make_attribution(scene.code)
    repeated = make_grant(order, scene.referrer.id, scene.campaign.id, id=existing_id, amount_minor=99_999)
    fresh = make_grant(order, scene.referrer.id, scene.campaign.id)
    plan = RecordingPlan(
        Settlement(status=ConversionStatus.ATTRIBUTED, attribution=attribution, grants=(repeated, fresh))
    )

    settled = store.settle_conversion(order.id, attribution, plan, at=LATER)

    assert settled.reward_ids == (existing_id, fresh.id)
    assert store.get_reward(existing_id) == before
    assert [entry.to_state for entry in store.ledger_entries(reward_id=existing_id)] == [
        RewardState.PENDING,
        RewardState.APPROVED,
    ]
    assert store.get_reward(fresh.id).amount_minor == fresh.amount_minor


def test_a_held_conversion_converts_the_edge_and_holds_its_rewards(store: Store) -> None:
    scene = set_scene(store)

    held = convert(store, scene, status=ConversionStatus.HELD)

    assert held.status is ConversionStatus.HELD
    assert {store.get_reward(reward_id).state for reward_id in held.reward_ids} == {RewardState.HELD}
    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): ReferralStatus.CONVERTED.value}


def test_settling_creates_the_edge_with_the_attributions_touch_time(store: Store) -> None:
    scene = set_scene(store)

    convert(store, scene)

    [edge] = store.iter_edges()
    assert (edge.source, edge.target, edge.at) == (scene.referrer.id, scene.friend.id, BASE_TIME + timedelta(hours=1))


def test_a_rejected_conversion_reverses_an_existing_edge(store: Store) -> None:
    scene = set_scene(store)
    store.record_signup(make_signup(scene.friend), make_attribution(scene.code, method=TouchKind.SIGNUP_CODE))

    rejected = convert(store, scene, status=ConversionStatus.REJECTED)

    assert rejected.status is ConversionStatus.REJECTED
    assert rejected.verdict is not None
    assert rejected.verdict.action is FraudAction.REJECT
    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): ReferralStatus.REVERSED.value}


def test_a_rejected_conversion_creates_no_edge(store: Store) -> None:
    scene = set_scene(store)

    convert(store, scene, status=ConversionStatus.REJECTED)

    assert referred_edges(store) == {}


def test_a_referrer_buying_through_their_own_code_gets_no_edge(store: Store) -> None:
    scene = set_scene(store)
    order = make_order(scene.referrer)
    store.record_order(order)
    attribution = make_attribution(scene.code)
    plan = RecordingPlan(
        Settlement(
            status=ConversionStatus.HELD,
            attribution=attribution,
            verdict=FraudVerdict(action=FraudAction.HOLD, score=2.0),
        )
    )

    settled = store.settle_conversion(order.id, attribution, plan, at=SETTLED_AT)

    assert settled.status is ConversionStatus.HELD
    assert referred_edges(store) == {}


def test_settling_an_unknown_order_is_not_found(store: Store) -> None:
    set_scene(store)
    plan = RecordingPlan(Settlement(status=ConversionStatus.UNATTRIBUTED))

    with pytest.raises(NotFound):
        store.settle_conversion("no-such-order", None, plan, at=SETTLED_AT)
    assert plan.histories == []


# --- record_refund ---------------------------------------------------------------------------------------------
def test_refunds_add_up_and_reverse_the_conversion_once_they_reach_the_amount(store: Store) -> None:
    scene = set_scene(store)
    converted = convert(store, scene, amount_minor=4200)

    partial = store.record_refund(make_refund(converted.order, amount_minor=1000), at=LATER)

    assert (partial.status, partial.refunded_minor) == (ConversionStatus.ATTRIBUTED, 1000)
    assert {store.get_reward(reward_id).state for reward_id in converted.reward_ids} == {RewardState.PENDING}
    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): ReferralStatus.CONVERTED.value}

    full = store.record_refund(make_refund(converted.order, amount_minor=3200), at=LATER + timedelta(hours=1))

    assert (full.status, full.refunded_minor) == (ConversionStatus.REVERSED, 4200)
    assert store.get_conversion(converted.id) == full
    for reward_id in converted.reward_ids:
        reward = store.get_reward(reward_id)
        assert (reward.state, reward.updated_at) == (RewardState.REVERSED, LATER + timedelta(hours=1))
        last = store.ledger_entries(reward_id=reward_id)[-1]
        assert (last.id, last.from_state, last.to_state, last.amount_minor) == (
            f"{reward_id}:reversed",
            RewardState.PENDING,
            RewardState.REVERSED,
            reward.amount_minor,
        )
    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): ReferralStatus.REVERSED.value}


def test_a_full_refund_claws_back_a_fulfilled_reward(store: Store) -> None:
    scene = set_scene(store)
    converted = convert(store, scene)
    paid = converted.reward_ids[0]
    store.transition_reward(paid, RewardState.APPROVED, at=LATER, reason="approved")
    store.transition_reward(paid, RewardState.FULFILLED, at=LATER, reason="paid out")

    store.record_refund(make_refund(converted.order), at=LATER + timedelta(days=1))

    assert [(e.from_state, e.to_state) for e in store.ledger_entries(reward_id=paid)] == [
        (None, RewardState.PENDING),
        (RewardState.PENDING, RewardState.APPROVED),
        (RewardState.APPROVED, RewardState.FULFILLED),
        (RewardState.FULFILLED, RewardState.REVERSED),
    ]
    [balance] = store.balances(scene.referrer.id)
    assert balance.by_state[RewardState.FULFILLED] == 0
    assert balance.by_state[RewardState.REVERSED] == 1000


def test_a_refund_id_seen_before_changes_nothing(store: Store) -> None:
    scene = set_scene(store)
    converted = convert(store, scene, amount_minor=4200)
    refund = make_refund(converted.order, amount_minor=2100)
    first = store.record_refund(refund, at=LATER)

    again = store.record_refund(refund, at=LATER + timedelta(hours=1))

    assert again == first
    assert (again.status, again.refunded_minor) == (ConversionStatus.ATTRIBUTED, 2100)


def test_a_refund_on_an_unknown_order_is_not_found(store: Store) -> None:
    set_scene(store)

    with pytest.raises(NotFound):
        store.record_refund(make_refund("no-such-order"), at=LATER)


def test_the_edge_stays_converted_while_the_friend_has_another_live_conversion(store: Store) -> None:
    scene = set_scene(store)
    refunded = convert(store, scene)
    kept = convert(store, scene)

    store.record_refund(make_refund(refunded.order), at=LATER)

    assert store.get_conversion(kept.id).status is ConversionStatus.ATTRIBUTED
    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): ReferralStatus.CONVERTED.value}


def test_rejecting_a_second_order_keeps_the_edge_of_an_earlier_live_one(store: Store) -> None:
    scene = set_scene(store)
    kept = convert(store, scene)
    convert(store, scene, status=ConversionStatus.REJECTED)
    held = convert(store, scene, status=ConversionStatus.HELD)

    store.review_conversion(held.id, approve=False, reviewer="mia", note="", at=LATER, approve_after=APPROVE_AFTER)

    assert store.get_conversion(kept.id).status is ConversionStatus.ATTRIBUTED
    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): ReferralStatus.CONVERTED.value}


def test_a_refunded_pending_order_is_never_settled_into_rewards(store: Store) -> None:
    scene = set_scene(store)
    order = make_order(scene.friend)
    store.record_order(order)

    store.record_refund(make_refund(order), at=LATER)
    plan = RecordingPlan(settlement_for(order, make_attribution(scene.code)))
    settled = store.settle_conversion(order.id, make_attribution(scene.code), plan, at=LATER)

    assert settled.status is ConversionStatus.REVERSED
    assert plan.histories == []
    assert store.list_rewards() == []


# --- review_conversion -----------------------------------------------------------------------------------------
def test_approving_a_held_conversion_releases_its_rewards_to_pending(store: Store) -> None:
    scene = set_scene(store)
    held = convert(store, scene, status=ConversionStatus.HELD)
    approve_after = LATER + timedelta(days=14)

    approved = store.review_conversion(
        held.id, approve=True, reviewer="mia@shop.example", note="known couple", at=LATER, approve_after=approve_after
    )

    assert (approved.status, approved.reviewed_by, approved.review_note) == (
        ConversionStatus.ATTRIBUTED,
        "mia@shop.example",
        "known couple",
    )
    assert store.get_conversion(held.id) == approved
    for reward_id in held.reward_ids:
        reward = store.get_reward(reward_id)
        assert (reward.state, reward.approve_after, reward.updated_at) == (RewardState.PENDING, approve_after, LATER)
        assert [(e.from_state, e.to_state, e.at) for e in store.ledger_entries(reward_id=reward_id)] == [
            (None, RewardState.HELD, SETTLED_AT),
            (RewardState.HELD, RewardState.PENDING, LATER),
        ]
    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): ReferralStatus.CONVERTED.value}


def test_rejecting_a_held_conversion_rejects_its_rewards_and_reverses_the_edge(store: Store) -> None:
    scene = set_scene(store)
    held = convert(store, scene, status=ConversionStatus.HELD)

    rejected = store.review_conversion(
        held.id, approve=False, reviewer="mia@shop.example", note="same card", at=LATER, approve_after=APPROVE_AFTER
    )

    assert (rejected.status, rejected.reviewed_by, rejected.review_note) == (
        ConversionStatus.REJECTED,
        "mia@shop.example",
        "same card",
    )
    assert {store.get_reward(reward_id).state for reward_id in held.reward_ids} == {RewardState.REJECTED}
    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): ReferralStatus.REVERSED.value}
    assert all(b.by_state[RewardState.HELD] == 0 for b in store.balances(scene.referrer.id))


@pytest.mark.parametrize("status", [ConversionStatus.ATTRIBUTED, ConversionStatus.REJECTED])
def test_only_a_held_conversion_can_be_reviewed(store: Store, status: ConversionStatus) -> None:
    scene = set_scene(store)
    settled = convert(store, scene, status=status)

    with pytest.raises(LedgerConflict):
        store.review_conversion(
            settled.id, approve=True, reviewer="mia", note="", at=LATER, approve_after=APPROVE_AFTER
        )
    assert store.get_conversion(settled.id) == settled


def test_reviewing_an_unknown_conversion_is_not_found(store: Store) -> None:
    set_scene(store)

    with pytest.raises(NotFound):
        store.review_conversion(
            "no-such-order", approve=True, reviewer="mia", note="", at=LATER, approve_after=APPROVE_AFTER
        )


def test_a_pending_order_cannot_be_reviewed(store: Store) -> None:
    scene = set_scene(store)
    pending = store.record_order(make_order(scene.friend))

    with pytest.raises(LedgerConflict):
        store.review_conversion(pending.id, approve=False, reviewer="mia", note="", at=LATER, approve_after=LATER)


def test_grants_of_one_settlement_become_rewards_of_both_sides(store: Store) -> None:
    scene = set_scene(store)
    order = make_order(scene.friend)
    store.record_order(order)
    attribution = make_attribution(scene.code)
    plan = RecordingPlan(
        Settlement(
            status=ConversionStatus.ATTRIBUTED, attribution=attribution, grants=double_sided_grants(order, attribution)
        )
    )

    store.settle_conversion(order.id, attribution, plan, at=SETTLED_AT)

    assert [(r.id, r.customer_id, r.side) for r in store.list_rewards(conversion_id=order.id)] == [
        (f"{order.id}:friend-discount", scene.friend.id, RewardSide.FRIEND),
        (f"{order.id}:referrer-credit", scene.referrer.id, RewardSide.REFERRER),
    ]
