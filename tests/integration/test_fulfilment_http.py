"""The webhook fulfiller against a real HTTP server on 127.0.0.1: signing, retries, timeouts and the SSRF guard.

The server verifies every request's signature with `engine.webhooks.verify` and answers from a script, so each
test says what the merchant's system does and checks what reached it. Back-off waits go to a fake `sleep`.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

from engine.fulfilment import (
    FulfilmentError,
    LedgerFulfiller,
    WebhookFulfiller,
    is_public_address,
    make_fulfiller,
)
from engine.settings import ReferralSettings
from engine.webhooks import SIGNATURE_HEADER, verify
from graph.errors import InvalidInput, Unauthorized
from graph.program import Reward, RewardKind, RewardSide, RewardState

SECRET = "fulfil-secret-for-tests"
HANG = "hang"


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool


class MerchantServer(ThreadingHTTPServer):
    """Answers POSTs from `script` in order (the last answer repeats) and records what it received."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script: list[Answer | str] = [Answer(200)]
        self.received: list[Received] = []
        self.release = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hooks/rewards"

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def record(self, received: Received) -> Answer | str:
        with self._lock:
            self.received.append(received)
            return self.script[min(len(self.received), len(self.script)) - 1]


class _Handler(BaseHTTPRequestHandler):
    server: MerchantServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            verify(body, self.headers.get(SIGNATURE_HEADER), SECRET, now=datetime.now(UTC), tolerance_s=300)
            verified = True
        except Unauthorized:
            verified = False
        answer = self.server.record(Received(dict(self.headers.items()), body, verified))
        if not verified:
            answer = Answer(401, body="bad signature")
        if answer == HANG:
            self.server.release.wait(10)
            return
        assert isinstance(answer, Answer)
        payload = answer.body.encode()
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextmanager
def serving(server: MerchantServer) -> Iterator[MerchantServer]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def merchant() -> Iterator[MerchantServer]:
    with serving(MerchantServer()) as server:
        yield server


def self_signed(host: str, tmp_path: Path) -> tuple[Path, Path, str]:
    """(certificate file, key file, certificate PEM) for `host`, valid for a day."""
    crypto = pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    assert crypto
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file, key_file = tmp_path / f"{host}.crt", tmp_path / f"{host}.key"
    cert_file.write_text(pem)
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file, pem


@pytest.fixture
def tls_merchant(tmp_path: Path) -> Iterator[tuple[MerchantServer, str]]:
    """An HTTPS merchant whose certificate names `merchant.test`, and that certificate's PEM to trust."""
    cert_file, key_file, pem = self_signed("merchant.test", tmp_path)
    server = MerchantServer()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server, pem


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_reward(**overrides: Any) -> Reward:
    at = datetime(2024, 3, 20, 9, 0, tzinfo=UTC)
    fields: dict[str, Any] = {
        "id": "order-1001:referrer-credit",
        "customer_id": "cust-7",
        "campaign_id": "spring",
        "rule_id": "referrer-credit",
        "side": RewardSide.REFERRER,
        "kind": RewardKind.CREDIT,
        "amount_minor": 1000,
        "currency": "EUR",
        "description": "10 EUR credit",
        "conversion_id": "order-1001",
        "state": RewardState.APPROVED,
        "created_at": at,
        "updated_at": at,
        "approve_after": at,
    }
    fields.update(overrides)
    return Reward(**fields)


def fulfiller(url: str, sleeps: list[float], **options: Any) -> WebhookFulfiller:
    options.setdefault("allow_private", True)
    options.setdefault("timeout_s", 2.0)
    return WebhookFulfiller(url, SECRET, sleep=sleeps.append, **options)


class _Ceiling(random.Random):
    """Full jitter at its ceiling, so a test can see the back-off bounds themselves."""

    def uniform(self, a: float, b: float) -> float:
        return b


# --- delivery ------------------------------------------------------------------------------------------------
def test_a_reward_is_posted_as_signed_json_keyed_by_its_id(merchant: MerchantServer, sleeps: list[float]) -> None:
    fulfiller(merchant.url, sleeps).deliver(make_reward())
    [request] = merchant.received
    assert request.verified
    assert request.headers["Idempotency-Key"] == "order-1001:referrer-credit"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {
        "reward_id": "order-1001:referrer-credit",
        "customer_id": "cust-7",
        "kind": "credit",
        "amount_minor": 1000,
        "currency": "EUR",
        "description": "10 EUR credit",
        "campaign_id": "spring",
        "side": "referrer",
        "conversion_id": "order-1001",
    }
    assert sleeps == []


