"""Who may do what: marketer API keys with scopes, customer tokens, and page sessions.

Pure rules, no I/O: the caller loads an `ApiKey` record from the store and passes it in.

- A marketer API key reads `adv_<id>_<secret>`. Only the id and the SHA-256 of the secret are stored; the key is
  shown once when it is created. The secret carries 256 random bits, so a fast hash is enough (a slow password
  hash protects low-entropy passwords, which these are not) and the check costs microseconds per request.
- A customer token is a short-lived HS256 JWT (`sub` = the customer id, audience `advocacy:customer`) signed by
  the merchant's backend, which knows who is signed in on its site, with a key it shares with the engine; or
  issued by the engine on a marketer key's request (`tokens:issue`). Keys rotate by `kid`.
- A session is what a browser holds after signing in: a signed cookie naming a marketer key or a customer, with a
  CSRF secret that unsafe requests must echo in a header or form field.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Final, Literal

import jwt
from jwt.utils import base64url_decode

from engine.settings import Settings
from graph.access import ApiKey
from graph.errors import Forbidden, InvalidInput, Unauthorized

KEY_PREFIX: Final = "adv"
CUSTOMER_AUDIENCE: Final = "advocacy:customer"
SESSION_AUDIENCE: Final = "advocacy:session"
ALGORITHM: Final = "HS256"
_KEY_SHAPE: Final = re.compile(r"^adv_([a-z0-9]{8,32})_([A-Za-z0-9_-]{20,200})$")


class Scope(StrEnum):
    """What a marketer key may do. `read` covers every GET; `admin` covers everything, keys included."""

    READ = "read"
    CUSTOMERS_WRITE = "customers:write"
    ANALYSIS_RUN = "analysis:run"
    CAMPAIGNS_WRITE = "campaigns:write"
    ORDERS_WRITE = "orders:write"
    REWARDS_WRITE = "rewards:write"
    TOKENS_ISSUE = "tokens:issue"
    ADMIN = "admin"


SCOPE_HELP: Final[Mapping[Scope, str]] = {
    Scope.READ: "read everything a marketer sees: customers, analyses, targets, campaigns, metrics",
    Scope.CUSTOMERS_WRITE: "import, update and erase customers; their relationships, events and codes",
    Scope.ANALYSIS_RUN: "run analyses and forecasts",
    Scope.CAMPAIGNS_WRITE: "create and change campaigns, templates and outreach; launch and pause them",
    Scope.ORDERS_WRITE: "record signups, orders and refunds (the merchant's backend)",
    Scope.REWARDS_WRITE: "approve, fulfil and review rewards and fraud cases: moves money",
    Scope.TOKENS_ISSUE: "issue short-lived customer tokens",
    Scope.ADMIN: "everything, including managing API keys",
}


def parse_scopes(values: Iterable[str]) -> tuple[Scope, ...]:
    """Sorted, unique scopes; an unknown name is refused with the list of known ones."""
    out: set[Scope] = set()
    for value in values:
        try:
            out.add(Scope(value.strip()))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise InvalidInput(f"unknown scope {value!r} (known: {known})") from None
    if not out:
        raise InvalidInput("an API key needs at least one scope")
    return tuple(sorted(out))


def grants(scopes: Iterable[str], needed: Scope) -> bool:
    held = set(scopes)
    return Scope.ADMIN.value in held or needed.value in held


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key(name: str, scopes: Iterable[str], *, now: datetime) -> tuple[ApiKey, str]:
    """A new key record for the store and the key itself, which is shown once and never stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(
        id=key_id,
        name=name,
        scopes=tuple(s.value for s in parse_scopes(scopes)),
        secret_hash=_digest(secret),
        created_at=now,
    )
    return record, f"{KEY_PREFIX}_{key_id}_{secret}"


def looks_like_api_key(presented: str) -> bool:
    return presented.startswith(KEY_PREFIX + "_")


def split_api_key(presented: str) -> tuple[str, str]:
    """The key's id and secret; a malformed key is refused without a store lookup."""
    match = _KEY_SHAPE.match(presented)
    if match is None:
        raise Unauthorized("malformed API key")
    return match.group(1), match.group(2)


def check_api_key(record: ApiKey | None, secret: str) -> ApiKey:
    """The record if the secret matches an active key; one vague answer for every failure (no key probing)."""
    if record is None:
        _digest(secret)  # the same work as a real check, so timing does not tell which ids exist
        raise Unauthorized("unknown or revoked API key")
    if not hmac.compare_digest(_digest(secret), record.secret_hash) or record.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key")
    return record


@dataclass(frozen=True, slots=True)
class CustomerClaims:
    customer_id: str
    jti: str
    issued_at: datetime
    expires_at: datetime


def token_keys(settings: Settings) -> dict[str, str]:
    """The configured customer token keys by `kid`, as the signing and reading functions take them."""
    return {kid: key.get_secret_value() for kid, key in settings.api.customer_token_keys.items()}


