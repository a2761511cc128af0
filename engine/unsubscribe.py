"""Signed one-click unsubscribe links: the link itself is the proof, so no login stands between a person and "stop".

A token is `base64url(payload) "." base64url(HMAC-SHA256(secret, payload))`, unpadded. The payload names the
person, the channel to stop (`*` for every channel) and when the link was issued, so a link keeps working for
`max_age_days` (it sits in an old email) and then expires. Nothing is stored per token: one secret signs them all,
and a list of secrets lets a new secret sign while links signed with the old one still work during rotation.

Every way a token can be wrong (malformed, forged, expired, issued in the future) raises `Unauthorized`, and
nothing else, whatever string arrives at `/u/<token>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from graph.errors import Unauthorized
from graph.model import ContactChannel
from graph.outreach import PersonKey

if TYPE_CHECKING:
    from engine.settings import ContactSettings

ALL_CHANNELS: Final = "*"
MAX_CLOCK_SKEW: Final = timedelta(minutes=5)
"""A token issued this far in the future is still accepted: the servers that sign and read it may disagree."""
MAX_TOKEN_LENGTH: Final = 512
_DOMAIN: Final = b"advocacy.unsubscribe.v1\x00"
"""Prefixed to every signed payload, so a MAC made with the same secret for another purpose never matches."""
_B64 = re.compile(r"[A-Za-z0-9_-]+")
_LATEST = 10**11
_PERSON_KEY: TypeAdapter[str] = TypeAdapter(PersonKey)


class UnsubscribeRequest(BaseModel):
    """What a valid link asks: stop contacting `person_key` on `channel` (None = every channel)."""

    model_config = ConfigDict(frozen=True)

    person_key: PersonKey
    channel: ContactChannel | None
    issued_at: datetime


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    """Strict: only the URL-safe alphabet, and only the one canonical spelling of each byte string."""
    if not _B64.fullmatch(text):
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _encode(raw) != text:
        raise ValueError("not canonical base64url")
    return raw


def _mac(secret: str, payload: bytes) -> bytes:
    if not secret:
        raise ValueError("the unsubscribe secret cannot be empty")
    return hmac.new(secret.encode("utf-8"), _DOMAIN + payload, hashlib.sha256).digest()


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value


def make_token(secret: str, person_key: str, *, channel: ContactChannel | None, issued_at: datetime) -> str:
    """A URL-safe token that lets its bearer unsubscribe `person_key` from `channel` (None = every channel).

    >>> from datetime import UTC, datetime
    >>> token = make_token("s3cret", "customer:c1", channel=None, issued_at=datetime(2024, 1, 1, tzinfo=UTC))
    >>> read_token("s3cret", token, now=datetime(2024, 2, 1, tzinfo=UTC)).person_key
    'customer:c1'
    """
    _PERSON_KEY.validate_python(person_key)
    issued = int(_aware(issued_at, "issued_at").timestamp())
    payload = f"{person_key}|{channel.value if channel else ALL_CHANNELS}|{issued}".encode("ascii")
    return f"{_encode(payload)}.{_encode(_mac(secret, payload))}"


def _secrets(secret: str | Sequence[str]) -> list[str]:
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not secrets or not all(secrets):
        raise ValueError("at least one non-empty unsubscribe secret is needed")
    return secrets


def _signed_payload(secrets: list[str], token: str) -> bytes:
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise Unauthorized("malformed unsubscribe link")
    payload_part, signature_part = token.split(".")
    try:
        payload, signature = _decode(payload_part), _decode(signature_part)
    except (ValueError, binascii.Error):
        raise Unauthorized("malformed unsubscribe link") from None
    matched = False
    for secret in secrets:
        matched |= hmac.compare_digest(_mac(secret, payload), signature)
    if not matched:
        raise Unauthorized("unsubscribe link not signed by us (altered, or signed with a retired secret)")
    return payload


def _parse(payload: bytes) -> UnsubscribeRequest:
    """Only a payload we signed gets here; it is still read defensively, as if a secret had leaked."""
    try:
        person_key, channel, issued = payload.decode("ascii").split("|")
        if not issued.isdigit() or int(issued) > _LATEST:
            raise ValueError("issued time out of range")
        return UnsubscribeRequest(
            person_key=person_key,
            channel=None if channel == ALL_CHANNELS else ContactChannel(channel),
            issued_at=datetime.fromtimestamp(int(issued), UTC),
        )
    except (ValueError, ValidationError):
        raise Unauthorized("malformed unsubscribe link") from None


def link_secrets(contact: ContactSettings) -> list[str]:
    """Every secret a link may be signed with: the current one, then those retired from signing
    (`contact.unsubscribe_previous_secrets`), for `read_token`. New links are signed with the first."""
    return [secret.get_secret_value() for secret in (contact.unsubscribe_secret, *contact.unsubscribe_previous_secrets)]


def read_token(
    secret: str | Sequence[str], token: str, *, now: datetime, max_age_days: int = 400
) -> UnsubscribeRequest:
    """What a token asks, or `Unauthorized`. `secret` may be a list: the current secret and those being retired."""
    secrets = _secrets(secret)
    request = _parse(_signed_payload(secrets, token))
    age = _aware(now, "now") - request.issued_at
    if age > timedelta(days=max_age_days):
        raise Unauthorized(f"unsubscribe link expired: issued {age.days} days ago, valid for {max_age_days}")
    if -age > MAX_CLOCK_SKEW:
        raise Unauthorized("unsubscribe link issued in the future")
    return request


def unsubscribe_url(base_url: str, token: str) -> str:
    """The one-click link, `<base>/u/<token>` (also the target of RFC 8058's one-click POST).

    >>> unsubscribe_url("https://example.com/", "abc.def")
    'https://example.com/u/abc.def'
    """
    return f"{base_url.rstrip('/')}/u/{token}"
