"""engine.fraud: each rule flags what it should and spares what it should, and assess and detect_leak decide."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.fraud import (
    LEAK_SOURCES,
    RULES,
    assess,
    customer_signals,
    dense_new_cluster,
    detect_leak,
    disposable_email,
    is_disposable,
    is_leak_source,
    new_account_with_shared_ip,
    normalise_email,
    normalise_phone,
    referral_ring,
    self_referral_same_customer,
    self_referral_shared_identity,
    shared_ip,
    velocity,
)
from graph.program import (
    CodeActivity,
    CodeStatus,
    FraudAction,
    FraudContext,
    FraudSettings,
    FraudVerdict,
    ReferralLink,
    Signal,
    SignalKind,
)
from tests.factories import BASE_TIME
from tests.program_factories import make_attribution, make_code, make_order

DEFAULTS = FraudSettings()
REFERRER, FRIEND = "ann", "bob"
ORDER_AT = BASE_TIME + timedelta(days=1)
"""When `make_order` places an order."""
TWO_YEARS = timedelta(days=730)
FIVE_DAYS = timedelta(days=5)


def sig(kind: SignalKind, value: str) -> Signal:
    return Signal(kind=kind, value=value)


def ip(value: str) -> Signal:
    return sig(SignalKind.IP, value)


def device(value: str) -> Signal:
    return sig(SignalKind.DEVICE, value)


def context(
    *,
    referrer: str = REFERRER,
    friend: str = FRIEND,
    referrer_signals: Iterable[Signal] = (),
    friend_signals: Iterable[Signal] = (),
    shared: Mapping[SignalKind, Iterable[str]] | None = None,
    friend_age: timedelta | None = TWO_YEARS,
    conversions: int = 0,
    links: Iterable[tuple[str, str]] = (),
    ages: Mapping[str, timedelta] | None = None,
) -> FraudContext:
    """An order by `friend` attributed to `referrer`'s code; by default two long-standing, unrelated customers.

    `links` are earlier `REFERRED` edges (referrer, friend); `ages` are account ages at the order, by customer.
    """
    code = make_code(referrer, "spring")
    order = make_order(friend)
    assert order.at == ORDER_AT
    return FraudContext(
        order=order,
        attribution=make_attribution(code),
        referrer_signals=tuple(referrer_signals),
        friend_signals=tuple(friend_signals),
        shared_signals={kind: tuple(ids) for kind, ids in (shared or {}).items()},
        friend_created_at=None if friend_age is None else ORDER_AT - friend_age,
        code_conversions_in_window=conversions,
        neighbourhood=tuple(ReferralLink(referrer_id=a, friend_id=b, at=BASE_TIME) for a, b in links),
        customer_created_at={customer: ORDER_AT - age for customer, age in (ages or {}).items()},
    )


def rules_fired(verdict: FraudVerdict) -> list[str]:
    return [signal.rule for signal in verdict.signals]


def activity(**overrides: Any) -> CodeActivity:
    """A personal share: a few dozen friends from WhatsApp or with no referrer, a good share of them buying."""
    fields: dict[str, Any] = {
        "code": "ANN10",
        "customer_id": REFERRER,
        "campaign_id": "spring",
        "status": CodeStatus.ACTIVE,
        "clicks": 40,
        "distinct_visitors": 32,
        "distinct_ips": 30,
        "sources": {"": 28, "web.whatsapp.com": 12},
        "signups": 10,
        "conversions": 6,
    }
    fields.update(overrides)
    return CodeActivity(**fields)


# --- normalising identity signals ----------------------------------------------------------------------------
def test_gmail_dots_plus_tags_and_googlemail_all_normalise_to_one_address() -> None:
    variants = [
        "jane.doe@gmail.com",
        "J.A.N.E.D.O.E+promo@Gmail.com",
        " janedoe+x@googlemail.com ",
        "janedoe@GMAIL.COM",
    ]
    assert {normalise_email(v) for v in variants} == {"janedoe@gmail.com"}


def test_other_domains_keep_their_dots_but_lose_case_and_plus_tags() -> None:
    assert normalise_email("Jane.Doe+spring@Example.COM") == "jane.doe@example.com"
    assert normalise_email("jane.doe@example.com") != normalise_email("janedoe@example.com")


def test_phone_keeps_a_leading_plus_and_digits_only() -> None:
    assert normalise_phone(" +33 (6) 12-34.56 78 ") == "+33612345678"
    assert normalise_phone("06 12 34 56 78") == "0612345678"
    assert normalise_phone("06+12") == "0612"


def test_customer_signals_are_normalised_and_skip_what_is_missing() -> None:
    assert customer_signals("J.Doe+x@googlemail.com", "+33 6 12") == (
        sig(SignalKind.EMAIL, "jdoe@gmail.com"),
        sig(SignalKind.PHONE, "+33612"),
    )
    assert customer_signals(None, "  ") == ()
    assert customer_signals("", None) == ()


def test_disposable_domains_match_with_their_subdomains_but_not_lookalikes() -> None:
    assert is_disposable("someone@mailinator.com")
    assert is_disposable("Someone@Inbox.Mailinator.com.")
    assert not is_disposable("someone@gmail.com")
    assert not is_disposable("someone@mailinator.com.example.org")
    assert not is_disposable("someone@notmailinator-example.org")


# --- self_referral_same_customer -----------------------------------------------------------------------------
def test_buying_through_your_own_code_is_rejected_not_held() -> None:
    verdict = assess(context(referrer=FRIEND, friend=FRIEND), DEFAULTS)
    assert verdict.action is FraudAction.REJECT
    assert rules_fired(verdict) == ["self_referral_same_customer"]
    assert "bob" in verdict.signals[0].detail


def test_two_different_customers_are_not_a_same_customer_self_referral() -> None:
    assert self_referral_same_customer(context(), DEFAULTS) is None


# --- self_referral_shared_identity ---------------------------------------------------------------------------
def test_same_gmail_written_with_dots_and_a_plus_tag_holds() -> None:
    ctx = context(
        referrer_signals=customer_signals("jane.doe@gmail.com", None),
        friend_signals=customer_signals("JaneDoe+friend@googlemail.com", None),
    )
    verdict = assess(ctx, DEFAULTS)
    assert verdict.action is FraudAction.HOLD
    assert rules_fired(verdict) == ["self_referral_shared_identity"]
    detail = verdict.signals[0].detail
    assert "email" in detail
    assert "ann" in detail
    assert "janedoe" not in detail


@pytest.mark.parametrize("kind", [SignalKind.EMAIL, SignalKind.PHONE, SignalKind.DEVICE, SignalKind.PAYMENT])
def test_each_identity_kind_the_referrer_shares_with_the_friend_holds_on_its_own(kind: SignalKind) -> None:
    ctx = context(referrer_signals=[sig(kind, "val-7f3a")], friend_signals=[sig(kind, "val-7f3a")])
    flagged = self_referral_shared_identity(ctx, DEFAULTS)
    assert flagged is not None
    assert flagged.weight >= DEFAULTS.hold_score
    assert kind.value in flagged.detail
    assert "7f3a" not in flagged.detail
    assert assess(ctx, DEFAULTS).action is FraudAction.HOLD


def test_referrer_reported_by_the_store_among_holders_of_the_friends_phone_holds() -> None:
    ctx = context(
        friend_signals=customer_signals(None, "+33 6 11 22 33 44"),
        shared={SignalKind.PHONE: ["zoe", REFERRER]},
    )
    flagged = self_referral_shared_identity(ctx, DEFAULTS)
    assert flagged is not None
    assert "phone" in flagged.detail
    assert "+33" not in flagged.detail


def test_distinct_identities_and_a_shared_ip_are_not_a_shared_identity() -> None:
    ctx = context(
        referrer_signals=[*customer_signals("ann@example.com", "+331"), device("d1"), ip("i1")],
        friend_signals=[*customer_signals("bob@example.com", "+332"), device("d2"), ip("i1")],
        shared={SignalKind.DEVICE: ["zoe"], SignalKind.IP: [REFERRER]},
    )
    assert self_referral_shared_identity(ctx, DEFAULTS) is None


def test_same_value_under_different_kinds_is_not_shared() -> None:
    ctx = context(referrer_signals=[device("abc")], friend_signals=[sig(SignalKind.PAYMENT, "abc")])
    assert self_referral_shared_identity(ctx, DEFAULTS) is None


# --- shared_ip -------------------------------------------------------------------------------------------------
def test_shared_ip_alone_allows_and_records_a_weak_signal() -> None:
    verdict = assess(context(referrer_signals=[ip("ip-7f3a")], friend_signals=[ip("ip-7f3a")]), DEFAULTS)
    assert verdict.action is FraudAction.ALLOW
    assert rules_fired(verdict) == ["shared_ip"]
    assert 0 < verdict.score <= DEFAULTS.hold_score / 2
    assert "7f3a" not in verdict.signals[0].detail


def test_shared_ip_is_found_through_the_stores_sharer_list_too() -> None:
    ctx = context(friend_signals=[ip("dorm")], shared={SignalKind.IP: [REFERRER, "zoe"]})
    assert shared_ip(ctx, DEFAULTS) is not None


def test_different_ips_and_an_ip_shared_with_someone_else_record_nothing() -> None:
    ctx = context(referrer_signals=[ip("a")], friend_signals=[ip("b")], shared={SignalKind.IP: ["zoe"]})
    assert shared_ip(ctx, DEFAULTS) is None
    assert assess(ctx, DEFAULTS).signals == ()


# --- disposable_email ------------------------------------------------------------------------------------------
def test_disposable_friend_email_is_recorded_but_does_not_hold_alone() -> None:
    verdict = assess(context(friend_signals=customer_signals("bob+1@mailinator.com", None)), DEFAULTS)
    assert verdict.action is FraudAction.ALLOW
    assert rules_fired(verdict) == ["disposable_email"]
    assert 0 < verdict.score < DEFAULTS.hold_score
    assert "mailinator.com" in verdict.signals[0].detail
    assert "bob+1" not in verdict.signals[0].detail


def test_ordinary_friend_email_and_a_disposable_referrer_email_are_not_flagged() -> None:
    ctx = context(
        referrer_signals=customer_signals("ann@mailinator.com", None),
        friend_signals=customer_signals("bob@gmail.com", None),
    )
    assert disposable_email(ctx, DEFAULTS) is None


# --- velocity --------------------------------------------------------------------------------------------------
def test_velocity_exactly_at_the_limit_holds() -> None:
    ctx = context(conversions=DEFAULTS.velocity_max_conversions)
    verdict = assess(ctx, DEFAULTS)
    assert verdict.action is FraudAction.HOLD
    assert rules_fired(verdict) == ["velocity"]
    assert f"{DEFAULTS.velocity_max_conversions} conversions" in verdict.signals[0].detail
    assert f"limit {DEFAULTS.velocity_max_conversions}" in verdict.signals[0].detail


def test_velocity_just_below_the_limit_allows() -> None:
    ctx = context(conversions=DEFAULTS.velocity_max_conversions - 1)
    assert velocity(ctx, DEFAULTS) is None
    assert assess(ctx, DEFAULTS).action is FraudAction.ALLOW


def test_velocity_follows_the_campaigns_own_limit() -> None:
    strict = FraudSettings(velocity_max_conversions=3)
    assert velocity(context(conversions=3), strict) is not None
    assert velocity(context(conversions=3), DEFAULTS) is None


# --- referral_ring ---------------------------------------------------------------------------------------------
def test_three_account_cycle_closed_by_the_new_referral_holds() -> None:
    ctx = context(links=[(FRIEND, "cid"), ("cid", REFERRER)])
    verdict = assess(ctx, DEFAULTS)
    assert verdict.action is FraudAction.HOLD
    assert rules_fired(verdict) == ["referral_ring"]
    assert "ann -> bob -> cid -> ann" in verdict.signals[0].detail


def test_friend_who_referred_the_referrer_makes_a_two_account_ring() -> None:
    flagged = referral_ring(context(links=[(FRIEND, REFERRER)]), DEFAULTS)
    assert flagged is not None
    assert "ann -> bob -> ann" in flagged.detail


def test_honest_tree_of_the_same_depth_allows() -> None:
    ctx = context(
        links=[("root", REFERRER), (REFERRER, "cid"), (FRIEND, "dan"), ("dan", "eve"), ("root", "fay")],
        ages={"root": TWO_YEARS, REFERRER: TWO_YEARS, "cid": TWO_YEARS, "dan": FIVE_DAYS, "eve": FIVE_DAYS},
    )
    assert referral_ring(ctx, DEFAULTS) is None
    assert assess(ctx, DEFAULTS) == FraudVerdict(action=FraudAction.ALLOW, score=0.0)


def test_cycle_is_a_ring_up_to_ring_max_hops_and_not_beyond() -> None:
    four_hops = [(FRIEND, "x1"), ("x1", "x2"), ("x2", "x3"), ("x3", REFERRER)]
    five_hops = [(FRIEND, "x1"), ("x1", "x2"), ("x2", "x3"), ("x3", "x4"), ("x4", REFERRER)]
    assert referral_ring(context(links=four_hops), DEFAULTS) is not None
    assert referral_ring(context(links=five_hops), DEFAULTS) is None
    assert referral_ring(context(links=five_hops), FraudSettings(ring_max_hops=5)) is not None


def test_friend_identity_held_by_two_accounts_of_the_neighbourhood_is_a_ring() -> None:
    ctx = context(
        friend_signals=[device("d1"), sig(SignalKind.PAYMENT, "card")],
        links=[(REFERRER, "cid"), (REFERRER, "dan")],
        shared={SignalKind.DEVICE: ["cid"], SignalKind.PAYMENT: ["dan"]},
    )
    verdict = assess(ctx, DEFAULTS)
    assert verdict.action is FraudAction.HOLD
    assert rules_fired(verdict) == ["referral_ring"]
    detail = verdict.signals[0].detail
    assert "device and payment" in detail
    assert "cid, dan" in detail
    assert "card" not in detail


def test_one_relative_sharing_the_family_laptop_is_not_a_ring() -> None:
    ctx = context(friend_signals=[device("family-pc")], links=[(REFERRER, "cid")], shared={SignalKind.DEVICE: ["cid"]})
    assert referral_ring(ctx, DEFAULTS) is None


def test_sharers_outside_the_neighbourhood_or_sharing_only_an_ip_are_not_a_ring() -> None:
    outside = context(links=[(REFERRER, "cid")], shared={SignalKind.DEVICE: ["zoe", "yan"]})
    dorm = context(links=[(REFERRER, "cid"), (REFERRER, "dan")], shared={SignalKind.IP: ["cid", "dan"]})
    assert referral_ring(outside, DEFAULTS) is None
    assert referral_ring(dorm, DEFAULTS) is None


def test_ring_detail_stays_within_the_signal_limit_with_long_ids() -> None:
    hops = [f"{'x' * 120}{i}" for i in range(4)]
    path = [FRIEND, *hops, REFERRER]
    flagged = referral_ring(context(links=itertools.pairwise(path)), FraudSettings(ring_max_hops=5))
    assert flagged is not None
    assert len(flagged.detail) == 500


# --- dense_new_cluster -----------------------------------------------------------------------------------------
CLUSTER = [(REFERRER, "cid"), (REFERRER, "dan"), ("cid", "dan"), ("cid", "eve"), ("dan", "eve"), ("eve", FRIEND)]
"""Five accounts referring each other: with ann -> bob, 7 of the 10 possible pairs, and no cycle through bob."""


def cluster_context(age: timedelta, links: Iterable[tuple[str, str]] = CLUSTER) -> FraudContext:
    links = list(links)
    members = {customer for link in links for customer in link}
    return context(links=links, friend_age=age, ages=dict.fromkeys(members - {FRIEND}, age))


def test_dense_cluster_of_five_week_old_accounts_holds() -> None:
    verdict = assess(cluster_context(FIVE_DAYS), DEFAULTS)
    assert verdict.action is FraudAction.HOLD
    assert rules_fired(verdict) == ["dense_new_cluster"]
    detail = verdict.signals[0].detail
    assert "5 accounts" in detail
    assert "density 0.70" in detail
    assert "ann, bob, cid, dan, eve" in detail


def test_same_shape_of_two_year_old_accounts_allows() -> None:
    ctx = cluster_context(TWO_YEARS)
    assert dense_new_cluster(ctx, DEFAULTS) is None
    assert assess(ctx, DEFAULTS).action is FraudAction.ALLOW


def test_new_customer_bringing_three_new_friends_is_a_star_not_a_cluster() -> None:
    ctx = cluster_context(FIVE_DAYS, [(REFERRER, "cid"), (REFERRER, "dan")])
    assert dense_new_cluster(ctx, DEFAULTS) is None


def test_dense_core_of_new_accounts_is_found_behind_a_sparse_tail() -> None:
    tail = [(FRIEND, "t1"), ("t1", "t2"), ("t2", "t3"), ("t3", "t4"), ("t4", "t5")]
    ctx = cluster_context(FIVE_DAYS, [*CLUSTER, *tail])
    flagged = dense_new_cluster(ctx, DEFAULTS)
    assert flagged is not None
    assert "t5" not in flagged.detail
    assert "density 0.53" in flagged.detail


def test_one_old_account_in_the_group_leaves_too_few_new_ones() -> None:
    five = FraudSettings(dense_cluster_min_size=5)
    ctx = cluster_context(FIVE_DAYS)
    old = ctx.model_copy(update={"customer_created_at": {**ctx.customer_created_at, "eve": ORDER_AT - TWO_YEARS}})
    assert dense_new_cluster(ctx, five) is not None
    assert dense_new_cluster(old, five) is None


def test_dense_new_group_that_excludes_referrer_and_friend_does_not_flag_their_order() -> None:
    farm = [("f1", "f2"), ("f1", "f3"), ("f2", "f3"), ("f3", "f4"), ("f2", "f4"), (REFERRER, "f1")]
    ctx = context(links=farm, ages={"f1": FIVE_DAYS, "f2": FIVE_DAYS, "f3": FIVE_DAYS, "f4": FIVE_DAYS})
    assert dense_new_cluster(ctx, DEFAULTS) is None


# --- new_account_with_shared_ip --------------------------------------------------------------------------------
def test_shared_ip_and_a_brand_new_friend_account_hold_together() -> None:
    ctx = context(referrer_signals=[ip("home")], friend_signals=[ip("home")], friend_age=timedelta(hours=3))
    verdict = assess(ctx, DEFAULTS)
    assert verdict.action is FraudAction.HOLD
    assert rules_fired(verdict) == ["new_account_with_shared_ip", "shared_ip"]
    assert "3 h before the order" in verdict.signals[0].detail


def test_brand_new_friend_on_another_network_is_not_flagged() -> None:
    ctx = context(referrer_signals=[ip("a")], friend_signals=[ip("b")], friend_age=timedelta(hours=3))
    assert new_account_with_shared_ip(ctx, DEFAULTS) is None
    assert assess(ctx, DEFAULTS).signals == ()


@pytest.mark.parametrize("age", [timedelta(days=DEFAULTS.new_account_days), TWO_YEARS, None])
def test_shared_ip_with_an_older_or_unknown_account_only_records_the_ip(age: timedelta | None) -> None:
    ctx = context(referrer_signals=[ip("home")], friend_signals=[ip("home")], friend_age=age)
    assert new_account_with_shared_ip(ctx, DEFAULTS) is None
    assert assess(ctx, DEFAULTS).action is FraudAction.ALLOW


# --- assess ----------------------------------------------------------------------------------------------------
def test_honest_referral_between_long_standing_customers_is_allowed_without_signals() -> None:
    ctx = context(
        referrer_signals=[*customer_signals("ann@example.com", "+331"), ip("i1")],
        friend_signals=[*customer_signals("bob@example.com", "+332"), ip("i2")],
        links=[("root", REFERRER)],
    )
    assert assess(ctx, DEFAULTS) == FraudVerdict(action=FraudAction.ALLOW, score=0.0)


def test_signals_are_sorted_by_weight_and_the_score_is_their_sum() -> None:
    ctx = context(
        referrer_signals=[ip("home")],
        friend_signals=[ip("home"), *customer_signals("bob@mailinator.com", None)],
        conversions=DEFAULTS.velocity_max_conversions,
    )
    verdict = assess(ctx, DEFAULTS)
    assert rules_fired(verdict) == ["velocity", "disposable_email", "shared_ip"]
    weights = [signal.weight for signal in verdict.signals]
    assert weights == sorted(weights, reverse=True)
    assert verdict.score == pytest.approx(sum(weights))
    assert verdict.reasons[0].startswith("velocity: code ")


def test_weak_signals_allow_until_one_more_adds_them_up_to_the_hold_score() -> None:
    weak = context(referrer_signals=[ip("home")], friend_signals=[ip("home"), *customer_signals("b@yopmail.com", None)])
    brand_new = weak.model_copy(update={"friend_created_at": ORDER_AT - timedelta(days=1)})
    assert assess(weak, DEFAULTS).action is FraudAction.ALLOW
    assert rules_fired(assess(weak, DEFAULTS)) == ["disposable_email", "shared_ip"]
    assert assess(brand_new, DEFAULTS).action is FraudAction.HOLD


@pytest.mark.parametrize("hold_score", [0.5, 1.0, 3.0])
def test_rule_strengths_follow_the_hold_score(hold_score: float) -> None:
    chosen = FraudSettings(hold_score=hold_score)
    ip_only = context(referrer_signals=[ip("home")], friend_signals=[ip("home")])
    new_on_ip = ip_only.model_copy(update={"friend_created_at": ORDER_AT - timedelta(hours=1)})
    same_device = context(referrer_signals=[device("d")], friend_signals=[device("d")])
    assert assess(ip_only, chosen).action is FraudAction.ALLOW
    assert assess(new_on_ip, chosen).action is FraudAction.HOLD
    assert assess(same_device, chosen).action is FraudAction.HOLD


def test_every_rule_is_in_rules_once() -> None:
    names = [rule.__name__ for rule in RULES]
    assert len(names) == len(set(names)) == 8
    assert names[0] == "self_referral_same_customer"


# --- properties ------------------------------------------------------------------------------------------------
PEOPLE = ["ann", "bob", "cid", "dan", "eve", "fay"]
signals_st = st.lists(
    st.builds(
        Signal,
        kind=st.sampled_from(SignalKind),
        value=st.sampled_from(["v1", "v2", "x@mailinator.com", "y@gmail.com"]),
    ),
    max_size=5,
)
shared_st = st.dictionaries(st.sampled_from(SignalKind), st.lists(st.sampled_from(PEOPLE), max_size=3), max_size=5)


@st.composite
def contexts(draw: st.DrawFn) -> FraudContext:
    ages = draw(st.dictionaries(st.sampled_from(PEOPLE), st.integers(0, 800), max_size=len(PEOPLE)))
    friend_days = draw(st.none() | st.integers(0, 800))
    return context(
        referrer=draw(st.sampled_from(PEOPLE)),
        friend=draw(st.sampled_from(PEOPLE)),
        referrer_signals=draw(signals_st),
        friend_signals=draw(signals_st),
        shared=draw(shared_st),
        friend_age=None if friend_days is None else timedelta(days=friend_days),
        conversions=draw(st.integers(0, 15)),
        links=draw(st.lists(st.tuples(st.sampled_from(PEOPLE), st.sampled_from(PEOPLE)), max_size=12)),
        ages={customer: timedelta(days=days) for customer, days in ages.items()},
    )


@settings(max_examples=150, deadline=None)
@given(ctx=contexts())
def test_assess_is_deterministic_whatever_order_the_store_returns_things_in(ctx: FraudContext) -> None:
    verdict = assess(ctx, DEFAULTS)
    reordered = ctx.model_copy(
        update={
            "neighbourhood": ctx.neighbourhood[::-1],
            "referrer_signals": ctx.referrer_signals[::-1],
            "friend_signals": ctx.friend_signals[::-1],
            "shared_signals": {kind: ids[::-1] for kind, ids in reversed(ctx.shared_signals.items())},
        }
    )
    assert assess(ctx, DEFAULTS) == verdict
    assert assess(reordered, DEFAULTS) == verdict


@settings(max_examples=150, deadline=None)
@given(ctx=contexts())
def test_reject_happens_exactly_when_the_buyer_owns_the_code(ctx: FraudContext) -> None:
    verdict = assess(ctx, DEFAULTS)
    same_customer = "self_referral_same_customer" in rules_fired(verdict)
    assert same_customer == (ctx.attribution.referrer_id == ctx.order.customer_id)
    assert (verdict.action is FraudAction.REJECT) == same_customer
    if not same_customer:
        assert (verdict.action is FraudAction.HOLD) == (verdict.score >= DEFAULTS.hold_score)


@settings(max_examples=150, deadline=None)
@given(ctx=contexts(), more_referrer=signals_st, more_friend=signals_st, more_shared=shared_st)
def test_adding_signals_never_lowers_the_score(
    ctx: FraudContext,
    more_referrer: list[Signal],
    more_friend: list[Signal],
    more_shared: dict[SignalKind, list[str]],
) -> None:
    shared = {kind: (*ctx.shared_signals.get(kind, ()), *more_shared.get(kind, ())) for kind in SignalKind}
    richer = ctx.model_copy(
        update={
            "referrer_signals": (*ctx.referrer_signals, *more_referrer),
            "friend_signals": (*ctx.friend_signals, *more_friend),
            "shared_signals": shared,
        }
    )
    before, after = assess(ctx, DEFAULTS), assess(richer, DEFAULTS)
    assert after.score >= before.score
    assert set(rules_fired(before)) <= set(rules_fired(after))


# --- detect_leak -----------------------------------------------------------------------------------------------
def test_code_posted_on_coupon_sites_is_leaked() -> None:
    posted = activity(
        clicks=400,
        distinct_visitors=350,
        distinct_ips=340,
        sources={"www.retailmenot.com": 180, "slickdeals.net": 90, "": 130},
        signups=12,
        conversions=3,
    )
    verdict = detect_leak(posted, DEFAULTS)
    assert verdict.leaked
    assert verdict.score == 1.0
    assert verdict.code == "ANN10"
    assert any("retailmenot.com, slickdeals.net" in reason and "68%" in reason for reason in verdict.reasons)
    assert any("400 clicks (threshold 50)" in reason for reason in verdict.reasons)


def test_code_spread_over_many_unrelated_sites_with_few_buyers_is_leaked() -> None:
    spread = activity(
        clicks=300,
        distinct_visitors=280,
        sources={"forum.example.net": 100, "blog.example.org": 80, "news.example.com": 70, "": 50},
        conversions=2,
    )
    verdict = detect_leak(spread, DEFAULTS)
    assert verdict.leaked
    assert any("3 referring sites (threshold 3)" in reason for reason in verdict.reasons)


def test_coupon_site_share_counts_even_from_fewer_hosts_than_the_minimum() -> None:
    one_site = activity(clicks=200, distinct_visitors=190, sources={"couponfollow.com": 120, "": 80}, conversions=1)
    assert detect_leak(one_site, DEFAULTS).leaked


def test_personal_share_with_friends_is_not_leaked() -> None:
    verdict = detect_leak(activity(), DEFAULTS)
    assert not verdict.leaked
    assert verdict.score == 0.25


def test_popular_honest_advocate_is_not_leaked() -> None:
    creator = activity(
        clicks=3000,
        distinct_visitors=2400,
        distinct_ips=2300,
        sources={"instagram.com": 1500, "youtube.com": 900, "tiktok.com": 400, "": 200},
        signups=400,
        conversions=150,
    )
    verdict = detect_leak(creator, DEFAULTS)
    assert not verdict.leaked
    assert verdict.score == 0.75
    assert not any("conversions from" in reason for reason in verdict.reasons)


def test_one_newsletter_with_few_buyers_is_not_a_leak() -> None:
    newsletter = activity(clicks=500, distinct_visitors=450, sources={"mail.example.com": 480, "": 20}, conversions=4)
    assert not detect_leak(newsletter, DEFAULTS).leaked


def test_a_handful_of_clicks_from_a_coupon_site_is_not_yet_a_leak() -> None:
    early = activity(clicks=20, distinct_visitors=19, sources={"retailmenot.com": 20}, conversions=0)
    assert not detect_leak(early, DEFAULTS).leaked


def test_conversion_rate_exactly_at_the_maximum_still_counts_as_leaked() -> None:
    posted = {"dealabs.com": 60, "reddit.com": 30, "": 10}
    at_limit = activity(clicks=100, distinct_visitors=100, sources=posted, conversions=2)
    above = activity(clicks=100, distinct_visitors=100, sources=posted, conversions=3)
    assert detect_leak(at_limit, DEFAULTS).leaked
    assert not detect_leak(above, DEFAULTS).leaked


def test_leak_sources_match_hosts_and_their_subdomains_but_not_lookalikes() -> None:
    assert "retailmenot.com" in LEAK_SOURCES
    assert is_leak_source("www.RetailMeNot.com")
    assert is_leak_source("old.reddit.com")
    assert is_leak_source("reddit.com/r/deals")
    assert not is_leak_source("notreddit.com")
    assert not is_leak_source("")
