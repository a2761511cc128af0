"""Signups, touches, orders and what fraud rules read: idempotent writes and the touches attribution works from."""

from __future__ import annotations

from datetime import timedelta

import pytest

from graph.errors import LedgerConflict, NotFound
from graph.model import ReferralStatus
from graph.program import (
    CodeStatus,
    Conversion,
    ConversionStatus,
    FraudSettings,
    Signal,
    SignalKind,
    Touch,
    TouchKind,
)
from graph.program_store import Store
from tests.contract.conftest import add_friend, convert, referred_edges, set_scene
from tests.factories import BASE_TIME, make_customer, make_referral
from tests.program_factories import (
    make_attribution,
    make_campaign,
    make_click,
    make_code,
    make_order,
    make_signup,
)


# --- signups -------------------------------------------------------------------------------------------------
def test_a_signup_through_a_code_creates_the_referred_edge_at_signed_up(store: Store) -> None:
    scene = set_scene(store)
    attribution = make_attribution(scene.code, method=TouchKind.SIGNUP_CODE, touched_at=BASE_TIME + timedelta(hours=2))

    store.record_signup(make_signup(scene.friend, code=scene.code.code), attribution)

    edges = [(e.source, e.target, e.label, e.at) for e in store.iter_edges()]
    assert edges == [(scene.referrer.id, scene.friend.id, ReferralStatus.SIGNED_UP.value, attribution.touched_at)]


def test_a_signup_without_attribution_creates_no_edge(store: Store) -> None:
    scene = set_scene(store)

    store.record_signup(make_signup(scene.friend), None)

    assert referred_edges(store) == {}


def test_a_signup_moves_a_clicked_edge_forward(store: Store) -> None:
    scene = set_scene(store)
    store.add_referrals([make_referral(scene.referrer, scene.friend, status=ReferralStatus.CLICKED)])

    store.record_signup(make_signup(scene.friend), make_attribution(scene.code))

    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): ReferralStatus.SIGNED_UP.value}


@pytest.mark.parametrize("status", [ReferralStatus.CONVERTED, ReferralStatus.REVERSED])
def test_a_signup_never_moves_an_edge_back(store: Store, status: ReferralStatus) -> None:
    scene = set_scene(store)
    store.add_referrals([make_referral(scene.referrer, scene.friend, status=status, status_at=BASE_TIME)])

    store.record_signup(make_signup(scene.friend), make_attribution(scene.code))

    assert referred_edges(store) == {(scene.referrer.id, scene.friend.id): status.value}


def test_recording_a_signup_twice_changes_nothing(store: Store) -> None:
    scene = set_scene(store)
    signup = make_signup(scene.friend, code=scene.code.code)
    attribution = make_attribution(scene.code, method=TouchKind.SIGNUP_CODE)
    store.record_signup(signup, attribution)
    first = (
        sorted(store.iter_edges()),
        store.touches_for(scene.friend.id, click_ids=[], since=BASE_TIME),
        store.program_counts(),
    )

    store.record_signup(signup, attribution)

    again = (
        sorted(store.iter_edges()),
        store.touches_for(scene.friend.id, click_ids=[], since=BASE_TIME),
        store.program_counts(),
    )
    assert again == first
    assert first[2].signups == 1


def test_a_signup_of_an_unknown_customer_is_not_found(store: Store) -> None:
    scene = set_scene(store)

    with pytest.raises(NotFound):
        store.record_signup(make_signup("nobody"), make_attribution(scene.code))
    assert referred_edges(store) == {}


# --- touches ---------------------------------------------------------------------------------------------------
def touch_of(scene_code_owner: str, campaign_id: str, code: str, kind: TouchKind, **fields: object) -> Touch:
    return Touch.model_validate(
        {"kind": kind, "code": code, "referrer_id": scene_code_owner, "campaign_id": campaign_id, **fields}
    )


