"""The referral programme as values: campaigns, codes, clicks, orders, conversions, rewards and the ledger.

These records live in the same store as the customer graph (Neo4j or SQLite), beside the customers they
belong to, so that fraud rings and cascades are graph patterns rather than joins across systems. Money is
always an integer amount in minor units (cents) with an ISO 4217 currency: no float ever touches a balance.

A reward moves through the states of `RewardState` along `REWARD_TRANSITIONS` only; each move is one
`LedgerEntry`, and a reward reaches each state at most once, so an entry's key is `<reward id>:<state>`.
Balances are derived from entries, never stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from graph.model import CustomerId, UtcDatetime

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_CODE = re.compile(r"^[A-Z0-9]{4,32}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def _check_slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError("an id here is 1-64 characters: lower-case letters, digits, _ and -, starting alphanumeric")
    return value


def normalise_code(value: str) -> str:
    """Codes are case-insensitive and forgiving of separators people type: `jane-10 ` is `JANE10`.

    >>> normalise_code(" jane-10 ")
    'JANE10'
    """
    return re.sub(r"[\s_-]+", "", value).upper()


def _check_code(value: str) -> str:
    value = normalise_code(value)
    if not _CODE.match(value):
        raise ValueError("a referral code is 4-32 letters or digits (separators - and _ are ignored)")
    return value


def _check_currency(value: str) -> str:
    value = value.upper()
    if not _CURRENCY.match(value):
        raise ValueError("a currency is a three-letter ISO 4217 code such as EUR")
    return value


Slug = Annotated[str, AfterValidator(_check_slug)]
Code = Annotated[str, AfterValidator(_check_code)]
Currency = Annotated[str, AfterValidator(_check_currency)]
MinorUnits = Annotated[int, Field(ge=0, le=10**12)]
"""An amount of money in the currency's minor unit (cents)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --- campaigns and reward rules ------------------------------------------------------------------------------
class CampaignStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    ENDED = "ended"


class RewardSide(StrEnum):
    REFERRER = "referrer"
    FRIEND = "friend"


class RewardKind(StrEnum):
    """Money-like kinds carry an amount; the others are recognition and belonging, worth as much to advocates."""

    CREDIT = "credit"
    DISCOUNT = "discount"
    CASH = "cash"
    BADGE = "badge"
    EARLY_ACCESS = "early_access"
    CO_CREATION = "co_creation"


MONETARY_KINDS: Final[frozenset[RewardKind]] = frozenset({RewardKind.CREDIT, RewardKind.DISCOUNT, RewardKind.CASH})


class RewardRule(_Model):
    """One reward a conversion may earn.

    `milestone=n` (referrer side only) pays once, at the referrer's n-th successful referral in the campaign,
    so "a bigger reward at the 3rd and 10th" is two rules. Without it the rule pays on every successful
    referral, up to `max_per_customer` in total and `max_per_period` within any `period_days`. A friend-side
    rule pays on the friend's first attributed order only. `percent` pays a share of the order amount instead
    of a fixed `amount_minor` (monetary kinds only).
    """

    id: Slug
    side: RewardSide
    kind: RewardKind
    amount_minor: MinorUnits = 0
    percent: float | None = Field(default=None, gt=0, le=100)
    description: str = Field(default="", max_length=200)
    milestone: int | None = Field(default=None, ge=1, le=1_000_000)
    min_order_minor: MinorUnits = 0
    max_per_customer: int | None = Field(default=None, ge=1)
    max_per_period: int | None = Field(default=None, ge=1)
    period_days: int | None = Field(default=None, ge=1, le=3660)

    @model_validator(mode="after")
    def _coherent(self) -> RewardRule:
        monetary = self.kind in MONETARY_KINDS
        if monetary and not self.amount_minor and self.percent is None:
            raise ValueError(f"a {self.kind} reward needs amount_minor or percent")
        if not monetary and (self.amount_minor or self.percent is not None):
            raise ValueError(f"a {self.kind} reward carries no amount")
        if self.amount_minor and self.percent is not None:
            raise ValueError("give amount_minor or percent, not both")
        if self.milestone is not None and self.side is not RewardSide.REFERRER:
            raise ValueError("milestones count a referrer's successes; a friend-side rule cannot have one")
        if (self.max_per_period is None) != (self.period_days is None):
            raise ValueError("max_per_period and period_days go together")
        return self


class AttributionModel(StrEnum):
    LAST_TOUCH = "last_touch"
    FIRST_TOUCH = "first_touch"


