"""Inbound webhooks read into programme values, and the keyed hashes that stand in for visitors' addresses.

Everything here is pure, bytes in and values out: the API route reads the body and headers, calls `verify` (or
`verify_shopify`) and then a parser, and hands the event to a service. A raw IP address never leaves this module:
it is replaced by `keyed_hash` before any value is built, so neither the store nor a log line can hold one.

Our own format (`parse_event`) is strict, because the developer integrating it sees every problem at once while
testing. Shopify's payloads are read leniently outside the fields a conversion needs (ids, amount, currency,
time): Shopify retries a refused delivery for two days and then drops the subscription, so an odd browser IP or
locale must not cost the order. The format and the signature scheme are documented in docs/webhooks.md.

A signed body is still hostile input (a leaked secret, a compromised shop): every parser here either returns an
event or raises `InvalidInput`, whatever the bytes. Our envelope refuses repeated JSON keys (two readers of one
body could disagree on which copy counts); text must be valid Unicode (no lone surrogates); a date-time must stay
within years 1-9999 once converted to UTC; and a problem quotes at most a short, bounded piece of the input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import re
import reprlib
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from engine.fraud import customer_signals
from graph.errors import InvalidInput, RowError, Unauthorized
from graph.importer import RepeatedKey, unique_keys
from graph.model import Customer
from graph.program import Code, Order, Refund, Signal, SignalKind, Signup

SIGNATURE_HEADER: Final = "X-Advocacy-Signature"
SHOPIFY_HMAC_HEADER: Final = "X-Shopify-Hmac-Sha256"
SOURCE: Final = "webhook"
SHOPIFY_SOURCE: Final = "shopify"
EVENT_TYPES: Final = ("order.paid", "order.refunded", "customer.signed_up")
SHOPIFY_PAID_STATUSES: Final = frozenset({"paid", "partially_refunded", "refunded"})
"""Financial statuses of an order that was paid; a refund before the delivery arrives still leaves a conversion."""

CURRENCY_EXPONENTS: Final[Mapping[str, int]] = {
    **dict.fromkeys(
        (
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ),
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    "CLF": 4,
    "UYW": 4,
}
"""ISO 4217 minor-unit exponents that differ from the usual 2."""

_HASH_CHARS: Final = 32
MAX_MINOR: Final = 10**12
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_HOST_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_MALFORMED: Final = f"malformed {SIGNATURE_HEADER} header: expected t=<unix seconds>,v1=<hex HMAC-SHA256>"
_CODE_ADAPTER: TypeAdapter[str] = TypeAdapter(Code)
_MAX_SHOPIFY_ID: Final = 2**63 - 1
_MAX_REASON: Final = 300
_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
_REPR.maxlevel = 2


# --- signatures ----------------------------------------------------------------------------------------------
def _mac(secret: str, message: bytes) -> bytes:
    if not secret:
        raise ValueError("a webhook secret cannot be empty")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def sign(body: bytes, secret: str, *, timestamp: int) -> str:
    """The `X-Advocacy-Signature` value for `body`: the time is signed with it, so an old copy cannot be replayed.

    >>> sign(b'{}', "s3cret", timestamp=1700000000)[:16]
    't=1700000000,v1='
    """
    digest = _mac(secret, f"{timestamp}.".encode() + body).hex()
    return f"t={timestamp},v1={digest}"


def _parse_signature(header: str) -> tuple[int, list[bytes]]:
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep:
            raise Unauthorized(_MALFORMED)
        if key == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                raise Unauthorized(_MALFORMED)
            timestamp = int(value)
        elif key == "v1":
            if not _HEX_DIGEST.fullmatch(value):
                raise Unauthorized(_MALFORMED)
            candidates.append(bytes.fromhex(value))
    if timestamp is None or not candidates:
        raise Unauthorized(_MALFORMED)
    return timestamp, candidates


def verify(body: bytes, header: str | None, secret: str, *, now: datetime, tolerance_s: int) -> None:
    """Raise `Unauthorized` unless `header` signs `body` with `secret` within `tolerance_s` of `now`.

    Several `v1=` values are accepted so that a sender can sign with the old and the new secret while a secret
    is rotated. Unknown schemes (`v0=`, a future `v2=`) are ignored.
    """
    if header is None or not header.strip():
        raise Unauthorized(f"missing {SIGNATURE_HEADER} header")
    timestamp, candidates = _parse_signature(header)
    expected = _mac(secret, f"{timestamp}.".encode() + body)
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match the body (wrong secret, or the body was altered)")
    age = (now if now.tzinfo else now.replace(tzinfo=UTC)).timestamp() - timestamp
    if age > tolerance_s:
        raise Unauthorized(f"signed {int(age)} s ago, beyond the {tolerance_s} s tolerance: refused as a replay")
    if -age > tolerance_s:
        raise Unauthorized(
            f"signed {int(-age)} s in the future, beyond the {tolerance_s} s tolerance: check the sender's clock"
        )


def verify_shopify(body: bytes, header: str | None, secret: str) -> None:
    """Raise `Unauthorized` unless `header` is base64(HMAC-SHA256(secret, body)), as Shopify signs deliveries."""
    if header is None or not header.strip():
        raise Unauthorized(f"missing {SHOPIFY_HMAC_HEADER} header")
    try:
        given = base64.b64decode(header.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Unauthorized(f"malformed {SHOPIFY_HMAC_HEADER} header: expected base64") from None
    if not hmac.compare_digest(_mac(secret, body), given):
        raise Unauthorized(f"{SHOPIFY_HMAC_HEADER} does not match the body (wrong secret, or the body was altered)")


# --- keyed hashing -------------------------------------------------------------------------------------------
def keyed_hash(key: str, *parts: str) -> str:
    """HMAC-SHA256 of the parts, each length-prefixed so that ("ab", "c") and ("a", "bc") differ; 32 hex chars.

    >>> keyed_hash("k", "ab", "c") != keyed_hash("k", "a", "bc")
    True
    """
    if not key:
        raise ValueError("a hashing key cannot be empty")
    message = b"".join(b"%d:%s" % (len(encoded), encoded) for encoded in (part.encode("utf-8") for part in parts))
    return hmac.new(key.encode("utf-8"), message, hashlib.sha256).hexdigest()[:_HASH_CHARS]


def _canonical_ip(ip: str) -> str | None:
    """One spelling per address (`::ffff:1.2.3.4` is `1.2.3.4`), so a click and an order from it hash alike."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def ip_hash(key: str, ip: str | None) -> str | None:
    """The keyed hash that stands for an IP address, or None when `ip` is not an address."""
    canonical = _canonical_ip(ip) if ip else None
    return keyed_hash(key, canonical) if canonical is not None else None


