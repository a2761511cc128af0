"""How a message leaves: one `ChannelAdapter` per contact channel, each sending one outbox message per call.

Sending is at least once: a worker killed after the provider accepted a message but before the outbox recorded
it sends it again. Each adapter therefore carries the outbox key to the provider: email gets a `Message-ID`
derived from the key (mail systems drop the second copy), webhooks get it as `Idempotency-Key`. A
`DeliveryError` says whether a later attempt may succeed (`retryable`: a 4xx SMTP reply, a timeout, an HTTP 5xx)
or a person must look (a 5xx SMTP reply, an HTTP 4xx, a refused address).

Marketing and invitation email carries RFC 8058 one-click unsubscribe headers (`List-Unsubscribe` with the signed
link, and `List-Unsubscribe-Post`); mailbox providers only honour them on DKIM-signed mail, which is the relaying
MTA's job. Transactional mail (a reward notice) does not carry them: unsubscribing from marketing does not stop it.
"""

from __future__ import annotations

import email.policy
import email.utils
import hashlib
import json
import os
import re
import smtplib
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Final, Protocol

import httpx2

from engine.fulfilment import (
    RETRYABLE_STATUSES,
    FulfilmentError,
    Resolver,
    WebhookFulfiller,
    idempotency_key,
    resolve_host,
)
from engine.settings import Settings
from engine.webhooks import SIGNATURE_HEADER, sign
from graph.errors import InvalidInput
from graph.model import ContactChannel
from graph.outreach import MessageKind

USER_AGENT: Final = "advocacy-messages/1"
ONE_CLICK: Final = "List-Unsubscribe=One-Click"
UNSUBSCRIBABLE: Final = frozenset({MessageKind.MARKETING, MessageKind.INVITATION})
_SAFE_NAME = re.compile(r"[^A-Za-z0-9@+._-]")
_POLICY: Final = email.policy.SMTP.clone(max_line_length=998)
"""Folding at 78 would turn a long `List-Unsubscribe` URL into encoded words no mail client reads; 998 is the
hard limit of RFC 5322."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One rendered outbox message on its way out. `key` is the outbox key, unique per (outreach, step, person)."""

    key: str
    to: str
    subject: str | None
    text: str
    html: str | None
    unsubscribe_url: str
    kind: MessageKind


@dataclass(frozen=True, slots=True)
class Delivery:
    """The provider took the message; `provider_id` is what its bounces and receipts will refer to."""

    provider_id: str


class DeliveryError(Exception):
    """A message did not leave; `retryable` tells the caller whether a later attempt may succeed."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class ChannelAdapter(Protocol):
    channel: ContactChannel

    def send(self, message: Outgoing) -> Delivery:
        """Hand `message` to the provider or raise `DeliveryError`; called again with the same key after a crash."""
        ...


# --- email --------------------------------------------------------------------------------------------------
def sender_domain(sender: str) -> str:
    """The domain of the sender's address, in ASCII: it qualifies every Message-ID we make.

    >>> sender_domain("Advocacy <hello@Example.com>")
    'example.com'
    """
    address = email.utils.parseaddr(sender)[1]
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"sender {sender!r} has no address with a domain")
    try:
        return domain.lower().encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"sender domain {domain!r} is not a valid domain name") from exc


def message_id(key: str, domain: str) -> str:
    """The same `Message-ID` for every attempt at one outbox message; the key itself (a person key) stays private.

    >>> message_id("spring:invite:customer:c1", "example.com") == message_id("spring:invite:customer:c1", "example.com")
    True
    """
    return f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}.adv@{domain}>"


def build_email(message: Outgoing, sender: str, *, now: datetime | None = None) -> EmailMessage:
    """The email for `message`: plain text, with an HTML alternative when there is one.

    Bodies are quoted-printable, so the message is 7-bit clean for a relay that does not offer 8BITMIME.
    """
    mail = EmailMessage(policy=_POLICY)
    mail["From"] = sender
    mail["To"] = message.to
    if message.subject is not None:
        mail["Subject"] = message.subject
    mail["Date"] = email.utils.format_datetime(now or datetime.now(UTC))
    mail["Message-ID"] = message_id(message.key, sender_domain(sender))
    if message.kind in UNSUBSCRIBABLE:
        mail["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
        mail["List-Unsubscribe-Post"] = ONE_CLICK
    if message.kind is MessageKind.MARKETING:
        mail["Precedence"] = "bulk"
    mail.set_content(message.text, cte="quoted-printable")
    if message.html is not None:
        mail.add_alternative(message.html, subtype="html", cte="quoted-printable")
    return mail


def _email(message: Outgoing, sender: str) -> EmailMessage:
    try:
        return build_email(message, sender)
    except ValueError as exc:  # a line break in an address or subject: header injection, never sent
        raise DeliveryError(f"message {message.key!r} cannot be sent as email: {exc}", retryable=False) from exc


def _smtp_error(exc: Exception, host: str) -> DeliveryError:
    """Sort an smtplib failure: 4xx replies and broken connections may pass later, 5xx replies will not."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        answers = "; ".join(f"{code} {reply.decode('utf-8', 'replace')}" for code, reply in exc.recipients.values())
        return DeliveryError(f"{host} refused the recipient: {answers}", retryable=all(400 <= c < 500 for c in codes))
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        return DeliveryError(f"{host} answered {exc.smtp_code} {reply}", retryable=not 500 <= exc.smtp_code < 600)
    if isinstance(exc, smtplib.SMTPServerDisconnected | TimeoutError | ConnectionError):
        return DeliveryError(f"{host}: {type(exc).__name__}: {exc}", retryable=True)
    if isinstance(exc, smtplib.SMTPException | ssl.SSLCertVerificationError):
        return DeliveryError(f"{host}: {type(exc).__name__}: {exc}", retryable=False)
    return DeliveryError(f"{host}: {type(exc).__name__}: {exc}", retryable=True)


