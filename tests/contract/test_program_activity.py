"""Reads for leak scanning and metrics, erasure of programme data, and wiping the store."""

from __future__ import annotations

from datetime import timedelta

import pytest

from graph.errors import NotFound
from graph.program import (
    CodeActivity,
    CodeStatus,
    ConversionStatus,
    FraudAction,
    FraudSignal,
    FraudVerdict,
    RewardState,
    Settlement,
    Signal,
    SignalKind,
)
from graph.program_store import ERASED, Store
from tests.contract.conftest import (
    SETTLED_AT,
    Scene,
    add_friend,
    convert,
    find_stored,
    set_scene,
)
from tests.factories import BASE_TIME, make_customer
from tests.program_factories import (
    make_attribution,
    make_campaign,
    make_click,
    make_code,
    make_order,
    make_refund,
    make_signup,
)

SINCE = BASE_TIME


def busy_code(store: Store, scene: Scene) -> None:
    """Four clicks since `SINCE` (three visitors, two IPs, two with no referrer) and one before it."""
    clicks = [
        make_click(scene.code, visitor="v1", ip_hash="ip-1", source="reddit.com"),
        make_click(scene.code, visitor="v1", ip_hash="ip-1", source="reddit.com"),
        make_click(scene.code, visitor="v2", ip_hash="ip-2", source=None),
        make_click(scene.code, visitor="v3", ip_hash=None, source=None),
        make_click(scene.code, visitor="v4", ip_hash="ip-4", source="old.example", at=SINCE - timedelta(days=1)),
    ]
    for click in clicks:
        store.record_click(click)
    second, third = add_friend(store), add_friend(store)
    store.record_signup(make_signup(scene.friend, click_id=clicks[0].id), make_attribution(scene.code))
    store.record_signup(make_signup(second, code=scene.code.code), make_attribution(scene.code))
    store.record_signup(make_signup(third), None)
    convert(store, scene)
    convert(store, scene, friend=second, status=ConversionStatus.HELD)
    store.record_order(make_order(third))


def test_code_activity_counts_what_happened_on_one_code_since_a_time(store: Store) -> None:
    scene = set_scene(store)
    busy_code(store, scene)

    activity = store.code_activity(scene.code.code, since=SINCE)

    assert activity == CodeActivity(
        code=scene.code.code,
        customer_id=scene.referrer.id,
        campaign_id=scene.campaign.id,
        status=CodeStatus.ACTIVE,
        clicks=4,
        distinct_visitors=3,
        distinct_ips=2,
        sources={"reddit.com": 2, "": 2},
        signups=2,
        conversions=2,
    )


def test_code_activity_after_everything_happened_is_empty(store: Store) -> None:
    scene = set_scene(store)
    busy_code(store, scene)

    activity = store.code_activity(scene.code.code, since=BASE_TIME + timedelta(days=30))

    assert (activity.clicks, activity.distinct_visitors, activity.distinct_ips, activity.signups) == (0, 0, 0, 0)
    assert (activity.sources, activity.conversions) == ({}, 0)


def test_code_activity_of_an_unknown_code_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.code_activity("NOSUCHCODE", since=SINCE)


def test_code_activity_is_listed_for_codes_with_enough_clicks(store: Store) -> None:
    scene = set_scene(store)
    busy_code(store, scene)
    quiet = store.create_code(make_code(scene.friend, scene.campaign))
    store.record_click(make_click(quiet))
    store.create_code(make_code(scene.friend, scene.campaign))

    every = {activity.code: activity.clicks for activity in store.iter_code_activity(since=SINCE)}
    busy = [activity.code for activity in store.iter_code_activity(since=SINCE, min_clicks=2)]

    assert every == {scene.code.code: 4, quiet.code: 1}
    assert busy == [scene.code.code]
    assert next(store.iter_code_activity(since=SINCE, min_clicks=2)) == store.code_activity(
        scene.code.code, since=SINCE
    )


