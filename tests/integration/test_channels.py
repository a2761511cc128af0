"""Channel adapters against real servers on 127.0.0.1: an aiosmtpd SMTP server and an http.server webhook gateway.

Each test reads what actually arrived: the parsed email with its headers and parts, or the webhook request with its
signature checked by `engine.webhooks.verify`.
"""

from __future__ import annotations

import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage, MIMEPart
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from engine.channels import (
    DeliveryError,
    MaildirAdapter,
    Outgoing,
    SmtpEmailAdapter,
    WebhookMessageAdapter,
    make_adapters,
    message_id,
)
from engine.settings import ContactSettings, ReferralSettings, Settings
from engine.webhooks import SIGNATURE_HEADER, verify
from graph.errors import InvalidInput
from graph.model import ContactChannel
from graph.outreach import MessageKind
from tests.net_support import free_port

SENDER = "Shop <hello@shop.example>"
SECRET = "sms-secret-for-tests"
UNSUBSCRIBE = "https://shop.example/u/eyJwIjoiY3VzdG9tZXI6YzEifQ.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2ln"


def outgoing(**overrides: Any) -> Outgoing:
    fields: dict[str, Any] = {
        "key": "spring:invite:customer:c1",
        "to": "Zoë Ødegaard <zoe@example.org>",
        "subject": "Zoë, Łukasz thinks you'll love this 🎁",
        "text": "Hi Zoë,\nyour link: https://shop.example/r/ZOE123\n",
        "html": "<p>Hi Zoë,</p><p><a href='https://shop.example/r/ZOE123'>your link</a></p>",
        "unsubscribe_url": UNSUBSCRIBE,
        "kind": MessageKind.MARKETING,
    }
    fields.update(overrides)
    return Outgoing(**fields)


