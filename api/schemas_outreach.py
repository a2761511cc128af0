"""Request and response shapes of outreach over HTTP: templates, outreach plans, hold-backs, kits, invitations.

As in `api.schemas_program`, a `graph.outreach` or `engine` value that is right as it is (`Template`, `Outreach`,
`OutboxCounts`, `Kit`, `Event`, `VariantResult`) goes out unchanged. The classes here are input the server
completes (a template's version and time), read models that leave something out (a held message never shows
the address it was meant for) and results that gather several values.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from api.schemas import _Out, _TextIn
from engine.ab import VariantResult
from engine.outreach import PlanReport
from graph.model import ContactChannel, EventKind, Segment
from graph.outreach import (
    Audience,
    HoldReason,
    MessageKind,
    MessageStatus,
    OutboxMessage,
    Outreach,
    ShareChannel,
    Step,
    Template,
    TemplatePurpose,
    Variant,
)
from graph.program import Slug

# --- examples ----------------------------------------------------------------------------------------------
TEMPLATE_EXAMPLE: dict[str, Any] = {
    "id": "whatsapp-prosumer",
    "purpose": "share",
    "channel": "whatsapp",
    "segment": "prosumer",
    "locale": "en",
    "subject": None,
    "body": "I've been using {{ advocate.purchases[0] if advocate.purchases else 'this' }} for a while. "
    "{{ friend_offer }}: {{ link }}",
    "updated_by": "maria",
}

OUTREACH_EXAMPLE: dict[str, Any] = {
    "id": "spring-prosumers",
    "name": "Spring: prosumers and influencers",
    "campaign_id": "spring-2024",
    "audience": {"kind": "segments", "segments": ["prosumer", "influencer"]},
    "variants": [{"id": "a", "weight": 1}, {"id": "b", "weight": 1, "message_template_id": "spring-short"}],
    "steps": [{"id": "invite", "delay_days": 0, "channel": "email"}],
}

PLAN_EXAMPLE: dict[str, Any] = {
    "outreach_id": "spring-prosumers",
    "audience": 1200,
    "enqueued": 1200,
    "already_planned": 0,
    "excluded": {"do_not_ask": 14, "unknown": 2},
}


# --- shared -----------------------------------------------------------------------------------------------
# --- templates ---------------------------------------------------------------------------------------------
class TemplateChange(_TextIn):
    """A template's content, as a marketer writes it; the server sets `version` and `updated_at`."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{k: v for k, v in TEMPLATE_EXAMPLE.items() if k != "id"}]},
    )

    purpose: TemplatePurpose
    channel: ShareChannel
    segment: Segment | None = Field(default=None, description="Only for this segment; null for any.")
    locale: str = Field(default="en", max_length=35, description="`en`, `fr`, `fr-CA`...")
    subject: str | None = Field(default=None, max_length=500, description="An email's subject (a template too).")
    body: str = Field(min_length=1, max_length=20_000, description="Jinja2, rendered in the sandbox.")
    updated_by: str = Field(default="api", min_length=1, max_length=200, description="Who wrote it, for the record.")

    def template(self, template_id: str, *, updated_at: datetime) -> Template:
        return Template.model_validate({**dict(self), "id": template_id, "updated_at": updated_at})

    @model_validator(mode="after")
    def _a_valid_template(self) -> TemplateChange:
        """The field rules (the locale's pattern) live in `Template` only."""
        self.template("check", updated_at=datetime(2000, 1, 1))
        return self


class TemplateCreate(TemplateChange):
    """A new template: its id and content."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, json_schema_extra={"examples": [TEMPLATE_EXAMPLE]}
    )

    id: Slug


class TemplateList(_Out):
    """Marketers' templates, by id (the built-in ones under `templates/kits/` are not listed)."""

    items: list[Template]


class PreviewRequest(_TextIn):
    """A template (saved or not) and the customer and campaign to render it for."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "examples": [{"template": TEMPLATE_EXAMPLE, "customer_id": "cust-0042", "campaign_id": "spring-2024"}]
        },
    )

    template: TemplateCreate
    customer_id: str = Field(min_length=1, max_length=128)
    campaign_id: Slug


class Preview(_Out):
    """What the template says to that customer: its subject (if any), a blank line, then its text."""

    text: str


# --- outreach plans ----------------------------------------------------------------------------------------
class OutreachCreate(_TextIn):
    """A new outreach plan, saved as a draft: an `Outreach` without `status`, `created_at` or `started_at`."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [OUTREACH_EXAMPLE]})

    id: Slug
    name: str = Field(min_length=1, max_length=200)
    campaign_id: Slug
    audience: Audience
    variants: tuple[Variant, ...] = (Variant(id="a"),)
    steps: tuple[Step, ...] = (Step(id="invite"),)

    @model_validator(mode="after")
    def _a_valid_outreach(self) -> OutreachCreate:
        """Unique variant and step ids are checked by `Outreach` only."""
        self.outreach(created_at=datetime(2000, 1, 1))
        return self

    def outreach(self, *, created_at: datetime) -> Outreach:
        return Outreach.model_validate({**dict(self), "created_at": created_at})