def test_touches_are_the_given_clicks_and_the_customers_own_clicks_oldest_first(store: Store) -> None:
    scene = set_scene(store)
    r, c, k = scene.referrer.id, scene.campaign.id, scene.code.code
    given = make_click(scene.code, at=BASE_TIME + timedelta(hours=5))
    signed_in = make_click(scene.code, at=BASE_TIME + timedelta(hours=3), customer_id=scene.friend.id)
    too_old = make_click(scene.code, at=BASE_TIME - timedelta(days=40))
    someone_elses = make_click(scene.code, customer_id=scene.referrer.id)
    for click in (given, signed_in, too_old, someone_elses):
        store.record_click(click)

    touches = store.touches_for(
        scene.friend.id, click_ids=[given.id, "clickunknown", too_old.id], since=BASE_TIME - timedelta(days=30)
    )

    assert touches == [
        touch_of(r, c, k, TouchKind.CLICK, at=signed_in.at, usable=True, click_id=signed_in.id),
        touch_of(r, c, k, TouchKind.CLICK, at=given.at, usable=True, click_id=given.id),
    ]


def test_the_signup_click_is_a_touch_and_counts_once(store: Store) -> None:
    scene = set_scene(store)
    click = make_click(scene.code)
    store.record_click(click)
    store.record_signup(make_signup(scene.friend, click_id=click.id), make_attribution(scene.code))

    for click_ids in ([], [click.id]):
        touches = store.touches_for(scene.friend.id, click_ids=click_ids, since=BASE_TIME)
        assert touches == [
            touch_of(
                scene.referrer.id,
                scene.campaign.id,
                scene.code.code,
                TouchKind.CLICK,
                at=click.at,
                usable=True,
                click_id=click.id,
            )
        ]


def test_the_signup_code_is_a_touch_at_the_signup_time(store: Store) -> None:
    scene = set_scene(store)
    signup = make_signup(scene.friend, code=scene.code.code)
    store.record_signup(signup, make_attribution(scene.code, method=TouchKind.SIGNUP_CODE))

    assert store.touches_for(scene.friend.id, click_ids=[], since=BASE_TIME) == [
        touch_of(
            scene.referrer.id, scene.campaign.id, scene.code.code, TouchKind.SIGNUP_CODE, at=signup.at, usable=True
        )
    ]
    assert store.touches_for(scene.friend.id, click_ids=[], since=signup.at + timedelta(seconds=1)) == []


def test_a_touch_after_the_code_was_paused_is_not_usable(store: Store) -> None:
    scene = set_scene(store)
    paused_at = BASE_TIME + timedelta(hours=4)
    before = make_click(scene.code, at=paused_at - timedelta(minutes=1))
    after = make_click(scene.code, at=paused_at + timedelta(minutes=1))
    store.record_click(before)
    store.record_click(after)
    store.set_code_status(scene.code.code, CodeStatus.PAUSED, at=paused_at)

    touches = store.touches_for(scene.friend.id, click_ids=[after.id, before.id], since=BASE_TIME)

    assert [(t.click_id, t.usable) for t in touches] == [(before.id, True), (after.id, False)]


def test_a_touch_names_the_code_owner_and_campaign(store: Store) -> None:
    scene = set_scene(store)
    other_campaign = make_campaign()
    store.save_campaign(other_campaign)
    other_owner = add_friend(store)
    other_code = store.create_code(make_code(other_owner, other_campaign))
    click = make_click(other_code)
    store.record_click(click)

    [touch] = store.touches_for(scene.friend.id, click_ids=[click.id], since=BASE_TIME)

    assert (touch.referrer_id, touch.campaign_id, touch.code) == (other_owner.id, other_campaign.id, other_code.code)


def test_a_customer_without_touches_has_none(store: Store) -> None:
    scene = set_scene(store)
    store.record_click(make_click(scene.code))

    assert store.touches_for(scene.friend.id, click_ids=[], since=BASE_TIME) == []


# --- orders ----------------------------------------------------------------------------------------------------
def test_an_order_is_recorded_as_a_pending_conversion(store: Store) -> None:
    scene = set_scene(store)
    order = make_order(
        scene.friend, code=scene.code.code, click_id="click-1", signals=(Signal(kind=SignalKind.PAYMENT, value="p1"),)
    )

    recorded = store.record_order(order)

    assert recorded == Conversion(order=order, status=ConversionStatus.PENDING)
    assert store.get_conversion(order.id) == recorded


def test_a_redelivered_order_returns_the_stored_conversion_unchanged(store: Store) -> None:
    scene = set_scene(store)
    order = make_order(scene.friend)
    first = store.record_order(order)

    again = store.record_order(order.model_copy(update={"code": scene.code.code, "at": order.at + timedelta(hours=1)}))

    assert again == first
    assert store.get_conversion(order.id) == first
    assert len(store.list_conversions()) == 1


