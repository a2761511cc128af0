"""Request and response shapes for what the API says about and around one customer: relationships, events,
segments, contact preferences and material for a friend, each with examples for the OpenAPI document.

Edges and events are the `graph.model` classes themselves (`Referral`, `Influence`, `Event`), so the API checks a
row exactly as the stores and the importer do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import ConfigDict, Field, ValidationError

from api.schemas import _Out, _TextIn
from engine.preferences import ContactPreferences
from engine.relationships import Direction, Relationship
from engine.segment_catalog import SegmentOverview
from graph.errors import NotFound
from graph.model import (
    ContactChannel,
    CustomerScores,
    EdgeType,
    Event,
    EventKind,
    Influence,
    InfluenceKind,
    Referral,
    ReferralStatus,
    Scalar,
    Segment,
    UtcDatetime,
)
from graph.outreach import ShareChannel
from graph.program import Slug

T = TypeVar("T")

MAX_BATCH = 10_000
"""Rows of each kind in one request body (`POST /v1/relationships`, `POST /v1/import`): one request is one
transaction holding the store's write lock. Larger loads go through the CLI importer."""
BatchRows = Annotated[list[T], Field(max_length=MAX_BATCH)]
"""One kind of rows in a request body; a longer list is refused (422 naming it) before its rows are validated."""


# --- relationships -----------------------------------------------------------------------------------------
RELATIONSHIP_EXAMPLES: list[Any] = [
    {
        "type": "REFERRED",
        "direction": "out",
        "customer_id": "cust-0007",
        "status": "converted",
        "kind": None,
        "weight": None,
        "at": "2024-05-02T12:00:00Z",
    },
    {
        "type": "INFLUENCES",
        "direction": "in",
        "customer_id": "cust-0113",
        "status": None,
        "kind": "follows",
        "weight": 1.0,
        "at": None,
    },
]

RELATIONSHIP_BATCH_EXAMPLE: dict[str, Any] = {
    "referrals": [
        {
            "referrer_id": "cust-0042",
            "friend_id": "cust-0007",
            "code": "ADA7K2",
            "status": "signed_up",
            "at": "2024-05-02T12:00:00Z",
        }
    ],
    "influences": [{"source_id": "cust-0042", "target_id": "cust-0007", "kind": "mentions", "weight": 2.5}],
}


class RelationshipOut(_Out):
    """One edge seen from the customer in the path: which way it points and who is at its other end."""

    type: EdgeType
    direction: Direction = Field(
        description="`out`: this customer referred or influences the other; `in`: the reverse."
    )
    customer_id: str = Field(description="The customer at the other end.")
    status: ReferralStatus | None = Field(
        description="A referral's status: how far the friend got. Null for influences."
    )
    kind: InfluenceKind | None = Field(description="An influence's kind. Null for referrals.")
    weight: float | None = Field(description="An influence's weight. Null for referrals.")
    at: datetime | None = Field(description="When the referral started or the influence was seen.")

    @classmethod
    def of(cls, relationship: Relationship) -> RelationshipOut:
        referral = relationship.type is EdgeType.REFERRED
        return cls(
            type=relationship.type,
            direction=relationship.direction,
            customer_id=relationship.customer_id,
            status=ReferralStatus(relationship.label) if referral else None,
            kind=None if referral else InfluenceKind(relationship.label),
            weight=None if referral else relationship.weight,
            at=relationship.at,
        )


class RelationshipPage(_Out):
    """A customer's relationships by type, direction and the other customer's id; pass `next` back as `after`."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [{"customer_id": "cust-0042", "items": RELATIONSHIP_EXAMPLES, "next": "UkVGRVJSRUQ"}]
        },
    )

    customer_id: str
    items: list[RelationshipOut]
    next: str | None = Field(description="Opaque; null on the last page.")


class RelationshipBatch(_TextIn):
    """Referrals and influences to create or update together: all of them, or none when a row is wrong."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        json_schema_extra={"examples": [RELATIONSHIP_BATCH_EXAMPLE]},
    )

    referrals: BatchRows[Referral] = Field(default_factory=list, description="Keyed by (referrer_id, friend_id).")
    influences: BatchRows[Influence] = Field(default_factory=list, description="Keyed by (source_id, target_id, kind).")


class RelationshipBatchResult(_Out):
    """How many rows of each kind the batch wrote, in one transaction."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [{"referrals": 1, "influences": 1}]})

    referrals: int
    influences: int


# --- events ------------------------------------------------------------------------------------------------
EVENT_EXAMPLE: dict[str, Any] = {
    "id": "order-9001-line-1",
    "kind": "purchase",
    "at": "2024-05-03T18:20:00Z",
    "value": 89.9,
    "attributes": {"product": "Trail shoes", "sku": "TS-1"},
}


class EventCreate(_TextIn):
    """An event of the customer in the path. The same `id` sent again is one event (a redelivery)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, json_schema_extra={"examples": [EVENT_EXAMPLE]}
    )

    id: str = Field(min_length=1, max_length=128, description="Unique across every customer's events.")
    kind: EventKind
    at: UtcDatetime = Field(description="When it happened; no zone means UTC.")
    value: float | None = Field(default=None, description="An amount, a rating (0-10) or stars (1-5), by kind.")
    attributes: dict[str, Scalar] = Field(default_factory=dict)

    def event(self, customer_id: str) -> Event:
        """The event for `customer_id`; an id no customer can have is not found."""
        try:
            return Event(customer_id=customer_id, **self.model_dump())
        except ValidationError:
            raise NotFound(f"no customer {customer_id!r}") from None


