"""Signed one-click unsubscribe tokens: what a valid link asks, and every way a link can be refused."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from engine.limits import SqliteContactLimiter
from engine.outreach import OutreachService
from engine.settings import ContactSettings, Settings
from engine.unsubscribe import MAX_CLOCK_SKEW, _mac, link_secrets, make_token, read_token, unsubscribe_url
from graph.errors import Unauthorized
from graph.model import ContactChannel
from graph.sqlite_store import SqliteStore

SECRET = "unsubscribe-secret-for-tests"
ISSUED = datetime(2025, 3, 1, 12, 0, 30, tzinfo=UTC)
LATER = ISSUED + timedelta(days=30)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("channel", [None, ContactChannel.SMS, ContactChannel.EMAIL])
def test_a_token_reads_back_as_the_person_channel_and_time_it_was_made_for(channel):
    token = make_token(SECRET, "customer:c-42", channel=channel, issued_at=ISSUED)
    request = read_token(SECRET, token, now=LATER)
    assert (request.person_key, request.channel, request.issued_at) == ("customer:c-42", channel, ISSUED)


def test_a_token_is_url_safe_and_makes_a_link_under_u():
    token = make_token(SECRET, "email:" + "ab" * 16, channel=None, issued_at=ISSUED)
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}", token)
    assert unsubscribe_url("https://shop.example/", token) == f"https://shop.example/u/{token}"
    assert unsubscribe_url("https://shop.example", token) == f"https://shop.example/u/{token}"


def test_a_payload_rewritten_to_another_person_is_refused():
    token = make_token(SECRET, "customer:alice", channel=ContactChannel.SMS, issued_at=ISSUED)
    payload, signature = token.split(".")
    forged = b64(unb64(payload).replace(b"alice", b"bobby"))
    with pytest.raises(Unauthorized, match="not signed by us"):
        read_token(SECRET, f"{forged}.{signature}", now=LATER)


def test_a_token_signed_with_another_secret_is_refused():
    token = make_token("someone-elses-secret", "customer:c1", channel=None, issued_at=ISSUED)
    with pytest.raises(Unauthorized, match="not signed by us"):
        read_token(SECRET, token, now=LATER)


def test_rotation_accepts_links_signed_with_the_old_secret_until_it_is_retired():
    old = make_token("old-secret", "customer:c1", channel=None, issued_at=ISSUED)
    new = make_token("new-secret", "customer:c1", channel=None, issued_at=ISSUED)
    assert read_token(["new-secret", "old-secret"], old, now=LATER).person_key == "customer:c1"
    assert read_token(["new-secret", "old-secret"], new, now=LATER).person_key == "customer:c1"
    with pytest.raises(Unauthorized):
        read_token(["new-secret"], old, now=LATER)


def test_no_secret_or_an_empty_one_is_a_programming_error_not_a_refusal():
    token = make_token(SECRET, "customer:c1", channel=None, issued_at=ISSUED)
    for secrets in ([], [""], ""):
        with pytest.raises(ValueError, match="non-empty"):
            read_token(secrets, token, now=LATER)


def test_a_token_older_than_its_lifetime_is_refused():
    token = make_token(SECRET, "customer:c1", channel=None, issued_at=ISSUED)
    assert read_token(SECRET, token, now=ISSUED + timedelta(days=400)).person_key == "customer:c1"
    with pytest.raises(Unauthorized, match="expired"):
        read_token(SECRET, token, now=ISSUED + timedelta(days=400, seconds=1))
    with pytest.raises(Unauthorized, match="expired"):
        read_token(SECRET, token, now=ISSUED + timedelta(days=31), max_age_days=30)


def test_a_token_from_the_future_is_refused_beyond_the_clock_skew():
    token = make_token(SECRET, "customer:c1", channel=None, issued_at=ISSUED)
    assert read_token(SECRET, token, now=ISSUED - MAX_CLOCK_SKEW).issued_at == ISSUED
    with pytest.raises(Unauthorized, match="future"):
        read_token(SECRET, token, now=ISSUED - MAX_CLOCK_SKEW - timedelta(seconds=1))


def test_junk_added_to_a_valid_token_is_refused():
    token = make_token(SECRET, "customer:c1", channel=None, issued_at=ISSUED)
    payload, signature = token.split(".")
    for mangled in (f"{token}.", f"{payload}..{signature}", f"{payload}=.{signature}", f"{payload} .{signature}"):
        with pytest.raises(Unauthorized, match="malformed"):
            read_token(SECRET, mangled, now=LATER)


def test_a_signed_payload_that_does_not_parse_is_refused():
    """Even a correctly signed payload is read defensively, as if the secret had leaked."""
    for payload in (b"customer:c1|*", b"not a key|*|1740830430", b"customer:c1|fax|1740830430", b"customer:c1|*|+1"):
        token = f"{b64(payload)}.{b64(_mac(SECRET, payload))}"
        with pytest.raises(Unauthorized, match="malformed"):
            read_token(SECRET, token, now=LATER)


def test_making_a_token_for_something_that_is_not_a_person_key_fails():
    with pytest.raises(ValueError, match="person key"):
        make_token(SECRET, "customer:c1|*|0", channel=None, issued_at=ISSUED)
    with pytest.raises(ValueError, match="timezone-aware"):
        make_token(SECRET, "customer:c1", channel=None, issued_at=ISSUED.replace(tzinfo=None))


@given(st.text(max_size=600))
def test_any_string_is_either_refused_as_unauthorized_or_read(text):
    try:
        request = read_token(SECRET, text, now=LATER)
    except Unauthorized:
        return
    assert request.person_key.startswith(("customer:", "email:"))


@given(st.from_regex(r"[A-Za-z0-9_-]{0,200}\.[A-Za-z0-9_-]{0,60}", fullmatch=True))
def test_any_token_shaped_string_is_refused_unless_we_signed_it(text):
    with pytest.raises(Unauthorized):
        read_token(SECRET, text, now=LATER)


@given(
    person=st.from_regex(r"customer:[A-Za-z0-9][A-Za-z0-9._:@+-]{0,40}", fullmatch=True),
    channel=st.none() | st.sampled_from(ContactChannel),
    days=st.integers(min_value=0, max_value=400),
)
def test_every_person_and_channel_round_trips(person, channel, days):
    token = make_token(SECRET, person, channel=channel, issued_at=ISSUED)
    request = read_token([SECRET], token, now=ISSUED + timedelta(days=days))
    assert (request.person_key, request.channel) == (person, channel)


# --- rotation through the settings ---------------------------------------------------------------------------
def contact_settings(current: str, *previous: str) -> ContactSettings:
    return ContactSettings(
        unsubscribe_secret=SecretStr(current), unsubscribe_previous_secrets=[SecretStr(p) for p in previous]
    )


def test_a_link_signed_with_a_previous_secret_reads_while_the_settings_list_that_secret() -> None:
    old = make_token("old-secret", "customer:c1", channel=None, issued_at=ISSUED)
    assert read_token(link_secrets(contact_settings("new-secret", "old-secret")), old, now=LATER).person_key == (
        "customer:c1"
    )
    with pytest.raises(Unauthorized, match="retired secret"):
        read_token(link_secrets(contact_settings("new-secret")), old, now=LATER)


def test_the_current_secret_comes_first_so_it_is_the_one_new_links_are_signed_with() -> None:
    assert link_secrets(contact_settings("new-secret", "old-secret", "older-secret")) == [
        "new-secret",
        "old-secret",
        "older-secret",
    ]
    assert link_secrets(ContactSettings()) == [ContactSettings().unsubscribe_secret.get_secret_value()]


def test_previous_secrets_are_read_from_the_environment_as_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVOCACY_CONTACT__UNSUBSCRIBE_SECRET", "new-secret")
    monkeypatch.setenv("ADVOCACY_CONTACT__UNSUBSCRIBE_PREVIOUS_SECRETS", '["old-secret", "older-secret"]')
    settings = Settings(_env_file=None)
    assert link_secrets(settings.contact) == ["new-secret", "old-secret", "older-secret"]
    assert "old-secret" not in repr(settings.contact)


def test_the_outreach_service_honours_a_link_signed_with_a_previous_secret(tmp_path: Path) -> None:
    settings = Settings(store=f"sqlite:///{tmp_path / 'a.db'}", contact=contact_settings("new-secret", "old-secret"))
    old = make_token("old-secret", "customer:c1", channel=ContactChannel.SMS, issued_at=ISSUED)
    store, limiter = SqliteStore(tmp_path / "a.db"), SqliteContactLimiter(tmp_path / "contacts.db")
    try:
        service = OutreachService(store, settings, limiter=limiter, adapters={}, clock=lambda: LATER)
        assert service.read_unsubscribe(old).channel is ContactChannel.SMS
    finally:
        limiter.close()
        store.close()