def visitor_identity(key: str, *, ip: str | None, user_agent: str | None, cookie: str | None) -> tuple[str, str | None]:
    """(visitor, ip_hash): the first-party cookie identifies a browser best; without it, its address and agent.

    Both are keyed hashes, and the two kinds of input are hashed under different labels so they cannot collide.
    """
    address_hash = ip_hash(key, ip)
    if cookie and cookie.strip():
        return keyed_hash(key, "cookie", cookie.strip()), address_hash
    address = (_canonical_ip(ip) or ip.strip()) if ip else ""
    return keyed_hash(key, "ip+agent", address, (user_agent or "").strip()), address_hash


def referring_host(referer: str | None) -> str | None:
    """The lower-case host of a `Referer` header without `www.`, or None when there is none worth keeping.

    >>> referring_host("https://WWW.Reddit.com/r/deals?x=1"), referring_host("not a url")
    ('reddit.com', None)
    """
    if not referer or not referer.strip():
        return None
    try:
        host = urlsplit(referer.strip()).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.rstrip(".")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    host = host.lower()
    if _canonical_ip(host) is None and not all(_HOST_LABEL.fullmatch(label) for label in host.split(".")):
        return None
    host = host.removeprefix("www.")
    return host if host and len(host) <= 255 else None


# --- parsed events -------------------------------------------------------------------------------------------
class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrderEvent(_Event):
    """A paid order and its buyer, as the merchant reported them."""

    customer: Customer
    order: Order
    event_id: str | None = Field(default=None, max_length=128)
    """The envelope's id, for logs; the order id is what makes delivery idempotent."""


class RefundEvent(_Event):
    refund: Refund
    event_id: str | None = Field(default=None, max_length=128)


class SignupEvent(_Event):
    customer: Customer
    signup: Signup
    event_id: str | None = Field(default=None, max_length=128)


WebhookEvent = OrderEvent | RefundEvent | SignupEvent


