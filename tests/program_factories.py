"""Builders for graph.program values with sensible defaults; override any field by keyword.

Times start at `factories.BASE_TIME`; ids come from the same process-wide counter as the graph builders.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from graph.model import Customer
from graph.program import (
    Attribution,
    Campaign,
    Click,
    Order,
    ReferralCode,
    Refund,
    RewardKind,
    RewardRule,
    RewardSide,
    Signal,
    SignalKind,
    Signup,
    TouchKind,
)
from tests.factories import BASE_TIME, _id, next_id


def make_rules() -> tuple[RewardRule, ...]:
    """Double-sided credit, a badge at the 3rd success and a bigger credit at the 10th."""
    return (
        RewardRule(
            id="referrer-credit",
            side=RewardSide.REFERRER,
            kind=RewardKind.CREDIT,
            amount_minor=1000,
            description="10 EUR credit",
            max_per_customer=50,
        ),
        RewardRule(
            id="friend-discount",
            side=RewardSide.FRIEND,
            kind=RewardKind.DISCOUNT,
            amount_minor=500,
            description="5 EUR off your first order",
        ),
        RewardRule(
            id="third-badge",
            side=RewardSide.REFERRER,
            kind=RewardKind.BADGE,
            milestone=3,
            description="Ambassador badge",
        ),
        RewardRule(
            id="tenth-bonus",
            side=RewardSide.REFERRER,
            kind=RewardKind.CASH,
            amount_minor=5000,
            milestone=10,
            description="50 EUR bonus",
        ),
    )


def make_campaign(**overrides: Any) -> Campaign:
    fields: dict[str, Any] = {
        "id": overrides.pop("id", None) or next_id("camp").lower(),
        "name": "Spring referral",
        "currency": "EUR",
        "landing_url": "/landing/{code}",
        "friend_offer": "5 EUR off your first order",
        "rewards": make_rules(),
        "hold_days": 14,
        "review_days": 7,
        "created_at": BASE_TIME,
    }
    fields.update(overrides)
    return Campaign(**fields)


def make_code(customer: Customer | str, campaign: Campaign | str, **overrides: Any) -> ReferralCode:
    fields: dict[str, Any] = {
        "code": overrides.pop("code", None) or f"C{next_id('')}X",
        "customer_id": _id(customer),
        "campaign_id": campaign if isinstance(campaign, str) else campaign.id,
        "created_at": BASE_TIME,
    }
    fields.update(overrides)
    return ReferralCode(**fields)


def make_click(code: ReferralCode | str, **overrides: Any) -> Click:
    fields: dict[str, Any] = {
        "id": overrides.pop("id", None) or f"click{next_id('')}",
        "code": code if isinstance(code, str) else code.code,
        "at": BASE_TIME + timedelta(hours=1),
        "visitor": f"v-{next_id('')}",
        "ip_hash": "ip-1",
        "source": "instagram.com",
    }
    fields.update(overrides)
    return Click(**fields)


def make_signup(customer: Customer | str, **overrides: Any) -> Signup:
    fields: dict[str, Any] = {
        "customer_id": _id(customer),
        "at": BASE_TIME + timedelta(hours=2),
        "signals": (Signal(kind=SignalKind.DEVICE, value=f"dev-{_id(customer)}"),),
    }
    fields.update(overrides)
    return Signup(**fields)


def make_order(customer: Customer | str, **overrides: Any) -> Order:
    fields: dict[str, Any] = {
        "id": overrides.pop("id", None) or next_id("order"),
        "customer_id": _id(customer),
        "amount_minor": 4200,
        "currency": "EUR",
        "at": BASE_TIME + timedelta(days=1),
    }
    fields.update(overrides)
    return Order(**fields)


def make_refund(order: Order | str, **overrides: Any) -> Refund:
    fields: dict[str, Any] = {
        "id": overrides.pop("id", None) or next_id("refund"),
        "order_id": order if isinstance(order, str) else order.id,
        "amount_minor": order.amount_minor if isinstance(order, Order) else 4200,
        "at": BASE_TIME + timedelta(days=5),
    }
    fields.update(overrides)
    return Refund(**fields)


def make_attribution(code: ReferralCode, **overrides: Any) -> Attribution:
    fields: dict[str, Any] = {
        "referrer_id": code.customer_id,
        "campaign_id": code.campaign_id,
        "code": code.code,
        "method": TouchKind.CLICK,
        "touched_at": BASE_TIME + timedelta(hours=1),
    }
    fields.update(overrides)
    return Attribution(**fields)