@pytest.mark.parametrize("change", [{"amount_minor": 1}, {"currency": "USD"}, {"customer_id": "buyer-two"}])
def test_an_order_redelivered_with_other_terms_is_a_conflict(store: Store, change: dict[str, object]) -> None:
    scene = set_scene(store)
    store.upsert_customers([make_customer(id="buyer-two")])
    order = make_order(scene.friend)
    first = store.record_order(order)

    with pytest.raises(LedgerConflict):
        store.record_order(order.model_copy(update=change))
    assert store.get_conversion(order.id) == first


def test_an_order_of_an_unknown_buyer_is_not_found(store: Store) -> None:
    set_scene(store)
    order = make_order("nobody")

    with pytest.raises(NotFound):
        store.record_order(order)
    with pytest.raises(NotFound):
        store.get_conversion(order.id)


def test_conversions_are_listed_by_order_id_and_filtered(store: Store) -> None:
    scene = set_scene(store)
    second_friend = add_friend(store)
    other_campaign = make_campaign()
    store.save_campaign(other_campaign)
    other_code = store.create_code(make_code(second_friend, other_campaign))
    a = convert(store, scene, id="o-a")
    b = convert(store, scene, friend=second_friend, status=ConversionStatus.HELD, id="o-b")
    c = convert(store, scene, friend=scene.referrer, status=ConversionStatus.UNATTRIBUTED, id="o-c")
    d = convert(store, scene, friend=scene.friend, code=other_code, id="o-d")
    e = store.record_order(make_order(second_friend, id="o-e"))

    def ids(**filters: object) -> list[str]:
        return [conversion.id for conversion in store.list_conversions(**filters)]  # type: ignore[arg-type]

    assert store.list_conversions() == [a, b, c, d, e]
    assert ids(status=ConversionStatus.HELD) == ["o-b"]
    assert ids(status=ConversionStatus.PENDING) == ["o-e"]
    assert ids(campaign_id=scene.campaign.id) == ["o-a", "o-b"]
    assert ids(campaign_id=other_campaign.id) == ["o-d"]
    assert ids(customer_id=scene.referrer.id) == ["o-a", "o-b", "o-c"]
    assert ids(customer_id=second_friend.id) == ["o-b", "o-d", "o-e"]
    assert ids(customer_id=scene.friend.id, campaign_id=scene.campaign.id) == ["o-a"]
    assert ids(status=ConversionStatus.ATTRIBUTED, customer_id=second_friend.id) == ["o-d"]


def test_conversions_are_paged_by_the_last_order_id(store: Store) -> None:
    scene = set_scene(store)
    for order_id in ("o-3", "o-1", "o-5", "o-2", "o-4"):
        store.record_order(make_order(scene.friend, id=order_id))

    first = store.list_conversions(limit=2)
    second = store.list_conversions(limit=2, after=first[-1].id)
    third = store.list_conversions(limit=2, after=second[-1].id)

    assert [[c.id for c in page] for page in (first, second, third)] == [["o-1", "o-2"], ["o-3", "o-4"], ["o-5"]]
    assert store.list_conversions(after="o-5") == []


# --- fraud context -------------------------------------------------------------------------------------------
def signal(kind: SignalKind, value: str) -> Signal:
    return Signal(kind=kind, value=value)