# --- reading payloads ----------------------------------------------------------------------------------------
class _Problems:
    """Row errors of one payload, each naming the field at fault (`data.customer.email: ...`)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.rows: list[RowError] = []

    def add(self, path: str, reason: str) -> None:
        text = f"{path}: {reason}"
        if len(text) > _MAX_REASON:
            text = text[: _MAX_REASON - 3] + "..."
        self.rows.append(RowError(source=self.source, line=None, reason=text))

    def raise_if_any(self, what: str) -> None:
        if self.rows:
            count = len(self.rows)
            raise InvalidInput(f"{what} refused: {count} problem{'s' if count > 1 else ''}", self.rows)


class _Bad:
    """Marks a value already reported, so that building the model does not report it again as missing."""


_BAD: Final = _Bad()
M = TypeVar("M", bound=BaseModel)


def _short(value: object) -> str:
    """A bounded repr of part of a payload: reprlib stops at a depth and a length, however big the value."""
    return _REPR.repr(value)


def _is_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate (`"\\ud800"` in JSON), which no store or mail can carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: object) -> str:
    names = {bool: "a boolean", dict: "an object", list: "an array", Decimal: "a number", int: "a number"}
    return names.get(type(value), type(value).__name__)


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _error_message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"])
    return message.removeprefix("Value error, ")


def _build(
    model: type[M], fields: Mapping[str, Any], paths: Mapping[str, str], problems: _Problems, *, lenient: bool = False
) -> M | None:
    """Validate `fields` as `model`, reporting each error under the payload path it came from.

    Fields holding `_BAD` were reported already and are left out. With `lenient`, optional fields that fail are
    dropped instead (Shopify's extras), and only errors in the others are reported.
    """
    bad = {name for name, value in fields.items() if value is _BAD}
    kwargs = {name: value for name, value in fields.items() if value is not _BAD and value is not None}
    for attempt in range(2):
        try:
            return model(**kwargs)
        except ValidationError as exc:
            errors = [e for e in exc.errors() if not e["loc"] or e["loc"][0] not in bad]
            droppable = {
                str(e["loc"][0])
                for e in errors
                if lenient and attempt == 0 and e["loc"] and not model.model_fields[str(e["loc"][0])].is_required()
            }
            if droppable:
                kwargs = {name: value for name, value in kwargs.items() if name not in droppable}
                continue
            for error in errors:
                loc = error["loc"]
                path = paths.get(str(loc[0]), str(loc[0])) if loc else ""
                for part in loc[1:]:
                    path = _join(path, part)
                problems.add(path or model.__name__, _error_message(error))
            return None
    return None


def _load(body: bytes, problems: _Problems, *, strict: bool) -> Mapping[str, Any] | None:
    """The body as a JSON object; `strict` also refuses repeated keys (Shopify's payloads are read leniently)."""
    try:
        payload = json.loads(body, parse_float=Decimal, object_pairs_hook=unique_keys if strict else None)
    except RepeatedKey as exc:
        problems.add("body", str(exc))
        return None
    except RecursionError:
        problems.add("body", "not valid JSON here: nested too deeply")
        return None
    except ValueError as exc:
        problems.add("body", f"not valid JSON ({exc})")
        return None
    if not isinstance(payload, dict):
        problems.add("body", "must be a JSON object")
        return None
    return payload


def _object(obj: Mapping[str, Any], key: str, path: str, problems: _Problems) -> Mapping[str, Any] | None:
    value = obj.get(key)
    if value is None:
        problems.add(_join(path, key), "required")
        return None
    if not isinstance(value, dict):
        problems.add(_join(path, key), "must be an object")
        return None
    return value


def _text(obj: Mapping[str, Any], key: str, path: str, problems: _Problems, *, required: bool = False) -> Any:
    """A string field (None when absent and optional); an id may also arrive as a JSON integer."""
    value = obj.get(key)
    if value is None:
        if required:
            problems.add(_join(path, key), "required")
            return _BAD
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        problems.add(_join(path, key), f"must be a string, not {_json_type(value)}")
        return _BAD
    if not _is_unicode(value):
        problems.add(_join(path, key), "not valid Unicode text (a lone surrogate escape)")
        return _BAD
    if not value.strip():
        if required:
            problems.add(_join(path, key), "must not be empty")
            return _BAD
        return None
    return value


def _timestamp(obj: Mapping[str, Any], key: str, path: str, problems: _Problems, *, required: bool = True) -> Any:
    value = obj.get(key)
    where = _join(path, key)
    if value is None:
        if required:
            problems.add(where, "required")
            return _BAD
        return None
    if not isinstance(value, str):
        problems.add(where, "must be an ISO 8601 date-time string such as 2024-03-01T12:00:00Z")
        return _BAD
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        problems.add(where, f"not an ISO 8601 date-time: {_short(value)}")
        return _BAD
    if "T" not in value and " " not in value.strip():
        problems.add(where, f"a date-time needs a time of day, not only a date: {_short(value)}")
        return _BAD
    try:
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    except OverflowError:
        problems.add(where, f"out of range once converted to UTC: {_short(value)}")
        return _BAD


def currency_exponent(currency: str) -> int:
    """Digits after the decimal point in `currency` (ISO 4217): 2 unless the table says otherwise.

    >>> currency_exponent("EUR"), currency_exponent("JPY"), currency_exponent("KWD")
    (2, 0, 3)
    """
    return CURRENCY_EXPONENTS.get(currency.upper(), 2)


def _currency(obj: Mapping[str, Any], key: str, path: str, problems: _Problems, *, required: bool) -> Any:
    value = obj.get(key)
    where = _join(path, key)
    if value is None:
        if required:
            problems.add(where, "required")
            return _BAD
        return None
    if not isinstance(value, str) or not value.isascii() or not _CURRENCY.fullmatch(value.strip().upper()):
        problems.add(where, f"a currency is a three-letter ISO 4217 code such as EUR, not {_short(value)}")
        return _BAD
    return value.strip().upper()


def to_minor(amount: object, currency: str) -> int:
    """An amount in major units (`"42.50"`) as an integer of minor units (4250), exactly, or ValueError.

    Trailing zeros past the currency's digits are harmless (`"1000.00"` yen is 1000); a non-zero digit there is an
    amount the currency cannot pay, and is refused rather than rounded.

    >>> to_minor("42.50", "EUR"), to_minor("1000", "JPY"), to_minor("1.250", "KWD")
    (4250, 1000, 1250)
    """
    if isinstance(amount, bool) or not isinstance(amount, str | int | Decimal):
        raise ValueError('must be a decimal string such as "42.00"')
    if isinstance(amount, str):
        if not _DECIMAL.fullmatch(amount.strip()):
            raise ValueError(f'must be a decimal string such as "42.00", not {_short(amount)}')
        amount = amount.strip()
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"not a number: {_short(amount)}") from None
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value < 0:
        raise ValueError(f"must not be negative ({_short(amount)})")
    if value.adjusted() > 12:
        raise ValueError(f"larger than any amount accepted ({MAX_MINOR} minor units)")
    exponent = currency_exponent(currency)
    minor = value.scaleb(exponent)
    if minor != minor.to_integral_value():
        digits = "no decimals" if exponent == 0 else f"at most {exponent} decimal{'s' if exponent > 1 else ''}"
        raise ValueError(f"{currency} amounts have {digits}; {_short(amount)} has more")
    return int(minor)


def _amount(data: Mapping[str, Any], path: str, currency: Any, problems: _Problems) -> tuple[Any, str]:
    """(minor units, the key it came from): `amount` in major units or `amount_minor`, exactly one of them."""
    has_major, has_minor = data.get("amount") is not None, data.get("amount_minor") is not None
    if has_major and has_minor:
        problems.add(_join(path, "amount"), "give amount or amount_minor, not both")
        return _BAD, "amount"
    if not has_major and not has_minor:
        problems.add(_join(path, "amount"), 'required: amount (a decimal string such as "42.00") or amount_minor')
        return _BAD, "amount"
    if has_minor:
        where = _join(path, "amount_minor")
        value = data["amount_minor"]
        if not isinstance(value, int) or isinstance(value, bool):
            problems.add(where, "must be an integer number of minor units (cents)")
            return _BAD, "amount_minor"
        if value < 0:
            problems.add(where, f"must not be negative ({value})")
            return _BAD, "amount_minor"
        return value, "amount_minor"
    where = _join(path, "amount")
    if currency is None:
        problems.add(_join(path, "currency"), "required to read a decimal amount (or give amount_minor instead)")
        return _BAD, "amount"
    if currency is _BAD:
        return _BAD, "amount"
    try:
        return to_minor(data["amount"], currency), "amount"
    except ValueError as exc:
        problems.add(where, str(exc))
        return _BAD, "amount"


def _ip_signal(value: Any, where: str, ip_key: str, problems: _Problems, *, lenient: bool = False) -> Signal | None:
    if value is None or value == "":
        return None
    hashed = ip_hash(ip_key, value) if isinstance(value, str) else None
    if hashed is None:
        if not lenient:
            problems.add(where, "not an IP address")
        return None
    return Signal(kind=SignalKind.IP, value=hashed)


def _given_signal(data: Mapping[str, Any], key: str, kind: SignalKind, path: str, problems: _Problems) -> Signal | None:
    value = _text(data, key, path, problems)
    if value is None or value is _BAD:
        return None
    return _build(Signal, {"kind": kind, "value": value}, {"value": _join(path, key)}, problems)


def _customer(
    data: Mapping[str, Any], path: str, problems: _Problems, *, created_at: Any = None
) -> tuple[Customer | None, tuple[Signal, ...]]:
    raw = _object(data, "customer", path, problems)
    if raw is None:
        return None, ()
    where = _join(path, "customer")
    fields = {
        "id": _text(raw, "id", where, problems, required=True),
        **{name: _text(raw, name, where, problems) for name in ("email", "name", "phone", "locale", "timezone")},
        "created_at": created_at,
    }
    paths = {name: _join(where, name) for name in fields}
    customer = _build(Customer, fields, paths, problems)
    if customer is None:
        return None, ()
    return customer, customer_signals(customer.email, customer.phone)


def _signals(data: Mapping[str, Any], ip_key: str, problems: _Problems) -> list[Signal]:
    signals = [
        _given_signal(data, "device_id", SignalKind.DEVICE, "data", problems),
        _given_signal(data, "payment_fingerprint", SignalKind.PAYMENT, "data", problems),
        _ip_signal(data.get("ip"), "data.ip", ip_key, problems),
    ]
    return [signal for signal in signals if signal is not None]


def _unique(signals: list[Signal]) -> tuple[Signal, ...]:
    return tuple(dict.fromkeys(signals))


def _order_paid(data: Mapping[str, Any], ip_key: str, event_id: str, problems: _Problems) -> OrderEvent | None:
    customer, customer_signal = _customer(data, "data", problems)
    currency = _currency(data, "currency", "data", problems, required=True)
    amount, amount_key = _amount(data, "data", currency, problems)
    fields = {
        "id": _text(data, "order_id", "data", problems, required=True),
        "customer_id": customer.id if customer else _BAD,
        "amount_minor": amount,
        "currency": currency,
        "at": _timestamp(data, "paid_at", "data", problems),
        "code": _text(data, "referral_code", "data", problems),
        "click_id": _text(data, "click_id", "data", problems),
        "signals": _unique([*customer_signal, *_signals(data, ip_key, problems)]),
    }
    paths = {
        "id": "data.order_id",
        "customer_id": "data.customer.id",
        "amount_minor": f"data.{amount_key}",
        "currency": "data.currency",
        "at": "data.paid_at",
        "code": "data.referral_code",
        "click_id": "data.click_id",
        "signals": "data",
    }
    order = _build(Order, fields, paths, problems)
    if customer is None or order is None:
        return None
    return OrderEvent(customer=customer, order=order, event_id=event_id)


def _order_refunded(data: Mapping[str, Any], event_id: str, problems: _Problems) -> RefundEvent | None:
    currency = _currency(data, "currency", "data", problems, required=False)
    amount, amount_key = _amount(data, "data", currency, problems)
    fields = {
        "id": _text(data, "refund_id", "data", problems, required=True),
        "order_id": _text(data, "order_id", "data", problems, required=True),
        "amount_minor": amount,
        "at": _timestamp(data, "refunded_at", "data", problems),
        "reason": _text(data, "reason", "data", problems),
    }
    paths = {
        "id": "data.refund_id",
        "order_id": "data.order_id",
        "amount_minor": f"data.{amount_key}",
        "at": "data.refunded_at",
        "reason": "data.reason",
    }
    refund = _build(Refund, fields, paths, problems)
    return RefundEvent(refund=refund, event_id=event_id) if refund is not None else None


def _customer_signed_up(data: Mapping[str, Any], ip_key: str, event_id: str, problems: _Problems) -> SignupEvent | None:
    at = _timestamp(data, "signed_up_at", "data", problems)
    customer, customer_signal = _customer(data, "data", problems, created_at=None if at is _BAD else at)
    fields = {
        "customer_id": customer.id if customer else _BAD,
        "at": at,
        "code": _text(data, "referral_code", "data", problems),
        "click_id": _text(data, "click_id", "data", problems),
        "signals": _unique([*customer_signal, *_signals(data, ip_key, problems)]),
    }
    paths = {
        "customer_id": "data.customer.id",
        "at": "data.signed_up_at",
        "code": "data.referral_code",
        "click_id": "data.click_id",
        "signals": "data",
    }
    signup = _build(Signup, fields, paths, problems)
    if customer is None or signup is None:
        return None
    return SignupEvent(customer=customer, signup=signup, event_id=event_id)


def parse_event(body: bytes, *, ip_key: str) -> OrderEvent | RefundEvent | SignupEvent:
    """Read one event in our documented envelope; `InvalidInput.problems` names every field at fault.

    The caller verifies the signature first: an unsigned body is never worth parsing.
    """
    problems = _Problems(SOURCE)
    payload = _load(body, problems, strict=True)
    if payload is None:
        raise InvalidInput("webhook body refused: not a JSON object", problems.rows)
    event_id = _text(payload, "id", "", problems, required=True)
    if isinstance(event_id, str) and len(event_id) > 128:
        problems.add("id", "at most 128 characters")
    event_type = payload.get("type")
    if event_type not in EVENT_TYPES:
        problems.add("type", f"unknown event type {_short(event_type)}; expected one of {', '.join(EVENT_TYPES)}")
    _timestamp(payload, "created_at", "", problems)
    data = _object(payload, "data", "", problems)
    problems.raise_if_any("webhook event")
    assert data is not None
    assert isinstance(event_id, str)
    event: WebhookEvent | None
    if event_type == "order.paid":
        event = _order_paid(data, ip_key, event_id, problems)
    elif event_type == "order.refunded":
        event = _order_refunded(data, event_id, problems)
    else:
        event = _customer_signed_up(data, ip_key, event_id, problems)
    problems.raise_if_any(f"{event_type} event")
    assert event is not None
    return event


# --- Shopify -------------------------------------------------------------------------------------------------
def _shopify_id(obj: Mapping[str, Any], key: str, path: str, problems: _Problems) -> Any:
    """Shopify ids are integers; `shopify:<id>` keeps them apart from ids imported from elsewhere."""
    value = obj.get(key)
    digits = value.strip() if isinstance(value, str) else ""
    if digits.isascii() and digits.isdigit() and len(digits) <= 19:
        value = int(digits)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _MAX_SHOPIFY_ID:
        problems.add(
            _join(path, key), "required: Shopify's numeric id" if value is None else f"not an id: {_short(value)}"
        )
        return _BAD
    return f"shopify:{value}"


def _checkout_code(order: Mapping[str, Any]) -> str | None:
    """The first discount code shaped like a referral code; whether it is one is the store's question."""
    discounts = order.get("discount_codes")
    for discount in discounts if isinstance(discounts, list) else ():
        code = discount.get("code") if isinstance(discount, dict) else None
        if isinstance(code, str):
            try:
                return _CODE_ADAPTER.validate_python(code)
            except ValidationError:
                continue
    return None


def _note_attribute(order: Mapping[str, Any], name: str) -> str | None:
    attributes = order.get("note_attributes")
    for attribute in attributes if isinstance(attributes, list) else ():
        if isinstance(attribute, dict) and attribute.get("name") == name:
            value = attribute.get("value")
            return value.strip() or None if isinstance(value, str) and _is_unicode(value) else None
    return None


def _text_or_none(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value.strip() or None if isinstance(value, str) and _is_unicode(value) else None


def _shopify_customer(order: Mapping[str, Any], problems: _Problems) -> tuple[Customer | None, tuple[Signal, ...]]:
    raw = order.get("customer")
    if not isinstance(raw, dict):
        problems.add("customer", "required: a guest checkout has no customer to credit")
        return None, ()
    name = " ".join(part for part in (_text_or_none(raw, "first_name"), _text_or_none(raw, "last_name")) if part)
    fields = {
        "id": _shopify_id(raw, "id", "customer", problems),
        "email": _text_or_none(raw, "email") or _text_or_none(order, "email") or _text_or_none(order, "contact_email"),
        "name": name[:200] or None,
        "phone": _text_or_none(raw, "phone") or _text_or_none(order, "phone"),
        "locale": _text_or_none(order, "customer_locale"),
    }
    customer = _build(Customer, fields, {"id": "customer.id"}, problems, lenient=True)
    if customer is None:
        return None, ()
    return customer, customer_signals(customer.email, customer.phone)


def parse_shopify_order(body: bytes, *, ip_key: str, click_attribute: str = "adv_click") -> OrderEvent:
    """Read an `orders/paid` delivery (or `orders/create` of a paid order) as an order event.

    The checkout code is the first discount code shaped like a referral code; the click id travels in the note
    attribute `click_attribute`, which the storefront copies from our first-party cookie.
    """
    problems = _Problems(SHOPIFY_SOURCE)
    order = _load(body, problems, strict=False)
    if order is None:
        raise InvalidInput("Shopify order refused: not a JSON object", problems.rows)
    status = order.get("financial_status")
    if status is not None and (not isinstance(status, str) or status not in SHOPIFY_PAID_STATUSES):
        problems.add("financial_status", f"only paid orders convert, this one is {_short(status)}")
    customer, customer_signal = _shopify_customer(order, problems)
    currency = _currency(order, "currency", "", problems, required=True)
    amount: Any = _BAD
    price = order.get("total_price")
    if price is None:
        problems.add("total_price", "required")
    elif isinstance(currency, str):
        try:
            amount = to_minor(price, currency)
        except ValueError as exc:
            problems.add("total_price", str(exc))
    time_key = "processed_at" if order.get("processed_at") else "created_at"
    client = order.get("client_details")
    browser_ip = order.get("browser_ip") or (client.get("browser_ip") if isinstance(client, dict) else None)
    ip_signal = _ip_signal(browser_ip, "browser_ip", ip_key, problems, lenient=True)
    fields = {
        "id": _shopify_id(order, "id", "", problems),
        "customer_id": customer.id if customer else _BAD,
        "amount_minor": amount,
        "currency": currency,
        "at": _timestamp(order, time_key, "", problems),
        "code": _checkout_code(order),
        "click_id": _note_attribute(order, click_attribute),
        "signals": _unique([*customer_signal, *([ip_signal] if ip_signal else [])]),
    }
    paths = {"amount_minor": "total_price", "customer_id": "customer.id", "at": time_key}
    built = _build(Order, fields, paths, problems, lenient=True)
    problems.raise_if_any("Shopify order")
    assert customer is not None
    assert built is not None
    return OrderEvent(customer=customer, order=built)


def parse_shopify_refund(body: bytes) -> RefundEvent:
    """Read a `refunds/create` delivery: the refunded amount is the sum of its successful refund transactions."""
    problems = _Problems(SHOPIFY_SOURCE)
    refund = _load(body, problems, strict=False)
    if refund is None:
        raise InvalidInput("Shopify refund refused: not a JSON object", problems.rows)
    transactions = refund.get("transactions")
    if transactions is None:
        transactions = []
    if not isinstance(transactions, list):
        problems.add("transactions", "must be a list")
        transactions = []
    total = 0
    currencies: set[str] = set()
    for index, transaction in enumerate(transactions):
        where = _join("transactions", index)
        if not isinstance(transaction, dict):
            problems.add(where, "must be an object")
            continue
        if transaction.get("kind") != "refund" or transaction.get("status") != "success":
            continue
        currency = _currency(transaction, "currency", where, problems, required=True)
        if currency is _BAD:
            continue
        currencies.add(currency)
        try:
            total += to_minor(transaction.get("amount"), currency)
        except ValueError as exc:
            problems.add(_join(where, "amount"), str(exc))
    if len(currencies) > 1:
        problems.add("transactions", f"refunds in several currencies ({', '.join(sorted(currencies))})")
    note = _text_or_none(refund, "note")
    fields = {
        "id": _shopify_id(refund, "id", "", problems),
        "order_id": _shopify_id(refund, "order_id", "", problems),
        "amount_minor": total,
        "at": _timestamp(refund, "created_at", "", problems),
        "reason": note[:200] if note else None,
    }
    built = _build(Refund, fields, {"amount_minor": "transactions"}, problems)
    problems.raise_if_any("Shopify refund")
    assert built is not None
    return RefundEvent(refund=built)
