"""Builders for graph.outreach values with sensible defaults; override any field by keyword."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from graph.model import ContactChannel, Customer
from graph.outreach import (
    Audience,
    AudienceKind,
    HoldReason,
    OutboxMessage,
    Outreach,
    ShareChannel,
    Suppression,
    Template,
    TemplatePurpose,
    customer_key,
)
from tests.factories import BASE_TIME, _id, next_id


def make_template(**overrides: Any) -> Template:
    fields: dict[str, Any] = {
        "id": overrides.pop("id", None) or next_id("tpl").lower(),
        "purpose": TemplatePurpose.SHARE,
        "channel": ShareChannel.WHATSAPP,
        "locale": "en",
        "body": "Hi! {{ advocate.first_name }} thinks you'll like this: {{ link }}",
        "updated_at": BASE_TIME,
    }
    fields.update(overrides)
    return Template(**fields)


def make_outreach(campaign_id: str, **overrides: Any) -> Outreach:
    fields: dict[str, Any] = {
        "id": overrides.pop("id", None) or next_id("out").lower(),
        "name": "Spring invitations",
        "campaign_id": campaign_id,
        "audience": Audience(kind=AudienceKind.CUSTOMERS, customer_ids=("c-placeholder",)),
        "created_at": BASE_TIME,
    }
    fields.update(overrides)
    return Outreach(**fields)


def make_message(outreach: Outreach | str, customer: Customer | str, **overrides: Any) -> OutboxMessage:
    outreach_id = outreach if isinstance(outreach, str) else outreach.id
    person = customer_key(_id(customer))
    step = overrides.pop("step_id", "invite")
    fields: dict[str, Any] = {
        "key": f"{outreach_id}:{step}:{person}",
        "outreach_id": outreach_id,
        "step_id": step,
        "person_key": person,
        "customer_id": _id(customer),
        "channel": ContactChannel.EMAIL,
        "variant_id": "a",
        "not_before": BASE_TIME,
        "created_at": BASE_TIME - timedelta(minutes=1),
        "updated_at": BASE_TIME - timedelta(minutes=1),
    }
    fields.update(overrides)
    return OutboxMessage(**fields)


def make_suppression(person_key: str, **overrides: Any) -> Suppression:
    fields: dict[str, Any] = {"person_key": person_key, "reason": HoldReason.UNSUBSCRIBED, "at": BASE_TIME}
    fields.update(overrides)
    return Suppression(**fields)
