"""Staying in touch, as values: templates, outreach plans, the outbox, and why a contact was held back.

An `Outreach` is a campaign of messages to customers on behalf of one referral `Campaign`: its audience (an
analysis run's targets, or segments), its A/B variants and its cadence of steps. Planning it writes one
`OutboxMessage` per (outreach, step, person) with a unique key, so a retried or duplicated task never sends
twice. Every message ends `sent`, `held` (with a `HoldReason` a marketer can read) or `failed`.

A person is addressed by a `person_key`: `customer:<id>` for a customer, `email:<keyed hash>` for a friend the
engine invites on an advocate's behalf who is not (yet) a customer. Contact limits, suppression and back-off all
count per person key, so a friend is protected across every advocate who invites them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from graph.model import ContactChannel, CustomerId, Segment, UtcDatetime
from graph.program import Slug

_LOCALE = r"^[a-z]{2,3}([_-][A-Za-z0-9]{2,8})*$"
_PERSON_KEY = re.compile(r"^(customer:[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}|email:[0-9a-f]{32,64})$")


def _check_person_key(value: str) -> str:
    if not _PERSON_KEY.match(value):
        raise ValueError("a person key is customer:<id> or email:<hex hash>")
    return value


PersonKey = Annotated[str, AfterValidator(_check_person_key)]


def customer_key(customer_id: str) -> str:
    """The person key of a customer.

    >>> customer_key("c1")
    'customer:c1'
    """
    return f"customer:{customer_id}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


# --- kits and templates ----------------------------------------------------------------------------------------
class ShareChannel(StrEnum):
    """Where a customer passes their link on; each gets its own ready message in the kit."""

    EMAIL = "email"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    X = "x"
    LINKEDIN = "linkedin"
    FACEBOOK = "facebook"
    COPY_LINK = "copy_link"


class TemplatePurpose(StrEnum):
    """`share` is the text a customer sends their friends; `message` is what the engine sends the customer;
    `invitation` is what the engine sends a friend on an advocate's behalf."""

    SHARE = "share"
    MESSAGE = "message"
    INVITATION = "invitation"


class Template(_Model):
    """A Jinja2 template a marketer may write, rendered in the sandbox with autoescaping.

    Chosen by purpose, segment (None = any), channel and locale, most specific first (`engine.kits`).
    """

    id: Slug
    purpose: TemplatePurpose
    channel: ShareChannel
    segment: Segment | None = None
    locale: str = Field(default="en", pattern=_LOCALE, max_length=35)
    subject: str | None = Field(default=None, max_length=500)
    body: str = Field(min_length=1, max_length=20_000)
    version: int = Field(default=1, ge=1)
    updated_at: UtcDatetime
    updated_by: str = Field(default="system", max_length=200)