class AttributionSettings(_Model):
    """Which touch earns a conversion. An explicit code at checkout always wins over link clicks."""

    window_days: int = Field(default=30, ge=1, le=365)
    model: AttributionModel = AttributionModel.LAST_TOUCH


class FraudSettings(_Model):
    """Thresholds of the fraud rules (see `engine.fraud`); a verdict at or above `hold_score` is held."""

    hold_score: float = Field(default=1.0, gt=0)
    velocity_window_hours: int = Field(default=24, ge=1, le=24 * 90)
    velocity_max_conversions: int = Field(default=10, ge=1)
    ring_max_hops: int = Field(default=4, ge=2, le=10)
    new_account_days: int = Field(default=7, ge=0, le=365)
    dense_cluster_min_size: int = Field(default=4, ge=3)
    dense_cluster_min_density: float = Field(default=0.5, gt=0, le=1)
    leak_min_clicks: int = Field(default=50, ge=1)
    leak_min_distinct_visitors: int = Field(default=30, ge=1)
    leak_max_conversion_rate: float = Field(default=0.02, ge=0, le=1)
    leak_min_sources: int = Field(default=3, ge=1)


class Campaign(_Model):
    """A referral programme: the friend's offer, how conversions are attributed, and what rewards they earn."""

    id: Slug
    name: str = Field(min_length=1, max_length=200)
    status: CampaignStatus = CampaignStatus.ACTIVE
    currency: Currency = "EUR"
    landing_url: str = Field(default="/landing/{code}", max_length=2000)
    """Where `/r/{code}` redirects; `{code}` is replaced. Relative paths stay on this server."""
    friend_offer: str = Field(default="", max_length=500)
    rewards: tuple[RewardRule, ...] = ()
    attribution: AttributionSettings = AttributionSettings()
    fraud: FraudSettings = FraudSettings()
    hold_days: int = Field(default=14, ge=0, le=365)
    """A new reward stays pending this long (the merchant's return window) before it is approved."""
    review_days: int = Field(default=7, ge=1, le=365)
    """A held reward not reviewed within this many days is rejected: it never pays out by default."""
    created_at: UtcDatetime

    @model_validator(mode="after")
    def _unique_rule_ids(self) -> Campaign:
        ids = [rule.id for rule in self.rewards]
        if len(ids) != len(set(ids)):
            raise ValueError("reward rule ids must be unique within a campaign")
        if "{code}" not in self.landing_url:
            raise ValueError("landing_url must contain {code}")
        if not (re.match(r"^/(?![/\\])", self.landing_url) or re.match(r"^https?://", self.landing_url)):
            raise ValueError("landing_url is a path on this server or an http(s) URL (`//host` leaves the site)")
        return self

    def rule(self, rule_id: str) -> RewardRule | None:
        return next((rule for rule in self.rewards if rule.id == rule_id), None)


# --- codes and clicks ---------------------------------------------------------------------------------------
class CodeStatus(StrEnum):
    """`paused` and `revoked` codes stop attributing new visitors; friends who touched them before keep theirs."""

    ACTIVE = "active"
    PAUSED = "paused"
    REVOKED = "revoked"


class ReferralCode(_Model):
    code: Code
    customer_id: CustomerId
    campaign_id: Slug
    status: CodeStatus = CodeStatus.ACTIVE
    vanity: bool = False
    created_at: UtcDatetime
    expires_at: UtcDatetime | None = None
    status_at: UtcDatetime | None = None
    """When the status last changed: touches after it on a paused or revoked code do not attribute."""
    replaced_by: Code | None = None
    """Set when the code was rotated: the advocate's new code."""

    def usable_at(self, at: datetime) -> bool:
        """Whether a new touch at `at` may be attributed through this code."""
        if self.expires_at is not None and at >= self.expires_at:
            return False
        if self.status is CodeStatus.ACTIVE:
            return True
        return self.status_at is not None and at < self.status_at


class Click(_Model):
    """A visit through `/r/{code}`. No raw IP is kept: `visitor` and `ip_hash` are keyed hashes."""

    id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    code: Code
    at: UtcDatetime
    visitor: str = Field(min_length=1, max_length=128)
    """Keyed hash of what identifies the browser (IP + user agent, or a first-party cookie)."""
    ip_hash: str | None = Field(default=None, max_length=128)
    source: str | None = Field(default=None, max_length=255)
    """The referring host (`reddit.com`), lower-case, or None when the browser sent none."""
    customer_id: CustomerId | None = None
    """Set when the visitor is a known, signed-in customer."""


# --- identity signals, signups and orders -------------------------------------------------------------------
class SignalKind(StrEnum):
    """Facts that tie accounts to one person; shared values are what self-referral and rings are made of."""

    EMAIL = "email"
    PHONE = "phone"
    DEVICE = "device"
    PAYMENT = "payment"
    IP = "ip"