class EventPage(_Out):
    """A customer's events, newest first; pass `next` back as `after` for older ones."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "cust-0042",
                    "items": [{**EVENT_EXAMPLE, "customer_id": "cust-0042"}],
                    "next": "eyJhZnRlciI6IjE3MTQ3NjA0MDAwMDAwMDA6b3JkZXItOTAwMC1saW5lLTEifQ",
                }
            ]
        },
    )

    customer_id: str
    items: list[Event]
    next: str | None = Field(description="Opaque; null on the last page.")


# --- segments ----------------------------------------------------------------------------------------------
SEGMENT_EXAMPLE: dict[str, Any] = {
    "segment": "influencer",
    "count": 120,
    "definition": "PageRank in the top 2% of the network and at least 2 times the average, or converted referrals "
    "reaching at least 5 customers over any number of generations.",
}


class SegmentInfo(_Out):
    segment: Segment
    count: int = Field(description="Customers the run put in this segment.")
    definition: str = Field(description="What puts a customer here, under the thresholds the run applied.")


class SegmentList(_Out):
    """Every segment from one analysis run, in the order the rule checks them (most telling first)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {"run_id": "run-20240601-0900", "finished_at": "2024-06-01T09:00:41Z", "items": [SEGMENT_EXAMPLE]}
            ]
        },
    )

    run_id: str | None = Field(description="The run; null before any analysis (every count is then 0).")
    finished_at: datetime | None
    items: list[SegmentInfo]

    @classmethod
    def of(cls, overview: SegmentOverview) -> SegmentList:
        return cls(
            run_id=overview.run_id,
            finished_at=overview.finished_at,
            items=[SegmentInfo(segment=s.segment, count=s.count, definition=s.definition) for s in overview.segments],
        )


class SegmentMemberPage(_Out):
    """Customers of one segment in id order, each with the analysis' explanation; pass `next` back as `after`."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "segment": "influencer",
                    "items": [
                        {
                            "customer_id": "cust-0042",
                            "run_id": "run-20240601-0900",
                            "segment": "influencer",
                            "explanation": "Influencer: PageRank 0.0031 ranks 12 of 1,000 (top 1.2%), 3.1× average.",
                            "scores": {"pagerank": 0.0031},
                            "community": 3,
                        }
                    ],
                    "next": "cust-0042",
                }
            ]
        },
    )

    segment: Segment
    items: list[CustomerScores]
    next: str | None = Field(description="The last customer id of this page; null on the last page.")


# --- contact preferences -----------------------------------------------------------------------------------
PREFERENCES_EXAMPLE: dict[str, Any] = {
    "customer_id": "cust-0042",
    "consent": {"email": True, "sms": False, "whatsapp": False, "push": False},
    "unsubscribed": False,
    "unsubscribed_at": None,
    "channel_unsubscribed": {"sms": "2024-04-11T08:12:00Z"},
    "locale": "en-GB",
    "timezone": "Europe/London",
}


class Preferences(_Out):
    """What the customer lets us do. Only their own settings: no address, no key, nobody else's data."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [PREFERENCES_EXAMPLE]})

    customer_id: str
    consent: dict[ContactChannel, bool] = Field(description="Consent to marketing per channel (every channel).")
    unsubscribed: bool = Field(description="Unsubscribed from every channel: nothing is sent, reward notices included.")
    unsubscribed_at: datetime | None
    channel_unsubscribed: dict[ContactChannel, datetime] = Field(
        description="Channels left one at a time through a channel's own unsubscribe link, and when."
    )
    locale: str = Field(description="The language messages and kits are written in.")
    timezone: str = Field(description="Quiet hours are kept in this zone.")

    @classmethod
    def of(cls, preferences: ContactPreferences) -> Preferences:
        """Read field by field from the engine's view (`unsubscribed` is its property)."""
        return cls.model_validate(preferences, from_attributes=True)


# --- material for a friend ---------------------------------------------------------------------------------
class MaterialRequest(_TextIn):
    """Ask for more material to pass on to a friend: the kit's messages in the friend's language and channels."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"campaign_id": "spring-2024", "locale": "fr", "channels": ["whatsapp"]}]},
    )

    campaign_id: Slug
    locale: str | None = Field(
        default=None,
        max_length=35,
        pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$",
        description="The friend's language; the customer's own by default.",
    )
    channels: list[ShareChannel] | None = Field(
        default=None,
        min_length=1,
        max_length=len(ShareChannel),
        description="The channels the friend uses, in the order to show them; every channel by default.",
    )


KitFormatQuery = Literal["html", "text"]