def test_program_counts_sum_up_one_campaign_or_all(store: Store) -> None:
    scene = set_scene(store)
    busy_code(store, scene)
    other = make_campaign()
    store.save_campaign(other)
    outsider = add_friend(store)
    other_code = store.create_code(make_code(outsider, other))
    store.create_code(make_code(scene.friend, other))
    store.record_click(make_click(other_code, visitor="v1"))
    refunded = convert(store, scene, friend=add_friend(store), code=other_code, currency="USD", amount_minor=3000)
    store.record_refund(make_refund(refunded.order), at=SETTLED_AT)

    mine = store.program_counts(scene.campaign.id)
    theirs = store.program_counts(other.id)
    overall = store.program_counts()

    customers = len(list(store.iter_customers()))
    assert (mine.campaign_id, theirs.campaign_id, overall.campaign_id) == (scene.campaign.id, other.id, None)
    assert (mine.customers, theirs.customers, overall.customers) == (customers, customers, customers)
    assert (mine.advocates_with_code, theirs.advocates_with_code, overall.advocates_with_code) == (1, 2, 3)
    assert (mine.advocates_sharing, theirs.advocates_sharing, overall.advocates_sharing) == (1, 1, 2)
    assert (mine.clicks, theirs.clicks, overall.clicks) == (5, 1, 6)
    assert (mine.distinct_visitors, theirs.distinct_visitors, overall.distinct_visitors) == (4, 1, 4)
    assert (mine.signups, theirs.signups, overall.signups) == (2, 0, 3)

    def nonzero(counts: dict[ConversionStatus, int]) -> dict[ConversionStatus, int]:
        return {status: n for status, n in counts.items() if n}

    assert nonzero(mine.conversions) == {ConversionStatus.ATTRIBUTED: 1, ConversionStatus.HELD: 1}
    assert nonzero(theirs.conversions) == {ConversionStatus.REVERSED: 1}
    assert nonzero(overall.conversions) == {
        ConversionStatus.ATTRIBUTED: 1,
        ConversionStatus.HELD: 1,
        ConversionStatus.REVERSED: 1,
        ConversionStatus.PENDING: 1,
    }

    def costs(cost: dict[str, dict[RewardState, int]]) -> dict[str, dict[RewardState, int]]:
        return {currency: {s: n for s, n in by_state.items() if n} for currency, by_state in cost.items()}

    assert costs(mine.reward_cost_minor) == {"EUR": {RewardState.PENDING: 1500, RewardState.HELD: 1500}}
    assert costs(theirs.reward_cost_minor) == {"USD": {RewardState.REVERSED: 1500}}
    assert costs(overall.reward_cost_minor) == {
        "EUR": {RewardState.PENDING: 1500, RewardState.HELD: 1500},
        "USD": {RewardState.REVERSED: 1500},
    }


def test_program_counts_of_an_empty_programme_are_zero(store: Store) -> None:
    store.upsert_customers([make_customer()])

    counts = store.program_counts()

    assert (counts.customers, counts.advocates_with_code, counts.clicks, counts.signups) == (1, 0, 0, 0)
    assert not any(counts.conversions.values())
    assert not any(n for by_state in counts.reward_cost_minor.values() for n in by_state.values())


def test_conversions_are_iterated_by_order_time_and_by_campaign(store: Store) -> None:
    scene = set_scene(store)
    other = make_campaign()
    store.save_campaign(other)
    other_code = store.create_code(make_code(scene.friend, other))
    day = timedelta(days=1)
    third = convert(store, scene, id="o-a", at=BASE_TIME + 3 * day)
    first = convert(store, scene, friend=scene.referrer, code=other_code, id="o-b", at=BASE_TIME + day)
    second = store.record_order(make_order(scene.friend, id="o-c", at=BASE_TIME + 2 * day))

    assert list(store.iter_conversions()) == [first, second, third]
    assert list(store.iter_conversions(scene.campaign.id)) == [third]
    assert list(store.iter_conversions(other.id)) == [first]
    assert list(store.iter_conversions("no-such-campaign")) == []


