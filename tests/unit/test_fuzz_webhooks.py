"""Signed webhook bodies as hostile input: whatever the bytes (signed correctly, so the parser itself is reached),
our envelope and Shopify's payloads give an event or an `InvalidInput` naming fields, never another exception,
quickly, with every problem short; and a valid payload reads back as what was sent."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.webhooks import (
    OrderEvent,
    RefundEvent,
    SignupEvent,
    WebhookEvent,
    parse_event,
    parse_shopify_order,
    parse_shopify_refund,
    sign,
    verify,
    verify_shopify,
)
from graph.errors import InvalidInput

pytestmark = pytest.mark.timeout(180)  # a hang fails its test; how fast parsing is belongs in bench/, not here

SECRET = "whsec_fuzz"
IP_KEY = "ip-key-fuzz"
NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
MAX_REASON = 300

Parser = Callable[[bytes], WebhookEvent]


def ours(body: bytes) -> WebhookEvent:
    """The body signed as a sender would, verified, then parsed: the route's own order of calls."""
    verify(body, sign(body, SECRET, timestamp=T), SECRET, now=NOW, tolerance_s=300)
    return parse_event(body, ip_key=IP_KEY)


def shopify_signed(body: bytes) -> None:
    header = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    verify_shopify(body, header, SECRET)


def shopify_order(body: bytes) -> WebhookEvent:
    shopify_signed(body)
    return parse_shopify_order(body, ip_key=IP_KEY)


def shopify_refund(body: bytes) -> WebhookEvent:
    shopify_signed(body)
    return parse_shopify_refund(body)


PARSERS: dict[str, Parser] = {"ours": ours, "shopify-order": shopify_order, "shopify-refund": shopify_refund}


def outcome(parse: Parser, body: bytes) -> WebhookEvent | InvalidInput:
    """The event, or the refusal; any other exception, or a slow parse, fails the test."""
    try:
        result: WebhookEvent | InvalidInput = parse(body)
    except InvalidInput as exc:
        result = exc
    if isinstance(result, InvalidInput):
        assert result.problems, "a refusal names at least one problem"
        assert all(len(problem.reason) <= MAX_REASON for problem in result.problems)
        assert len(str(result)) < 25 * (MAX_REASON + 40)
    else:
        assert type(result).model_validate(result.model_dump()) == result, "an event is a valid model"
    return result


# --- strategies ----------------------------------------------------------------------------------------------
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
TIMES = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC))
CURRENCIES = st.sampled_from(["EUR", "USD", "JPY", "KWD"])
EXPONENT = {"EUR": 2, "USD": 2, "JPY": 0, "KWD": 3}
MINOR = st.integers(min_value=0, max_value=10**9)

HOSTILE: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            0,
            -1,
            10**30,
            1.5,
            1e308,
            "",
            " ",
            "\x00",
            "\ud800",
            "\u202e\u2066",
            "x" * 100_000,
            "=cmd|' /C calc'!A0",
            "') DETACH DELETE n //",
            "'; DROP TABLE customers; --",
            "²",
            "٣٤",
            "1" * 5000,
            "1E+999999999",
            "-0",
            "42,00",
            " 42.00 ",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2024-02-30T00:00:00Z",
            "2024-03-01",
            "ßr",
            "eur",
            [],
            {},
            [{"code": "\ud800"}],
        ]
    ),
    st.text(max_size=40),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.recursive(
        st.none() | st.integers() | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3), max_leaves=8
    ),
)


FIELD_HOSTILE: dict[str, list[Any]] = {
    "_at": ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2024-02-30T00:00:00Z", "2024-03-01", 1e20],
    "id": ["²", "٣", "1" * 5000, 2**63, -1, 0, "\ud800", "x" * 200, "') DETACH DELETE n //", True],
    "currency": ["ßr", "ﬀe", "eur", "EURO", "", 1, None],
    "amount": ["1E+999999999", "-0", "42,00", "1" * 5000, 1e308, float("nan"), "-1", "0.001", True],
    "status": [["paid"], {"paid": True}, "pending", 1],
    "code": ["\ud800", "x" * 10_000, ["JANE10"], "jane 10"],
    "email": ["\ud800@x.io", "a" * 300 + "@x.io", "not an email", 7],
    "ip": ["999.1.1.1", "::ffff:1.2.3.4", ["1.2.3.4"], "\x00"],
}
"""Values aimed at what a field of that name is read as; a field gets one of these half the time."""


