"""The pure contact checks: address, suppression, consent, do-not-ask and quiet hours in the person's zone."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.contact_policy import ContactPolicy, Hold, precheck, quiet_until
from graph.errors import InvalidInput
from graph.model import ContactChannel, Customer, Segment
from graph.outreach import HoldReason, MessageKind, Suppression, customer_key
from tests.factories import make_customer
from tests.outreach_factories import make_suppression

POLICY = ContactPolicy()
NOON_IN_PARIS = datetime(2024, 3, 1, 11, 0, tzinfo=UTC)
MIDNIGHT_IN_PARIS = datetime(2024, 3, 1, 23, 0, tzinfo=UTC)
FRIEND = "email:" + "ab" * 16


def check(customer: Customer | None, **overrides: Any) -> Hold | None:
    fields: dict[str, Any] = {
        "customer": customer,
        "person_key": customer_key(customer.id) if customer is not None else FRIEND,
        "channel": ContactChannel.EMAIL,
        "kind": MessageKind.MARKETING,
        "segment": Segment.ADVOCATE,
        "suppressions": (),
        "now": NOON_IN_PARIS,
        "policy": POLICY,
        "has_address": True,
    }
    fields.update(overrides)
    return precheck(**fields)


def reason(hold: Hold | None) -> HoldReason | None:
    return None if hold is None else hold.reason


def unsubscribed(customer: Customer, **overrides: Any) -> Suppression:
    return make_suppression(customer_key(customer.id), **overrides)


# --- precheck ---------------------------------------------------------------------------------------------------
def test_a_consenting_customer_with_an_address_at_noon_passes() -> None:
    assert check(make_customer()) is None


def test_a_message_without_an_address_is_held_for_no_address() -> None:
    hold = check(make_customer(), has_address=False, channel=ContactChannel.SMS)

    assert hold == Hold(HoldReason.NO_ADDRESS, "no sms address")


def test_a_missing_address_is_reported_before_a_suppression() -> None:
    customer = make_customer()

    hold = check(customer, has_address=False, suppressions=[unsubscribed(customer)])

    assert reason(hold) is HoldReason.NO_ADDRESS


def test_a_global_unsubscribe_holds_every_channel() -> None:
    customer = make_customer(consent=dict.fromkeys(ContactChannel, True))
    suppressions = [unsubscribed(customer, channel=None)]

    for channel in ContactChannel:
        hold = check(customer, channel=channel, suppressions=suppressions)
        assert hold is not None
        assert hold.reason is HoldReason.UNSUBSCRIBED
        assert "every channel" in hold.detail


def test_an_unsubscribe_from_one_channel_leaves_the_others_open() -> None:
    customer = make_customer(consent={ContactChannel.EMAIL: True, ContactChannel.SMS: True})
    suppressions = [unsubscribed(customer, channel=ContactChannel.SMS)]

    assert reason(check(customer, channel=ContactChannel.SMS, suppressions=suppressions)) is HoldReason.UNSUBSCRIBED
    assert check(customer, channel=ContactChannel.EMAIL, suppressions=suppressions) is None


def test_a_friend_who_declined_is_never_invited_again() -> None:
    declined = make_suppression(FRIEND, reason=HoldReason.DECLINED)

    hold = check(None, kind=MessageKind.INVITATION, suppressions=[declined])

    assert reason(hold) is HoldReason.DECLINED


def test_another_persons_suppression_does_not_hold() -> None:
    customer, other = make_customer(), make_customer()

    assert check(customer, suppressions=[unsubscribed(other)]) is None


def test_the_first_recorded_suppression_gives_the_reason() -> None:
    customer = make_customer()
    first = unsubscribed(customer, reason=HoldReason.DECLINED, at=datetime(2023, 1, 1, tzinfo=UTC))
    later = unsubscribed(customer, reason=HoldReason.UNSUBSCRIBED, at=datetime(2024, 1, 1, tzinfo=UTC))

    assert reason(check(customer, suppressions=[later, first])) is HoldReason.DECLINED


def test_a_suppression_is_reported_before_missing_consent() -> None:
    customer = make_customer(consent={})

    assert reason(check(customer, suppressions=[unsubscribed(customer)])) is HoldReason.UNSUBSCRIBED


@pytest.mark.parametrize(
    ("consent", "expected"),
    [
        ({ContactChannel.EMAIL: True}, None),
        ({ContactChannel.EMAIL: False}, HoldReason.NO_CONSENT),
        ({}, HoldReason.NO_CONSENT),
        ({ContactChannel.SMS: True}, HoldReason.NO_CONSENT),
    ],
)
def test_marketing_needs_consent_for_its_own_channel(
    consent: dict[ContactChannel, bool], expected: HoldReason | None
) -> None:
    assert reason(check(make_customer(consent=consent), channel=ContactChannel.EMAIL)) is expected


def test_marketing_to_someone_who_is_not_a_customer_is_held_for_no_consent() -> None:
    assert reason(check(None, kind=MessageKind.MARKETING)) is HoldReason.NO_CONSENT


def test_an_invitation_to_a_friend_who_is_not_a_customer_needs_no_consent() -> None:
    assert check(None, kind=MessageKind.INVITATION, segment=None) is None


def test_an_invitation_to_a_customer_needs_their_consent() -> None:
    customer = make_customer(consent={ContactChannel.EMAIL: False})

    assert reason(check(customer, kind=MessageKind.INVITATION)) is HoldReason.NO_CONSENT


def test_marketing_to_a_do_not_ask_customer_is_held() -> None:
    hold = check(make_customer(), segment=Segment.DO_NOT_ASK)

    assert reason(hold) is HoldReason.DO_NOT_ASK


def test_missing_consent_is_reported_before_do_not_ask() -> None:
    hold = check(make_customer(consent={}), segment=Segment.DO_NOT_ASK)

    assert reason(hold) is HoldReason.NO_CONSENT


def test_do_not_ask_is_reported_before_quiet_hours() -> None:
    hold = check(make_customer(), segment=Segment.DO_NOT_ASK, now=MIDNIGHT_IN_PARIS)

    assert reason(hold) is HoldReason.DO_NOT_ASK


def test_an_invitation_to_a_do_not_ask_customer_is_not_a_request_for_referrals() -> None:
    assert check(make_customer(), kind=MessageKind.INVITATION, segment=Segment.DO_NOT_ASK) is None


def test_a_reward_notice_needs_neither_marketing_consent_nor_a_willing_segment() -> None:
    customer = make_customer(consent={})

    assert check(customer, kind=MessageKind.TRANSACTIONAL, segment=Segment.DO_NOT_ASK) is None


def test_a_reward_notice_ignores_an_opt_out_of_its_channel_alone() -> None:
    customer = make_customer()
    suppressions = [unsubscribed(customer, channel=ContactChannel.EMAIL)]

    assert check(customer, kind=MessageKind.TRANSACTIONAL, suppressions=suppressions) is None


@pytest.mark.parametrize("suppressed_as", [HoldReason.UNSUBSCRIBED, HoldReason.ERASED])
def test_a_reward_notice_is_held_for_a_person_who_wants_no_contact_at_all(suppressed_as: HoldReason) -> None:
    customer = make_customer()
    suppressions = [unsubscribed(customer, channel=None, reason=suppressed_as)]

    assert reason(check(customer, kind=MessageKind.TRANSACTIONAL, suppressions=suppressions)) is suppressed_as


@pytest.mark.parametrize("kind", list(MessageKind))
def test_every_kind_waits_for_the_end_of_quiet_hours(kind: MessageKind) -> None:
    hold = check(make_customer(), kind=kind, now=MIDNIGHT_IN_PARIS)

    assert hold is not None
    assert hold.reason is HoldReason.QUIET_HOURS
    assert hold.retry_at == datetime(2024, 3, 2, 7, 0, tzinfo=UTC)
    assert "Europe/Paris" in hold.detail


def test_quiet_hours_follow_the_customers_own_zone() -> None:
    in_new_york = make_customer(timezone="America/New_York")

    assert check(in_new_york, now=MIDNIGHT_IN_PARIS) is None
    assert reason(check(in_new_york, now=NOON_IN_PARIS)) is HoldReason.QUIET_HOURS


def test_a_friends_quiet_hours_follow_the_fallback_zone() -> None:
    at_night_in_tokyo = datetime(2024, 3, 1, 14, 0, tzinfo=UTC)

    assert check(None, kind=MessageKind.INVITATION, now=at_night_in_tokyo) is None
    hold = check(None, kind=MessageKind.INVITATION, now=at_night_in_tokyo, fallback_timezone="Asia/Tokyo")
    assert hold is not None
    assert hold.retry_at == datetime(2024, 3, 1, 23, 0, tzinfo=UTC)


def test_a_person_key_that_is_not_the_customers_is_refused() -> None:
    with pytest.raises(InvalidInput):
        check(make_customer(), person_key="customer:someone-else")


# --- quiet_until ------------------------------------------------------------------------------------------------
def policy(start: str, end: str) -> ContactPolicy:
    return ContactPolicy(quiet_start=time.fromisoformat(start), quiet_end=time.fromisoformat(end))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("now", "zone", "expected"),
    [
        ("2024-01-15T20:00:00", "Europe/Paris", "2024-01-16T07:00:00"),
        ("2024-07-15T19:00:00", "Europe/Paris", "2024-07-16T06:00:00"),
        ("2024-07-15T18:59:59", "Europe/Paris", None),
        ("2024-01-16T02:00:00", "America/New_York", "2024-01-16T13:00:00"),
        ("2024-07-16T02:00:00", "America/New_York", "2024-07-16T12:00:00"),
        ("2024-01-15T15:00:00", "Asia/Tokyo", "2024-01-15T23:00:00"),
        ("2024-01-15T16:00:00", "Asia/Kolkata", "2024-01-16T02:30:00"),
        ("2024-01-15T11:00:00", "Australia/Sydney", "2024-01-15T21:00:00"),
        ("2024-07-15T11:00:00", "Australia/Sydney", "2024-07-15T22:00:00"),
        ("2024-01-15T12:00:00", "UTC", None),
    ],
)
def test_quiet_hours_are_read_on_the_persons_own_clock(now: str, zone: str, expected: str | None) -> None:
    assert quiet_until(utc(now), zone, POLICY) == (None if expected is None else utc(expected))


@pytest.mark.parametrize(
    ("local", "expected_local"),
    [
        ("2024-01-15T20:59:59.999999", None),
        ("2024-01-15T21:00:00", "2024-01-16T08:00:00"),
        ("2024-01-15T23:59:59", "2024-01-16T08:00:00"),
        ("2024-01-16T00:00:00", "2024-01-16T08:00:00"),
        ("2024-01-16T07:59:59.999999", "2024-01-16T08:00:00"),
        ("2024-01-16T08:00:00", None),
    ],
)
def test_overnight_quiet_hours_include_their_start_and_exclude_their_end(
    local: str, expected_local: str | None
) -> None:
    paris = ZoneInfo("Europe/Paris")
    now = datetime.fromisoformat(local).replace(tzinfo=paris)

    until = quiet_until(now, "Europe/Paris", POLICY)

    assert until == (None if expected_local is None else datetime.fromisoformat(expected_local).replace(tzinfo=paris))


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2024-05-01T11:59:59", None),
        ("2024-05-01T12:00:00", "2024-05-01T14:00:00"),
        ("2024-05-01T13:30:00", "2024-05-01T14:00:00"),
        ("2024-05-01T14:00:00", None),
        ("2024-05-01T23:00:00", None),
    ],
)
def test_a_daytime_window_holds_only_between_its_start_and_end(now: str, expected: str | None) -> None:
    assert quiet_until(utc(now), "UTC", policy("12:00", "14:00")) == (None if expected is None else utc(expected))


def test_equal_start_and_end_mean_no_quiet_hours() -> None:
    same = policy("22:00", "22:00")

    assert all(quiet_until(utc("2024-05-01T00:00:00") + timedelta(hours=h), "UTC", same) is None for h in range(24))


@pytest.mark.parametrize(
    ("now", "zone", "expected", "why"),
    [
        ("2024-03-30T21:00:00", "Europe/Paris", "2024-03-31T06:00:00", "spring forward: 08:00 is CEST"),
        ("2024-10-26T20:00:00", "Europe/Paris", "2024-10-27T07:00:00", "fall back: 08:00 is CET"),
        ("2024-03-10T03:00:00", "America/New_York", "2024-03-10T12:00:00", "spring forward: 08:00 is EDT"),
        ("2024-11-03T03:00:00", "America/New_York", "2024-11-03T13:00:00", "fall back: 08:00 is EST"),
        ("2024-03-31T00:59:59", "Europe/Paris", "2024-03-31T06:00:00", "the last second before the gap"),
        ("2024-03-31T01:00:00", "Europe/Paris", "2024-03-31T06:00:00", "the first second after the gap"),
    ],
)
def test_quiet_hours_across_a_dst_change_end_at_the_local_time_of_that_morning(
    now: str, zone: str, expected: str, why: str
) -> None:
    assert quiet_until(utc(now), zone, POLICY) == utc(expected), why


def test_an_end_skipped_by_a_dst_gap_comes_when_the_clock_jumps() -> None:
    # Paris, 2024-03-31: 02:00 CET (01:00 UTC) becomes 03:00 CEST, so 02:30 never shows.
    ends_in_gap = policy("21:00", "02:30")

    assert quiet_until(utc("2024-03-31T00:30:00"), "Europe/Paris", ends_in_gap) == utc("2024-03-31T01:00:00")
    assert quiet_until(utc("2024-03-31T01:00:00"), "Europe/Paris", ends_in_gap) is None


def test_a_start_skipped_by_a_dst_gap_begins_when_the_clock_jumps() -> None:
    starts_in_gap = policy("02:30", "06:00")

    assert quiet_until(utc("2024-03-31T00:59:59"), "Europe/Paris", starts_in_gap) is None
    assert quiet_until(utc("2024-03-31T01:00:00"), "Europe/Paris", starts_in_gap) == utc("2024-03-31T04:00:00")


def test_a_gap_that_jumps_from_one_night_into_the_next_holds_until_the_next_end() -> None:
    # Quiet from 02:45 to 02:30: at the jump from 02:00 to 03:00 the clock is already past the next start.
    almost_always = policy("02:45", "02:30")

    assert quiet_until(utc("2024-03-31T00:30:00"), "Europe/Paris", almost_always) == utc("2024-04-01T00:30:00")


def test_an_end_repeated_by_a_dst_fold_is_met_on_each_pass() -> None:
    # New York, 2024-11-03: 02:00 EDT (06:00 UTC) becomes 01:00 EST, so 01:00-02:00 shows twice.
    ends_in_fold = policy("21:00", "01:30")

    assert quiet_until(utc("2024-11-03T05:00:00"), "America/New_York", ends_in_fold) == utc("2024-11-03T05:30:00")
    assert quiet_until(utc("2024-11-03T05:30:00"), "America/New_York", ends_in_fold) is None
    assert quiet_until(utc("2024-11-03T06:10:00"), "America/New_York", ends_in_fold) == utc("2024-11-03T06:30:00")


def test_a_fold_that_sets_the_clock_back_before_the_start_ends_quiet_hours_early() -> None:
    starts_in_fold = policy("01:15", "06:00")

    assert quiet_until(utc("2024-11-03T05:20:00"), "America/New_York", starts_in_fold) == utc("2024-11-03T06:00:00")
    assert quiet_until(utc("2024-11-03T06:00:00"), "America/New_York", starts_in_fold) is None
    assert quiet_until(utc("2024-11-03T06:15:00"), "America/New_York", starts_in_fold) == utc("2024-11-03T11:00:00")


def test_a_naive_time_is_read_as_utc() -> None:
    assert quiet_until(datetime(2024, 1, 15, 20, 0), "Europe/Paris", POLICY) == utc("2024-01-16T07:00:00")


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(InvalidInput):
        quiet_until(NOON_IN_PARIS, "Mars/Olympus_Mons", POLICY)


ZONES = ["Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Santiago", "UTC"]
WALL_TIMES = st.times().map(lambda t: t.replace(second=0, microsecond=0))


def quiet_at(instant: datetime, zone: str, policy: ContactPolicy) -> bool:
    wall = instant.astimezone(ZoneInfo(zone)).time()
    start, end = policy.quiet_start, policy.quiet_end
    return (wall >= start or wall < end) if start > end else start <= wall < end


@settings(max_examples=300, deadline=None)
@given(
    now=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
    zone=st.sampled_from(ZONES),
    start=WALL_TIMES,
    end=WALL_TIMES,
    fraction=st.floats(min_value=0, max_value=1),
)
def test_quiet_hours_end_at_the_first_instant_the_clock_leaves_them(
    now: datetime, zone: str, start: time, end: time, fraction: float
) -> None:
    rule = ContactPolicy(quiet_start=start, quiet_end=end)

    until = quiet_until(now, zone, rule)

    if until is None:
        assert start == end or not quiet_at(now, zone, rule)
        return
    assert until > now
    assert until - now <= timedelta(hours=50)
    assert not quiet_at(until, zone, rule)
    assert quiet_at(until - timedelta(microseconds=1), zone, rule)
    assert quiet_at(now + (until - now) * fraction, zone, rule) or now + (until - now) * fraction >= until
