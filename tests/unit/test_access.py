"""The pure credential rules: API keys, customer tokens, sessions and CSRF."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jwt.warnings import InsecureKeyLengthWarning

from engine.access import (
    CUSTOMER_AUDIENCE,
    Scope,
    check_api_key,
    check_csrf,
    grants,
    issue_customer_token,
    issue_session,
    new_api_key,
    parse_scopes,
    read_customer_token,
    read_session,
    split_api_key,
)
from graph.errors import Forbidden, InvalidInput, Unauthorized

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
KEYS = {"k1": "a" * 32, "k2": "b" * 32}
HOUR = timedelta(hours=1)


def test_a_new_key_is_shown_once_and_stored_only_as_a_hash() -> None:
    record, key = new_api_key("checkout", ["orders:write", "read"], now=NOW)
    key_id, secret = split_api_key(key)
    assert key_id == record.id
    assert secret not in record.model_dump_json()
    assert record.scopes == ("orders:write", "read")
    assert check_api_key(record, secret) is record


def test_a_wrong_secret_an_unknown_id_and_a_revoked_key_are_refused_alike() -> None:
    record, key = new_api_key("checkout", ["read"], now=NOW)
    _, secret = split_api_key(key)
    wrong = secret[:-1] + ("x" if secret[-1] != "x" else "y")
    revoked = record.model_copy(update={"revoked_at": NOW})
    messages = set()
    for candidate, presented in ((record, wrong), (None, secret), (revoked, secret)):
        with pytest.raises(Unauthorized) as caught:
            check_api_key(candidate, presented)
        messages.add(caught.value.detail)
    assert messages == {"unknown or revoked API key"}


@pytest.mark.parametrize(
    "presented", ["", "adv_", "adv_short_x", "adv_UPPERCASE12_" + "x" * 40, "sk_live_123", "adv_abcdefgh"]
)
def test_a_malformed_key_is_refused_before_any_lookup(presented: str) -> None:
    with pytest.raises(Unauthorized):
        split_api_key(presented)


def test_unknown_scopes_and_no_scopes_are_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(InvalidInput, match="known: read"):
        parse_scopes(["read", "root"])
    with pytest.raises(InvalidInput, match="at least one"):
        parse_scopes([])


def test_admin_grants_every_scope_and_others_grant_only_themselves() -> None:
    assert all(grants(["admin"], scope) for scope in Scope)
    assert grants(["read"], Scope.READ)
    assert not grants(["read"], Scope.REWARDS_WRITE)


def test_a_customer_token_round_trips_its_customer_and_id() -> None:
    token, claims = issue_customer_token(KEYS, "k1", "cust-1", now=NOW, ttl=timedelta(minutes=15))
    read = read_customer_token(KEYS, token, now=NOW + timedelta(minutes=14), max_ttl=HOUR)
    assert (read.customer_id, read.jti) == ("cust-1", claims.jti)


def test_tokens_signed_with_the_previous_key_still_work_while_it_is_configured() -> None:
    token, _ = issue_customer_token(KEYS, "k2", "cust-1", now=NOW, ttl=timedelta(minutes=15))
    assert read_customer_token(KEYS, token, now=NOW, max_ttl=HOUR).customer_id == "cust-1"
    with pytest.raises(Unauthorized, match="unknown key"):
        read_customer_token({"k1": KEYS["k1"]}, token, now=NOW, max_ttl=HOUR)


def test_an_expired_token_is_refused() -> None:
    token, _ = issue_customer_token(KEYS, "k1", "cust-1", now=NOW, ttl=timedelta(minutes=15))
    with pytest.raises(Unauthorized, match="expired"):
        read_customer_token(KEYS, token, now=NOW + timedelta(minutes=15), max_ttl=HOUR)


def test_a_token_read_before_is_still_checked_for_expiry_and_against_the_key_in_use_now() -> None:
    """The signature check of a token is remembered (a widget shows it on every page); nothing else is."""
    token, _ = issue_customer_token(KEYS, "k1", "cust-1", now=NOW, ttl=timedelta(minutes=15))
    assert read_customer_token(KEYS, token, now=NOW, max_ttl=HOUR).customer_id == "cust-1"
    with pytest.raises(Unauthorized, match="expired"):
        read_customer_token(KEYS, token, now=NOW + timedelta(minutes=15), max_ttl=HOUR)
    with pytest.raises(Unauthorized, match="invalid"):
        read_customer_token({"k1": "c" * 32}, token, now=NOW, max_ttl=HOUR)  # k1 now names another secret


def test_a_token_that_lives_longer_than_allowed_is_refused_whoever_signed_it() -> None:
    token, _ = issue_customer_token(KEYS, "k1", "cust-1", now=NOW, ttl=timedelta(days=30))
    with pytest.raises(Unauthorized, match="longer than"):
        read_customer_token(KEYS, token, now=NOW, max_ttl=HOUR)


def test_a_token_issued_in_the_future_is_refused() -> None:
    token, _ = issue_customer_token(KEYS, "k1", "cust-1", now=NOW + timedelta(minutes=5), ttl=timedelta(minutes=15))
    with pytest.raises(Unauthorized, match="future"):
        read_customer_token(KEYS, token, now=NOW, max_ttl=HOUR)


def _payload(**extra: object) -> dict[str, object]:
    now = int(NOW.timestamp())
    return {"sub": "cust-1", "aud": CUSTOMER_AUDIENCE, "iat": now, "exp": now + 600, "jti": "j1", **extra}


def _quietly(encode: Callable[..., str], *args: Any, **kwargs: Any) -> str:
    """A token signed as an attacker would, without PyJWT's warning that the key is short for that algorithm."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return encode(*args, **kwargs)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode(_payload(), "c" * 32, algorithm="HS256", headers={"kid": "k1"}),  # forged: another key
        jwt.encode(_payload(aud="advocacy:session"), KEYS["k1"], algorithm="HS256", headers={"kid": "k1"}),
        _quietly(jwt.encode, _payload(), KEYS["k1"], algorithm="HS512", headers={"kid": "k1"}),  # short for HS512
        jwt.encode(_payload(jti=""), KEYS["k1"], algorithm="HS256", headers={"kid": "k1"}),
        f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': 'k1'})}.{_b64(_payload())}.",
        jwt.encode(_payload(), KEYS["k1"], algorithm="HS256"),  # no kid
        "not.a.token",
        "eyJ",
    ],
    ids=["forged", "wrong-audience", "other-alg", "no-jti", "alg-none", "no-kid", "garbage", "truncated"],
)
def test_forged_and_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(Unauthorized):
        read_customer_token(KEYS, token, now=NOW, max_ttl=HOUR)


@given(st.text(max_size=300))
def test_no_string_is_ever_accepted_as_a_token_or_crashes_the_reader(text: str) -> None:
    with pytest.raises(Unauthorized):
        read_customer_token(KEYS, text, now=NOW, max_ttl=HOUR)


def test_a_session_round_trips_and_is_not_a_customer_token() -> None:
    token, session = issue_session("s" * 32, "marketer", "key123", now=NOW, ttl=HOUR)
    assert read_session("s" * 32, token, now=NOW) == session
    with pytest.raises(Unauthorized):
        read_customer_token({"s1": "s" * 32}, token, now=NOW, max_ttl=HOUR)
    with pytest.raises(Unauthorized, match="expired"):
        read_session("s" * 32, token, now=NOW + HOUR)


def test_csrf_must_echo_the_sessions_secret() -> None:
    _, session = issue_session("s" * 32, "customer", "cust-1", now=NOW, ttl=HOUR)
    check_csrf(session, session.csrf)
    for presented in (None, "", session.csrf + "x"):
        with pytest.raises(Forbidden):
            check_csrf(session, presented)
