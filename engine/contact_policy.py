"""One contact policy for every campaign and channel: caps, quiet hours, consent, unsubscribe, back-off.

The models are configuration (`Settings.contact.policy`); the checks that need no shared state are pure
functions here, and the caps and back-off, which need atomic counting across workers, live in `engine.limits`.

What a transactional message (a reward notice) is exempt from, and why: it tells a person about value they
earned, so marketing consent, the do-not-ask segment and an opt-out of one channel (a marketing preference) do
not stop it; electronic-marketing law (ePrivacy/PECR, CAN-SPAM) treats such service messages the same way. A
suppression of every channel does stop it: the person used the one-click unsubscribe ("never contact me") or
was erased, the reward stays in their balance and on their page, and a notice would break the promise the
link made. Quiet hours apply to every kind: a notice can wait until morning. Its own caps live in the limiter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field

from graph.errors import InvalidInput
from graph.model import ContactChannel, Customer, Segment
from graph.outreach import HoldReason, MessageKind, Suppression, customer_key


class Cap(BaseModel):
    """At most `limit` messages in any window of `window_days` (a sliding window)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    limit: int = Field(ge=0, le=10_000)
    window_days: float = Field(gt=0, le=3660)


class ContactPolicy(BaseModel):
    """The defaults: at most 1 marketing message in 7 days and 3 in 30 across channels, none at night."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    caps: tuple[Cap, ...] = (Cap(limit=1, window_days=7), Cap(limit=3, window_days=30))
    """Marketing messages and invitations, all channels together."""
    channel_caps: dict[ContactChannel, tuple[Cap, ...]] = Field(default_factory=dict)
    """Tighter caps for one channel (e.g. SMS: 1 in 30 days)."""
    transactional_caps: tuple[Cap, ...] = (Cap(limit=10, window_days=1),)
    """Reward notices are exempt from the marketing caps, under their own."""
    quiet_start: time = time(21, 0)
    quiet_end: time = time(8, 0)
    """Quiet hours in the person's own time zone; start after end means overnight."""
    backoff_after_ignored: int = Field(default=2, ge=1, le=100)
    """After this many marketing messages with no response in between, wait longer before the next one."""
    backoff_base_days: float = Field(default=14.0, gt=0, le=3660)
    backoff_factor: float = Field(default=2.0, ge=1, le=100)
    backoff_memory_days: float = Field(default=180.0, gt=0, le=3660)
    """Unanswered messages are forgotten once this long has passed since the next message was allowed: a
    person left alone for that long starts afresh (and the limiter's state expires instead of growing)."""


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a contact must not be made now; `retry_at` is when it may be tried again (quiet hours only)."""

    reason: HoldReason
    detail: str
    retry_at: datetime | None = None


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidInput(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)") from exc


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()


def _transition(before: datetime, after: datetime, zone: ZoneInfo) -> datetime | None:
    """The instant in (`before`, `after`] at which the zone's UTC offset changes, if it does (one change at most:
    zones change twice a year, and these spans are about a day)."""
    old = _offset(before, zone)
    if _offset(after, zone) == old:
        return None
    while after - before > timedelta(microseconds=1):
        middle = before + (after - before) // 2
        if _offset(middle, zone) == old:
            before = middle
        else:
            after = middle
    return after


def _first_instant_at(day: date, wall: time, zone: ZoneInfo, *, after: datetime) -> datetime:
    """The first instant after `after` at which the clock in `zone` shows `wall` on `day` or has passed it.

    A wall time skipped by a DST gap is passed at the transition itself; one repeated by a DST fold is reached
    twice, and the first of the two after `after` is the answer.
    """
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return first
    if first < second:
        return first if first > after else second
    # In a gap, fold=1 reads the wall time with the offset after the transition (an instant before it) and
    # fold=0 with the offset before it (an instant after it): the transition lies in between.
    jump = _transition(second, first, zone)
    assert jump is not None
    return jump


def _is_quiet(wall: time, start: time, end: time) -> bool:
    if start > end:
        return wall >= start or wall < end
    return start <= wall < end


def quiet_until(now: datetime, timezone: str, policy: ContactPolicy) -> datetime | None:
    """When quiet hours end (UTC) if the clock in `timezone` shows a quiet time at `now`, else None.

    Quiet hours are wall-clock times, `quiet_start` included and `quiet_end` excluded, overnight when the start
    is later than the end; equal times mean no quiet hours. The answer is the first instant at which the clock
    shows a time outside them, which DST may bring early (a gap) or make come twice (a fold). Naive `now` is
    taken as UTC.

    >>> policy = ContactPolicy()
    >>> quiet_until(datetime(2024, 7, 1, 20, 30, tzinfo=UTC), "Europe/Paris", policy)
    datetime.datetime(2024, 7, 2, 6, 0, tzinfo=datetime.timezone.utc)
    >>> quiet_until(datetime(2024, 7, 1, 12, 0, tzinfo=UTC), "Europe/Paris", policy) is None
    True
    """
    start, end = policy.quiet_start, policy.quiet_end
    if start == end:
        return None
    zone = _zone(timezone)
    at = _as_utc(now)
    until: datetime | None = None
    while True:
        local = at.astimezone(zone)
        wall = local.time()
        if not _is_quiet(wall, start, end):
            return until
        day = local.date() + timedelta(days=1) if start > end and wall >= start else local.date()
        reaches_end = _first_instant_at(day, end, zone, after=at)
        # The clock may also jump out of quiet hours before it reaches their end (a fold setting it back before
        # the start), or jump over the end straight into the next night's: the loop looks again after a jump.
        jump = _transition(at, reaches_end - timedelta(microseconds=1), zone)
        at = until = jump if jump is not None else reaches_end


def _suppression_detail(suppression: Suppression) -> str:
    scope = "every channel" if suppression.channel is None else suppression.channel.value
    when = suppression.at.date().isoformat()
    if suppression.reason is HoldReason.DECLINED:
        return f"declined an invitation ({scope}) on {when}"
    if suppression.reason is HoldReason.UNSUBSCRIBED:
        return f"unsubscribed from {scope} on {when}"
    return f"suppressed for {scope} on {when} ({suppression.reason.value})"


def precheck(
    *,
    customer: Customer | None,
    person_key: str,
    channel: ContactChannel,
    kind: MessageKind,
    segment: Segment | None,
    suppressions: Sequence[Suppression],
    now: datetime,
    policy: ContactPolicy,
    has_address: bool,
    fallback_timezone: str = "UTC",
) -> Hold | None:
    """The first reason not to contact this person now, or None when only the limiter is left to ask.

    `customer` is the person when they are a customer, None for a friend invited on an advocate's behalf;
    `fallback_timezone` places a non-customer's quiet hours (the advocate's zone is the best guess).
    Checked in order: an address, suppressions, consent, do-not-ask, quiet hours. Transactional messages
    skip consent and do-not-ask and yield only to a suppression of every channel (see the module docstring).
    """
    if customer is not None and customer_key(customer.id) != person_key:
        raise InvalidInput(f"person key {person_key!r} is not customer {customer.id!r}")
    if not has_address:
        return Hold(HoldReason.NO_ADDRESS, f"no {channel.value} address")
    transactional = kind is MessageKind.TRANSACTIONAL
    applicable = [
        s
        for s in suppressions
        if s.person_key == person_key and (s.channel is None or (s.channel is channel and not transactional))
    ]
    if applicable:
        first = min(applicable, key=lambda s: s.at)
        return Hold(first.reason, _suppression_detail(first))
    if not transactional:
        if customer is not None:
            if customer.consent.get(channel) is not True:
                return Hold(HoldReason.NO_CONSENT, f"no consent for {channel.value}")
        elif kind is MessageKind.MARKETING:
            return Hold(HoldReason.NO_CONSENT, "marketing goes to customers who consented, and this is not one")
        if kind is MessageKind.MARKETING and segment is Segment.DO_NOT_ASK:
            return Hold(HoldReason.DO_NOT_ASK, "segment do_not_ask: never asked for referrals")
    zone = customer.timezone if customer is not None else fallback_timezone
    until = quiet_until(now, zone, policy)
    if until is not None:
        span = f"{policy.quiet_start:%H:%M}-{policy.quiet_end:%H:%M}"
        return Hold(HoldReason.QUIET_HOURS, f"quiet hours {span} in {zone}", until)
    return None
