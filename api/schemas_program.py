"""Request and response shapes of the referral programme's HTTP API, with examples for the OpenAPI document.

Where a `graph.program` model is right as it is (`ReferralCode`, `Conversion`, `Reward`, `Refund`, ...), routes take
and return it unchanged, so the API cannot drift from the stores. The classes here cover the rest: input the
server completes (a campaign's creation time), optional extras (the customer record that may come with a signup
or an order), pages with a cursor, and read models that gather several records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from api.schemas import _In, _Out, problem_responses
from graph.model import Customer
from graph.program import (
    Attribution,
    AttributionSettings,
    Balance,
    Campaign,
    CampaignStatus,
    Conversion,
    Currency,
    FraudSettings,
    LeakVerdict,
    LedgerEntry,
    Order,
    ReferralCode,
    Reward,
    RewardRule,
    Signup,
    Slug,
)

# --- examples ----------------------------------------------------------------------------------------------
CAMPAIGN_EXAMPLE: dict[str, Any] = {
    "id": "spring-2024",
    "name": "Spring referral",
    "currency": "EUR",
    "landing_url": "/landing/{code}",
    "friend_offer": "5 EUR off your first order",
    "rewards": [
        {
            "id": "referrer-credit",
            "side": "referrer",
            "kind": "credit",
            "amount_minor": 1000,
            "description": "10 EUR credit",
            "max_per_customer": 50,
        },
        {
            "id": "friend-discount",
            "side": "friend",
            "kind": "discount",
            "amount_minor": 500,
            "description": "5 EUR off your first order",
        },
        {"id": "third-badge", "side": "referrer", "kind": "badge", "milestone": 3, "description": "Ambassador"},
    ],
    "attribution": {"window_days": 30, "model": "last_touch"},
    "hold_days": 14,
    "review_days": 7,
}

CODE_EXAMPLE: dict[str, Any] = {
    "code": "ADA7K2",
    "customer_id": "cust-0042",
    "campaign_id": "spring-2024",
    "status": "active",
    "vanity": False,
    "created_at": "2024-04-02T09:00:00Z",
    "expires_at": None,
    "status_at": None,
    "replaced_by": None,
}

CUSTOMER_EXAMPLE: dict[str, Any] = {"id": "cust-0107", "name": "Grace Hopper", "email": "grace@example.org"}

SIGNUP_EXAMPLE: dict[str, Any] = {
    "customer_id": "cust-0107",
    "at": "2024-04-03T18:20:00Z",
    "click_id": "gq3Yp0nM1eX5bV7sA2cD9w",
    "signals": [{"kind": "device", "value": "d41d8cd98f00b204"}],
    "customer": CUSTOMER_EXAMPLE,
}

ORDER_EXAMPLE: dict[str, Any] = {
    "id": "order-9001",
    "customer_id": "cust-0107",
    "amount_minor": 4200,
    "currency": "EUR",
    "at": "2024-04-04T10:00:00Z",
    "code": "ADA7K2",
    "click_id": None,
    "signals": [{"kind": "payment", "value": "fp-5e1f"}],
}

REFUND_EXAMPLE: dict[str, Any] = {
    "id": "refund-77",
    "order_id": "order-9001",
    "amount_minor": 4200,
    "at": "2024-04-08T12:00:00Z",
    "reason": "returned",
}

ATTRIBUTION_EXAMPLE: dict[str, Any] = {
    "referrer_id": "cust-0042",
    "campaign_id": "spring-2024",
    "code": "ADA7K2",
    "method": "checkout_code",
    "touched_at": "2024-04-04T10:00:00Z",
}

CONVERSION_EXAMPLE: dict[str, Any] = {
    "order": ORDER_EXAMPLE,
    "status": "attributed",
    "attribution": ATTRIBUTION_EXAMPLE,
    "verdict": {"action": "allow", "score": 0.0, "signals": []},
    "settled_at": "2024-04-04T10:00:01Z",
    "refunded_minor": 0,
    "reviewed_by": None,
    "review_note": None,
    "reward_ids": ["order-9001:referrer-credit", "order-9001:friend-discount"],
}

REWARD_EXAMPLE: dict[str, Any] = {
    "id": "order-9001:referrer-credit",
    "customer_id": "cust-0042",
    "campaign_id": "spring-2024",
    "rule_id": "referrer-credit",
    "side": "referrer",
    "kind": "credit",
    "amount_minor": 1000,
    "currency": "EUR",
    "description": "10 EUR credit",
    "conversion_id": "order-9001",
    "state": "pending",
    "created_at": "2024-04-04T10:00:01Z",
    "updated_at": "2024-04-04T10:00:01Z",
    "approve_after": "2024-04-18T10:00:01Z",
    "review_deadline": None,
}

LEDGER_ENTRY_EXAMPLE: dict[str, Any] = {
    "id": "order-9001:referrer-credit:pending",
    "reward_id": "order-9001:referrer-credit",
    "customer_id": "cust-0042",
    "from_state": None,
    "to_state": "pending",
    "amount_minor": 1000,
    "currency": "EUR",
    "at": "2024-04-04T10:00:01Z",
    "reason": "",
}

WEBHOOK_EVENT_EXAMPLE: dict[str, Any] = {
    "id": "evt-20240404-0001",
    "type": "order.paid",
    "created_at": "2024-04-04T10:00:02Z",
    "data": {
        "order_id": "order-9001",
        "customer": CUSTOMER_EXAMPLE,
        "amount": "42.00",
        "currency": "EUR",
        "paid_at": "2024-04-04T10:00:00Z",
        "referral_code": "ADA7K2",
        "click_id": None,
        "device_id": "d41d8cd98f00b204",
    },
}
"""Our signed envelope, read by `engine.webhooks.parse_event` (also `order.refunded`, `customer.signed_up`)."""


# --- shared -----------------------------------------------------------------------------------------------
def program_problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`problem_responses` plus the statuses only the programme's routes answer (signatures, a missing secret)."""
    responses = problem_responses(*statuses)
    described = {
        401: "The webhook signature is missing, wrong or too old",
        403: "This webhook source is not configured on the server",
        409: "In conflict with what is stored (a taken code, an id already used, a decision already made)",
    }
    for status, description in described.items():
        if status in responses:
            responses[status]["description"] = description
    return responses


