"""The customer graph as values: customers, their events, and the edges between them.

Everything a store accepts is validated here once, so both stores (and every importer) agree on what a valid
customer or edge is. Bulk export for analysis uses plain named tuples instead, because building millions of
pydantic objects would cost more than the analysis itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")


def _check_id(value: str) -> str:
    if not _ID_PATTERN.match(value):
        raise ValueError("an id is 1-128 characters: letters, digits and . _ : @ + -, starting with a letter or digit")
    return value


CustomerId = Annotated[str, AfterValidator(_check_id)]
"""A customer's stable external id, as the merchant knows them."""

Scalar = str | int | Annotated[float, Field(allow_inf_nan=False)] | bool | None


@lru_cache(maxsize=1024)
def _is_time_zone(name: str) -> bool:
    """Cached because ZoneInfo keeps only a few zones and validating a million customers would reload files."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _utc(value: datetime) -> datetime:
    """Naive times are taken as UTC so that every stored time is comparable."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError("out of range once converted to UTC") from None


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class ContactChannel(StrEnum):
    """Channels on which the engine itself may contact a customer; each needs its own consent."""

    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    PUSH = "push"


class EdgeType(StrEnum):
    """Relationship types; Cypher takes labels and types from here, never from input."""

    REFERRED = "REFERRED"
    INFLUENCES = "INFLUENCES"


class ReferralStatus(StrEnum):
    """A friend's journey along a referral, in order; `reversed` undoes a conversion (refund, fraud)."""

    CLICKED = "clicked"
    SIGNED_UP = "signed_up"
    CONVERTED = "converted"
    REVERSED = "reversed"


class InfluenceKind(StrEnum):
    FOLLOWS = "follows"
    MENTIONS = "mentions"
    SHARES = "shares"
    CO_PURCHASE = "co_purchase"


class EventKind(StrEnum):
    """What a customer did that later analysis cares about.

    `rating` carries a satisfaction score in `value` (NPS 0-10); `review` may carry stars (1-5); `purchase` and
    `refund` carry an amount. `review`, `idea`, `feedback` and `content` are the prosumer signals.
    """

    PURCHASE = "purchase"
    REFUND = "refund"
    REVIEW = "review"
    IDEA = "idea"
    FEEDBACK = "feedback"
    CONTENT = "content"
    SHARE = "share"
    RATING = "rating"
    COMPLAINT = "complaint"


PROSUMER_EVENTS: frozenset[EventKind] = frozenset(
    {EventKind.REVIEW, EventKind.IDEA, EventKind.FEEDBACK, EventKind.CONTENT}
)


class Segment(StrEnum):
    INFLUENCER = "influencer"
    PROSUMER = "prosumer"
    ADVOCATE = "advocate"
    PASSIVE = "passive"
    DO_NOT_ASK = "do_not_ask"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Customer(_Model):
    """One person, identified by the merchant's id; personal fields are the ones erasure removes."""

    id: CustomerId
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    locale: str = Field(default="en", max_length=35, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
    timezone: str = "UTC"
    consent: dict[ContactChannel, bool] = Field(default_factory=dict)
    attributes: dict[str, Scalar] = Field(default_factory=dict)
    created_at: UtcDatetime | None = None

    @field_validator("name", "phone")
    @classmethod
    def _blank_is_unknown(cls, value: str | None) -> str | None:
        """A blank name or phone is no name or phone: a JSON line's `" "` and a CSV's empty cell store the same."""
        return value or None

    @field_validator("email")
    @classmethod
    def _email_shape(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", value):
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if not _is_time_zone(value):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)")
        return value

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        for key in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", key):
                raise ValueError(f"attribute name {key!r} must be an identifier of at most 64 characters")
        return value


class Event(_Model):
    """Something a customer did. `id` makes delivery idempotent: the same id twice is one event."""

    id: str = Field(min_length=1, max_length=128)
    customer_id: CustomerId
    kind: EventKind
    at: UtcDatetime
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None
    attributes: dict[str, Scalar] = Field(default_factory=dict)


class Referral(_Model):
    """`REFERRED` edge: referrer -> friend. One edge per pair; its status follows the friend's journey."""

    referrer_id: CustomerId
    friend_id: CustomerId
    code: str | None = Field(default=None, max_length=64)
    status: ReferralStatus = ReferralStatus.CLICKED
    at: UtcDatetime
    status_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _not_self(self) -> Referral:
        if self.referrer_id == self.friend_id:
            raise ValueError("a customer cannot refer themselves")
        return self


class Influence(_Model):
    """`INFLUENCES` edge: source -> target, one per (source, target, kind), weight > 0."""

    source_id: CustomerId
    target_id: CustomerId
    kind: InfluenceKind = InfluenceKind.FOLLOWS
    weight: float = Field(default=1.0, gt=0, le=1e6)
    at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _not_self(self) -> Influence:
        if self.source_id == self.target_id:
            raise ValueError("a customer cannot influence themselves (self-loop)")
        return self


class GraphBatch(_Model):
    """Rows written together in one transaction: all of them or none."""

    customers: list[Customer] = Field(default_factory=list)
    influences: list[Influence] = Field(default_factory=list)
    referrals: list[Referral] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)

    def __len__(self) -> int:
        return len(self.customers) + len(self.influences) + len(self.referrals) + len(self.events)


class CustomerScores(_Model):
    """What one analysis run concluded about one customer, with the reason in words."""

    customer_id: CustomerId
    run_id: str
    segment: Segment
    explanation: str = Field(max_length=2000)
    scores: dict[str, float] = Field(default_factory=dict)
    community: int | None = None


class AnalysisRun(_Model):
    """The record of one analysis: what was asked, how long each step took, and what came out."""

    id: str
    started_at: UtcDatetime
    finished_at: UtcDatetime | None = None
    status: str = Field(
        default="running",
        description="`running`, `done` or `failed`; a running record's `summary` names its step and `heartbeat_at`",
    )
    params: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)


class GraphStats(_Model):
    customers: int
    edges: dict[str, int]
    events: dict[str, int] = Field(default_factory=dict)
    erased: dict[str, int] = Field(default_factory=dict)


class ErasureReport(_Model):
    customer_id: str
    edges_removed: int
    events_removed: int


class EdgeRecord(NamedTuple):
    """One edge as exported for analysis. `label` is the influence kind or the referral status."""

    source: str
    target: str
    type: EdgeType
    label: str
    weight: float
    at: datetime | None


@dataclass(frozen=True, slots=True)
class EventSummary:
    """Per customer and event kind: how many, their summed value, and the latest time.

    A dataclass rather than a named tuple because `count` would shadow `tuple.count`.
    """

    customer_id: str
    kind: EventKind
    count: int
    total: float
    last_at: datetime | None


def utcnow() -> datetime:
    return datetime.now(UTC)
