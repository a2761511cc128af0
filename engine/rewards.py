"""What an attributed order earns: a pure plan over the campaign, the order, the verdict and the reward history.

`plan_rewards` runs inside the store's settlement transaction, perhaps more than once (Neo4j retries), so it reads
nothing but its arguments and returns the same `Settlement` for the same inputs. Each rule is evaluated once into
a `RuleOutcome` (a grant, or the reason there is none); the settlement and the marketer's explanation are both
read from those outcomes, so they cannot disagree.

Rewards of the order being planned are left out of the counts, so re-planning after its grants were written
yields the same grants (same ids), which the store issues once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from graph.errors import InvalidInput
from graph.program import (
    LIVE_REWARD_STATES,
    MONETARY_KINDS,
    Attribution,
    Campaign,
    CampaignStatus,
    ConversionStatus,
    FraudAction,
    FraudVerdict,
    Order,
    Reward,
    RewardGrant,
    RewardHistory,
    RewardRule,
    RewardSide,
    RewardState,
    Settlement,
)

_MINOR_DIGITS: Final[dict[str, int]] = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW"), 0),
    **dict.fromkeys(("PYG", "RWF", "UGX", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}
"""ISO 4217 currencies whose minor unit is not a hundredth; used only to write amounts for people."""


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """What one rule decided for one order: the grant, or None, and why, in a marketer's words."""

    rule: RewardRule
    grant: RewardGrant | None
    reason: str


@dataclass(frozen=True, slots=True)
class RewardPlan:
    """A settlement together with the per-rule outcomes it was built from."""

    settlement: Settlement
    outcomes: tuple[RuleOutcome, ...]


