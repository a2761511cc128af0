"""A customer's contact preferences: what they let us do, as they may read and change it themselves.

What the contact policy (`engine.contact_policy.precheck`) lets a person decide: consent per channel, a global
unsubscribe, and the language and time zone their messages follow (quiet hours are kept in their own zone).
The view holds the customer's own settings and dates only: no person key, no address, nobody else's data, so it
can be shown to the customer.

Unsubscribing from everything is stored as a suppression of every channel, exactly as the one-click link stores
it, and clears every consent. Nothing changes a preference the request does not name, so a customer is only
re-subscribed by asking for it. A suppression outranks consent, so consenting again where a suppression stands
lifts it (`OutreachStore.lift_suppressions`), and only when the customer themself asks (their own token or
session): an explicit opt-in by the person is what undoes an unsubscribe, so a marketer asking for it is
`Forbidden`. Consenting to a channel that was left through its own link lifts that channel's suppression; undoing
an unsubscribe from everything (`unsubscribed: false`, or consent to any channel) lifts every suppression of the
customer and sets consent to exactly the channels the request names, so nothing the merchant's records said in the
meantime re-subscribes them. Only the customer's own `customer:<id>` key is ever lifted here: a friend's
`email:<hash>` refusal belongs to that friend. Each lift is logged (`engine.preferences`) with its time and channels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from graph.errors import Forbidden, InvalidInput
from graph.model import ContactChannel, Customer
from graph.outreach import HoldReason, Suppression, customer_key
from graph.program_store import Store

log = logging.getLogger(__name__)


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
        "included. `false` undoes such an unsubscribe (the customer's own credential only): messages resume, "
        "marketing only on the channels consented to in the same or a later request.",
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


@dataclass(frozen=True, slots=True)
class Lift:
    """Suppressions of the customer to lift: those of `channels`, or every one (None)."""

    channels: tuple[ContactChannel, ...] | None


@dataclass(frozen=True, slots=True)
class PreferencePlan:
    """What a change makes of the customer: the record to store, a suppression to add, suppressions to lift."""

    customer: Customer
    suppression: Suppression | None
    lift: Lift | None


def _lift_for(current: ContactPreferences, change: PreferenceChange, granted: list[ContactChannel]) -> Lift | None:
    """Undoing an unsubscribe from everything lifts every suppression; consenting to a channel left through its
    own link lifts that channel's."""
    if current.unsubscribed_at is not None:
        return Lift(channels=None) if change.unsubscribed is False or granted else None
    lifted = tuple(channel for channel in granted if channel in current.channel_unsubscribed)
    return Lift(channels=lifted) if lifted else None


def _since(current: ContactPreferences, lift: Lift) -> str:
    if lift.channels is None and current.unsubscribed_at is not None:
        return f"from every channel on {current.unsubscribed_at.date().isoformat()}"
    left = current.channel_unsubscribed
    return ", ".join(f"from {c.value} on {left[c].date().isoformat()}" for c in lift.channels or () if c in left)


def plan_change(
    customer: Customer,
    suppressions: Sequence[Suppression],
    change: PreferenceChange,
    *,
    now: datetime,
    by_customer: bool,
) -> PreferencePlan:
    """What to store for `change` (see the module docstring); pure.

    `by_customer` says the customer themself asks (their own credential), the only one who may undo an
    unsubscribe. Raises `InvalidInput` for a request that contradicts itself (unsubscribe and consent at once) and
    `Forbidden` for a re-subscription anybody else asks for.
    """
    current = preferences_of(customer, suppressions)
    granted = sorted(channel for channel, wanted in change.consent.items() if wanted)
    if change.unsubscribed and granted:
        raise InvalidInput(f"cannot unsubscribe from everything and consent to {', '.join(granted)} at once")
    lift = _lift_for(current, change, granted)
    if lift is not None and not by_customer:
        raise Forbidden(
            f"customer {customer.id!r} unsubscribed {_since(current, lift)}; only the customer themself (with their "
            "own token or session) can subscribe again"
        )
    consent = {**customer.consent, **change.consent}
    if lift is not None and lift.channels is None:
        consent = {**dict.fromkeys(ContactChannel, False), **change.consent}
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
    return PreferencePlan(customer.model_copy(update=update), suppression, lift)


def read_preferences(store: Store, customer_id: str) -> ContactPreferences:
    """`NotFound` for an unknown (or erased) customer."""
    customer = store.get_customer(customer_id)
    key = customer_key(customer_id)
    return preferences_of(customer, store.suppressions([key]).get(key, []))


def change_preferences(
    store: Store,
    customer_id: str,
    change: PreferenceChange,
    *,
    clock: Callable[[], datetime],
    by_customer: bool = False,
) -> ContactPreferences:
    """Apply `change` (see `plan_change`; `by_customer`: the customer themself asks).

    A new suppression is stored before the record, so a failure in between never leaves a customer who asked to
    leave with their consent still on; a lift comes after the record, so a failure in between leaves them
    suppressed, never re-subscribed to more than they asked for.
    """
    customer = store.get_customer(customer_id)
    key = customer_key(customer_id)
    suppressions = store.suppressions([key]).get(key, [])
    now = clock()
    plan = plan_change(customer, suppressions, change, now=now, by_customer=by_customer)
    if plan.suppression is not None:
        store.suppress(plan.suppression)
        suppressions = [*suppressions, plan.suppression]
    if plan.customer != customer:
        store.upsert_customers([plan.customer])
    if plan.lift is not None:
        lifted = store.lift_suppressions(key, plan.lift.channels, at=now)
        log.info(
            "customer %s opted in again at %s: %d suppression(s) of %s lifted at their own request",
            customer_id,
            now.isoformat(),
            lifted,
            "every channel" if plan.lift.channels is None else ", ".join(c.value for c in plan.lift.channels),
        )
        suppressions = store.suppressions([key]).get(key, [])
    return preferences_of(plan.customer, suppressions)