def hostile_for(path: tuple[str | int, ...]) -> st.SearchStrategy[Any]:
    key = str(path[-1]) if path else ""
    aimed = [values for suffix, values in FIELD_HOSTILE.items() if key.endswith(suffix)]
    if not aimed:
        return HOSTILE
    return st.one_of(st.sampled_from([value for values in aimed for value in values]), HOSTILE)


@st.composite
def order_paid(draw: st.DrawFn) -> dict[str, Any]:
    currency = draw(CURRENCIES)
    minor = draw(MINOR)
    as_decimal = draw(st.booleans())
    digits = EXPONENT[currency]
    data: dict[str, Any] = {
        "order_id": draw(IDS),
        "customer": {"id": draw(IDS), "email": draw(st.sampled_from([None, "jane@example.com"]))},
        "currency": currency,
        "paid_at": draw(TIMES).isoformat(),
        "referral_code": draw(st.sampled_from([None, "JANE10", "jane-10"])),
    }
    if as_decimal:
        data["amount"] = str(Decimal(minor).scaleb(-digits)) if digits else str(minor)
    else:
        data["amount_minor"] = minor
    return {"id": draw(IDS), "type": "order.paid", "created_at": draw(TIMES).isoformat(), "data": data}


@st.composite
def order_refunded(draw: st.DrawFn) -> dict[str, Any]:
    data = {
        "refund_id": draw(IDS),
        "order_id": draw(IDS),
        "amount_minor": draw(MINOR),
        "refunded_at": draw(TIMES).isoformat(),
        "reason": draw(
            st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=50).filter(str.strip)
        ),
    }
    return {"id": draw(IDS), "type": "order.refunded", "created_at": draw(TIMES).isoformat(), "data": data}


@st.composite
def signed_up(draw: st.DrawFn) -> dict[str, Any]:
    data = {"customer": {"id": draw(IDS), "name": "Sam"}, "signed_up_at": draw(TIMES).isoformat()}
    return {"id": draw(IDS), "type": "customer.signed_up", "created_at": draw(TIMES).isoformat(), "data": data}


ENVELOPES = st.one_of(order_paid(), order_refunded(), signed_up())


@st.composite
def shopify_paid(draw: st.DrawFn) -> dict[str, Any]:
    currency = draw(CURRENCIES)
    minor = draw(MINOR)
    digits = EXPONENT[currency]
    return {
        "id": draw(st.integers(min_value=1, max_value=2**63 - 1)),
        "financial_status": "paid",
        "currency": currency,
        "total_price": str(Decimal(minor).scaleb(-digits)) if digits else str(minor),
        "processed_at": draw(TIMES).isoformat(),
        "customer": {"id": draw(st.integers(min_value=1, max_value=2**63 - 1)), "first_name": "Bob"},
        "discount_codes": [{"code": "JANE10"}],
        "note_attributes": [{"name": "adv_click", "value": "click-1"}],
        "browser_ip": "203.0.113.9",
    }


@st.composite
def shopify_refunded(draw: st.DrawFn) -> dict[str, Any]:
    amounts = draw(st.lists(st.integers(min_value=0, max_value=10**6), max_size=3))
    return {
        "id": draw(st.integers(min_value=1, max_value=2**63 - 1)),
        "order_id": draw(st.integers(min_value=1, max_value=2**63 - 1)),
        "created_at": draw(TIMES).isoformat(),
        "note": "damaged",
        "transactions": [
            {"kind": "refund", "status": "success", "currency": "EUR", "amount": f"{a // 100}.{a % 100:02d}"}
            for a in amounts
        ],
    }