def reward_amount(rule: RewardRule, order: Order) -> int:
    """The reward's value in minor units: fixed, or a percent of the order rounded half-up; 0 if not monetary.

    >>> from datetime import UTC, datetime
    >>> from graph.program import RewardKind
    >>> rule = RewardRule(id="r", side=RewardSide.REFERRER, kind=RewardKind.CREDIT, percent=12.5)
    >>> reward_amount(rule, Order(id="o", customer_id="c", amount_minor=1004, currency="EUR",
    ...                            at=datetime(2024, 1, 1, tzinfo=UTC)))
    126
    """
    if rule.kind not in MONETARY_KINDS:
        return 0
    if rule.percent is None:
        return rule.amount_minor
    share = Decimal(order.amount_minor) * Decimal(str(rule.percent)) / 100
    return int(share.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def plan_rewards(
    campaign: Campaign,
    order: Order,
    attribution: Attribution | None,
    verdict: FraudVerdict | None,
    history: RewardHistory,
    *,
    at: datetime,
) -> Settlement:
    """The settlement the store writes for `order`: its status and the rewards to issue (see `evaluate_rewards`)."""
    plan = evaluate_rewards(campaign, order, attribution, verdict, history, at=at)
    return plan.settlement


def evaluate_rewards(
    campaign: Campaign,
    order: Order,
    attribution: Attribution | None,
    verdict: FraudVerdict | None,
    history: RewardHistory,
    *,
    at: datetime,
) -> RewardPlan:
    """`_decide`, with the settlement carrying the words of `explain_settlement` as its notes."""
    plan = _decide(campaign, order, attribution, verdict, history, at=at)
    notes = tuple(explain_settlement(plan, campaign))
    return RewardPlan(settlement=plan.settlement.model_copy(update={"notes": notes}), outcomes=plan.outcomes)


def _decide(
    campaign: Campaign,
    order: Order,
    attribution: Attribution | None,
    verdict: FraudVerdict | None,
    history: RewardHistory,
    *,
    at: datetime,
) -> RewardPlan:
    """Decide the conversion, then each rule of the campaign in order.

    Unattributed, rejected (fraud verdict or self-referral) and inactive-campaign conversions earn nothing. A
    held verdict holds every grant until `at + review_days`; every grant waits `hold_days` before approval.
    """
    at = _as_utc(at)
    if attribution is None:
        return _earns_nothing(Settlement(status=ConversionStatus.UNATTRIBUTED, verdict=verdict), campaign)
    if attribution.campaign_id != campaign.id:
        raise InvalidInput(f"the attribution is for campaign {attribution.campaign_id!r}, not {campaign.id!r}")
    rejected = (verdict is not None and verdict.action is FraudAction.REJECT) or (
        attribution.referrer_id == order.customer_id
    )
    if rejected:
        settlement = Settlement(status=ConversionStatus.REJECTED, attribution=attribution, verdict=verdict)
        return _earns_nothing(settlement, campaign)
    if campaign.status is not CampaignStatus.ACTIVE:
        settlement = Settlement(status=ConversionStatus.ATTRIBUTED, attribution=attribution, verdict=verdict)
        return _earns_nothing(settlement, campaign)
    held = verdict is not None and verdict.action is FraudAction.HOLD
    context = _Context(
        campaign=campaign,
        order=order,
        referrer_id=attribution.referrer_id,
        history=history,
        at=at,
        held=held,
    )
    outcomes = tuple(_evaluate(rule, context) for rule in campaign.rewards)
    settlement = Settlement(
        status=ConversionStatus.HELD if held else ConversionStatus.ATTRIBUTED,
        attribution=attribution,
        verdict=verdict,
        grants=tuple(outcome.grant for outcome in outcomes if outcome.grant is not None),
    )
    return RewardPlan(settlement=settlement, outcomes=outcomes)


def explain_settlement(settlement: Settlement | RewardPlan, campaign: Campaign) -> list[str]:
    """A summary line, then one line per rule saying why it paid or did not.

    Give the `RewardPlan` from `evaluate_rewards` for the exact reason of every unpaid rule. A bare `Settlement`
    (read back from the store) explains its status and its grants, but cannot tell a cap from a minimum order.
    """
    if isinstance(settlement, RewardPlan):
        plan = settlement
        settlement = plan.settlement
        reasons = {outcome.rule.id: outcome.reason for outcome in plan.outcomes}
    else:
        reasons = {}
    blocked = _blocked_reason(settlement, campaign)
    grants = {grant.rule_id: grant for grant in settlement.grants}
    lines = [_summary(settlement, blocked)]
    for rule in campaign.rewards:
        grant = grants.pop(rule.id, None)
        if rule.id in reasons:
            reason = reasons[rule.id]
        elif grant is not None:
            reason = _paid(grant)
        elif blocked is not None:
            reason = f"does not pay: {blocked}"
        else:
            reason = "did not pay for this order (the reason is known only when the settlement is planned)"
        lines.append(f"{rule.id}: {reason}.")
    lines.extend(f"{grant.rule_id}: {_paid(grant)} (rule no longer in the campaign)." for grant in grants.values())
    return lines


# --- one evaluation per rule -----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Context:
    campaign: Campaign
    order: Order
    referrer_id: str
    history: RewardHistory
    at: datetime
    held: bool

    def live(self, rule: RewardRule) -> list[Reward]:
        """Live rewards of `rule` already held by its beneficiary, this order's own left out."""
        rewards = self.history.referrer_rewards if rule.side is RewardSide.REFERRER else self.history.friend_rewards
        return [
            reward
            for reward in rewards
            if reward.rule_id == rule.id
            and reward.campaign_id == self.campaign.id
            and reward.state in LIVE_REWARD_STATES
            and reward.conversion_id != self.order.id
        ]


def _evaluate(rule: RewardRule, context: _Context) -> RuleOutcome:
    refusal = _refusal(rule, context)
    if refusal is not None:
        return RuleOutcome(rule=rule, grant=None, reason=f"does not pay: {refusal}")
    amount = reward_amount(rule, context.order)
    if rule.kind in MONETARY_KINDS and amount == 0:
        return RuleOutcome(rule=rule, grant=None, reason="does not pay: the amount rounds to zero")
    grant = _grant(rule, amount, context)
    return RuleOutcome(rule=rule, grant=grant, reason=_paid(grant))


def _refusal(rule: RewardRule, context: _Context) -> str | None:
    """Why `rule` does not pay for this order, or None when it does."""
    order = context.order
    if order.amount_minor < rule.min_order_minor:
        return (
            f"below the minimum order ({_money(order.amount_minor, order.currency)} < "
            f"{_money(rule.min_order_minor, order.currency)})"
        )
    live = context.live(rule)
    if rule.side is RewardSide.FRIEND:
        return "the friend already earned it on an earlier order" if live else None
    if rule.milestone is not None:
        success = context.history.successful_referrals + 1
        if success < rule.milestone:
            return f"milestone not reached (success {success} of {rule.milestone})"
        return "the referrer already earned this milestone" if live else None
    if rule.max_per_customer is not None and len(live) >= rule.max_per_customer:
        return f"cap reached ({len(live)} of at most {rule.max_per_customer} per referrer)"
    if rule.max_per_period is not None and rule.period_days is not None:
        since = context.at - timedelta(days=rule.period_days)
        recent = sum(reward.created_at >= since for reward in live)
        if recent >= rule.max_per_period:
            return f"period cap reached ({recent} of at most {rule.max_per_period} in {rule.period_days} days)"
    return None


def _grant(rule: RewardRule, amount: int, context: _Context) -> RewardGrant:
    order, campaign = context.order, context.campaign
    return RewardGrant(
        id=f"{order.id}:{rule.id}",
        customer_id=context.referrer_id if rule.side is RewardSide.REFERRER else order.customer_id,
        campaign_id=campaign.id,
        rule_id=rule.id,
        side=rule.side,
        kind=rule.kind,
        amount_minor=amount,
        currency=order.currency if rule.percent is not None else campaign.currency,
        description=rule.description,
        conversion_id=order.id,
        state=RewardState.HELD if context.held else RewardState.PENDING,
        approve_after=context.at + timedelta(days=campaign.hold_days),
        review_deadline=context.at + timedelta(days=campaign.review_days) if context.held else None,
    )


def _earns_nothing(settlement: Settlement, campaign: Campaign) -> RewardPlan:
    reason = f"does not pay: {_blocked_reason(settlement, campaign)}"
    return RewardPlan(
        settlement=settlement,
        outcomes=tuple(RuleOutcome(rule=rule, grant=None, reason=reason) for rule in campaign.rewards),
    )


# --- words ---------------------------------------------------------------------------------------------------
def _blocked_reason(settlement: Settlement, campaign: Campaign) -> str | None:
    """Why the whole conversion earns nothing, read from the settlement alone so a stored one explains the same."""
    if settlement.status is ConversionStatus.UNATTRIBUTED:
        return "no referral was attributed"
    if settlement.status is ConversionStatus.REJECTED:
        verdict = settlement.verdict
        if verdict is not None and verdict.action is FraudAction.REJECT:
            return "rejected by the fraud rules" + (f" ({'; '.join(verdict.reasons)})" if verdict.reasons else "")
        return "self-referral: the referrer placed the order"
    if campaign.status is not CampaignStatus.ACTIVE and not settlement.grants:
        return f"the campaign is {campaign.status.value}"
    return None


def _summary(settlement: Settlement, blocked: str | None) -> str:
    attribution = settlement.attribution
    if settlement.status is ConversionStatus.UNATTRIBUTED or attribution is None:
        return "Not attributed: no referral earned this order."
    credited = f"{attribution.referrer_id} through {attribution.code} ({attribution.method.value})"
    if settlement.status is ConversionStatus.REJECTED:
        return f"Rejected ({credited}): {blocked}."
    if blocked is not None:
        return f"Attributed to {credited}, but {blocked}: no reward."
    if settlement.status is ConversionStatus.HELD:
        verdict = settlement.verdict
        why = "; ".join(verdict.reasons) if verdict is not None and verdict.reasons else "fraud score"
        return f"Held for review ({credited}): {why}."
    return f"Attributed to {credited}: {len(settlement.grants)} reward(s)."


def _paid(grant: RewardGrant) -> str:
    who = "the referrer" if grant.side is RewardSide.REFERRER else "the friend"
    if grant.kind in MONETARY_KINDS:
        what = f"pays {_money(grant.amount_minor, grant.currency)} {grant.kind.value}"
    else:
        what = f"grants {grant.kind.value.replace('_', ' ')}"
    label = f" ({grant.description})" if grant.description else ""
    if grant.review_deadline is not None:
        when = f"held for review until {grant.review_deadline.date().isoformat()}"
    else:
        when = f"pending until {grant.approve_after.date().isoformat()}"
    return f"{what} to {who} {grant.customer_id}{label}, {when}"


def _money(amount_minor: int, currency: str) -> str:
    digits = _MINOR_DIGITS.get(currency, 2)
    value = Decimal(amount_minor).scaleb(-digits)
    return f"{value:,.{digits}f} {currency}"


def _as_utc(at: datetime) -> datetime:
    """Naive times are UTC, as everywhere in `graph.model`, so they compare with stored rewards."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at