# --- erasure ---------------------------------------------------------------------------------------------------
def test_erasure_removes_the_persons_programme_data_and_keeps_the_accounts(store: Store) -> None:
    scene = set_scene(store)
    victim = make_customer(id="zoe-4711", email="zoe.q@example.org", phone="+33612345678")
    store.upsert_customers([victim])
    victims_code = store.create_code(make_code(victim, scene.campaign))
    click_on_victims_code = make_click(victims_code)
    victims_own_click = make_click(scene.code, customer_id=victim.id)
    store.record_click(click_on_victims_code)
    store.record_click(victims_own_click)
    personal = (
        Signal(kind=SignalKind.EMAIL, value=victim.email or ""),
        Signal(kind=SignalKind.PHONE, value="+33612345678"),
    )
    store.record_signup(
        make_signup(victim, click_id=victims_own_click.id, signals=personal), make_attribution(scene.code)
    )
    as_buyer = convert(store, scene, friend=victim, signals=personal)
    store.record_refund(make_refund(as_buyer.order, amount_minor=100), at=SETTLED_AT)
    friend = add_friend(store)
    as_referrer = convert(store, scene, friend=friend, code=victims_code)
    victims_rewards = {
        f"{as_buyer.id}:friend-discount": 500,
        f"{as_referrer.id}:referrer-credit": 1000,
    }
    needles = [victim.id, "zoe.q@example.org", "+33612345678"]
    assert find_stored(store, needles), "the search must see the data first"

    store.erase_customer(victim.id)

    assert find_stored(store, needles) == []
    with pytest.raises(NotFound):
        store.get_code(victims_code.code)
    with pytest.raises(NotFound):
        store.get_conversion(as_buyer.id)
    assert store.get_click(click_on_victims_code.id) is None
    kept_click = store.get_click(victims_own_click.id)
    assert kept_click is None or kept_click.customer_id is None
    kept = store.get_conversion(as_referrer.id)
    assert kept.attribution is not None
    assert (kept.status, kept.attribution.referrer_id) == (ConversionStatus.ATTRIBUTED, ERASED)
    erased_rewards = store.list_rewards(customer_id=ERASED)
    assert {r.id: r.amount_minor for r in erased_rewards} == victims_rewards
    assert {e.reward_id for e in store.ledger_entries(customer_id=ERASED)} == set(victims_rewards)
    assert store.get_reward(f"{as_buyer.id}:referrer-credit").customer_id == scene.referrer.id
    assert store.get_reward(f"{as_referrer.id}:friend-discount").customer_id == friend.id
    assert store.list_codes(customer_id=victim.id) == []
    assert store.list_conversions(customer_id=victim.id) == []


def test_an_erased_referrers_friend_keeps_their_own_data(store: Store) -> None:
    scene = set_scene(store)
    converted = convert(store, scene)

    store.erase_customer(scene.referrer.id)

    assert store.get_conversion(converted.id).order == converted.order
    assert [r.customer_id for r in store.list_rewards(conversion_id=converted.id)] == [scene.friend.id, ERASED]
    assert [b.by_state[RewardState.PENDING] for b in store.balances(scene.friend.id)] == [500]


def test_erasure_rewrites_fraud_details_and_review_notes_that_name_the_person(store: Store) -> None:
    scene = set_scene(store)
    victim = make_customer(id="mo-1")
    neighbour = make_customer(id="mo-10")
    store.upsert_customers([victim, neighbour])
    order = make_order(neighbour)
    store.record_order(order)
    verdict = FraudVerdict(
        action=FraudAction.HOLD,
        score=1.2,
        signals=(FraudSignal(rule="referral_ring", weight=1.2, detail="ring mo-10 -> mo-1 -> mo-10"),),
    )
    attribution = make_attribution(scene.code)
    held = Settlement(
        status=ConversionStatus.HELD, attribution=attribution, verdict=verdict, notes=("held: ring through mo-1",)
    )
    store.settle_conversion(order.id, attribution, lambda _: held, at=SETTLED_AT)
    store.review_conversion(
        order.id, approve=False, reviewer="mia", note="same device as mo-1", at=SETTLED_AT, approve_after=SETTLED_AT
    )

    store.erase_customer(victim.id)

    kept = store.get_conversion(order.id)
    assert kept.verdict is not None
    assert kept.verdict.signals[0].detail == f"ring mo-10 -> {ERASED} -> mo-10"
    assert kept.review_note == f"same device as {ERASED}"
    assert kept.notes == (f"held: ring through {ERASED}",)
    assert find_stored(store, ["mo-1 ", 'mo-1"', "mo-1;"]) == []


# --- delete_all ------------------------------------------------------------------------------------------------
def test_delete_all_removes_the_programme_too(store: Store) -> None:
    scene = set_scene(store)
    busy_code(store, scene)
    converted = convert(store, scene)
    store.record_refund(make_refund(converted.order, amount_minor=10), at=SETTLED_AT)

    store.delete_all()

    assert store.list_campaigns() == []
    assert store.list_codes() == []
    with pytest.raises(NotFound):
        store.get_code(scene.code.code)
    assert store.list_conversions() == []
    assert list(store.iter_conversions()) == []
    assert store.list_rewards() == []
    assert store.ledger_entries() == []
    assert list(store.iter_code_activity(since=SINCE)) == []
    counts = store.program_counts()
    assert (counts.customers, counts.clicks, counts.signups) == (0, 0, 0)

    store.upsert_customers([scene.referrer, scene.friend])
    store.save_campaign(scene.campaign)
    assert store.create_code(scene.code) == scene.code
    assert store.record_order(converted.order).status is ConversionStatus.PENDING