# --- SMTP -----------------------------------------------------------------------------------------------------
@dataclass
class Arrival:
    peer: tuple[str, int]
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def mail(self) -> EmailMessage:
        parsed = BytesParser(policy=email.policy.default).parsebytes(self.raw)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Mailbox:
    """An aiosmtpd handler that stores what it accepts, or answers with scripted refusals first."""

    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.pop(0)
        self.arrivals.append(Arrival(session.peer, envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 queued"


@contextmanager
def smtp_server(mailbox: Mailbox, port: int | None = None) -> Iterator[int]:
    controller = Controller(mailbox, hostname="127.0.0.1", port=port or free_port())
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@pytest.fixture
def sink() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with smtp_server(box) as port:
        yield box, port


@pytest.fixture
def mailbox(sink: tuple[Mailbox, int]) -> Iterator[tuple[Mailbox, SmtpEmailAdapter]]:
    box, port = sink
    adapter = SmtpEmailAdapter("127.0.0.1", port, SENDER, timeout_s=5)
    yield box, adapter
    adapter.close()


def text_of(part: MIMEPart) -> str:
    """A part's decoded text with the wire's CRLF line ends read back as newlines."""
    return str(part.get_content()).replace("\r\n", "\n")


def header_section(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0]


def test_marketing_email_arrives_with_one_click_unsubscribe_both_parts_and_its_key_as_message_id(mailbox):
    box, adapter = mailbox
    message = outgoing()
    delivery = adapter.send(message)
    [arrival] = box.arrivals
    mail = arrival.mail
    assert arrival.mail_from == "hello@shop.example"
    assert arrival.rcpt_tos == ["zoe@example.org"]
    assert mail["Subject"] == "Zoë, Łukasz thinks you'll love this 🎁"
    assert mail["To"] == "Zoë Ødegaard <zoe@example.org>"
    assert header_section(arrival.raw).isascii()
    assert mail["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Precedence"] == "bulk"
    assert "Auto-Submitted" not in mail
    assert mail["Message-ID"] == message_id(message.key, "shop.example") == delivery.provider_id
    plain, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert plain is not None
    assert html is not None
    assert text_of(plain) == message.text
    assert text_of(html).strip() == message.html


def test_a_resent_key_carries_the_same_message_id_and_another_key_a_different_one(mailbox):
    box, adapter = mailbox
    adapter.send(outgoing())
    adapter.send(outgoing(text="a second attempt after a crash\n"))
    adapter.send(outgoing(key="spring:invite:customer:c2"))
    first, again, other = (arrival.mail["Message-ID"] for arrival in box.arrivals)
    assert first == again
    assert other != first
    assert first.endswith("@shop.example>")


def test_transactional_mail_has_no_unsubscribe_headers_and_invitations_are_not_bulk(mailbox):
    box, adapter = mailbox
    adapter.send(outgoing(kind=MessageKind.TRANSACTIONAL, html=None, subject="Your reward is ready"))
    adapter.send(outgoing(kind=MessageKind.INVITATION, key="spring:invite:email:" + "ab" * 16))
    transactional, invitation = (arrival.mail for arrival in box.arrivals)
    for header in ("List-Unsubscribe", "List-Unsubscribe-Post", "Precedence"):
        assert header not in transactional
    assert transactional.get_content_type() == "text/plain"
    assert invitation["List-Unsubscribe"] == f"<{UNSUBSCRIBE}>"
    assert invitation["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "Precedence" not in invitation


def test_a_4xx_reply_is_retryable_and_the_next_message_goes_out_on_a_fresh_connection():
    box = Mailbox(data_replies=["451 4.3.0 try again later"])
    with smtp_server(box) as port:
        adapter = SmtpEmailAdapter("127.0.0.1", port, SENDER, timeout_s=5)
        with pytest.raises(DeliveryError, match="451") as refused:
            adapter.send(outgoing())
        assert refused.value.retryable
        adapter.send(outgoing())
        adapter.close()
    assert len(box.arrivals) == 1


def test_a_5xx_reply_is_permanent():
    box = Mailbox(rcpt_replies=["550 5.1.1 no such user"])
    with smtp_server(box) as port:
        adapter = SmtpEmailAdapter("127.0.0.1", port, SENDER, timeout_s=5)
        with pytest.raises(DeliveryError, match="550") as refused:
            adapter.send(outgoing())
        adapter.close()
    assert not refused.value.retryable
    assert box.arrivals == []


def test_a_refused_connection_is_retryable():
    adapter = SmtpEmailAdapter("127.0.0.1", free_port(), SENDER, timeout_s=2)
    with pytest.raises(DeliveryError) as refused:
        adapter.send(outgoing())
    assert refused.value.retryable


def test_a_server_that_never_greets_times_out_retryably():
    with closing(socket.socket()) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        adapter = SmtpEmailAdapter("127.0.0.1", silent.getsockname()[1], SENDER, timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(DeliveryError) as refused:
            adapter.send(outgoing())
    assert refused.value.retryable
    assert time.monotonic() - started < 3


def test_messages_share_a_connection_up_to_the_limit(sink):
    box, port = sink
    adapter = SmtpEmailAdapter("127.0.0.1", port, SENDER, timeout_s=5, max_per_connection=2)
    for n in range(3):
        adapter.send(outgoing(key=f"spring:invite:customer:c{n}"))
    adapter.close()
    peers = [arrival.peer for arrival in box.arrivals]
    assert peers[0] == peers[1]
    assert peers[2] != peers[0]


def test_a_connection_the_server_dropped_is_replaced_before_the_next_message():
    box = Mailbox()
    port = free_port()
    adapter = SmtpEmailAdapter("127.0.0.1", port, SENDER, timeout_s=5)
    with smtp_server(box, port):
        adapter.send(outgoing(key="spring:invite:customer:c1"))
    with smtp_server(box, port):
        adapter.send(outgoing(key="spring:invite:customer:c2"))
    adapter.close()
    assert [arrival.mail["Message-ID"] for arrival in box.arrivals] == [
        message_id("spring:invite:customer:c1", "shop.example"),
        message_id("spring:invite:customer:c2", "shop.example"),
    ]


def test_a_line_break_in_a_header_is_refused_for_good_and_nothing_is_sent(mailbox):
    box, adapter = mailbox
    with pytest.raises(DeliveryError) as refused:
        adapter.send(outgoing(subject="Hello\r\nBcc: everyone@example.org"))
    assert not refused.value.retryable
    assert box.arrivals == []


# --- Maildir --------------------------------------------------------------------------------------------------
def test_maildir_keeps_the_first_copy_of_a_key_and_one_file_per_key(tmp_path):
    adapter = MaildirAdapter(tmp_path / "mail", sender=SENDER)
    first = adapter.send(outgoing(text="first\n"))
    again = adapter.send(outgoing(text="second\n"))
    adapter.send(outgoing(key="spring:invite:customer:c2"))
    files = sorted((tmp_path / "mail").iterdir())
    assert len(files) == 2
    assert all(path.suffix == ".eml" and not path.name.startswith(".") for path in files)
    stored = BytesParser(policy=email.policy.default).parsebytes(
        adapter.path_for("spring:invite:customer:c1").read_bytes()
    )
    assert isinstance(stored, EmailMessage)
    plain = stored.get_body(("plain",))
    assert plain is not None
    assert text_of(plain) == "first\n"
    assert first == again
    assert stored["Message-ID"] == first.provider_id


def test_maildir_names_a_hostile_key_inside_its_folder(tmp_path):
    adapter = MaildirAdapter(tmp_path / "mail", sender=SENDER)
    adapter.send(outgoing(key="../../etc/passwd"))
    [written] = (tmp_path / "mail").iterdir()
    assert written.parent == tmp_path / "mail"
    assert adapter.path_for("../../etc/passwd") == written


# --- webhooks -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    headers: dict[str, str]
    body: bytes


class Gateway(ThreadingHTTPServer):
    """An SMS gateway that records each POST and answers `status` (after `delay_s`) with `answer`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _GatewayHandler)
        self.status = 202
        self.answer: dict[str, Any] = {"id": "sms-0001"}
        self.delay_s = 0.0
        self.requests: list[Request] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/messages"


class _GatewayHandler(BaseHTTPRequestHandler):
    server: Gateway

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.server.requests.append(Request(dict(self.headers.items()), self.rfile.read(length)))
        time.sleep(self.server.delay_s)
        body = json.dumps(self.server.answer).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if 300 <= self.server.status < 400:
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    server = Gateway()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def sms(**overrides: Any) -> Outgoing:
    fields: dict[str, Any] = {"to": "+447700900123", "subject": None, "html": None, "text": "Zoë: join me ✨"}
    fields.update(overrides)
    return outgoing(**fields)


def test_a_webhook_message_is_signed_and_carries_the_outbox_key_as_idempotency_key(gateway):
    adapter = WebhookMessageAdapter(ContactChannel.WHATSAPP, gateway.url, SECRET, allow_private=True)
    delivery = adapter.send(sms())
    adapter.close()
    [request] = gateway.requests
    verify(request.body, request.headers[SIGNATURE_HEADER], SECRET, now=datetime.now(UTC), tolerance_s=60)
    assert request.headers["Idempotency-Key"] == "spring:invite:customer:c1"
    assert json.loads(request.body) == {
        "key": "spring:invite:customer:c1",
        "channel": "whatsapp",
        "to": "+447700900123",
        "text": "Zoë: join me ✨",
        "unsubscribe_url": UNSUBSCRIBE,
        "kind": "marketing",
    }
    assert delivery.provider_id == "sms-0001"


def test_without_a_provider_id_the_outbox_key_names_the_delivery(gateway):
    gateway.answer = {"queued": True}
    adapter = WebhookMessageAdapter(ContactChannel.SMS, gateway.url, SECRET, allow_private=True)
    assert adapter.send(sms()).provider_id == "spring:invite:customer:c1"


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (400, False), (302, False)])
def test_gateway_answers_decide_whether_a_send_is_retried(gateway, status, retryable):
    gateway.status = status
    adapter = WebhookMessageAdapter(ContactChannel.SMS, gateway.url, SECRET, allow_private=True)
    with pytest.raises(DeliveryError, match=f"HTTP {status}") as refused:
        adapter.send(sms())
    assert refused.value.retryable is retryable
    assert len(gateway.requests) == 1


def test_a_slow_gateway_times_out_retryably(gateway):
    gateway.delay_s = 1.0
    adapter = WebhookMessageAdapter(ContactChannel.SMS, gateway.url, SECRET, allow_private=True, timeout_s=0.2)
    with pytest.raises(DeliveryError, match="timed out") as refused:
        adapter.send(sms())
    assert refused.value.retryable


def test_a_private_gateway_address_is_refused_without_allow_private(gateway):
    with pytest.raises(ValueError, match="refusing to call"):
        WebhookMessageAdapter(ContactChannel.SMS, gateway.url, SECRET)
    assert gateway.requests == []


def test_a_name_that_later_resolves_to_a_private_address_is_refused_at_send(gateway):
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    def resolver(host: str, port: int) -> list[str]:
        return next(answers)

    port = gateway.server_address[1]
    adapter = WebhookMessageAdapter(ContactChannel.SMS, f"http://sms.example:{port}/m", SECRET, resolver=resolver)
    with pytest.raises(DeliveryError, match="refusing to call") as refused:
        adapter.send(sms())
    assert not refused.value.retryable
    assert gateway.requests == []


def test_a_name_that_does_not_resolve_is_retryable():
    calls: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        if calls:
            raise socket.gaierror("temporary failure in name resolution")
        calls.append(host)
        return ["93.184.216.34"]

    adapter = WebhookMessageAdapter(ContactChannel.SMS, "https://sms.example/m", SECRET, resolver=resolver)
    with pytest.raises(DeliveryError, match="cannot resolve") as refused:
        adapter.send(sms())
    assert refused.value.retryable


# --- configuration --------------------------------------------------------------------------------------------
def smtp_and_sms(sms_url: str) -> ContactSettings:
    return ContactSettings(smtp_host="127.0.0.1", smtp_port=2525, smtp_sender=SENDER, sms_webhook_url=sms_url)


def test_by_default_email_goes_to_the_maildir_and_sms_has_no_way_out(tmp_path):
    adapters = make_adapters(Settings(contact=ContactSettings(maildir=str(tmp_path / "mail"))))
    assert set(adapters) == {ContactChannel.EMAIL}
    email_adapter = adapters[ContactChannel.EMAIL]
    assert isinstance(email_adapter, MaildirAdapter)
    assert email_adapter.path == tmp_path / "mail"


def test_configured_smtp_and_sms_webhook_serve_email_sms_and_whatsapp(gateway):
    settings = Settings(
        contact=smtp_and_sms(gateway.url),
        referral=ReferralSettings(allow_private_urls=True),
    )
    adapters = make_adapters(settings)
    assert isinstance(adapters[ContactChannel.EMAIL], SmtpEmailAdapter)
    for channel in (ContactChannel.SMS, ContactChannel.WHATSAPP):
        adapter = adapters[channel]
        assert isinstance(adapter, WebhookMessageAdapter)
        assert adapter.channel is channel
    assert ContactChannel.PUSH not in adapters


def test_a_private_sms_webhook_without_allow_private_is_a_configuration_error(gateway):
    with pytest.raises(InvalidInput, match="refusing to call"):
        make_adapters(Settings(contact=smtp_and_sms(gateway.url)))