# --- campaigns and codes -----------------------------------------------------------------------------------
class CampaignCreate(_In):
    """A new campaign: a `Campaign` without `created_at`, which the server sets."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [CAMPAIGN_EXAMPLE]})

    id: Slug
    name: str = Field(min_length=1, max_length=200)
    status: CampaignStatus = CampaignStatus.ACTIVE
    currency: Currency = "EUR"
    landing_url: str = Field(
        default="/landing/{code}",
        max_length=2000,
        description="Where `/r/{code}` redirects; `{code}` is replaced. Relative paths stay on this server.",
    )
    friend_offer: str = Field(default="", max_length=500, description="What the friend is offered, in words.")
    rewards: tuple[RewardRule, ...] = ()
    attribution: AttributionSettings = AttributionSettings()
    fraud: FraudSettings = FraudSettings()
    hold_days: int = Field(default=14, ge=0, le=365, description="A new reward stays pending this long.")
    review_days: int = Field(default=7, ge=1, le=365, description="A held reward not reviewed in time is rejected.")

    @model_validator(mode="after")
    def _a_valid_campaign(self) -> CampaignCreate:
        """The campaign-wide checks (unique rule ids, `{code}` in the landing URL) live in `Campaign` only."""
        self.campaign(created_at=datetime(2000, 1, 1))
        return self

    def campaign(self, *, created_at: datetime) -> Campaign:
        return Campaign.model_validate({**dict(self), "created_at": created_at})


class CampaignList(_Out):
    """Campaigns by creation time, oldest first."""

    items: list[Campaign]


class CodeRequest(_In):
    """Issue a code to an advocate: a generated one, or the vanity code asked for."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [{"campaign_id": "spring-2024"}, {"campaign_id": "spring-2024", "vanity": "ADA10"}]
        },
    )

    campaign_id: Slug
    vanity: str | None = Field(
        default=None, max_length=64, description="A code chosen by the advocate; refused with 409 if taken."
    )


class CodeList(_Out):
    """Codes by creation time, oldest first."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{"items": [CODE_EXAMPLE]}]})

    items: list[ReferralCode]


# --- signups, orders and refunds ---------------------------------------------------------------------------
def _check_same_customer(customer_id: str, customer: Customer | None) -> None:
    if customer is not None and customer.id != customer_id:
        raise ValueError(f"customer.id {customer.id!r} differs from customer_id {customer_id!r}")


class SignupRequest(Signup):
    """A `Signup`, with the friend's customer record when the store may not know them yet."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, json_schema_extra={"examples": [SIGNUP_EXAMPLE]}
    )

    customer: Customer | None = Field(
        default=None, description="Created when the store does not know `customer_id` yet; never overwrites."
    )

    @model_validator(mode="after")
    def _same_customer(self) -> SignupRequest:
        _check_same_customer(self.customer_id, self.customer)
        return self

    def signup(self) -> Signup:
        return Signup.model_validate(self.model_dump(exclude={"customer"}))