class Signal(_Model):
    """One identity fact, already normalised (`engine.fraud.normalise_email`) or hashed by the caller."""

    kind: SignalKind
    value: str = Field(min_length=1, max_length=256)


class Signup(_Model):
    """A friend created an account, perhaps through a code or a click (`click_id` from the `/r/` cookie)."""

    customer_id: CustomerId
    at: UtcDatetime
    code: Code | None = None
    click_id: str | None = Field(default=None, max_length=64)
    signals: tuple[Signal, ...] = ()


class Order(_Model):
    """A purchase as the merchant reports it. `id` is the merchant's order id and makes delivery idempotent."""

    id: str = Field(min_length=1, max_length=128)
    customer_id: CustomerId
    amount_minor: MinorUnits
    currency: Currency
    at: UtcDatetime
    code: Code | None = None
    """A code the buyer typed at checkout."""
    click_id: str | None = Field(default=None, max_length=64)
    signals: tuple[Signal, ...] = ()


class Refund(_Model):
    """Money returned on an order; `id` makes delivery idempotent. Cumulative refunds of the whole amount reverse."""

    id: str = Field(min_length=1, max_length=128)
    order_id: str = Field(min_length=1, max_length=128)
    amount_minor: MinorUnits
    at: UtcDatetime
    reason: str = Field(default="refund", max_length=200)


# --- attribution and fraud ------------------------------------------------------------------------------------
class TouchKind(StrEnum):
    CLICK = "click"
    SIGNUP_CODE = "signup_code"
    CHECKOUT_CODE = "checkout_code"


class Touch(_Model):
    """One way a friend met a referrer's code, as the store found it for attribution."""

    kind: TouchKind
    code: Code
    referrer_id: CustomerId
    campaign_id: Slug
    at: UtcDatetime
    usable: bool
    """Whether the code could attribute at that moment (`ReferralCode.usable_at`)."""
    click_id: str | None = None


class Attribution(_Model):
    referrer_id: CustomerId
    campaign_id: Slug
    code: Code
    method: TouchKind
    touched_at: UtcDatetime


class FraudAction(StrEnum):
    """Rules never drop a conversion silently: `hold` waits for a marketer, `reject` records its reasons."""

    ALLOW = "allow"
    HOLD = "hold"
    REJECT = "reject"


class FraudSignal(_Model):
    rule: str = Field(max_length=64)
    weight: float
    detail: str = Field(max_length=500)


class FraudVerdict(_Model):
    action: FraudAction
    score: float
    signals: tuple[FraudSignal, ...] = ()

    @property
    def reasons(self) -> list[str]:
        return [f"{s.rule}: {s.detail}" for s in self.signals]


class ReferralLink(_Model):
    """One `REFERRED` edge as fraud rules see it."""

    referrer_id: str
    friend_id: str
    at: datetime


class FraudContext(_Model):
    """Everything the fraud rules look at for one attributed order, loaded by the store."""

    order: Order
    attribution: Attribution
    referrer_signals: tuple[Signal, ...]
    friend_signals: tuple[Signal, ...]
    """The friend's stored signals plus those on the order."""
    shared_signals: dict[SignalKind, tuple[str, ...]]
    """For each signal kind, other customers (not the friend) holding one of the friend's values."""
    friend_created_at: datetime | None
    code_conversions_in_window: int
    """Conversions already settled through the same code within `FraudSettings.velocity_window_hours`."""
    neighbourhood: tuple[ReferralLink, ...]
    """`REFERRED` edges within `ring_max_hops` of the referrer or the friend (either direction)."""
    customer_created_at: dict[str, datetime | None] = Field(default_factory=dict)
    """Creation times of the customers in `neighbourhood`, for "dense clusters of new accounts"."""


class CodeActivity(_Model):
    """What happened on one code in a window, for leak detection."""

    code: Code
    customer_id: CustomerId
    campaign_id: Slug
    status: CodeStatus
    clicks: int
    distinct_visitors: int
    distinct_ips: int
    sources: dict[str, int]
    """Clicks per referring host; the empty string counts clicks that sent no referrer."""
    signups: int
    conversions: int


class LeakVerdict(_Model):
    code: Code
    leaked: bool
    score: float
    reasons: tuple[str, ...]


# --- conversions, rewards and the ledger ---------------------------------------------------------------------
class ConversionStatus(StrEnum):
    """`pending` until settled; `attributed` earns rewards; `held` waits for review; `reversed` was refunded."""

    PENDING = "pending"
    UNATTRIBUTED = "unattributed"
    ATTRIBUTED = "attributed"
    HELD = "held"
    REJECTED = "rejected"
    REVERSED = "reversed"