def test_a_recognition_reward_is_posted_with_no_amount(merchant: MerchantServer, sleeps: list[float]) -> None:
    reward = make_reward(id="order-3:third-badge", kind=RewardKind.BADGE, amount_minor=0, description="Ambassador")
    fulfiller(merchant.url, sleeps).deliver(reward)
    body = json.loads(merchant.received[0].body)
    assert (body["kind"], body["amount_minor"], body["description"]) == ("badge", 0, "Ambassador")


def test_a_non_ascii_reward_id_still_travels_as_a_header(merchant: MerchantServer, sleeps: list[float]) -> None:
    fulfiller(merchant.url, sleeps).deliver(make_reward(id="commande-é:referrer-credit"))
    [request] = merchant.received
    assert request.headers["Idempotency-Key"] == "commande-%C3%A9%3Areferrer-credit"
    assert json.loads(request.body)["reward_id"] == "commande-é:referrer-credit"


def test_the_documented_outgoing_example_is_what_the_fulfiller_sends(sleeps: list[float]) -> None:
    sent: list[httpx2.Request] = []

    def merchant_api(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200)

    reward = make_reward(campaign_id="spring", customer_id="cust-7")
    with httpx2.Client(transport=httpx2.MockTransport(merchant_api)) as client:
        WebhookFulfiller(
            "https://merchant.example/hooks/rewards",
            "fulfil_example_change_me",
            client=client,
            clock=lambda: 1710500000.0,
            resolver=lambda host, port: ["93.184.216.34"],
            sleep=sleeps.append,
        ).deliver(reward)
    [request] = sent
    docs = (Path(__file__).resolve().parents[2] / "docs" / "webhooks.md").read_text(encoding="utf-8")
    assert request.content.decode() in docs
    assert f"X-Advocacy-Signature: {request.headers[SIGNATURE_HEADER]}" in docs
    assert f"Idempotency-Key: {request.headers['Idempotency-Key']}" in docs
    assert request.url.host == "93.184.216.34"
    assert request.headers["Host"] == "merchant.example"


# --- retries -------------------------------------------------------------------------------------------------
def test_server_errors_are_retried_with_the_same_idempotency_key_until_accepted(
    merchant: MerchantServer, sleeps: list[float]
) -> None:
    merchant.script = [Answer(500), Answer(500), Answer(200)]
    fulfiller(merchant.url, sleeps, attempts=5).deliver(make_reward())
    assert len(merchant.received) == 3
    assert {r.headers["Idempotency-Key"] for r in merchant.received} == {"order-1001:referrer-credit"}
    assert all(r.verified for r in merchant.received)
    assert len({r.body for r in merchant.received}) == 1
    assert len(sleeps) == 2


def test_retries_stop_after_the_last_attempt_with_a_retryable_error(
    merchant: MerchantServer, sleeps: list[float]
) -> None:
    merchant.script = [Answer(500)]
    with pytest.raises(FulfilmentError, match="after 3 attempts") as exc:
        fulfiller(merchant.url, sleeps, attempts=3).deliver(make_reward())
    assert exc.value.retryable
    assert exc.value.status == 500
    assert len(merchant.received) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_statuses_that_may_pass_later_are_retried(merchant: MerchantServer, sleeps: list[float], status: int) -> None:
    merchant.script = [Answer(status), Answer(204)]
    fulfiller(merchant.url, sleeps).deliver(make_reward())
    assert len(merchant.received) == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_a_client_error_fails_at_once_and_is_not_retryable(
    merchant: MerchantServer, sleeps: list[float], status: int
) -> None:
    merchant.script = [Answer(status, body="customer unknown"), Answer(200)]
    with pytest.raises(FulfilmentError, match=f"HTTP {status}: customer unknown") as exc:
        fulfiller(merchant.url, sleeps).deliver(make_reward())
    assert not exc.value.retryable
    assert exc.value.status == status
    assert len(merchant.received) == 1
    assert sleeps == []


def test_a_redirect_is_not_followed(merchant: MerchantServer, sleeps: list[float]) -> None:
    merchant.script = [Answer(302, {"Location": "http://169.254.169.254/latest/meta-data/"}), Answer(200)]
    with pytest.raises(FulfilmentError, match="redirect") as exc:
        fulfiller(merchant.url, sleeps).deliver(make_reward())
    assert not exc.value.retryable
    assert len(merchant.received) == 1