def paths(value: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every place in a JSON value that can be replaced or removed."""
    found: list[tuple[str | int, ...]] = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(paths(item, (*prefix, index)))
    return found


def replaced(payload: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """A copy of `payload` with the value at `path` replaced (or removed, when `value` is ...)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(payload, dict):
        copy = dict(payload)
        if not rest and value is ...:
            copy.pop(head, None)
        else:
            copy[head] = replaced(payload[head], rest, value)
        return copy
    copy_list = list(payload)
    copy_list[int(head)] = None if (not rest and value is ...) else replaced(payload[int(head)], rest, value)
    return copy_list


def encode(payload: Any, *, ascii_only: bool = True) -> bytes:
    return json.dumps(payload, ensure_ascii=ascii_only).encode("utf-8", errors="surrogatepass")


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> bytes:
    """A valid payload with a few fields replaced by hostile values or removed, then perhaps mangled as bytes."""
    payload: Any = draw(valid)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = paths(payload)
        if not places:
            break
        path = draw(st.sampled_from(places))
        payload = replaced(payload, path, draw(st.one_of(hostile_for(path), st.just(...))))
    if draw(st.booleans()) and isinstance(payload, dict):
        payload = {**payload, draw(st.text(max_size=10)): draw(HOSTILE)}
    body = encode(payload, ascii_only=draw(st.booleans()))
    mangle = draw(st.sampled_from(["none"] * 6 + ["bom", "truncate", "bytes", "duplicate", "deep", "utf16"]))
    if mangle == "bom":
        body = b"\xef\xbb\xbf" + body
    elif mangle == "truncate":
        body = body[: draw(st.integers(min_value=0, max_value=len(body)))]
    elif mangle == "bytes":
        at = draw(st.integers(min_value=0, max_value=len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]
    elif mangle == "duplicate":
        body = body.replace(b"{", b'{"id": "dup", ', 1)
    elif mangle == "deep":
        depth = draw(st.sampled_from([50, 900, 5000, 200_000]))
        body = body.replace(b"null", b"[" * depth + b"]" * depth, 1) if b"null" in body else b"[" * depth + body
    elif mangle == "utf16":
        body = body.decode("utf-8", errors="surrogatepass").encode("utf-16", errors="surrogatepass")
    return body


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


# --- properties --------------------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(body=mutated(ENVELOPES))
def test_any_mutation_of_a_signed_envelope_is_an_event_or_a_named_refusal(body: bytes) -> None:
    outcome(ours, body)


@settings(max_examples=200, deadline=None)
@given(body=st.one_of(mutated(shopify_paid()), mutated(shopify_refunded())))
def test_any_mutation_of_a_signed_shopify_payload_is_an_event_or_a_named_refusal(body: bytes) -> None:
    outcome(shopify_order, body)
    outcome(shopify_refund, body)


@settings(max_examples=200, deadline=None)
@given(body=st.one_of(st.binary(max_size=300), JSON_VALUES.map(encode)))
def test_any_bytes_or_json_value_signed_correctly_is_an_event_or_a_named_refusal(body: bytes) -> None:
    for parse in PARSERS.values():
        outcome(parse, body)


@settings(max_examples=150, deadline=None)
@given(payload=ENVELOPES)
def test_a_valid_envelope_reads_back_as_what_was_sent(payload: dict[str, Any]) -> None:
    event = outcome(ours, encode(payload))
    data = payload["data"]
    assert not isinstance(event, InvalidInput), event
    assert event.event_id == payload["id"]
    if isinstance(event, OrderEvent):
        digits = EXPONENT[data["currency"]]
        minor = data.get("amount_minor", None)
        expected = minor if minor is not None else int(Decimal(data["amount"]).scaleb(digits))
        assert (event.order.id, event.customer.id) == (data["order_id"], data["customer"]["id"])
        assert (event.order.amount_minor, event.order.currency) == (expected, data["currency"])
        assert event.order.at == datetime.fromisoformat(data["paid_at"])
    elif isinstance(event, RefundEvent):
        assert (event.refund.id, event.refund.order_id) == (data["refund_id"], data["order_id"])
        assert event.refund.amount_minor == data["amount_minor"]
        assert event.refund.reason == data["reason"].strip()
    else:
        assert isinstance(event, SignupEvent)
        assert event.customer.id == event.signup.customer_id == data["customer"]["id"]
        assert event.signup.at == datetime.fromisoformat(data["signed_up_at"])


@settings(max_examples=100, deadline=None)
@given(payload=shopify_paid())
def test_a_valid_shopify_order_reads_back_as_what_was_sent(payload: dict[str, Any]) -> None:
    event = outcome(shopify_order, encode(payload))
    assert isinstance(event, OrderEvent)
    digits = EXPONENT[payload["currency"]]
    assert event.order.id == f"shopify:{payload['id']}"
    assert event.customer.id == event.order.customer_id == f"shopify:{payload['customer']['id']}"
    assert event.order.amount_minor == int(Decimal(payload["total_price"]).scaleb(digits))
    assert (event.order.code, event.order.click_id) == ("JANE10", "click-1")


# --- the bugs the fuzzing found, one example each ---------------------------------------------------------------------
def problems(parse: Parser, payload: Any) -> list[str]:
    result = outcome(parse, payload if isinstance(payload, bytes) else encode(payload))
    assert isinstance(result, InvalidInput), f"accepted: {result}"
    return [problem.reason for problem in result.problems]


def an_order(**data: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "order_id": "o-1",
        "customer": {"id": "c-1"},
        "amount": "10.00",
        "currency": "EUR",
        "paid_at": "2024-03-01T12:00:00Z",
    }
    return {"id": "evt-1", "type": "order.paid", "created_at": "2024-03-01T12:00:00Z", "data": base | data}


def a_shopify_order(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 1,
        "financial_status": "paid",
        "currency": "EUR",
        "total_price": "1.00",
        "created_at": "2024-03-01T12:00:00Z",
        "customer": {"id": 2},
    }
    return base | fields


@pytest.mark.parametrize("paid_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_that_overflows_once_converted_to_utc_is_a_problem_of_that_field(paid_at: str) -> None:
    assert problems(ours, an_order(paid_at=paid_at)) == [
        f"data.paid_at: out of range once converted to UTC: {paid_at!r}"
    ]


def test_a_lone_surrogate_in_the_event_id_is_a_problem_of_the_id() -> None:
    body = encode(an_order()).replace(b'"evt-1"', b'"evt\\ud800"')
    assert problems(ours, body) == ["id: not valid Unicode text (a lone surrogate escape)"]


def test_a_currency_that_only_upper_cases_into_three_letters_is_refused() -> None:
    assert problems(ours, an_order(currency="ßr")) == [
        "data.currency: a currency is a three-letter ISO 4217 code such as EUR, not 'ßr'"
    ]


def test_a_key_repeated_in_our_envelope_is_refused_as_ambiguous() -> None:
    body = encode(an_order()).replace(b'"type"', b'"id": "evt-2", "type"')
    assert problems(ours, body) == ["body: the key 'id' appears twice in one object"]


@pytest.mark.parametrize("customer_id", ["²", "٣", "1" * 5000, 2**63, "-1", 0])
def test_a_shopify_id_that_is_not_a_plain_positive_64_bit_number_is_not_an_id(customer_id: object) -> None:
    reasons = problems(shopify_order, a_shopify_order(customer={"id": customer_id}))
    assert len(reasons) == 1
    assert reasons[0].startswith("customer.id: not an id")


def test_a_financial_status_that_is_not_text_is_a_problem_not_a_crash() -> None:
    assert problems(shopify_order, a_shopify_order(financial_status=["paid"])) == [
        "financial_status: only paid orders convert, this one is ['paid']"
    ]


def test_a_huge_or_deeply_nested_value_is_quoted_short_in_the_problem() -> None:
    deep: Any = []
    for _ in range(500):
        deep = [deep]
    for value in (deep, "x" * 1_000_000):
        reasons = problems(ours, {**an_order(), "type": value})
        assert len(reasons) == 1
        assert len(reasons[0]) < 200


def test_a_note_shopify_cannot_have_meant_costs_the_refund_nothing() -> None:
    body = encode({"id": 5, "order_id": 6, "created_at": "2024-03-01T12:00:00Z", "note": "\ud800", "transactions": []})
    event = outcome(shopify_refund, body)
    assert isinstance(event, RefundEvent)
    assert event.refund.reason == "refund"