class Conversion(_Model):
    """An order and what the engine decided about it."""

    order: Order
    status: ConversionStatus = ConversionStatus.PENDING
    attribution: Attribution | None = None
    verdict: FraudVerdict | None = None
    settled_at: UtcDatetime | None = None
    refunded_minor: MinorUnits = 0
    reviewed_by: str | None = None
    review_note: str | None = Field(default=None, max_length=1000)
    reward_ids: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    """The settlement's notes: why each reward rule paid or did not."""

    @property
    def id(self) -> str:
        return self.order.id


class RewardState(StrEnum):
    HELD = "held"
    PENDING = "pending"
    APPROVED = "approved"
    FULFILLED = "fulfilled"
    REVERSED = "reversed"
    REJECTED = "rejected"


REWARD_TRANSITIONS: Final[dict[RewardState | None, frozenset[RewardState]]] = {
    None: frozenset({RewardState.HELD, RewardState.PENDING}),
    RewardState.HELD: frozenset({RewardState.PENDING, RewardState.REJECTED}),
    RewardState.PENDING: frozenset({RewardState.APPROVED, RewardState.REVERSED}),
    RewardState.APPROVED: frozenset({RewardState.FULFILLED, RewardState.REVERSED}),
    RewardState.FULFILLED: frozenset({RewardState.REVERSED}),
    RewardState.REVERSED: frozenset(),
    RewardState.REJECTED: frozenset(),
}
"""The only moves a reward may make; `None` is "not yet issued". The graph is acyclic, so each state is
reached at most once and `<reward id>:<state>` identifies a ledger entry."""

LIVE_REWARD_STATES: Final[frozenset[RewardState]] = frozenset(
    {RewardState.HELD, RewardState.PENDING, RewardState.APPROVED, RewardState.FULFILLED}
)


class RewardGrant(_Model):
    """A reward the rules decided to issue; the store turns it into a `Reward` if its id is new."""

    id: str = Field(min_length=1, max_length=300)
    """Deterministic: `<conversion id>:<rule id>`; issuing the same grant twice is one reward."""
    customer_id: CustomerId
    campaign_id: Slug
    rule_id: Slug
    side: RewardSide
    kind: RewardKind
    amount_minor: MinorUnits
    currency: Currency
    description: str = ""
    conversion_id: str
    state: RewardState
    """`pending` normally, `held` while the conversion awaits review."""
    approve_after: UtcDatetime
    review_deadline: UtcDatetime | None = None


class Reward(_Model):
    id: str
    customer_id: str
    """The tombstone `erased` once the person was erased; the amount stays for the accounts."""
    campaign_id: str
    rule_id: str
    side: RewardSide
    kind: RewardKind
    amount_minor: MinorUnits
    currency: Currency
    description: str = ""
    conversion_id: str
    state: RewardState
    created_at: UtcDatetime
    updated_at: UtcDatetime
    approve_after: UtcDatetime
    review_deadline: UtcDatetime | None = None


class LedgerEntry(_Model):
    """One move of one reward. `id` is `<reward id>:<to_state>`."""

    id: str
    reward_id: str
    customer_id: str
    from_state: RewardState | None
    to_state: RewardState
    amount_minor: MinorUnits
    currency: Currency
    at: UtcDatetime
    reason: str = Field(default="", max_length=500)


class RewardHistory(_Model):
    """What reward rules must know about the people in a conversion, read under their locks."""

    successful_referrals: int
    """The referrer's friends with a live (attributed or held) conversion in the campaign, this friend excluded."""
    referrer_rewards: tuple[Reward, ...]
    """The referrer's rewards in the campaign, every state."""
    friend_rewards: tuple[Reward, ...]
    """The friend's friend-side rewards in the campaign, every state."""


class Settlement(_Model):
    """The outcome the store writes for a conversion, all at once."""

    status: ConversionStatus
    attribution: Attribution | None = None
    verdict: FraudVerdict | None = None
    grants: tuple[RewardGrant, ...] = ()
    notes: tuple[str, ...] = ()
    """Why each reward rule paid or did not (cap reached, below the minimum order...), for marketers."""


class Balance(_Model):
    """A customer's rewards in one currency, by state, derived from ledger entries."""

    customer_id: str
    currency: Currency
    by_state: dict[RewardState, int]


