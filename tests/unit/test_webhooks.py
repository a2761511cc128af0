"""Inbound webhooks: signatures, our envelope, Shopify's payloads, and the keyed hashes that replace IP addresses."""

from __future__ import annotations

import ast
import base64
import copy
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.fraud import customer_signals
from engine.webhooks import (
    OrderEvent,
    RefundEvent,
    SignupEvent,
    currency_exponent,
    keyed_hash,
    parse_event,
    parse_shopify_order,
    parse_shopify_refund,
    referring_host,
    sign,
    to_minor,
    verify,
    verify_shopify,
    visitor_identity,
)
from graph.errors import InvalidInput, RowError, Unauthorized
from graph.program import Signal, SignalKind

SECRET = "whsec_test_1"
IP_KEY = "ip-key-for-tests"
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
BODY = b'{"id":"evt_1","type":"order.paid"}'
DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def problems_of(exc: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return [p.reason for p in exc.value.problems]


def fields_at_fault(exc: pytest.ExceptionInfo[InvalidInput]) -> list[str]:
    return [reason.split(":", 1)[0] for reason in problems_of(exc)]


def set_path(payload: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `payload` with `data.customer.email` (say) set to `value`, or removed when value is ...."""
    changed = copy.deepcopy(payload)
    *parents, last = path.split(".")
    target = changed
    for key in parents:
        target = target[key]
    if value is ...:
        target.pop(last, None)
    else:
        target[last] = value
    return changed


# --- signatures ----------------------------------------------------------------------------------------------
def test_a_signed_body_verifies_within_the_tolerance() -> None:
    header = sign(BODY, SECRET, timestamp=T - 299)
    verify(BODY, header, SECRET, now=NOW, tolerance_s=300)


def test_the_signature_is_hmac_sha256_of_the_timestamp_a_dot_and_the_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET, timestamp=T) == f"t={T},v1={expected}"


def test_a_tampered_body_is_refused() -> None:
    header = sign(BODY, SECRET, timestamp=T)
    with pytest.raises(Unauthorized, match="does not match"):
        verify(BODY.replace(b"paid", b"refunded"), header, SECRET, now=NOW, tolerance_s=300)


def test_a_signature_made_with_another_secret_is_refused() -> None:
    header = sign(BODY, "someone-else", timestamp=T)
    with pytest.raises(Unauthorized, match="wrong secret"):
        verify(BODY, header, SECRET, now=NOW, tolerance_s=300)


def test_a_signature_older_than_the_tolerance_is_refused_as_a_replay() -> None:
    header = sign(BODY, SECRET, timestamp=T - 301)
    with pytest.raises(Unauthorized, match=r"301 s ago.*replay"):
        verify(BODY, header, SECRET, now=NOW, tolerance_s=300)


def test_a_signature_from_beyond_the_tolerance_in_the_future_is_refused() -> None:
    header = sign(BODY, SECRET, timestamp=T + 301)
    with pytest.raises(Unauthorized, match="in the future"):
        verify(BODY, header, SECRET, now=NOW, tolerance_s=300)


def test_a_stale_timestamp_cannot_be_refreshed_without_the_secret() -> None:
    old = sign(BODY, SECRET, timestamp=T - 3600)
    digest = old.split("v1=")[1]
    with pytest.raises(Unauthorized, match="does not match"):
        verify(BODY, f"t={T},v1={digest}", SECRET, now=NOW, tolerance_s=300)


@pytest.mark.parametrize("header", [None, "", "   "])
def test_a_missing_signature_header_is_refused(header: str | None) -> None:
    with pytest.raises(Unauthorized, match="missing X-Advocacy-Signature"):
        verify(BODY, header, SECRET, now=NOW, tolerance_s=300)


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        f"t={T}",
        "v1=" + "a" * 64,
        f"t=yesterday,v1={'a' * 64}",
        f"t={T},v1=not-hex",
        f"t={T},v1={'a' * 63}",
        f"t={T},t={T},v1={'a' * 64}",
        f"t=-{T},v1={'a' * 64}",
    ],
)
def test_a_malformed_signature_header_is_refused(header: str) -> None:
    with pytest.raises(Unauthorized, match="malformed"):
        verify(BODY, header, SECRET, now=NOW, tolerance_s=300)


def test_during_key_rotation_a_header_signed_with_both_secrets_passes_under_either() -> None:
    old, new = sign(BODY, "old-secret", timestamp=T), sign(BODY, "new-secret", timestamp=T)
    header = f"{old},v1={new.split('v1=')[1]}"
    verify(BODY, header, "old-secret", now=NOW, tolerance_s=300)
    verify(BODY, header, "new-secret", now=NOW, tolerance_s=300)
    with pytest.raises(Unauthorized):
        verify(BODY, header, "third-secret", now=NOW, tolerance_s=300)


def test_unknown_signature_schemes_and_spaces_are_tolerated() -> None:
    digest = sign(BODY, SECRET, timestamp=T).split("v1=")[1]
    verify(BODY, f"t={T}, v0=legacy, v1={digest.upper()}", SECRET, now=NOW, tolerance_s=300)


def test_the_worked_example_in_the_docs_is_what_sign_produces() -> None:
    text = DOCS.read_text(encoding="utf-8")
    body = re.search(r"^body = (b'.*')$", text, re.MULTILINE)
    secret = re.search(r'^secret = "(.*)"$', text, re.MULTILINE)
    timestamp = re.search(r"^timestamp = (\d+)$", text, re.MULTILINE)
    assert body, "docs/webhooks.md lost its worked example"
    assert secret
    assert timestamp
    header = sign(ast.literal_eval(body.group(1)), secret.group(1), timestamp=int(timestamp.group(1)))
    assert f"X-Advocacy-Signature: {header}" in text


def shopify_header(body: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_a_shopify_delivery_with_its_hmac_verifies() -> None:
    verify_shopify(BODY, shopify_header(BODY), SECRET)


@pytest.mark.parametrize(
    ("body", "header", "reason"),
    [
        (BODY + b" ", shopify_header(BODY), "does not match"),
        (BODY, shopify_header(BODY, "other"), "does not match"),
        (BODY, None, "missing"),
        (BODY, "%%% not base64 %%%", "malformed"),
    ],
    ids=["tampered", "wrong-secret", "missing", "malformed"],
)
def test_a_bad_shopify_hmac_is_refused(body: bytes, header: str | None, reason: str) -> None:
    with pytest.raises(Unauthorized, match=reason):
        verify_shopify(body, header, SECRET)


# --- our envelope: order.paid --------------------------------------------------------------------------------
def order_paid(**data: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "evt_1001",
        "type": "order.paid",
        "created_at": "2024-03-01T12:00:05Z",
        "data": {
            "order_id": "order-1001",
            "customer": {
                "id": "cust-42",
                "email": "Jane.Doe+spring@GoogleMail.com",
                "name": "Jane Doe",
                "phone": "+33 6 12 34 56 78",
                "locale": "fr-FR",
                "timezone": "Europe/Paris",
            },
            "amount": "42.00",
            "currency": "EUR",
            "paid_at": "2024-03-01T13:00:00+01:00",
            "referral_code": "jane-10",
            "click_id": "k3yF0rTheClick_1",
            "device_id": "dev-7f3a",
            "payment_fingerprint": "card-fp-99",
            "ip": "203.0.113.9",
        },
    }
    payload["data"].update(data)
    return payload


def test_a_paid_order_becomes_the_customer_and_the_order() -> None:
    event = parse_event(encode(order_paid()), ip_key=IP_KEY)
    assert isinstance(event, OrderEvent)
    assert event.event_id == "evt_1001"
    assert event.customer.id == "cust-42"
    assert event.customer.timezone == "Europe/Paris"
    order = event.order
    assert (order.id, order.customer_id, order.amount_minor, order.currency) == ("order-1001", "cust-42", 4200, "EUR")
    assert order.at == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    assert order.code == "JANE10"
    assert order.click_id == "k3yF0rTheClick_1"


def test_a_paid_order_carries_normalised_identity_signals_and_a_hashed_ip() -> None:
    event = parse_event(encode(order_paid()), ip_key=IP_KEY)
    assert isinstance(event, OrderEvent)
    expected = {
        *customer_signals("Jane.Doe+spring@GoogleMail.com", "+33 6 12 34 56 78"),
        Signal(kind=SignalKind.DEVICE, value="dev-7f3a"),
        Signal(kind=SignalKind.PAYMENT, value="card-fp-99"),
        Signal(kind=SignalKind.IP, value=keyed_hash(IP_KEY, "203.0.113.9")),
    }
    assert set(event.order.signals) == expected
    assert Signal(kind=SignalKind.EMAIL, value="janedoe@gmail.com") in event.order.signals


@pytest.mark.parametrize("ip", ["203.0.113.9", "2001:db8::42"])
def test_no_raw_ip_appears_anywhere_in_a_parsed_event(ip: str) -> None:
    for payload in (order_paid(ip=ip), signed_up(ip=ip)):
        event = parse_event(encode(payload), ip_key=IP_KEY)
        assert ip not in event.model_dump_json()
        assert ip not in repr(event)


def test_an_ipv4_mapped_address_hashes_like_the_plain_address() -> None:
    plain = parse_event(encode(order_paid(ip="203.0.113.9")), ip_key=IP_KEY)
    mapped = parse_event(encode(order_paid(ip="::ffff:203.0.113.9")), ip_key=IP_KEY)
    assert isinstance(plain, OrderEvent)
    assert isinstance(mapped, OrderEvent)
    assert plain.order.signals == mapped.order.signals


def test_the_ip_hash_depends_on_the_key() -> None:
    one = parse_event(encode(order_paid()), ip_key="key-one")
    two = parse_event(encode(order_paid()), ip_key="key-two")
    assert isinstance(one, OrderEvent)
    assert isinstance(two, OrderEvent)
    assert one.order.signals != two.order.signals


def test_optional_order_fields_may_be_left_out() -> None:
    payload = order_paid()
    for key in ("referral_code", "click_id", "device_id", "payment_fingerprint", "ip"):
        payload = set_path(payload, f"data.{key}", ...)
    payload["data"]["customer"] = {"id": "cust-42"}
    event = parse_event(encode(payload), ip_key=IP_KEY)
    assert isinstance(event, OrderEvent)
    assert event.order.code is None
    assert event.order.signals == ()
    assert (event.customer.locale, event.customer.timezone) == ("en", "UTC")


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ({"amount": "42.00"}, "EUR", 4200),
        ({"amount": "42.5"}, "eur", 4250),
        ({"amount": "0.07"}, "USD", 7),
        ({"amount": "1000"}, "JPY", 1000),
        ({"amount": "1000.00"}, "JPY", 1000),
        ({"amount": "1.250"}, "KWD", 1250),
        ({"amount": "3.5"}, "BHD", 3500),
        ({"amount": 42.5}, "EUR", 4250),
        ({"amount_minor": 4200}, "EUR", 4200),
        ({"amount_minor": 0}, "EUR", 0),
    ],
)
def test_amounts_become_exact_minor_units_of_their_currency(amount: dict[str, Any], currency: str, minor: int) -> None:
    payload = set_path(order_paid(currency=currency, **amount), "data.amount", amount.get("amount", ...))
    event = parse_event(encode(payload), ip_key=IP_KEY)
    assert isinstance(event, OrderEvent)
    assert event.order.amount_minor == minor
    assert event.order.currency == currency.upper()


@pytest.mark.parametrize(
    ("amount", "currency", "reason"),
    [
        ({"amount": "42.001"}, "EUR", "at most 2 decimals"),
        ({"amount": "10.5"}, "JPY", "no decimals"),
        ({"amount": "1.2345"}, "KWD", "at most 3 decimals"),
        ({"amount": "-5.00"}, "EUR", "negative"),
        ({"amount": "4e2"}, "EUR", "decimal string"),
        ({"amount": "42,00"}, "EUR", "decimal string"),
        ({"amount": "NaN"}, "EUR", "decimal string"),
        ({"amount": True}, "EUR", "decimal string"),
        ({"amount": "42.00", "amount_minor": 4200}, "EUR", "not both"),
        ({"amount_minor": -1}, "EUR", "negative"),
        ({"amount_minor": 42.5}, "EUR", "integer"),
        ({"amount_minor": "4200"}, "EUR", "integer"),
        ({"amount_minor": 10**13}, "EUR", "less than or equal"),
    ],
)
def test_an_amount_the_currency_cannot_pay_is_a_problem_naming_the_field(
    amount: dict[str, Any], currency: str, reason: str
) -> None:
    payload = set_path(order_paid(currency=currency, **amount), "data.amount", amount.get("amount", ...))
    with pytest.raises(InvalidInput) as exc:
        parse_event(encode(payload), ip_key=IP_KEY)
    field = "data.amount_minor" if "amount" not in amount else "data.amount"
    assert fields_at_fault(exc) == [field]
    assert reason in problems_of(exc)[0]


@pytest.mark.parametrize("number", ["1e999999", "1e-999999", "123456789012345678901234567890"])
def test_an_extreme_json_number_as_amount_is_a_problem_not_a_crash(number: str) -> None:
    body = encode(order_paid(amount="AMOUNT")).replace(b'"AMOUNT"', number.encode())
    with pytest.raises(InvalidInput) as exc:
        parse_event(body, ip_key=IP_KEY)
    assert fields_at_fault(exc) == ["data.amount"]


def test_an_order_without_any_amount_is_a_problem() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_event(encode(set_path(order_paid(), "data.amount", ...)), ip_key=IP_KEY)
    assert fields_at_fault(exc) == ["data.amount"]


@pytest.mark.parametrize("currency", ["EURO", "E1R", "12", "", 978, ...])
def test_a_currency_that_is_not_an_iso_code_is_a_problem(currency: Any) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_event(encode(set_path(order_paid(), "data.currency", currency)), ip_key=IP_KEY)
    assert fields_at_fault(exc) == ["data.currency"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("data.order_id", ...),
        ("data.order_id", ""),
        ("data.order_id", "o" * 129),
        ("data.order_id", {"nested": 1}),
        ("data.customer", ...),
        ("data.customer", "cust-42"),
        ("data.customer.id", ...),
        ("data.customer.id", "has spaces"),
        ("data.customer.email", "not-an-email"),
        ("data.customer.name", "n" * 201),
        ("data.customer.phone", "+33" + "1" * 40),
        ("data.customer.locale", "french please"),
        ("data.customer.timezone", "Mars/Olympus_Mons"),
        ("data.paid_at", ...),
        ("data.paid_at", "yesterday"),
        ("data.paid_at", "2024-03-01"),
        ("data.paid_at", 1709294400),
        ("data.referral_code", "x!"),
        ("data.click_id", "c" * 65),
        ("data.device_id", "d" * 257),
        ("data.payment_fingerprint", ["card"]),
        ("data.ip", "999.1.1.1"),
        ("data.ip", "localhost"),
    ],
)
def test_each_bad_order_field_is_a_problem_naming_that_field(path: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_event(encode(set_path(order_paid(), path, value)), ip_key=IP_KEY)
    assert fields_at_fault(exc) == [path]
    assert exc.value.problems[0].source == "webhook"
    assert exc.value.problems[0].line is None


def test_every_problem_of_a_payload_is_reported_at_once() -> None:
    payload = order_paid(amount="1.001", currency="EUR", paid_at="soon", ip="nope")
    payload["data"]["customer"]["email"] = "nope"
    with pytest.raises(InvalidInput) as exc:
        parse_event(encode(payload), ip_key=IP_KEY)
    assert sorted(fields_at_fault(exc)) == ["data.amount", "data.customer.email", "data.ip", "data.paid_at"]
    assert "4 problems" in exc.value.detail


def test_a_naive_time_is_taken_as_utc() -> None:
    event = parse_event(encode(order_paid(paid_at="2024-03-01T12:00:00")), ip_key=IP_KEY)
    assert isinstance(event, OrderEvent)
    assert event.order.at == datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def test_numeric_ids_are_read_as_strings() -> None:
    payload = order_paid(order_id=1001)
    payload["data"]["customer"]["id"] = 42
    event = parse_event(encode(payload), ip_key=IP_KEY)
    assert isinstance(event, OrderEvent)
    assert (event.order.id, event.customer.id, event.order.customer_id) == ("1001", "42", "42")


# --- our envelope: the envelope itself -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"", "body"),
        (b"{not json", "body"),
        (b"\xff\xfe", "body"),
        (b"[1, 2]", "body"),
        (b'"order.paid"', "body"),
        (b"[" * 100_000, "body"),
    ],
    ids=["empty", "broken", "not-utf8", "array", "string", "deeply-nested"],
)
def test_a_body_that_is_not_a_json_object_is_a_problem(body: bytes, field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_event(body, ip_key=IP_KEY)
    assert fields_at_fault(exc) == [field]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("id", ...),
        ("id", ""),
        ("id", "e" * 129),
        ("type", ...),
        ("type", "order.shipped"),
        ("created_at", ...),
        ("created_at", "not a time"),
        ("data", ...),
        ("data", [1]),
    ],
)
def test_each_bad_envelope_field_is_a_problem_naming_that_field(path: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_event(encode(set_path(order_paid(), path, value)), ip_key=IP_KEY)
    assert fields_at_fault(exc) == [path]


def test_an_unknown_type_names_the_known_ones() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_event(encode(set_path(order_paid(), "type", "order.shipped")), ip_key=IP_KEY)
    assert "order.paid, order.refunded, customer.signed_up" in problems_of(exc)[0]


# --- our envelope: order.refunded ----------------------------------------------------------------------------
def order_refunded(**data: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "evt_1002",
        "type": "order.refunded",
        "created_at": "2024-03-05T09:00:00Z",
        "data": {
            "refund_id": "refund-77",
            "order_id": "order-1001",
            "amount_minor": 1500,
            "refunded_at": "2024-03-05T09:00:00Z",
            "reason": "damaged on arrival",
        },
    }
    payload["data"].update(data)
    return payload


def test_a_refund_becomes_a_refund_of_the_order() -> None:
    event = parse_event(encode(order_refunded()), ip_key=IP_KEY)
    assert isinstance(event, RefundEvent)
    refund = event.refund
    assert (refund.id, refund.order_id, refund.amount_minor, refund.reason) == (
        "refund-77",
        "order-1001",
        1500,
        "damaged on arrival",
    )
    assert refund.at == datetime(2024, 3, 5, 9, 0, tzinfo=UTC)


def test_a_refund_without_a_reason_gets_the_default_one() -> None:
    event = parse_event(encode(set_path(order_refunded(), "data.reason", ...)), ip_key=IP_KEY)
    assert isinstance(event, RefundEvent)
    assert event.refund.reason == "refund"


def test_a_decimal_refund_amount_is_read_in_its_currency() -> None:
    payload = set_path(order_refunded(amount="1500", currency="JPY"), "data.amount_minor", ...)
    event = parse_event(encode(payload), ip_key=IP_KEY)
    assert isinstance(event, RefundEvent)
    assert event.refund.amount_minor == 1500


def test_a_decimal_refund_amount_without_a_currency_is_a_problem() -> None:
    payload = set_path(order_refunded(amount="15.00"), "data.amount_minor", ...)
    with pytest.raises(InvalidInput) as exc:
        parse_event(encode(payload), ip_key=IP_KEY)
    assert fields_at_fault(exc) == ["data.currency"]


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("data.refund_id", ...),
        ("data.order_id", ...),
        ("data.order_id", 3.5),
        ("data.amount_minor", -100),
        ("data.refunded_at", "last week"),
        ("data.reason", "r" * 201),
    ],
)
def test_each_bad_refund_field_is_a_problem_naming_that_field(path: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_event(encode(set_path(order_refunded(), path, value)), ip_key=IP_KEY)
    assert fields_at_fault(exc) == [path]


# --- our envelope: customer.signed_up ------------------------------------------------------------------------
def signed_up(**data: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": "evt_1003",
        "type": "customer.signed_up",
        "created_at": "2024-03-01T10:00:00Z",
        "data": {
            "customer": {"id": "cust-43", "email": "friend@example.org", "name": "Sam Friend"},
            "signed_up_at": "2024-03-01T10:00:00Z",
            "referral_code": "JANE10",
            "click_id": "clickAbc12345",
            "device_id": "dev-1",
            "ip": "198.51.100.20",
        },
    }
    payload["data"].update(data)
    return payload


def test_a_signup_becomes_a_new_customer_and_their_signup() -> None:
    event = parse_event(encode(signed_up()), ip_key=IP_KEY)
    assert isinstance(event, SignupEvent)
    assert event.customer.id == event.signup.customer_id == "cust-43"
    assert event.customer.created_at == event.signup.at == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert (event.signup.code, event.signup.click_id) == ("JANE10", "clickAbc12345")
    assert set(event.signup.signals) == {
        Signal(kind=SignalKind.EMAIL, value="friend@example.org"),
        Signal(kind=SignalKind.DEVICE, value="dev-1"),
        Signal(kind=SignalKind.IP, value=keyed_hash(IP_KEY, "198.51.100.20")),
    }


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("data.customer", ...),
        ("data.customer.email", "friend-at-example"),
        ("data.signed_up_at", ...),
        ("data.signed_up_at", "tomorrow"),
        ("data.referral_code", "no"),
        ("data.ip", "1.2.3.4.5"),
    ],
)
def test_each_bad_signup_field_is_a_problem_naming_that_field(path: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_event(encode(set_path(signed_up(), path, value)), ip_key=IP_KEY)
    assert fields_at_fault(exc) == [path]


# --- amounts -------------------------------------------------------------------------------------------------
@given(minor=st.integers(min_value=0, max_value=10**12), currency=st.sampled_from(["EUR", "JPY", "KWD", "CLF"]))
def test_a_formatted_amount_reads_back_to_the_same_minor_units(minor: int, currency: str) -> None:
    exponent = currency_exponent(currency)
    major = f"{minor // 10**exponent}.{minor % 10**exponent:0{exponent}d}" if exponent else str(minor)
    assert to_minor(major, currency) == minor


# --- Shopify -------------------------------------------------------------------------------------------------
SHOPIFY_ORDER: dict[str, Any] = {
    "id": 820982911946154508,
    "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
    "app_id": None,
    "browser_ip": "216.191.105.146",
    "buyer_accepts_marketing": True,
    "cancel_reason": None,
    "cancelled_at": None,
    "cart_token": "68778783ad298f1c80c3bafcddeea02f",
    "checkout_id": 901414060,
    "checkout_token": "bd5a8aa1ecd019dd3520ff791ee3a24c",
    "client_details": {
        "accept_language": "en-CA,en;q=0.9",
        "browser_height": 1080,
        "browser_ip": "216.191.105.146",
        "browser_width": 1920,
        "session_hash": None,
        "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
    },
    "closed_at": None,
    "confirmed": True,
    "contact_email": "bob.norman@mail.example.com",
    "created_at": "2024-03-01T07:59:50-05:00",
    "currency": "USD",
    "current_subtotal_price": "398.00",
    "current_total_discounts": "10.00",
    "current_total_price": "403.00",
    "current_total_tax": "11.94",
    "customer_locale": "en-CA",
    "discount_codes": [
        {"code": "SAVE 10%", "amount": "5.00", "type": "percentage"},
        {"code": "jane-10", "amount": "5.00", "type": "fixed_amount"},
        {"code": "SPRING2024", "amount": "0.00", "type": "fixed_amount"},
    ],
    "email": "bob.norman@mail.example.com",
    "financial_status": "paid",
    "fulfillment_status": None,
    "landing_site": "/?adv=JANE10",
    "name": "#1001",
    "note": None,
    "note_attributes": [
        {"name": "gift_wrap", "value": "no"},
        {"name": "adv_click", "value": "Zx81_kqPq0aLmN3v"},
    ],
    "number": 1,
    "order_number": 1001,
    "phone": "+16135550135",
    "presentment_currency": "USD",
    "processed_at": "2024-03-01T08:00:00-05:00",
    "source_name": "web",
    "subtotal_price": "398.00",
    "tags": "",
    "test": False,
    "total_discounts": "10.00",
    "total_line_items_price": "398.00",
    "total_price": "403.00",
    "total_shipping_price_set": {
        "shop_money": {"amount": "10.00", "currency_code": "USD"},
        "presentment_money": {"amount": "10.00", "currency_code": "USD"},
    },
    "total_tax": "11.94",
    "total_weight": 0,
    "updated_at": "2024-03-01T08:00:02-05:00",
    "customer": {
        "id": 115310627314723954,
        "email": "Bob.Norman+shop@Mail.Example.com",
        "created_at": "2024-02-20T10:11:12-05:00",
        "updated_at": "2024-03-01T08:00:02-05:00",
        "first_name": "Bob",
        "last_name": "Norman",
        "state": "enabled",
        "note": None,
        "verified_email": True,
        "multipass_identifier": None,
        "tax_exempt": False,
        "phone": None,
        "currency": "USD",
        "tags": "",
        "admin_graphql_api_id": "gid://shopify/Customer/115310627314723954",
        "default_address": {
            "id": 715243470612851245,
            "customer_id": 115310627314723954,
            "first_name": "Bob",
            "last_name": "Norman",
            "address1": "Chestnut Street 92",
            "city": "Louisville",
            "province": "Kentucky",
            "country": "United States",
            "zip": "40202",
            "phone": "555-625-1199",
            "country_code": "US",
            "default": True,
        },
    },
    "line_items": [
        {
            "id": 466157049,
            "variant_id": 39072856,
            "title": "IPod Nano - 8gb",
            "quantity": 1,
            "sku": "IPOD2008GREEN",
            "price": "199.00",
            "total_discount": "5.00",
            "product_id": 632910392,
            "requires_shipping": True,
            "taxable": True,
            "gift_card": False,
            "fulfillable_quantity": 1,
            "tax_lines": [{"price": "5.97", "rate": 0.06, "title": "State Tax"}],
        },
        {
            "id": 518995019,
            "variant_id": 49148385,
            "title": "IPod Nano - 8gb",
            "quantity": 1,
            "sku": "IPOD2008RED",
            "price": "199.00",
            "total_discount": "5.00",
            "product_id": 632910392,
            "requires_shipping": True,
            "taxable": True,
            "gift_card": False,
            "fulfillable_quantity": 1,
            "tax_lines": [{"price": "5.97", "rate": 0.06, "title": "State Tax"}],
        },
    ],
    "shipping_lines": [{"id": 271878346, "code": "Free Shipping", "price": "10.00", "title": "Standard"}],
    "refunds": [],
}

SHOPIFY_REFUND: dict[str, Any] = {
    "id": 509562969,
    "order_id": 820982911946154508,
    "created_at": "2024-03-05T10:15:00-05:00",
    "note": "Item arrived scratched",
    "user_id": 548380009,
    "processed_at": "2024-03-05T10:15:00-05:00",
    "restock": True,
    "duties": [],
    "admin_graphql_api_id": "gid://shopify/Refund/509562969",
    "refund_line_items": [
        {
            "id": 104689539,
            "quantity": 1,
            "line_item_id": 466157049,
            "location_id": 487838322,
            "restock_type": "return",
            "subtotal": "195.67",
            "total_tax": "5.97",
        }
    ],
    "transactions": [
        {
            "id": 245135110,
            "order_id": 820982911946154508,
            "kind": "refund",
            "gateway": "bogus",
            "status": "success",
            "message": "Bogus Gateway: Forced success",
            "created_at": "2024-03-05T10:15:00-05:00",
            "test": True,
            "parent_id": 801038806,
            "processed_at": "2024-03-05T10:15:00-05:00",
            "amount": "150.00",
            "currency": "USD",
        },
        {
            "id": 245135111,
            "order_id": 820982911946154508,
            "kind": "refund",
            "gateway": "gift_card",
            "status": "success",
            "message": None,
            "created_at": "2024-03-05T10:15:01-05:00",
            "test": True,
            "parent_id": 801038807,
            "amount": "51.64",
            "currency": "USD",
        },
        {
            "id": 245135112,
            "order_id": 820982911946154508,
            "kind": "refund",
            "gateway": "bogus",
            "status": "failure",
            "message": "Bogus Gateway: Forced failure",
            "created_at": "2024-03-05T10:15:02-05:00",
            "test": True,
            "parent_id": 801038806,
            "amount": "99.00",
            "currency": "USD",
        },
    ],
    "order_adjustments": [],
}


def shopify_order(**changes: Any) -> bytes:
    payload = copy.deepcopy(SHOPIFY_ORDER)
    for key, value in changes.items():
        if value is ...:
            payload.pop(key, None)
        else:
            payload[key] = value
    return encode(payload)


def test_a_shopify_paid_order_becomes_an_order_event() -> None:
    event = parse_shopify_order(shopify_order(), ip_key=IP_KEY)
    customer, order = event.customer, event.order
    assert customer.id == order.customer_id == "shopify:115310627314723954"
    assert (customer.name, customer.locale) == ("Bob Norman", "en-CA")
    assert customer.email == "Bob.Norman+shop@Mail.Example.com"
    assert customer.phone == "+16135550135"
    assert order.id == "shopify:820982911946154508"
    assert (order.amount_minor, order.currency) == (40300, "USD")
    assert order.at == datetime(2024, 3, 1, 13, 0, tzinfo=UTC)
    assert order.code == "JANE10"
    assert order.click_id == "Zx81_kqPq0aLmN3v"
    assert Signal(kind=SignalKind.EMAIL, value="bob.norman@mail.example.com") in order.signals
    assert Signal(kind=SignalKind.PHONE, value="+16135550135") in order.signals
    assert Signal(kind=SignalKind.IP, value=keyed_hash(IP_KEY, "216.191.105.146")) in order.signals


def test_a_shopify_order_never_carries_the_browser_ip() -> None:
    event = parse_shopify_order(shopify_order(), ip_key=IP_KEY)
    assert "216.191.105.146" not in event.model_dump_json()


def test_a_shopify_order_without_browser_ip_uses_the_client_details() -> None:
    event = parse_shopify_order(shopify_order(browser_ip=None), ip_key=IP_KEY)
    assert Signal(kind=SignalKind.IP, value=keyed_hash(IP_KEY, "216.191.105.146")) in event.order.signals


def test_odd_shopify_extras_are_dropped_rather_than_costing_the_order() -> None:
    notes = [{"name": "adv_click", "value": "x" * 100}]
    event = parse_shopify_order(
        shopify_order(browser_ip="unknown", client_details=None, customer_locale="??", note_attributes=notes),
        ip_key=IP_KEY,
    )
    assert event.customer.locale == "en"
    assert event.order.click_id is None
    assert all(signal.kind is not SignalKind.IP for signal in event.order.signals)


def test_a_shopify_order_without_a_referral_shaped_code_has_no_checkout_code() -> None:
    event = parse_shopify_order(shopify_order(discount_codes=[{"code": "10% OFF"}]), ip_key=IP_KEY)
    assert event.order.code is None


def test_an_order_created_in_a_yen_shop_is_read_without_decimals() -> None:
    event = parse_shopify_order(shopify_order(currency="JPY", total_price="12800"), ip_key=IP_KEY)
    assert (event.order.amount_minor, event.order.currency) == (12800, "JPY")


def test_a_shopify_order_falls_back_to_created_at_without_processed_at() -> None:
    event = parse_shopify_order(shopify_order(processed_at=None), ip_key=IP_KEY)
    assert event.order.at == datetime(2024, 3, 1, 12, 59, 50, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"financial_status": "pending"}, "financial_status"),
        ({"financial_status": "authorized"}, "financial_status"),
        ({"customer": None}, "customer"),
        ({"id": ...}, "id"),
        ({"id": "abc"}, "id"),
        ({"total_price": ...}, "total_price"),
        ({"total_price": "403.001"}, "total_price"),
        ({"total_price": "-1.00"}, "total_price"),
        ({"currency": "dollars"}, "currency"),
        ({"processed_at": "soon"}, "processed_at"),
    ],
)
def test_a_shopify_order_missing_what_a_conversion_needs_is_a_problem(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_shopify_order(shopify_order(**changes), ip_key=IP_KEY)
    assert fields_at_fault(exc) == [field]
    assert exc.value.problems[0].source == "shopify"


def test_a_shopify_customer_with_a_bad_id_is_a_problem_naming_it() -> None:
    payload = copy.deepcopy(SHOPIFY_ORDER)
    payload["customer"]["id"] = "guest"
    with pytest.raises(InvalidInput) as exc:
        parse_shopify_order(encode(payload), ip_key=IP_KEY)
    assert fields_at_fault(exc) == ["customer.id"]


def test_a_shopify_refund_sums_its_successful_refund_transactions() -> None:
    event = parse_shopify_refund(encode(SHOPIFY_REFUND))
    refund = event.refund
    assert (refund.id, refund.order_id) == ("shopify:509562969", "shopify:820982911946154508")
    assert refund.amount_minor == 15000 + 5164
    assert refund.at == datetime(2024, 3, 5, 15, 15, tzinfo=UTC)
    assert refund.reason == "Item arrived scratched"


def test_a_shopify_refund_matches_the_order_id_of_the_shopify_order() -> None:
    order = parse_shopify_order(shopify_order(), ip_key=IP_KEY)
    refund = parse_shopify_refund(encode(SHOPIFY_REFUND))
    assert refund.refund.order_id == order.order.id


def test_a_restock_only_shopify_refund_refunds_nothing() -> None:
    payload = {**SHOPIFY_REFUND, "transactions": [], "note": None}
    event = parse_shopify_refund(encode(payload))
    assert event.refund.amount_minor == 0
    assert event.refund.reason == "refund"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": ...}, "id"),
        ({"order_id": None}, "order_id"),
        ({"created_at": "whenever"}, "created_at"),
        ({"transactions": "all of them"}, "transactions"),
        ({"transactions": [{"kind": "refund", "status": "success", "amount": "1.999", "currency": "USD"}]},
         "transactions[0].amount"),
        ({"transactions": [{"kind": "refund", "status": "success", "amount": None, "currency": "USD"}]},
         "transactions[0].amount"),
        ({"transactions": [{"kind": "refund", "status": "success", "amount": "1.00"}]}, "transactions[0].currency"),
        (
            {"transactions": [
                {"kind": "refund", "status": "success", "amount": "1.00", "currency": "USD"},
                {"kind": "refund", "status": "success", "amount": "1.00", "currency": "CAD"},
            ]},
            "transactions",
        ),
    ],
)  # fmt: skip
def test_a_bad_shopify_refund_is_a_problem_naming_the_field(change: dict[str, Any], field: str) -> None:
    payload = copy.deepcopy(SHOPIFY_REFUND)
    for key, value in change.items():
        if value is ...:
            payload.pop(key)
        else:
            payload[key] = value
    with pytest.raises(InvalidInput) as exc:
        parse_shopify_refund(encode(payload))
    assert fields_at_fault(exc) == [field]


# --- hashing and visitors ------------------------------------------------------------------------------------
def test_a_keyed_hash_is_32_hex_characters_and_stable() -> None:
    value = keyed_hash("k", "203.0.113.9")
    assert re.fullmatch(r"[0-9a-f]{32}", value)
    assert keyed_hash("k", "203.0.113.9") == value
    assert keyed_hash("other", "203.0.113.9") != value


def test_a_keyed_hash_joins_its_parts_unambiguously() -> None:
    assert keyed_hash("k", "ab", "c") != keyed_hash("k", "a", "bc")
    assert keyed_hash("k", "a:b") != keyed_hash("k", "a", "b")
    assert keyed_hash("k", "") != keyed_hash("k")


def test_an_empty_hashing_key_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        keyed_hash("", "x")


def test_a_first_party_cookie_identifies_the_visitor_across_addresses() -> None:
    home = visitor_identity("k", ip="203.0.113.9", user_agent="UA", cookie="c00kie")
    work = visitor_identity("k", ip="198.51.100.1", user_agent="UA", cookie="c00kie")
    assert home[0] == work[0]
    assert home[1] != work[1]


def test_without_a_cookie_the_visitor_is_their_address_and_browser() -> None:
    one = visitor_identity("k", ip="203.0.113.9", user_agent="Firefox", cookie=None)
    same = visitor_identity("k", ip="203.0.113.9", user_agent="Firefox", cookie="")
    other_browser = visitor_identity("k", ip="203.0.113.9", user_agent="Safari", cookie=None)
    assert one == same
    assert one[0] != other_browser[0]
    assert one[1] == other_browser[1] == keyed_hash("k", "203.0.113.9")


def test_a_click_and_an_order_from_one_address_share_the_ip_hash() -> None:
    _, click_ip_hash = visitor_identity(IP_KEY, ip="203.0.113.9", user_agent="UA", cookie=None)
    event = parse_event(encode(order_paid(ip="203.0.113.9")), ip_key=IP_KEY)
    assert isinstance(event, OrderEvent)
    assert Signal(kind=SignalKind.IP, value=click_ip_hash) in event.order.signals


def test_a_visitor_without_an_address_has_no_ip_hash() -> None:
    visitor, ip_hash = visitor_identity("k", ip=None, user_agent="UA", cookie=None)
    assert re.fullmatch(r"[0-9a-f]{32}", visitor)
    assert ip_hash is None


def test_a_cookie_never_hashes_like_an_address() -> None:
    by_cookie, _ = visitor_identity("k", ip=None, user_agent=None, cookie="203.0.113.9")
    by_address, _ = visitor_identity("k", ip="203.0.113.9", user_agent=None, cookie=None)
    assert by_cookie != by_address


@pytest.mark.parametrize(
    ("referer", "host"),
    [
        ("https://www.Reddit.com/r/deals/comments/1", "reddit.com"),
        ("https://old.reddit.com/", "old.reddit.com"),
        ("http://example.com:8080/path?q=1", "example.com"),
        ("https://user:pw@Shop.Example.org/", "shop.example.org"),
        ("android-app://com.google.android.gm/", "com.google.android.gm"),
        ("https://bücher.de/", "xn--bcher-kva.de"),
        ("http://[2001:db8::1]/x", "2001:db8::1"),
        ("https://www.example.com./", "example.com"),
        (None, None),
        ("", None),
        ("not a url", None),
        ("/relative/path", None),
        ("https://exa mple.com/", None),
        ("https://bad_host..com/", None),
        ("http://[::1/", None),
    ],
)
def test_the_referring_host_is_the_lower_case_host_without_www(referer: str | None, host: str | None) -> None:
    assert referring_host(referer) == host


def test_a_row_error_names_the_webhook_source() -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_event(b"{}", ip_key=IP_KEY)
    assert RowError(source="webhook", line=None, reason="id: required") in exc.value.problems


def test_a_signature_exactly_at_either_edge_of_the_tolerance_is_accepted() -> None:
    for offset in (timedelta(seconds=-300), timedelta(seconds=300)):
        verify(BODY, sign(BODY, SECRET, timestamp=T), SECRET, now=NOW + offset, tolerance_s=300)