class OrderRequest(Order):
    """An `Order`, with the buyer's customer record when the store may not know them yet."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, json_schema_extra={"examples": [ORDER_EXAMPLE]}
    )

    customer: Customer | None = Field(
        default=None, description="Created when the store does not know `customer_id` yet; never overwrites."
    )

    @model_validator(mode="after")
    def _same_customer(self) -> OrderRequest:
        _check_same_customer(self.customer_id, self.customer)
        return self

    def order(self) -> Order:
        return Order.model_validate(self.model_dump(exclude={"customer"}))


class SignupResult(_Out):
    """Whom the signup was attributed to, if anyone (null: no usable code or click)."""

    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"customer_id": "cust-0107", "attribution": ATTRIBUTION_EXAMPLE}]}
    )

    customer_id: str
    attribution: Attribution | None


class ConversionPage(_Out):
    """Conversions in order-id order; pass `next` back as `after` for the next page (null on the last one)."""

    model_config = ConfigDict(
        frozen=True, json_schema_extra={"examples": [{"items": [CONVERSION_EXAMPLE], "next": "order-9001"}]}
    )

    items: list[Conversion]
    next: str | None


class WebhookOutcome(_Out):
    """What a webhook delivery did: the conversion of an order or refund, or the attribution of a signup."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"examples": [{"event": "order", "conversion": CONVERSION_EXAMPLE, "attribution": None}]},
    )

    event: Literal["order", "refund", "signup"]
    conversion: Conversion | None = None
    attribution: Attribution | None = None


# --- fraud review and leaks --------------------------------------------------------------------------------
class FraudCase(_Out):
    """A held conversion waiting for a marketer, with the rules that held it."""

    order_id: str
    buyer_id: str
    amount_minor: int
    currency: str
    ordered_at: datetime
    held_at: datetime | None
    referrer_id: str | None
    campaign_id: str | None
    code: str | None
    score: float | None
    reasons: list[str] = Field(description="`rule: detail` for each fraud signal, strongest first as scored.")

    @classmethod
    def of(cls, conversion: Conversion) -> FraudCase:
        attribution, verdict = conversion.attribution, conversion.verdict
        return cls(
            order_id=conversion.order.id,
            buyer_id=conversion.order.customer_id,
            amount_minor=conversion.order.amount_minor,
            currency=conversion.order.currency,
            ordered_at=conversion.order.at,
            held_at=conversion.settled_at,
            referrer_id=attribution.referrer_id if attribution else None,
            campaign_id=attribution.campaign_id if attribution else None,
            code=attribution.code if attribution else None,
            score=verdict.score if verdict else None,
            reasons=verdict.reasons if verdict else [],
        )


class FraudCasePage(_Out):
    """Held conversions in order-id order; pass `next` back as `after` for the next page."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "order_id": "order-9001",
                            "buyer_id": "cust-0107",
                            "amount_minor": 4200,
                            "currency": "EUR",
                            "ordered_at": "2024-04-04T10:00:00Z",
                            "held_at": "2024-04-04T10:00:01Z",
                            "referrer_id": "cust-0042",
                            "campaign_id": "spring-2024",
                            "code": "ADA7K2",
                            "score": 1.5,
                            "reasons": ["shared_payment: the friend's card is the referrer's"],
                        }
                    ],
                    "next": None,
                }
            ]
        },
    )

    items: list[FraudCase]
    next: str | None


class ReviewDecision(_In):
    """A marketer's decision on a held conversion: approve pays its rewards after the hold, reject never does."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"examples": [{"approve": False, "reviewer": "maria", "note": "same card as the referrer"}]},
    )

    approve: bool
    reviewer: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=1000)


class LeakScan(_Out):
    """Codes whose traffic looks posted publicly in the last `days`, most suspicious first."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "days": 7,
                    "items": [
                        {
                            "code": "ADA7K2",
                            "leaked": True,
                            "score": 2.4,
                            "reasons": ["412 clicks from 380 visitors, 0.2% converted", "7 referring sites"],
                        }
                    ],
                }
            ]
        },
    )

    days: int
    items: list[LeakVerdict]


# --- rewards and the ledger --------------------------------------------------------------------------------
class RewardList(_Out):
    """Rewards by creation time, then id."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{"items": [REWARD_EXAMPLE]}]})

    items: list[Reward]


class Ledger(_Out):
    """A customer's ledger entries in the order they were written, and the balances they add up to."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-0042",
                    "entries": [LEDGER_ENTRY_EXAMPLE],
                    "balances": [
                        {
                            "customer_id": "cust-0042",
                            "currency": "EUR",
                            "by_state": {
                                "held": 0,
                                "pending": 1000,
                                "approved": 0,
                                "fulfilled": 0,
                                "reversed": 0,
                                "rejected": 0,
                            },
                        }
                    ],
                }
            ]
        },
    )

    customer_id: str
    entries: list[LedgerEntry]
    balances: list[Balance]


class AdvanceResult(_Out):
    """Rewards that time moved on: approved after their hold, or rejected after an unreviewed hold."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={"examples": [{"moved": [{**REWARD_EXAMPLE, "state": "approved"}]}]},
    )

    moved: list[Reward]


class FulfilmentResult(_Out):
    """Rewards paid out in this run, and why the others were not (they stay approved for the next run)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "fulfilled": ["order-9001:referrer-credit"],
                    "failed": {"order-9002:referrer-credit": "fulfiller answered 503"},
                }
            ]
        },
    )

    fulfilled: list[str]
    failed: dict[str, str]
