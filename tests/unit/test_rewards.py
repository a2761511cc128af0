"""engine.rewards: which rules pay for an order, at their exact boundaries, and why in words."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.rewards import evaluate_rewards, explain_settlement, plan_rewards, reward_amount
from graph.errors import InvalidInput
from graph.program import (
    LIVE_REWARD_STATES,
    MONETARY_KINDS,
    Attribution,
    Campaign,
    CampaignStatus,
    ConversionStatus,
    FraudAction,
    FraudSignal,
    FraudVerdict,
    Order,
    Reward,
    RewardGrant,
    RewardHistory,
    RewardKind,
    RewardRule,
    RewardSide,
    RewardState,
    Settlement,
    TouchKind,
)
from tests.factories import BASE_TIME
from tests.program_factories import make_campaign, make_order

AT = BASE_TIME + timedelta(days=2)
CAMPAIGN = make_campaign(id="spring")
NO_HISTORY = RewardHistory(successful_referrals=0, referrer_rewards=(), friend_rewards=())


def attribution(referrer: str = "jane", campaign_id: str = "spring") -> Attribution:
    return Attribution(
        referrer_id=referrer, campaign_id=campaign_id, code="JANE4K2", method=TouchKind.CLICK, touched_at=BASE_TIME
    )


def order(**overrides: Any) -> Order:
    return make_order("bob", **{"id": "order-1", "amount_minor": 4200, **overrides})


def verdict(action: FraudAction) -> FraudVerdict:
    signal = FraudSignal(rule="velocity", weight=1.2, detail="12 conversions on this code in 24 hours")
    return FraudVerdict(action=action, score=1.2, signals=(signal,))


def reward(rule_id: str, **overrides: Any) -> Reward:
    fields: dict[str, Any] = {
        "id": f"earlier-{rule_id}",
        "customer_id": "jane",
        "campaign_id": "spring",
        "rule_id": rule_id,
        "side": RewardSide.REFERRER,
        "kind": RewardKind.CREDIT,
        "amount_minor": 1000,
        "currency": "EUR",
        "conversion_id": "order-0",
        "state": RewardState.PENDING,
        "created_at": AT - timedelta(days=1),
        "updated_at": AT - timedelta(days=1),
        "approve_after": AT + timedelta(days=13),
    }
    fields.update(overrides)
    return Reward(**fields)


def history(successful: int = 0, referrer: tuple[Reward, ...] = (), friend: tuple[Reward, ...] = ()) -> RewardHistory:
    return RewardHistory(successful_referrals=successful, referrer_rewards=referrer, friend_rewards=friend)


def plan(
    campaign: Campaign = CAMPAIGN,
    the_order: Order | None = None,
    the_attribution: Attribution | None = None,
    the_verdict: FraudVerdict | None = None,
    the_history: RewardHistory = NO_HISTORY,
) -> Settlement:
    return plan_rewards(
        campaign,
        the_order or order(),
        the_attribution or attribution(),
        the_verdict,
        the_history,
        at=AT,
    )


def paid_rules(settlement: Settlement) -> list[str]:
    return [grant.rule_id for grant in settlement.grants]


def credit_rule(**overrides: Any) -> RewardRule:
    fields: dict[str, Any] = {"id": "credit", "side": RewardSide.REFERRER, "kind": RewardKind.CREDIT}
    fields["amount_minor"] = 1000
    fields.update(overrides)
    return RewardRule(**fields)


def campaign_with(*rules: RewardRule, **overrides: Any) -> Campaign:
    return make_campaign(id="spring", rewards=rules, **overrides)


# --- reward_amount -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("percent", "amount", "expected"),
    [(12.5, 1004, 126), (12.5, 1003, 125), (10, 5, 1), (10, 4, 0), (33.3, 10000, 3330), (100, 4200, 4200), (1, 0, 0)],
)
def test_percent_rewards_round_half_up_to_minor_units(percent: float, amount: int, expected: int) -> None:
    rule = credit_rule(amount_minor=0, percent=percent)
    assert reward_amount(rule, order(amount_minor=amount)) == expected


def test_fixed_rewards_ignore_the_order_amount_and_non_monetary_rewards_are_worth_zero() -> None:
    assert reward_amount(credit_rule(amount_minor=750), order(amount_minor=99)) == 750
    badge = RewardRule(id="badge", side=RewardSide.REFERRER, kind=RewardKind.BADGE)
    assert reward_amount(badge, order()) == 0


# --- the conversion as a whole --------------------------------------------------------------------------------
def without_notes(settlement: Settlement) -> Settlement:
    """The decision itself; the notes (its explanation) are checked on their own below."""
    return settlement.model_copy(update={"notes": ()})


def test_the_settlement_carries_the_explanation_as_notes() -> None:
    settlement = plan_rewards(CAMPAIGN, order(), None, None, NO_HISTORY, at=AT)
    assert settlement.notes
    assert list(settlement.notes) == explain_settlement(settlement, CAMPAIGN)


def test_no_attribution_settles_unattributed_with_no_grants() -> None:
    settlement = plan_rewards(CAMPAIGN, order(), None, None, NO_HISTORY, at=AT)
    assert without_notes(settlement) == Settlement(status=ConversionStatus.UNATTRIBUTED)


def test_a_first_referral_pays_the_referrer_credit_and_the_friend_discount() -> None:
    settlement = plan()
    assert settlement.status is ConversionStatus.ATTRIBUTED
    assert settlement.attribution == attribution()
    assert settlement.grants == (
        RewardGrant(
            id="order-1:referrer-credit",
            customer_id="jane",
            campaign_id="spring",
            rule_id="referrer-credit",
            side=RewardSide.REFERRER,
            kind=RewardKind.CREDIT,
            amount_minor=1000,
            currency="EUR",
            description="10 EUR credit",
            conversion_id="order-1",
            state=RewardState.PENDING,
            approve_after=AT + timedelta(days=14),
        ),
        RewardGrant(
            id="order-1:friend-discount",
            customer_id="bob",
            campaign_id="spring",
            rule_id="friend-discount",
            side=RewardSide.FRIEND,
            kind=RewardKind.DISCOUNT,
            amount_minor=500,
            currency="EUR",
            description="5 EUR off your first order",
            conversion_id="order-1",
            state=RewardState.PENDING,
            approve_after=AT + timedelta(days=14),
        ),
    )


def test_self_referral_is_rejected_with_no_grants_and_keeps_the_verdict() -> None:
    allow = verdict(FraudAction.ALLOW)
    settlement = plan(the_attribution=attribution(referrer="bob"), the_verdict=allow)
    assert without_notes(settlement) == Settlement(
        status=ConversionStatus.REJECTED, attribution=attribution("bob"), verdict=allow
    )


def test_a_rejecting_verdict_rejects_with_no_grants_and_keeps_the_verdict() -> None:
    reject = verdict(FraudAction.REJECT)
    settlement = plan(the_verdict=reject)
    assert without_notes(settlement) == Settlement(
        status=ConversionStatus.REJECTED, attribution=attribution(), verdict=reject
    )


def test_a_held_verdict_holds_every_grant_until_the_review_deadline() -> None:
    hold = verdict(FraudAction.HOLD)
    settlement = plan(the_verdict=hold)
    assert settlement.status is ConversionStatus.HELD
    assert settlement.verdict == hold
    assert paid_rules(settlement) == ["referrer-credit", "friend-discount"]
    for grant in settlement.grants:
        assert grant.state is RewardState.HELD
        assert grant.review_deadline == AT + timedelta(days=7)
        assert grant.approve_after == AT + timedelta(days=14)


def test_an_allowing_verdict_pays_pending_grants_without_a_review_deadline() -> None:
    allow = verdict(FraudAction.ALLOW)
    settlement = plan(the_verdict=allow)
    assert settlement.status is ConversionStatus.ATTRIBUTED
    assert settlement.verdict == allow
    assert {grant.state for grant in settlement.grants} == {RewardState.PENDING}
    assert {grant.review_deadline for grant in settlement.grants} == {None}


def test_hold_and_review_days_follow_the_campaign() -> None:
    campaign = make_campaign(id="spring", hold_days=0, review_days=3)
    held = plan(campaign, the_verdict=verdict(FraudAction.HOLD))
    assert {(g.approve_after, g.review_deadline) for g in held.grants} == {(AT, AT + timedelta(days=3))}


@pytest.mark.parametrize("status", [CampaignStatus.PAUSED, CampaignStatus.ENDED])
def test_an_inactive_campaign_records_the_attribution_but_pays_nothing(status: CampaignStatus) -> None:
    settlement = plan(make_campaign(id="spring", status=status))
    assert without_notes(settlement) == Settlement(status=ConversionStatus.ATTRIBUTED, attribution=attribution())


def test_an_attribution_for_another_campaign_is_refused() -> None:
    with pytest.raises(InvalidInput, match="autumn"):
        plan(the_attribution=attribution(campaign_id="autumn"))


# --- referrer rules without milestone ------------------------------------------------------------------------
def test_minimum_order_pays_at_exactly_the_minimum_and_not_one_cent_below() -> None:
    campaign = campaign_with(credit_rule(min_order_minor=5000))
    assert paid_rules(plan(campaign, order(amount_minor=5000))) == ["credit"]
    assert paid_rules(plan(campaign, order(amount_minor=4999))) == []


def test_per_customer_cap_pays_below_it_and_stops_at_it() -> None:
    campaign = campaign_with(credit_rule(max_per_customer=3))
    two = tuple(reward("credit", id=f"r{i}", conversion_id=f"o{i}") for i in range(2))
    three = (*two, reward("credit", id="r2", conversion_id="o2"))
    assert paid_rules(plan(campaign, the_history=history(2, two))) == ["credit"]
    assert paid_rules(plan(campaign, the_history=history(3, three))) == []


@pytest.mark.parametrize("state", [RewardState.REVERSED, RewardState.REJECTED])
def test_rewards_no_longer_live_do_not_count_towards_the_cap(state: RewardState) -> None:
    campaign = campaign_with(credit_rule(max_per_customer=1))
    dead = reward("credit", state=state)
    assert paid_rules(plan(campaign, the_history=history(0, (dead,)))) == ["credit"]


@pytest.mark.parametrize("state", sorted(LIVE_REWARD_STATES))
def test_every_live_state_counts_towards_the_cap(state: RewardState) -> None:
    campaign = campaign_with(credit_rule(max_per_customer=1))
    assert paid_rules(plan(campaign, the_history=history(1, (reward("credit", state=state),)))) == []


def test_rewards_of_another_rule_or_campaign_do_not_count_towards_the_cap() -> None:
    campaign = campaign_with(credit_rule(max_per_customer=1))
    others = (reward("bonus"), reward("credit", campaign_id="autumn"))
    assert paid_rules(plan(campaign, the_history=history(2, others))) == ["credit"]


def test_period_cap_counts_a_reward_created_exactly_period_days_ago() -> None:
    campaign = campaign_with(credit_rule(max_per_period=2, period_days=30))
    recent = reward("credit", id="recent", conversion_id="o1", created_at=AT - timedelta(days=1))
    edge = reward("credit", id="edge", conversion_id="o2", created_at=AT - timedelta(days=30))
    assert paid_rules(plan(campaign, the_history=history(2, (recent, edge)))) == []


def test_period_cap_ignores_a_reward_created_one_microsecond_before_the_period() -> None:
    campaign = campaign_with(credit_rule(max_per_period=2, period_days=30))
    recent = reward("credit", id="recent", conversion_id="o1", created_at=AT - timedelta(days=1))
    older = reward("credit", id="older", conversion_id="o2", created_at=AT - timedelta(days=30, microseconds=1))
    assert paid_rules(plan(campaign, the_history=history(2, (recent, older)))) == ["credit"]


def test_period_cap_pays_below_it() -> None:
    campaign = campaign_with(credit_rule(max_per_period=2, period_days=30))
    assert paid_rules(plan(campaign, the_history=history(1, (reward("credit"),)))) == ["credit"]


def test_period_cap_counts_only_live_rewards() -> None:
    campaign = campaign_with(credit_rule(max_per_period=1, period_days=30))
    assert paid_rules(plan(campaign, the_history=history(1, (reward("credit", state=RewardState.REVERSED),)))) == [
        "credit"
    ]


# --- milestones -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("successful", "badge"), [(0, False), (1, False), (2, True)])
def test_the_third_success_earns_the_badge(successful: int, badge: bool) -> None:
    assert ("third-badge" in paid_rules(plan(the_history=history(successful)))) is badge


@pytest.mark.parametrize(("successful", "bonus"), [(8, False), (9, True)])
def test_the_tenth_success_earns_the_bonus(successful: int, bonus: bool) -> None:
    settlement = plan(the_history=history(successful, (reward("third-badge", kind=RewardKind.BADGE, amount_minor=0),)))
    assert ("tenth-bonus" in paid_rules(settlement)) is bonus
    assert "third-badge" not in paid_rules(settlement)


def test_the_tenth_bonus_pays_its_cash_amount_to_the_referrer() -> None:
    grant = next(g for g in plan(the_history=history(9)).grants if g.rule_id == "tenth-bonus")
    assert (grant.customer_id, grant.kind, grant.amount_minor, grant.currency) == ("jane", RewardKind.CASH, 5000, "EUR")


def test_a_milestone_already_earned_is_not_paid_again() -> None:
    badge = reward("third-badge", kind=RewardKind.BADGE, amount_minor=0, state=RewardState.FULFILLED)
    assert "third-badge" not in paid_rules(plan(the_history=history(3, (badge,))))


def test_a_reversed_milestone_is_earned_again_by_a_later_success() -> None:
    badge = reward("third-badge", kind=RewardKind.BADGE, amount_minor=0, state=RewardState.REVERSED)
    assert "third-badge" in paid_rules(plan(the_history=history(2, (badge,))))


def test_a_milestone_rule_added_later_catches_up_once() -> None:
    assert {"third-badge", "tenth-bonus"} <= set(paid_rules(plan(the_history=history(14))))


def test_a_milestone_respects_its_minimum_order() -> None:
    rule = RewardRule(id="badge", side=RewardSide.REFERRER, kind=RewardKind.BADGE, milestone=1, min_order_minor=10_000)
    assert paid_rules(plan(campaign_with(rule))) == []
    assert paid_rules(plan(campaign_with(rule), order(amount_minor=10_000))) == ["badge"]


# --- friend rules --------------------------------------------------------------------------------------------
def friend_reward(**overrides: Any) -> Reward:
    fields: dict[str, Any] = {
        "customer_id": "bob",
        "side": RewardSide.FRIEND,
        "kind": RewardKind.DISCOUNT,
        "amount_minor": 500,
    }
    fields.update(overrides)
    return reward("friend-discount", **fields)


def test_the_friend_discount_is_paid_on_the_first_attributed_order_only() -> None:
    assert "friend-discount" not in paid_rules(plan(the_history=history(friend=(friend_reward(),))))


def test_a_reversed_friend_discount_is_earned_again_on_the_next_order() -> None:
    reversed_one = friend_reward(state=RewardState.REVERSED)
    assert "friend-discount" in paid_rules(plan(the_history=history(friend=(reversed_one,))))


def test_the_friend_discount_respects_its_minimum_order() -> None:
    rule = RewardRule(
        id="welcome", side=RewardSide.FRIEND, kind=RewardKind.DISCOUNT, amount_minor=500, min_order_minor=3000
    )
    assert paid_rules(plan(campaign_with(rule), order(amount_minor=3000))) == ["welcome"]
    assert paid_rules(plan(campaign_with(rule), order(amount_minor=2999))) == []


def test_the_friend_reward_goes_to_the_buyer() -> None:
    grant = next(g for g in plan().grants if g.side is RewardSide.FRIEND)
    assert grant.customer_id == "bob"


# --- amounts and currencies ----------------------------------------------------------------------------------
def test_percent_rules_pay_in_the_order_currency_and_fixed_ones_in_the_campaign_currency() -> None:
    share = RewardRule(id="share", side=RewardSide.FRIEND, kind=RewardKind.DISCOUNT, percent=10)
    campaign = campaign_with(credit_rule(), share)
    settlement = plan(campaign, order(amount_minor=4205, currency="USD"))
    assert {(g.rule_id, g.amount_minor, g.currency) for g in settlement.grants} == {
        ("credit", 1000, "EUR"),
        ("share", 421, "USD"),
    }


def test_a_percent_reward_that_rounds_to_zero_is_not_granted() -> None:
    campaign = campaign_with(credit_rule(amount_minor=0, percent=1))
    assert paid_rules(plan(campaign, order(amount_minor=49))) == []
    assert paid_rules(plan(campaign, order(amount_minor=50))) == ["credit"]


# --- re-planning and explanations -----------------------------------------------------------------------------
def as_rewards(grants: tuple[RewardGrant, ...], at: datetime) -> list[Reward]:
    return [
        Reward(**grant.model_dump(exclude={"state"}), state=grant.state, created_at=at, updated_at=at)
        for grant in grants
    ]


def test_planning_again_after_the_grants_were_written_gives_the_same_settlement() -> None:
    campaign = campaign_with(credit_rule(max_per_customer=1), *CAMPAIGN.rewards[1:])
    first = plan(campaign, the_history=history(2))
    written = as_rewards(first.grants, AT)
    again = history(
        2,
        tuple(r for r in written if r.side is RewardSide.REFERRER),
        tuple(r for r in written if r.side is RewardSide.FRIEND),
    )
    assert plan(campaign, the_history=again) == first


def test_explanation_gives_a_reason_for_every_rule() -> None:
    campaign = campaign_with(
        credit_rule(max_per_customer=1),
        credit_rule(id="big-spender", min_order_minor=10_000),
        credit_rule(id="monthly", max_per_period=1, period_days=30),
        RewardRule(id="badge", side=RewardSide.REFERRER, kind=RewardKind.BADGE, milestone=3),
        RewardRule(id="welcome", side=RewardSide.FRIEND, kind=RewardKind.DISCOUNT, amount_minor=500),
    )
    earlier = (reward("credit", id="c0"), reward("monthly", id="m0"))
    result = evaluate_rewards(campaign, order(), attribution(), None, history(1, earlier), at=AT)
    assert explain_settlement(result, campaign) == [
        "Attributed to jane through JANE4K2 (click): 1 reward(s).",
        "credit: does not pay: cap reached (1 of at most 1 per referrer).",
        "big-spender: does not pay: below the minimum order (42.00 EUR < 100.00 EUR).",
        "monthly: does not pay: period cap reached (1 of at most 1 in 30 days).",
        "badge: does not pay: milestone not reached (success 2 of 3).",
        "welcome: pays 5.00 EUR discount to the friend bob, pending until 2024-03-17.",
    ]


def test_explanation_of_a_held_conversion_names_the_signals_and_the_deadline() -> None:
    result = evaluate_rewards(CAMPAIGN, order(), attribution(), verdict(FraudAction.HOLD), history(2), at=AT)
    lines = explain_settlement(result, CAMPAIGN)
    assert (
        lines[0] == "Held for review (jane through JANE4K2 (click)): velocity: 12 conversions on this code in 24 hours."
    )
    assert lines[1] == (
        "referrer-credit: pays 10.00 EUR credit to the referrer jane (10 EUR credit), held for review until 2024-03-10."
    )
    assert (
        lines[3]
        == "third-badge: grants badge to the referrer jane (Ambassador badge), held for review until 2024-03-10."
    )
    assert lines[4] == "tenth-bonus: does not pay: milestone not reached (success 3 of 10)."


@pytest.mark.parametrize(
    ("the_attribution", "the_verdict", "campaign", "reason"),
    [
        (None, None, CAMPAIGN, "no referral was attributed"),
        (attribution("bob"), None, CAMPAIGN, "self-referral: the referrer placed the order"),
        (
            attribution(),
            verdict(FraudAction.REJECT),
            CAMPAIGN,
            "rejected by the fraud rules (velocity: 12 conversions on this code in 24 hours)",
        ),
        (attribution(), None, make_campaign(id="spring", status=CampaignStatus.PAUSED), "the campaign is paused"),
    ],
    ids=["unattributed", "self-referral", "fraud", "paused"],
)
def test_a_conversion_that_earns_nothing_explains_the_same_from_the_plan_or_the_stored_settlement(
    the_attribution: Attribution | None, the_verdict: FraudVerdict | None, campaign: Campaign, reason: str
) -> None:
    result = evaluate_rewards(campaign, order(), the_attribution, the_verdict, NO_HISTORY, at=AT)
    from_plan = explain_settlement(result, campaign)
    assert from_plan == explain_settlement(result.settlement, campaign)
    assert from_plan[1:] == [f"{rule.id}: does not pay: {reason}." for rule in campaign.rewards]


def test_a_stored_settlement_explains_its_grants_like_the_plan_did() -> None:
    result = evaluate_rewards(CAMPAIGN, order(), attribution(), None, history(2), at=AT)
    from_plan = explain_settlement(result, CAMPAIGN)
    stored = explain_settlement(result.settlement, CAMPAIGN)
    assert stored[:4] == from_plan[:4]
    assert stored[4].startswith("tenth-bonus: did not pay")


# --- properties -----------------------------------------------------------------------------------------------
RULE_IDS = ("r0", "r1", "r2", "r3", "r4")
PROPERTY = settings(max_examples=60, deadline=None)
"""Each example builds dozens of pydantic records; 60 keep a run to seconds on a shared machine."""


@st.composite
def rules(draw: st.DrawFn, rule_id: str) -> RewardRule:
    side = draw(st.sampled_from(RewardSide))
    kind = draw(st.sampled_from(RewardKind))
    fields: dict[str, Any] = {"id": rule_id, "side": side, "kind": kind}
    if kind in MONETARY_KINDS:
        if draw(st.booleans()):
            fields["percent"] = draw(st.sampled_from([0.5, 1, 2.5, 10, 12.5, 33.3, 100]))
        else:
            fields["amount_minor"] = draw(st.integers(1, 10_000))
    if side is RewardSide.REFERRER and draw(st.booleans()):
        fields["milestone"] = draw(st.integers(1, 6))
    fields["min_order_minor"] = draw(st.sampled_from([0, 0, 1000, 5000]))
    if draw(st.booleans()):
        fields["max_per_customer"] = draw(st.integers(1, 4))
    if draw(st.booleans()):
        fields["max_per_period"] = draw(st.integers(1, 3))
        fields["period_days"] = draw(st.integers(1, 60))
    return RewardRule(**fields)


@st.composite
def campaigns(draw: st.DrawFn) -> Campaign:
    count = draw(st.integers(0, len(RULE_IDS)))
    return make_campaign(
        id="spring",
        rewards=tuple(draw(rules(rule_id)) for rule_id in RULE_IDS[:count]),
        status=draw(st.sampled_from(CampaignStatus)),
        hold_days=draw(st.integers(0, 30)),
        review_days=draw(st.integers(1, 14)),
    )


@st.composite
def histories(draw: st.DrawFn) -> RewardHistory:
    def some_rewards(customer: str, side: RewardSide) -> tuple[Reward, ...]:
        drawn = draw(
            st.lists(
                st.tuples(
                    st.sampled_from((*RULE_IDS, "gone")),
                    st.sampled_from(RewardState),
                    st.integers(0, 90),
                    st.sampled_from(("order-0", "order-2", "order-1")),
                    st.sampled_from(("spring", "autumn")),
                ),
                max_size=8,
            )
        )
        return tuple(
            reward(
                rule_id,
                id=f"{customer}-{i}",
                customer_id=customer,
                side=side,
                state=state,
                created_at=AT - timedelta(days=days),
                conversion_id=conversion,
                campaign_id=campaign,
            )
            for i, (rule_id, state, days, conversion, campaign) in enumerate(drawn)
        )

    return history(
        draw(st.integers(0, 12)), some_rewards("jane", RewardSide.REFERRER), some_rewards("bob", RewardSide.FRIEND)
    )


inputs = st.fixed_dictionaries(
    {
        "campaign": campaigns(),
        "order": st.builds(order, amount_minor=st.integers(0, 20_000), currency=st.sampled_from(("EUR", "USD", "JPY"))),
        "attribution": st.one_of(st.none(), st.sampled_from(("jane", "bob")).map(attribution)),
        "verdict": st.one_of(st.none(), st.sampled_from(FraudAction).map(verdict)),
        "history": histories(),
    }
)


def run(case: dict[str, Any]) -> Settlement:
    return plan_rewards(case["campaign"], case["order"], case["attribution"], case["verdict"], case["history"], at=AT)


@PROPERTY
@given(case=inputs)
def test_a_rule_is_granted_at_most_once_per_order_with_unique_deterministic_ids(case: dict[str, Any]) -> None:
    settlement = run(case)
    rule_ids = [grant.rule_id for grant in settlement.grants]
    assert len(rule_ids) == len(set(rule_ids))
    assert len({grant.id for grant in settlement.grants}) == len(settlement.grants)
    assert all(grant.id == f"order-1:{grant.rule_id}" for grant in settlement.grants)


@PROPERTY
@given(case=inputs)
def test_every_grant_goes_to_the_referrer_or_the_friend_by_its_side(case: dict[str, Any]) -> None:
    settlement = run(case)
    for grant in settlement.grants:
        expected = case["attribution"].referrer_id if grant.side is RewardSide.REFERRER else "bob"
        assert grant.customer_id == expected
        assert grant.customer_id != "bob" or grant.side is RewardSide.FRIEND


@PROPERTY
@given(case=inputs)
def test_same_inputs_give_the_same_settlement_whatever_the_history_order(case: dict[str, Any]) -> None:
    first = run(case)
    assert run(case) == first
    shuffled = case["history"].model_copy(
        update={
            "referrer_rewards": case["history"].referrer_rewards[::-1],
            "friend_rewards": case["history"].friend_rewards[::-1],
        }
    )
    assert run({**case, "history": shuffled}) == first


@PROPERTY
@given(case=inputs)
def test_status_and_grant_states_agree(case: dict[str, Any]) -> None:
    settlement = run(case)
    if settlement.grants:
        assert settlement.status in {ConversionStatus.ATTRIBUTED, ConversionStatus.HELD}
    expected = RewardState.HELD if settlement.status is ConversionStatus.HELD else RewardState.PENDING
    assert all(grant.state is expected for grant in settlement.grants)
    assert all(grant.amount_minor > 0 for grant in settlement.grants if grant.kind in MONETARY_KINDS)


@PROPERTY
@given(case=inputs)
def test_the_explanation_agrees_with_the_grants_rule_by_rule(case: dict[str, Any]) -> None:
    result = evaluate_rewards(
        case["campaign"], case["order"], case["attribution"], case["verdict"], case["history"], at=AT
    )
    assert result.settlement == run(case)
    granted = {grant.rule_id for grant in result.settlement.grants}
    lines = explain_settlement(result, case["campaign"])
    assert len(lines) == 1 + len(case["campaign"].rewards)
    for rule, line in zip(case["campaign"].rewards, lines[1:], strict=True):
        paid = line.startswith((f"{rule.id}: pays ", f"{rule.id}: grants "))
        assert paid is (rule.id in granted)


@PROPERTY
@given(case=inputs)
def test_planning_again_with_this_orders_rewards_written_changes_nothing(case: dict[str, Any]) -> None:
    first = run(case)
    written = as_rewards(first.grants, AT)
    before = case["history"]
    after = before.model_copy(
        update={
            "referrer_rewards": before.referrer_rewards + tuple(r for r in written if r.side is RewardSide.REFERRER),
            "friend_rewards": before.friend_rewards + tuple(r for r in written if r.side is RewardSide.FRIEND),
        }
    )
    assert run({**case, "history": after}) == first