def issue_customer_token(
    keys: Mapping[str, str], kid: str, customer_id: str, *, now: datetime, ttl: timedelta
) -> tuple[str, CustomerClaims]:
    """Sign a customer token the way a merchant's backend would (the docs show the same in a few lines)."""
    if kid not in keys:
        raise InvalidInput(f"no customer token key with kid {kid!r}")
    issued = now.replace(microsecond=0)
    claims = CustomerClaims(customer_id, secrets.token_urlsafe(12), issued, issued + ttl)
    payload = {
        "sub": customer_id,
        "aud": CUSTOMER_AUDIENCE,
        "iat": int(issued.timestamp()),
        "exp": int(claims.expires_at.timestamp()),
        "jti": claims.jti,
    }
    return jwt.encode(payload, keys[kid], algorithm=ALGORITHM, headers={"kid": kid}), claims


def read_customer_token(keys: Mapping[str, str], token: str, *, now: datetime, max_ttl: timedelta) -> CustomerClaims:
    """The claims of a valid customer token; expired, forged, over-long or malformed tokens are refused."""
    payload = _decode(keys, token, audience=CUSTOMER_AUDIENCE, now=now, what="customer token")
    subject, jti = payload.get("sub"), payload.get("jti")
    if not isinstance(subject, str) or not subject or not isinstance(jti, str) or not jti:
        raise Unauthorized("customer token lacks sub or jti")
    issued = datetime.fromtimestamp(int(payload["iat"]), UTC)
    expires = datetime.fromtimestamp(int(payload["exp"]), UTC)
    if expires - issued > max_ttl:
        raise Unauthorized(f"customer token lives longer than the allowed {int(max_ttl.total_seconds())} s")
    if issued > now + timedelta(seconds=30):
        raise Unauthorized("customer token issued in the future")
    return CustomerClaims(subject, jti, issued, expires)


def _decode(keys: Mapping[str, str], token: str, *, audience: str, now: datetime, what: str) -> Mapping[str, Any]:
    segment = token.partition(".")[0]
    try:
        header = _known_header(segment) if len(segment) <= _KNOWN_HEADER_CHARS else _header(segment)
    except ValueError:
        raise Unauthorized(f"malformed {what}") from None
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or not isinstance(kid, str) or kid not in keys:
        raise Unauthorized(f"{what} signed with an unknown key or algorithm")
    payload = _verified(token, keys[kid], audience, what)
    if int(payload["exp"]) <= int(now.timestamp()):
        raise Unauthorized(f"expired {what}")
    return payload


def _header(segment: str) -> Mapping[str, Any]:
    """A token's header, unverified: its kid picks the key; the signature check reads the whole token again."""
    header = json.loads(base64url_decode(segment))
    if not isinstance(header, dict):
        raise ValueError("a token's header is a JSON object")
    return MappingProxyType(header)


_KNOWN_HEADER_CHARS: Final = 256
"""Headers this short are kept: every token signed with one key has the same header, and PyJWT's own reading of
it checked each character of the whole token on every request."""


@lru_cache(maxsize=64)
def _known_header(segment: str) -> Mapping[str, Any]:
    return _header(segment)


@lru_cache(maxsize=4096)
def _verified(token: str, key: str, audience: str, what: str) -> Mapping[str, Any]:
    """The signature and audience check, kept per (token, key): a widget shows the same token on every page
    view. A refusal is an exception, never kept; expiry is checked by the caller on every use."""
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            options={"require": ["exp", "iat", "sub"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid {what}: {exc}") from None
    return MappingProxyType(payload)


SessionKind = Literal["marketer", "customer"]


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: a marketer key's id or a customer's id, and the CSRF secret its forms echo."""

    kind: SessionKind
    subject: str
    csrf: str
    expires_at: datetime


SESSION_KID: Final = "s1"


def issue_session(
    secret: str, kind: SessionKind, subject: str, *, now: datetime, ttl: timedelta
) -> tuple[str, Session]:
    issued = now.replace(microsecond=0)
    session = Session(kind, subject, secrets.token_urlsafe(18), issued + ttl)
    payload = {
        "sub": subject,
        "kind": kind,
        "csrf": session.csrf,
        "aud": SESSION_AUDIENCE,
        "iat": int(issued.timestamp()),
        "exp": int(session.expires_at.timestamp()),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM, headers={"kid": SESSION_KID}), session


def read_session(secret: str, token: str, *, now: datetime) -> Session:
    payload = _decode({SESSION_KID: secret}, token, audience=SESSION_AUDIENCE, now=now, what="session")
    kind, csrf = payload.get("kind"), payload.get("csrf")
    if kind not in ("marketer", "customer") or not isinstance(csrf, str):
        raise Unauthorized("malformed session")
    return Session(kind, str(payload["sub"]), csrf, datetime.fromtimestamp(int(payload["exp"]), UTC))


def check_csrf(session: Session, presented: str | None) -> None:
    """Unsafe requests from a session must echo its CSRF secret (a cross-site form cannot read it)."""
    if presented is None or not hmac.compare_digest(presented, session.csrf):
        raise Forbidden("missing or wrong CSRF token: send the page's X-CSRF-Token header or csrf_token field")