def test_a_hanging_server_times_out_and_the_next_attempt_delivers(
    merchant: MerchantServer, sleeps: list[float]
) -> None:
    merchant.script = [HANG, Answer(200)]
    started = time.monotonic()
    fulfiller(merchant.url, sleeps, timeout_s=0.3).deliver(make_reward())
    assert len(merchant.received) == 2
    assert merchant.received[0].headers["Idempotency-Key"] == merchant.received[1].headers["Idempotency-Key"]
    assert 0.3 <= time.monotonic() - started < 5


def test_a_server_that_always_hangs_gives_up_after_the_attempts(merchant: MerchantServer, sleeps: list[float]) -> None:
    merchant.script = [HANG]
    started = time.monotonic()
    with pytest.raises(FulfilmentError, match="timed out") as exc:
        fulfiller(merchant.url, sleeps, timeout_s=0.2, attempts=2).deliver(make_reward())
    assert exc.value.retryable
    assert len(merchant.received) == 2
    assert time.monotonic() - started < 5


def test_a_refused_connection_is_retried(sleeps: list[float]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FulfilmentError, match="ConnectError") as exc:
        fulfiller(f"http://127.0.0.1:{port}/hooks", sleeps, attempts=3).deliver(make_reward())
    assert exc.value.retryable
    assert len(sleeps) == 2


def test_back_off_doubles_from_backoff_s_up_to_its_cap(merchant: MerchantServer, sleeps: list[float]) -> None:
    merchant.script = [Answer(503)]
    options = {"attempts": 7, "backoff_s": 0.5, "max_backoff_s": 4.0, "rng": _Ceiling()}
    with pytest.raises(FulfilmentError):
        fulfiller(merchant.url, sleeps, **options).deliver(make_reward())
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_back_off_waits_are_drawn_below_the_bound(merchant: MerchantServer, sleeps: list[float]) -> None:
    merchant.script = [Answer(500)]
    with pytest.raises(FulfilmentError):
        fulfiller(merchant.url, sleeps, attempts=6, backoff_s=1.0, rng=random.Random(7)).deliver(make_reward())
    assert all(0 <= wait <= 2**n for n, wait in enumerate(sleeps))
    assert len(set(sleeps)) == len(sleeps)


def test_retry_after_is_honoured_up_to_its_cap(merchant: MerchantServer, sleeps: list[float]) -> None:
    merchant.script = [Answer(429, {"Retry-After": "7"}), Answer(503, {"Retry-After": "3600"}), Answer(200)]
    fulfiller(merchant.url, sleeps, max_retry_after_s=60.0).deliver(make_reward())
    assert sleeps == [7.0, 60.0]


def test_retry_after_may_be_an_http_date(merchant: MerchantServer, sleeps: list[float]) -> None:
    in_half_a_minute = email.utils.formatdate(time.time() + 30, usegmt=True)
    merchant.script = [Answer(429, {"Retry-After": in_half_a_minute}), Answer(200)]
    fulfiller(merchant.url, sleeps).deliver(make_reward())
    assert len(sleeps) == 1
    assert 28 <= sleeps[0] <= 30


def test_each_attempt_is_signed_afresh(merchant: MerchantServer, sleeps: list[float]) -> None:
    merchant.script = [Answer(500), Answer(500), Answer(200)]
    ticks = itertools.count()
    base = time.time() - 100
    fulfiller(merchant.url, sleeps, clock=lambda: base + 10 * next(ticks)).deliver(make_reward())
    signatures = [r.headers[SIGNATURE_HEADER] for r in merchant.received]
    assert all(r.verified for r in merchant.received)
    assert len(set(signatures)) == 3


# --- the SSRF guard ------------------------------------------------------------------------------------------
def test_a_loopback_url_is_refused_without_allow_private(merchant: MerchantServer, sleeps: list[float]) -> None:
    with pytest.raises(ValueError, match="loopback, private"):
        fulfiller(merchant.url, sleeps, allow_private=False)
    assert merchant.received == []


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.8", "192.168.1.20", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1"]
)
def test_a_name_resolving_to_a_non_public_address_is_refused(address: str, sleeps: list[float]) -> None:
    with pytest.raises(ValueError, match=re.escape(address)):
        fulfiller("https://merchant.example/hooks", sleeps, allow_private=False, resolver=lambda host, port: [address])


def test_a_name_that_later_resolves_to_a_private_address_is_refused_before_the_call(
    merchant: MerchantServer, sleeps: list[float]
) -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])
    hook = fulfiller(
        f"http://merchant.example:{merchant.port}/hooks",
        sleeps,
        allow_private=False,
        resolver=lambda host, port: next(answers),
    )
    with pytest.raises(FulfilmentError, match=r"refusing to call merchant\.example") as exc:
        hook.deliver(make_reward())
    assert not exc.value.retryable
    assert merchant.received == []