class SmtpEmailAdapter:
    """Email over SMTP, keeping one connection open between sends.

    A connection is reused for up to `max_per_connection` messages while idle less than `idle_s`, and checked with
    `RSET` before reuse (a server may have closed it); any failure closes it, so a message is never sent on a
    connection in an unknown state. Sends through one adapter are serialised: give each worker process its own.
    `max_per_connection=1` opens one connection per message.
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout_s: float = 10.0,
        max_per_connection: int = 100,
        idle_s: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_per_connection < 1:
            raise ValueError("max_per_connection must be at least 1")
        sender_domain(sender)
        self.channel = ContactChannel.EMAIL
        self.host = host
        self.port = port
        self.sender = sender
        self.username = username
        self.password = password
        self.starttls = starttls
        self.timeout_s = timeout_s
        self.max_per_connection = max_per_connection
        self.idle_s = idle_s
        self._tls_context = tls_context
        self._lock = threading.Lock()
        self._smtp: smtplib.SMTP | None = None
        self._sent_on_connection = 0
        self._last_used = 0.0

    def _open(self) -> smtplib.SMTP:
        smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            if self.starttls:
                smtp.starttls(context=self._tls_context or ssl.create_default_context())
            if self.username is not None:
                smtp.login(self.username, self.password or "")
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None:
            if time.monotonic() - self._last_used <= self.idle_s:
                try:
                    if self._smtp.rset()[0] == 250:
                        return self._smtp
                except (smtplib.SMTPException, OSError):
                    pass
            self._drop()
        self._smtp = self._open()
        self._sent_on_connection = 0
        return self._smtp

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()

    def send(self, message: Outgoing) -> Delivery:
        mail = _email(message, self.sender)
        with self._lock:
            try:
                self._connection().send_message(mail)
            except (smtplib.SMTPException, OSError) as exc:
                self._drop()
                raise _smtp_error(exc, self.host) from exc
            self._sent_on_connection += 1
            self._last_used = time.monotonic()
            if self._sent_on_connection >= self.max_per_connection:
                self._drop()
        return Delivery(provider_id=str(mail["Message-ID"]))

    def close(self) -> None:
        with self._lock:
            self._drop()


class MaildirAdapter:
    """Email written to files (`<path>/<key>.eml`) instead of sent: for development and the demo.

    A second send of the same key leaves the first file as it was, as a mail system drops a duplicate Message-ID.
    """

    def __init__(self, path: str | Path, *, sender: str = "Advocacy <hello@example.com>") -> None:
        sender_domain(sender)
        self.channel = ContactChannel.EMAIL
        self.path = Path(path)
        self.sender = sender

    def path_for(self, key: str) -> Path:
        """The key, with anything unsafe in a file name replaced, and a hash so that two keys never share a file."""
        readable = _SAFE_NAME.sub("_", key)[:150].lstrip(".")
        return self.path / f"{readable}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:12]}.eml"

    def send(self, message: Outgoing) -> Delivery:
        mail = _email(message, self.sender)
        target = self.path_for(message.key)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            descriptor, temporary = tempfile.mkstemp(dir=self.path, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(mail.as_bytes())
                os.link(temporary, target)
            except FileExistsError:
                pass
            finally:
                os.unlink(temporary)
        except OSError as exc:
            raise DeliveryError(f"cannot write {target}: {exc}", retryable=True) from exc
        return Delivery(provider_id=str(mail["Message-ID"]))


# --- webhooks (SMS, WhatsApp) -------------------------------------------------------------------------------
def message_payload(message: Outgoing, channel: ContactChannel) -> dict[str, str]:
    """The JSON object an SMS or WhatsApp provider receives for one message."""
    return {
        "key": message.key,
        "channel": channel.value,
        "to": message.to,
        "text": message.text,
        "unsubscribe_url": message.unsubscribe_url,
        "kind": message.kind.value,
    }


def _provider_id(response: httpx2.Response, fallback: str) -> str:
    try:
        answer: Any = response.json()
    except ValueError:
        return fallback
    given = answer.get("id") if isinstance(answer, dict) else None
    return given[:200] if isinstance(given, str) and given else fallback


class WebhookMessageAdapter:
    """Messages POSTed as signed JSON to a provider's gateway, with the outbox key as `Idempotency-Key`.

    The SSRF guard is the fulfiller's: the URL's name is resolved before every send, every address is checked
    (unless `allow_private`), the connection goes to the checked address and redirects are not followed. One
    attempt per send: retrying is the outbox's job. The provider may answer `{"id": ...}` to name its message.
    """

    def __init__(
        self,
        channel: ContactChannel,
        url: str,
        secret: str,
        *,
        allow_private: bool = False,
        timeout_s: float = 5.0,
        client: httpx2.Client | None = None,
        resolver: Resolver = resolve_host,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.channel = channel
        self._guard = WebhookFulfiller(
            url, secret, timeout_s=timeout_s, attempts=1, allow_private=allow_private, resolver=resolver
        )
        self._secret = secret
        self._clock = clock
        self._client = client
        self._own_client: httpx2.Client | None = None

    @property
    def host(self) -> str:
        return str(self._guard.url.host)

    def _http(self) -> httpx2.Client:
        if self._client is not None:
            return self._client
        if self._own_client is None:
            self._own_client = httpx2.Client(trust_env=False)
        return self._own_client

    def send(self, message: Outgoing) -> Delivery:
        body = json.dumps(message_payload(message, self.channel), separators=(",", ":"), ensure_ascii=False)
        raw = body.encode("utf-8")
        headers = {
            SIGNATURE_HEADER: sign(raw, self._secret, timestamp=int(self._clock())),
            "Idempotency-Key": idempotency_key(message.key),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        try:
            response = self._guard.post_once(self._http(), raw, headers)
        except FulfilmentError as exc:
            raise DeliveryError(str(exc), retryable=exc.retryable) from exc
        except httpx2.TimeoutException as exc:
            raise DeliveryError(f"{self.host} timed out ({type(exc).__name__})", retryable=True) from exc
        except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise DeliveryError(f"{self.host}: {type(exc).__name__}: {exc}", retryable=True) from exc
        except httpx2.HTTPError as exc:
            raise DeliveryError(f"cannot call {self.host}: {exc}", retryable=False) from exc
        status = response.status_code
        if 200 <= status < 300:
            return Delivery(provider_id=_provider_id(response, message.key))
        answer = "a redirect, which is not followed" if 300 <= status < 400 else response.text[:200]
        raise DeliveryError(
            f"{self.host} refused message {message.key!r} with HTTP {status}: {answer}",
            retryable=status >= 500 or status in RETRYABLE_STATUSES,
        )

    def close(self) -> None:
        if self._own_client is not None:
            self._own_client.close()
            self._own_client = None


def make_adapters(settings: Settings) -> dict[ContactChannel, ChannelAdapter]:
    """The configured adapters: SMTP (or the maildir) for email, the SMS webhook for SMS and WhatsApp when set.

    A channel missing from the result has no way out; the dispatcher holds its messages (`HoldReason.NO_ADDRESS`,
    naming the missing setting) rather than failing them.
    """
    contact = settings.contact
    adapters: dict[ContactChannel, ChannelAdapter] = {}
    try:
        if contact.smtp_host:
            adapters[ContactChannel.EMAIL] = SmtpEmailAdapter(
                contact.smtp_host,
                contact.smtp_port,
                contact.smtp_sender,
                username=contact.smtp_username,
                password=contact.smtp_password.get_secret_value() if contact.smtp_password else None,
                starttls=contact.smtp_starttls,
            )
        else:
            adapters[ContactChannel.EMAIL] = MaildirAdapter(contact.maildir, sender=contact.smtp_sender)
        if contact.sms_webhook_url:
            for channel in (ContactChannel.SMS, ContactChannel.WHATSAPP):
                adapters[channel] = WebhookMessageAdapter(
                    channel,
                    contact.sms_webhook_url,
                    contact.sms_webhook_secret.get_secret_value(),
                    allow_private=settings.referral.allow_private_urls,
                )
    except ValueError as exc:  # a misconfiguration is the operator's input, reported as such (not a 500)
        raise InvalidInput(f"ADVOCACY_CONTACT__* settings are not usable: {exc}") from exc
    return adapters
