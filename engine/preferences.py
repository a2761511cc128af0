"""A customer's contact preferences: what they let us do, as they may read and change it themselves.

What the contact policy (`engine.contact_policy.precheck`) lets a person decide: consent per channel, a global
unsubscribe, and the language and time zone their messages follow (quiet hours are kept in their own zone).
The view holds the customer's own settings and dates only: no person key, no address, nobody else's data, so it
can be shown to the customer.

Unsubscribing from everything is stored as a suppression of every channel, exactly as the one-click link stores
it, and clears every consent. Nothing changes a preference the request does not name, so a customer is only
re-subscribed by asking for it. The stores can add suppressions but not lift them (`OutreachStore.suppress`), and
a suppression outranks consent, so asking for consent on a channel that a suppression covers, or to undo a
global unsubscribe, is refused with `PolicyViolation` rather than stored as a consent that would not be honoured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from graph.errors import InvalidInput, PolicyViolation
from graph.model import ContactChannel, Customer
from graph.outreach import HoldReason, Suppression, customer_key
from graph.program_store import Store


@dataclass(frozen=True, slots=True)
class ContactPreferences:
    """One customer's preferences. `unsubscribed_at` is when they left every channel; `channel_unsubscribed`
    when they left one channel through its own link."""

    customer_id: str
    consent: dict[ContactChannel, bool]
    unsubscribed_at: datetime | None
    channel_unsubscribed: dict[ContactChannel, datetime]
    locale: str
    timezone: str

    @property
    def unsubscribed(self) -> bool:
        return self.unsubscribed_at is not None


class PreferenceChange(BaseModel):
    """What a customer asks to change; every field left out (None) keeps its value."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    consent: dict[ContactChannel, bool] = Field(
        default_factory=dict, description="Consent per channel named; channels not named keep theirs."
    )
    unsubscribed: bool | None = Field(
        default=None,
        description="`true`: stop every message on every channel (as the one-click link does), reward notices "
        "included. `false` keeps a customer subscribed; undoing an unsubscribe is refused with 409.",
    )
    locale: str | None = Field(
        default=None, max_length=35, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$", examples=["fr-CA"]
    )
    timezone: str | None = Field(default=None, max_length=64, examples=["Europe/Paris"])

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from None
        return value


def _own(customer: Customer, suppressions: Sequence[Suppression]) -> list[Suppression]:
    key = customer_key(customer.id)
    return [s for s in suppressions if s.person_key == key]


def preferences_of(customer: Customer, suppressions: Sequence[Suppression]) -> ContactPreferences:
    """The customer's preferences from their record and their own suppressions (others' are ignored)."""
    own = _own(customer, suppressions)
    every = [s.at for s in own if s.channel is None]
    per_channel: dict[ContactChannel, datetime] = {}
    for s in sorted(own, key=lambda s: s.at):
        if s.channel is not None:
            per_channel.setdefault(s.channel, s.at)
    return ContactPreferences(
        customer_id=customer.id,
        consent={channel: customer.consent.get(channel) is True for channel in ContactChannel},
        unsubscribed_at=min(every) if every else None,
        channel_unsubscribed=per_channel,
        locale=customer.locale,
        timezone=customer.timezone,
    )


def _scope(channel: ContactChannel | None) -> str:
    return "every channel" if channel is None else channel.value


def plan_change(
    customer: Customer, suppressions: Sequence[Suppression], change: PreferenceChange, *, now: datetime
) -> tuple[Customer, Suppression | None]:
    """The customer record to store and the suppression to add (if any) for `change`; pure.

    Raises `InvalidInput` for a request that contradicts itself (unsubscribe and consent at once) and
    `PolicyViolation` for a re-subscription a suppression stands in the way of (see the module docstring).
    """
    current = preferences_of(customer, suppressions)
    granted = sorted(channel for channel, wanted in change.consent.items() if wanted)
    if change.unsubscribed and granted:
        raise InvalidInput(f"cannot unsubscribe from everything and consent to {', '.join(granted)} at once")
    if change.unsubscribed is False and current.unsubscribed_at is not None:
        raise PolicyViolation(
            f"unsubscribed from every channel on {current.unsubscribed_at.date().isoformat()}; an unsubscribe "
            "cannot be undone here yet"
        )
    for channel in granted:
        scope: ContactChannel | None = None
        since = current.unsubscribed_at
        if since is None:
            scope, since = channel, current.channel_unsubscribed.get(channel)
        if since is not None:
            raise PolicyViolation(
                f"no consent for {channel.value}: unsubscribed from {_scope(scope)} on {since.date().isoformat()}, "
                "which cannot be undone here yet"
            )
    consent = {**customer.consent, **change.consent}
    suppression = None
    if change.unsubscribed:
        consent = dict.fromkeys(ContactChannel, False)
        if current.unsubscribed_at is None:
            suppression = Suppression(
                person_key=customer_key(customer.id), reason=HoldReason.UNSUBSCRIBED, at=now, channel=None
            )
    update: dict[str, object] = {"consent": consent}
    if change.locale is not None:
        update["locale"] = change.locale
    if change.timezone is not None:
        update["timezone"] = change.timezone
    return customer.model_copy(update=update), suppression


def read_preferences(store: Store, customer_id: str) -> ContactPreferences:
    """`NotFound` for an unknown (or erased) customer."""
    customer = store.get_customer(customer_id)
    key = customer_key(customer_id)
    return preferences_of(customer, store.suppressions([key]).get(key, []))


def change_preferences(
    store: Store, customer_id: str, change: PreferenceChange, *, clock: Callable[[], datetime]
) -> ContactPreferences:
    """Apply `change` (see `plan_change`): the suppression first, so a failure in between never leaves a
    customer who asked to leave with their consent still on."""
    customer = store.get_customer(customer_id)
    key = customer_key(customer_id)
    suppressions = store.suppressions([key]).get(key, [])
    updated, suppression = plan_change(customer, suppressions, change, now=clock())
    if suppression is not None:
        store.suppress(suppression)
        suppressions = [*suppressions, suppression]
    if updated != customer:
        store.upsert_customers([updated])
    return preferences_of(updated, suppressions)