def test_the_connection_goes_to_the_checked_address_and_keeps_the_host_name(
    merchant: MerchantServer, sleeps: list[float]
) -> None:
    resolved: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append((host, port))
        return ["127.0.0.1"]

    fulfiller(f"http://merchant.example:{merchant.port}/hooks", sleeps, resolver=resolver).deliver(make_reward())
    [request] = merchant.received
    assert request.headers["Host"] == f"merchant.example:{merchant.port}"
    assert resolved == [("merchant.example", merchant.port)] * 2


def test_an_unreachable_address_falls_back_to_the_next_checked_one(
    merchant: MerchantServer, sleeps: list[float]
) -> None:
    hook = fulfiller(
        f"http://merchant.example:{merchant.port}/hooks", sleeps, resolver=lambda host, port: ["127.0.0.2", "127.0.0.1"]
    )
    hook.deliver(make_reward())
    assert len(merchant.received) == 1
    assert sleeps == []


def test_https_goes_to_the_checked_address_and_checks_the_certificate_against_the_host_name(
    tls_merchant: tuple[MerchantServer, str], sleeps: list[float]
) -> None:
    server, pem = tls_merchant
    with httpx2.Client(verify=ssl.create_default_context(cadata=pem), trust_env=False) as client:
        hook = fulfiller(
            f"https://merchant.test:{server.port}/hooks", sleeps, client=client, resolver=lambda h, p: ["127.0.0.1"]
        )
        hook.deliver(make_reward())
    [request] = server.received
    assert request.verified
    assert request.headers["Host"] == f"merchant.test:{server.port}"


def test_https_to_a_host_the_certificate_does_not_name_is_not_delivered(
    tls_merchant: tuple[MerchantServer, str], sleeps: list[float]
) -> None:
    server, pem = tls_merchant
    with httpx2.Client(verify=ssl.create_default_context(cadata=pem), trust_env=False) as client:
        hook = fulfiller(
            f"https://impostor.test:{server.port}/hooks",
            sleeps,
            client=client,
            attempts=1,
            resolver=lambda h, p: ["127.0.0.1"],
        )
        with pytest.raises(FulfilmentError):
            hook.deliver(make_reward())
    assert server.received == []


def test_a_name_that_does_not_resolve_is_retried(sleeps: list[float]) -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    hook = fulfiller("https://merchant.example/hooks", sleeps, allow_private=False, resolver=resolver, attempts=2)
    with pytest.raises(FulfilmentError, match="cannot resolve") as exc:
        hook.deliver(make_reward())
    assert exc.value.retryable
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    "url", ["ftp://merchant.example/hooks", "file:///etc/passwd", "not a url", "/hooks/rewards", "http:///x"]
)
def test_only_absolute_http_urls_are_accepted(url: str, sleeps: list[float]) -> None:
    with pytest.raises(ValueError, match="URL"):
        fulfiller(url, sleeps)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("::1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.0.1", False),
        ("169.254.169.254", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::", False),
        ("224.0.0.251", False),
        ("ff02::1", False),
        ("240.0.0.1", False),
        ("::ffff:127.0.0.1", False),
        ("2002:a00:1::", False),
        ("not-an-ip", False),
    ],
)
def test_only_public_addresses_are_public(address: str, public: bool) -> None:
    assert is_public_address(address) is public


# --- choosing the fulfiller ----------------------------------------------------------------------------------
def test_without_a_url_rewards_are_fulfilled_in_our_own_ledger() -> None:
    assert isinstance(make_fulfiller(ReferralSettings()), LedgerFulfiller)


def test_a_configured_url_delivers_through_the_webhook(merchant: MerchantServer) -> None:
    settings = ReferralSettings(
        fulfiller_url=merchant.url, fulfiller_secret=SECRET, fulfiller_attempts=2, allow_private_urls=True
    )
    hook = make_fulfiller(settings)
    assert isinstance(hook, WebhookFulfiller)
    assert hook.attempts == 2
    hook.deliver(make_reward())
    assert merchant.received[0].verified


def test_a_configured_loopback_url_is_refused_unless_private_urls_are_allowed(merchant: MerchantServer) -> None:
    with pytest.raises(InvalidInput, match=r"FULFILLER_URL is not usable: .*loopback"):
        make_fulfiller(ReferralSettings(fulfiller_url=merchant.url, fulfiller_secret=SECRET))