def test_the_fraud_context_holds_both_sides_signals_and_who_shares_the_friends(store: Store) -> None:
    scene = set_scene(store)
    lookalike, payer = add_friend(store), add_friend(store)
    store.record_signup(
        make_signup(scene.referrer, signals=(signal(SignalKind.DEVICE, "dev-r"), signal(SignalKind.IP, "ip-9"))), None
    )
    store.record_signup(
        make_signup(
            scene.friend,
            signals=(signal(SignalKind.DEVICE, "dev-shared"), signal(SignalKind.EMAIL, "fred@example.com")),
        ),
        make_attribution(scene.code),
    )
    store.record_signup(make_signup(lookalike, signals=(signal(SignalKind.DEVICE, "dev-shared"),)), None)
    store.record_order(make_order(payer, signals=(signal(SignalKind.PAYMENT, "card-1"),)))
    order = make_order(scene.friend, signals=(signal(SignalKind.PAYMENT, "card-1"), signal(SignalKind.IP, "ip-9")))
    store.record_order(order)

    context = store.fraud_context(order, make_attribution(scene.code), FraudSettings())

    assert context.order == order
    assert context.attribution == make_attribution(scene.code)
    assert set(context.referrer_signals) == {signal(SignalKind.DEVICE, "dev-r"), signal(SignalKind.IP, "ip-9")}
    assert set(context.friend_signals) == {
        signal(SignalKind.DEVICE, "dev-shared"),
        signal(SignalKind.EMAIL, "fred@example.com"),
        signal(SignalKind.PAYMENT, "card-1"),
        signal(SignalKind.IP, "ip-9"),
    }
    assert {kind: sorted(ids) for kind, ids in context.shared_signals.items() if ids} == {
        SignalKind.DEVICE: [lookalike.id],
        SignalKind.PAYMENT: [payer.id],
        SignalKind.IP: [scene.referrer.id],
    }
    assert context.friend_created_at == scene.friend.created_at


def test_the_fraud_context_counts_settled_conversions_of_the_code_in_the_velocity_window(store: Store) -> None:
    scene = set_scene(store)
    order_at = BASE_TIME + timedelta(days=3)
    for hours_before, status in (
        (2, ConversionStatus.ATTRIBUTED),
        (5, ConversionStatus.HELD),
        (6, ConversionStatus.REJECTED),
        (30, ConversionStatus.ATTRIBUTED),
    ):
        order_time = order_at - timedelta(hours=hours_before)
        convert(store, scene, friend=add_friend(store), status=status, settled_at=order_at, at=order_time)
    store.record_order(make_order(add_friend(store), at=order_at - timedelta(hours=1)))
    order = make_order(scene.friend, at=order_at)
    store.record_order(order)

    context = store.fraud_context(order, make_attribution(scene.code), FraudSettings(velocity_window_hours=24))

    assert context.code_conversions_in_window == 3


def test_the_fraud_context_holds_the_live_referred_edges_within_the_ring_hops(store: Store) -> None:
    scene = set_scene(store)
    r, f = scene.referrer, scene.friend
    a, b, c, g, x = (add_friend(store, created_at=BASE_TIME + timedelta(days=i)) for i in range(1, 6))
    store.add_referrals(
        [
            make_referral(r, f, status=ReferralStatus.SIGNED_UP),
            make_referral(r, a, status=ReferralStatus.CONVERTED),
            make_referral(b, a),
            make_referral(b, c),
            make_referral(g, f, status=ReferralStatus.CONVERTED),
            make_referral(f, x, status=ReferralStatus.REVERSED),
        ]
    )
    order = make_order(f)
    store.record_order(order)

    context = store.fraud_context(order, make_attribution(scene.code), FraudSettings(ring_max_hops=2))

    assert {(link.referrer_id, link.friend_id) for link in context.neighbourhood} == {
        (r.id, f.id),
        (r.id, a.id),
        (b.id, a.id),
        (g.id, f.id),
    }
    assert all(link.at == BASE_TIME for link in context.neighbourhood)
    assert context.customer_created_at == {
        r.id: r.created_at,
        f.id: f.created_at,
        a.id: a.created_at,
        b.id: b.created_at,
        g.id: g.created_at,
    }


def test_more_ring_hops_reach_further(store: Store) -> None:
    scene = set_scene(store)
    r, f = scene.referrer, scene.friend
    a, b, c = (add_friend(store) for _ in range(3))
    store.add_referrals([make_referral(r, a), make_referral(a, b), make_referral(b, c)])
    order = make_order(f)
    store.record_order(order)

    near = store.fraud_context(order, make_attribution(scene.code), FraudSettings(ring_max_hops=2))
    far = store.fraud_context(order, make_attribution(scene.code), FraudSettings(ring_max_hops=3))

    assert {(link.referrer_id, link.friend_id) for link in near.neighbourhood} == {(r.id, a.id), (a.id, b.id)}
    assert {(link.referrer_id, link.friend_id) for link in far.neighbourhood} == {
        (r.id, a.id),
        (a.id, b.id),
        (b.id, c.id),
    }