# --- metrics input ------------------------------------------------------------------------------------------
class ProgramCounts(_Model):
    """Aggregates a store computes for metrics, per campaign (or overall when `campaign_id` is None)."""

    campaign_id: str | None
    customers: int
    advocates_with_code: int
    advocates_sharing: int
    """Code owners whose code got at least one click."""
    clicks: int
    distinct_visitors: int
    signups: int
    conversions: dict[ConversionStatus, int]
    reward_cost_minor: dict[str, dict[RewardState, int]]
    """Currency -> state -> summed amount of rewards."""


def ledger_entry_id(reward_id: str, state: RewardState) -> str:
    return f"{reward_id}:{state.value}"


def check_transition(reward_id: str, current: RewardState | None, target: RewardState) -> None:
    """Raise `LedgerConflict` unless `REWARD_TRANSITIONS` allows `current -> target`."""
    from graph.errors import LedgerConflict

    if target not in REWARD_TRANSITIONS[current]:
        was = current.value if current is not None else "not issued"
        raise LedgerConflict(f"reward {reward_id!r} cannot move from {was} to {target.value}")


def balances_from_entries(entries: Iterable[LedgerEntry]) -> list[Balance]:
    """Each entry moves its amount out of `from_state` and into `to_state`; what is left is the balance.

    >>> from datetime import UTC, datetime
    >>> t = datetime(2024, 1, 1, tzinfo=UTC)
    >>> e = [LedgerEntry(id="r:pending", reward_id="r", customer_id="a", from_state=None,
    ...                  to_state=RewardState.PENDING, amount_minor=500, currency="EUR", at=t),
    ...      LedgerEntry(id="r:approved", reward_id="r", customer_id="a", from_state=RewardState.PENDING,
    ...                  to_state=RewardState.APPROVED, amount_minor=500, currency="EUR", at=t)]
    >>> balances_from_entries(e)[0].by_state[RewardState.APPROVED]
    500
    """
    totals: dict[tuple[str, str], dict[RewardState, int]] = {}
    for entry in entries:
        states = totals.setdefault((entry.customer_id, entry.currency), dict.fromkeys(RewardState, 0))
        if entry.from_state is not None:
            states[entry.from_state] -= entry.amount_minor
        states[entry.to_state] += entry.amount_minor
    return [
        Balance(customer_id=customer_id, currency=currency, by_state=states)
        for (customer_id, currency), states in sorted(totals.items())
    ]


def _id_pattern(customer_id: str) -> re.Pattern[str]:
    """The id as a whole token: `c1` must not match inside `c10` or `abc1`."""
    return re.compile(rf"(?<![A-Za-z0-9._:@+-]){re.escape(customer_id)}(?![A-Za-z0-9._:@+-])")


def scrub_text(text: str, customer_id: str, tombstone: str) -> str:
    """`text` with every whole-token mention of `customer_id` replaced by `tombstone`."""
    return _id_pattern(customer_id).sub(tombstone, text)


def scrub_verdict(verdict: FraudVerdict, customer_id: str, tombstone: str) -> FraudVerdict:
    signals = tuple(
        s.model_copy(update={"detail": scrub_text(s.detail, customer_id, tombstone)}) for s in verdict.signals
    )
    return verdict.model_copy(update={"signals": signals})


def scrub_conversion(conversion: Conversion, customer_id: str, tombstone: str) -> Conversion:
    """The conversion with every mention of `customer_id` replaced by `tombstone`.

    Fraud details name the accounts they saw ("shares a device with c123"), so erasing a person must rewrite
    other people's conversions too, not only delete the person's own records.

    >>> from datetime import UTC, datetime
    >>> v = FraudVerdict(action=FraudAction.HOLD, score=1, signals=(
    ...     FraudSignal(rule="r", weight=1, detail="c1 shares a device with c10"),))
    >>> o = Order(id="o", customer_id="c10", amount_minor=1, currency="EUR", at=datetime(2024, 1, 1, tzinfo=UTC))
    >>> scrub_conversion(Conversion(order=o, verdict=v), "c1", "erased").verdict.signals[0].detail
    'erased shares a device with c10'
    """
    update: dict[str, object] = {}
    if conversion.verdict is not None:
        update["verdict"] = scrub_verdict(conversion.verdict, customer_id, tombstone)
    if conversion.review_note:
        update["review_note"] = scrub_text(conversion.review_note, customer_id, tombstone)
    update["notes"] = tuple(scrub_text(note, customer_id, tombstone) for note in conversion.notes)
    if conversion.attribution is not None and conversion.attribution.referrer_id == customer_id:
        update["attribution"] = conversion.attribution.model_copy(update={"referrer_id": tombstone})
    return conversion.model_copy(update=update)