class OutreachList(_Out):
    """Outreach plans by creation time, oldest first."""

    items: list[Outreach]


class PlanResult(_Out):
    """What planning wrote: one outbox message per person and step, and who was left out and why."""

    model_config = ConfigDict(frozen=True, json_schema_extra={"examples": [PLAN_EXAMPLE]})

    outreach_id: str
    audience: int = Field(description="Customers to contact.")
    enqueued: int = Field(description="Outbox messages written now.")
    already_planned: int = Field(description="Messages an earlier launch had written already.")
    excluded: dict[str, int] = Field(description="Customers left out before planning, by reason.")

    @classmethod
    def of(cls, report: PlanReport) -> PlanResult:
        return cls(
            outreach_id=report.outreach_id,
            audience=report.audience,
            enqueued=report.enqueued,
            already_planned=report.already_planned,
            excluded=dict(report.excluded),
        )


class Launch(_Out):
    """A launched outreach. Inline, the plan is written before the answer and messages are sent right after it;
    through Celery, a worker plans and sends, and `plan` is null (follow `/counts`)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {"outreach_id": "spring-prosumers", "dispatch": "inline", "plan": PLAN_EXAMPLE, "task_id": None},
                {"outreach_id": "spring-prosumers", "dispatch": "celery", "plan": None, "task_id": "3f1c0b7e"},
            ]
        },
    )

    outreach_id: str
    dispatch: Literal["inline", "celery"]
    plan: PlanResult | None
    task_id: str | None = Field(description="The Celery task that plans and fans out the sends.")


class HeldMessage(_Out):
    """A message that was not sent, and why. The address it was meant for is never shown."""

    key: str = Field(description="`<outreach>:<step>:<person key>`; a friend's person key is a keyed hash.")
    step_id: str
    person_key: str
    customer_id: str | None = Field(description="The customer; for an invitation, the advocate it was sent for.")
    channel: ContactChannel
    kind: MessageKind
    variant_id: str
    reason: HoldReason | None
    detail: str
    attempts: int
    updated_at: datetime

    @classmethod
    def of(cls, message: OutboxMessage) -> HeldMessage:
        return cls(
            key=message.key,
            step_id=message.step_id,
            person_key=message.person_key,
            customer_id=message.customer_id,
            channel=message.channel,
            kind=message.kind,
            variant_id=message.variant_id,
            reason=message.reason,
            detail=message.detail,
            attempts=message.attempts,
            updated_at=message.updated_at,
        )


class HeldPage(_Out):
    """Held messages in key order; pass `next` back as `after` for the next page (null on the last one)."""

    items: list[HeldMessage]
    next: str | None


class VariantReport(_Out):
    """Conversion per A/B variant with its 95% interval, and one sentence saying what to make of it."""

    outreach_id: str
    results: list[VariantResult]
    summary: str


# --- what customers send back ------------------------------------------------------------------------------
class ResponseKind(StrEnum):
    """What a customer may send back; ideas, feedback, reviews and content are prosumer signals."""

    IDEA = EventKind.IDEA.value
    FEEDBACK = EventKind.FEEDBACK.value
    REVIEW = EventKind.REVIEW.value
    CONTENT = EventKind.CONTENT.value


class ResponseRequest(_TextIn):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [{"kind": "idea", "text": "A gift-wrap option for referrals", "campaign_id": "spring-2024"}]
        },
    )

    kind: ResponseKind
    text: str = Field(min_length=1, max_length=5000)
    campaign_id: Slug | None = None


class InvitationRequest(_TextIn):
    """Invite a friend by email on the customer's behalf; the friend's own limits apply across all advocates."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        json_schema_extra={"examples": [{"campaign_id": "spring-2024", "email": "friend@example.org"}]},
    )

    campaign_id: Slug
    email: str = Field(min_length=3, max_length=254)


class InvitationResult(_Out):
    """What became of the invitation. `held` is a normal answer (the friend had enough messages, or declined)."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {"outreach_id": "spring-2024-invitations", "status": "sent", "reason": None, "detail": ""},
                {
                    "outreach_id": "spring-2024-invitations",
                    "status": "held",
                    "reason": "cap",
                    "detail": "1 in 7 days (overall)",
                },
            ]
        },
    )

    outreach_id: str
    status: MessageStatus
    reason: HoldReason | None
    detail: str

    @classmethod
    def of(cls, message: OutboxMessage, *, address: str) -> InvitationResult:
        """The outcome, with the friend's address taken out of any provider's words about it."""
        if message.status is not MessageStatus.HELD:
            # a failure's words come from the mail server or provider: not the customer's business
            detail = "" if message.status is MessageStatus.SENT else "not sent yet; it will be retried"
        else:
            detail = re.sub(re.escape(address.strip()), "the friend's address", message.detail, flags=re.IGNORECASE)
        return cls(outreach_id=message.outreach_id, status=message.status, reason=message.reason, detail=detail)