# --- outreach plans --------------------------------------------------------------------------------------------
class OutreachStatus(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"


class AudienceKind(StrEnum):
    TARGETS = "targets"
    """The seeds an analysis run chose by influence maximisation (`run_id`, `k`)."""
    SEGMENTS = "segments"
    """Every customer whose latest segment is one of `segments`."""
    CUSTOMERS = "customers"
    """An explicit list of customer ids."""
    KIT_INVITATIONS = "kit_invitations"
    """The standing outreach of a campaign that holds invitations customers send friends from their kits;
    it is never planned, its messages are enqueued one by one."""


class Audience(_Model):
    kind: AudienceKind
    run_id: str | None = None
    k: int | None = Field(default=None, ge=1, le=1_000_000)
    segments: tuple[Segment, ...] = ()
    customer_ids: tuple[CustomerId, ...] = Field(default=(), max_length=1_000_000)

    @model_validator(mode="after")
    def _coherent(self) -> Audience:
        if self.kind is AudienceKind.SEGMENTS and not self.segments:
            raise ValueError("a segments audience names at least one segment")
        if self.kind is AudienceKind.CUSTOMERS and not self.customer_ids:
            raise ValueError("a customers audience lists at least one customer id")
        if Segment.DO_NOT_ASK in self.segments:
            raise ValueError("do_not_ask customers are never asked for referrals")
        return self


class Variant(_Model):
    """One arm of an A/B test: its share of the audience and what differs (a template, the channel order)."""

    id: Slug
    weight: float = Field(default=1.0, gt=0, le=1000)
    template_ids: dict[ShareChannel, Slug] = Field(default_factory=dict)
    """Overrides of the kit's share templates, per channel."""
    message_template_id: Slug | None = None
    """Override of the message template sent to the customer."""
    channel_order: tuple[ShareChannel, ...] = ()
    """Share channels in the order the kit shows them; empty keeps the default order."""


class Step(_Model):
    """One message of a cadence: sent `delay_days` after the outreach starts, on `channel`."""

    id: Slug
    delay_days: int = Field(default=0, ge=0, le=3650)
    channel: ContactChannel = ContactChannel.EMAIL
    message_template_id: Slug | None = None


class Outreach(_Model):
    """A campaign of messages to customers, inviting them to share on behalf of referral campaign `campaign_id`."""

    id: Slug
    name: str = Field(min_length=1, max_length=200)
    campaign_id: Slug
    audience: Audience
    variants: tuple[Variant, ...] = (Variant(id="a"),)
    steps: tuple[Step, ...] = (Step(id="invite"),)
    status: OutreachStatus = OutreachStatus.DRAFT
    created_at: UtcDatetime
    started_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _unique_ids(self) -> Outreach:
        for name, items in (("variant", self.variants), ("step", self.steps)):
            ids = [item.id for item in items]
            if not ids or len(ids) != len(set(ids)):
                raise ValueError(f"{name} ids must be present and unique")
        return self


# --- the outbox -------------------------------------------------------------------------------------------------
class MessageKind(StrEnum):
    MARKETING = "marketing"
    INVITATION = "invitation"
    """Sent to a friend on an advocate's behalf: counts against the friend's own caps."""
    TRANSACTIONAL = "transactional"
    """A reward notice: exempt from marketing caps, under its own cap."""


class MessageStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    """Claimed by a worker; a claim whose lease ran out (a killed worker) may be claimed again."""
    SENT = "sent"
    HELD = "held"
    FAILED = "failed"


class HoldReason(StrEnum):
    """Why a contact was not made. Marketers see these per outreach."""

    CAP = "cap"
    QUIET_HOURS = "quiet_hours"
    NO_CONSENT = "no_consent"
    UNSUBSCRIBED = "unsubscribed"
    DECLINED = "declined"
    DO_NOT_ASK = "do_not_ask"
    BACKOFF = "backoff"
    NO_ADDRESS = "no_address"
    ERASED = "erased"
    PAUSED = "paused"


TERMINAL_STATUSES: Final[frozenset[MessageStatus]] = frozenset(
    {MessageStatus.SENT, MessageStatus.HELD, MessageStatus.FAILED}
)


class OutboxMessage(_Model):
    """One message the engine means to send, once. `key` is unique: `<outreach>:<step>:<person key>`."""

    key: str = Field(min_length=1, max_length=400)
    outreach_id: str
    step_id: str
    person_key: PersonKey
    customer_id: str | None = None
    """The customer it goes to, or, for an invitation, the advocate it is sent on behalf of."""
    channel: ContactChannel
    kind: MessageKind = MessageKind.MARKETING
    variant_id: str
    status: MessageStatus = MessageStatus.QUEUED
    reason: HoldReason | None = None
    detail: str = Field(default="", max_length=500)
    """Words for the marketer: which cap, until when, the provider's error."""
    not_before: UtcDatetime
    """Not sent earlier (the cadence step's time, or the end of quiet hours after a hold was deferred)."""
    attempts: int = 0
    lease_until: UtcDatetime | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    sent_at: UtcDatetime | None = None
    provider_id: str | None = Field(default=None, max_length=200)
    to_address: str | None = Field(default=None, max_length=254)
    """For invitations: the friend's address, kept only until sent (cleared afterwards)."""


class Suppression(_Model):
    """A person nobody may contact again for marketing: unsubscribed, or a friend who declined an invitation."""

    person_key: PersonKey
    reason: HoldReason
    at: UtcDatetime
    channel: ContactChannel | None = None
    """None suppresses every channel (a global unsubscribe)."""


class OutboxCounts(_Model):
    """Per outreach: messages by status, and held ones by reason."""

    outreach_id: str
    by_status: dict[MessageStatus, int]
    held_by_reason: dict[HoldReason, int]
    by_variant: dict[str, dict[MessageStatus, int]]


def without_person(outreach: Outreach, customer_id: str, tombstone: str) -> Outreach:
    """The plan with an erased person's id replaced by `tombstone` in an explicit audience.

    The tombstone is no customer, so planning leaves it out (as "unknown"); the audience stays valid.
    """
    ids = outreach.audience.customer_ids
    if customer_id not in ids:
        return outreach
    kept = tuple(dict.fromkeys(tombstone if i == customer_id else i for i in ids))
    audience = outreach.audience.model_copy(update={"customer_ids": kept})
    return outreach.model_copy(update={"audience": audience})
