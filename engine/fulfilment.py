"""Handing approved rewards to whoever pays them out: our own ledger, or the merchant's system over HTTP.

`ReferralService.fulfil` calls `Fulfiller.deliver` and marks the reward fulfilled only when it returns, so a
fulfiller must be safe to call twice for one reward: `WebhookFulfiller` sends the reward id as the
`Idempotency-Key` of every attempt for the merchant to deduplicate on. A `FulfilmentError` says whether a later
run should try again (`retryable`) or a person must look (a 4xx answer, a refused address).

The merchant's URL is configuration, but configuration can be wrong or hostile, so the fulfiller will not call
loopback, private, link-local, multicast or reserved addresses (SSRF). The name is resolved before every attempt,
each address is checked, and the connection goes to the checked address itself (the TLS name stays the host's),
so a DNS answer that changes between the check and the call cannot redirect it. Redirects are not followed.
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import random
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from datetime import UTC
from functools import cache
from typing import Final, Protocol
from urllib.parse import quote

import httpx2

from engine.settings import ReferralSettings
from engine.webhooks import SIGNATURE_HEADER, sign
from graph.errors import InvalidInput
from graph.program import Reward

RETRYABLE_STATUSES: Final = frozenset({408, 429})
"""Besides every 5xx: the server timed out waiting for us, or asked us to slow down."""
USER_AGENT: Final = "advocacy-fulfiller/1"

Resolver = Callable[[str, int], Sequence[str]]
"""(host, port) -> the addresses a connection may go to, as strings."""


class FulfilmentError(Exception):
    """A reward was not delivered; `retryable` tells the caller whether a later run may succeed."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class Fulfiller(Protocol):
    def deliver(self, reward: Reward) -> None:
        """Pay out `reward` or raise `FulfilmentError`; called again for the same reward after a crash."""
        ...


class LedgerFulfiller:
    """Credit is kept in our own ledger and recognition rewards are recorded there: nothing to send anywhere.

    The default while no fulfiller URL is configured; the ledger entry `ReferralService.fulfil` writes is the
    delivery.
    """

    def deliver(self, reward: Reward) -> None:
        return None


@cache
def _tls_context() -> ssl.SSLContext:
    """Built once: loading the CA bundle costs more than a delivery, and each delivery opens its own client."""
    return httpx2.create_ssl_context()


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order of preference."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _embedded(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    embedded = [address.ipv4_mapped, address.sixtofour, address.teredo[1] if address.teredo else None]
    return [inner for inner in embedded if inner is not None]


def is_public_address(address: str) -> bool:
    """Whether a connection to `address` leaves the host and its private networks.

    >>> [is_public_address(a) for a in ("93.184.216.34", "127.0.0.1", "10.1.2.3", "169.254.169.254", "::ffff:10.0.0.1")]
    [True, False, False, False, False]
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    for candidate in (parsed, *_embedded(parsed)):
        if (
            candidate.is_loopback
            or candidate.is_private
            or candidate.is_link_local
            or candidate.is_multicast
            or candidate.is_reserved
            or candidate.is_unspecified
            or not candidate.is_global
        ):
            return False
    return True


def reward_payload(reward: Reward) -> dict[str, str | int]:
    """The JSON object the merchant receives for one reward (docs/webhooks.md)."""
    return {
        "reward_id": reward.id,
        "customer_id": reward.customer_id,
        "kind": reward.kind.value,
        "amount_minor": reward.amount_minor,
        "currency": reward.currency,
        "description": reward.description,
        "campaign_id": reward.campaign_id,
        "side": reward.side.value,
        "conversion_id": reward.conversion_id,
    }


def idempotency_key(reward_id: str) -> str:
    """The reward id, percent-encoded only where a header value could not carry it."""
    if reward_id.isascii() and reward_id.isprintable():
        return reward_id
    return quote(reward_id, safe="")


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header: a number of seconds or an HTTP date; None when unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class WebhookFulfiller:
    """POSTs each reward as signed JSON to the merchant, retrying what may succeed later.

    Connection failures, timeouts, 408, 429 and 5xx are retried up to `attempts` times in all, after
    exponential back-off with full jitter (a random wait up to `backoff_s * 2**n`, at most `max_backoff_s`), or
    after the server's `Retry-After` (at most `max_retry_after_s`). Any other 4xx, and 3xx, fail at once.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 5,
        backoff_s: float = 0.5,
        allow_private: bool = False,
        client: httpx2.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 60.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        resolver: Resolver = resolve_host,
    ) -> None:
        try:
            target = httpx2.URL(url)
        except httpx2.InvalidURL as exc:
            raise ValueError(f"fulfiller URL {url!r} is not a URL ({exc})") from None
        if target.scheme not in ("http", "https") or not target.host:
            raise ValueError(f"fulfiller URL {url!r} must be an absolute http:// or https:// URL")
        if not secret:
            raise ValueError("the fulfiller secret cannot be empty")
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.url = target
        self.secret = secret
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.allow_private = allow_private
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self._client = client
        self._sleep = sleep
        self._clock = clock
        self._rng = rng if rng is not None else random.SystemRandom()
        self._resolver = resolver
        self._host = target.raw_host.decode("ascii")
        self._port = target.port or (443 if target.scheme == "https" else 80)
        try:
            self._addresses()
        except FulfilmentError as exc:
            if not exc.retryable:
                raise ValueError(str(exc)) from None

    def _addresses(self) -> list[str]:
        """The addresses to connect to, each checked; a name that does not resolve is retryable (DNS may be down)."""
        try:
            ipaddress.ip_address(self._host.strip("[]"))
        except ValueError:
            try:
                addresses = list(self._resolver(self._host, self._port))
            except OSError as exc:
                raise FulfilmentError(f"cannot resolve {self._host}: {exc}", retryable=True) from None
        else:
            addresses = [self._host.strip("[]")]
        if not addresses:
            raise FulfilmentError(f"{self._host} resolves to no address", retryable=True)
        if not self.allow_private:
            refused = [address for address in addresses if not is_public_address(address)]
            if refused:
                raise FulfilmentError(
                    f"refusing to call {self._host}: it resolves to a loopback, private, link-local, multicast or "
                    f"reserved address ({', '.join(refused)}); set allow_private only for development",
                    retryable=False,
                )
        return addresses

    def post_once(self, client: httpx2.Client, body: bytes, headers: dict[str, str]) -> httpx2.Response:
        """One attempt, pinned to the checked addresses in turn until one accepts the connection.

        Public because other signed webhooks (the SMS adapter in `engine.channels`) reuse the same SSRF guard.
        """
        extensions = {"sni_hostname": self._host} if self.url.scheme == "https" else {}
        headers = {**headers, "Host": self.url.netloc.decode("ascii")}
        failure: httpx2.ConnectError | None = None
        for address in self._addresses():
            try:
                return client.post(
                    self.url.copy_with(host=address),
                    content=body,
                    headers=headers,
                    timeout=self.timeout_s,
                    follow_redirects=False,
                    extensions=extensions,
                )
            except httpx2.ConnectError as exc:
                failure = exc
        assert failure is not None
        raise failure

    def _backoff(self, attempt: int) -> float:
        return self._rng.uniform(0, min(self.max_backoff_s, self.backoff_s * 2**attempt))

    def deliver(self, reward: Reward) -> None:
        body = json.dumps(reward_payload(reward), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if self._client is not None:
            self._deliver(self._client, reward, body)
            return
        with httpx2.Client(trust_env=False, verify=_tls_context()) as client:
            self._deliver(client, reward, body)

    def _deliver(self, client: httpx2.Client, reward: Reward, body: bytes) -> None:
        reason, last_status = "", None
        for attempt in range(self.attempts):
            headers = {
                SIGNATURE_HEADER: sign(body, self.secret, timestamp=int(self._clock())),
                "Idempotency-Key": idempotency_key(reward.id),
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            }
            wait: float | None = None
            last_status = None
            try:
                response = self.post_once(client, body, headers)
            except FulfilmentError as exc:
                if not exc.retryable:
                    raise
                reason = str(exc)
            except httpx2.TimeoutException as exc:
                reason = f"timed out after {self.timeout_s} s ({type(exc).__name__})"
            except (httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            except httpx2.HTTPError as exc:
                raise FulfilmentError(f"cannot call {self._host}: {exc}", retryable=False) from exc
            else:
                status = response.status_code
                if 200 <= status < 300:
                    return
                if status not in RETRYABLE_STATUSES and status < 500:
                    answer = "a redirect, which is not followed" if status < 400 else response.text[:200]
                    raise FulfilmentError(
                        f"{self._host} refused reward {reward.id!r} with HTTP {status}: {answer}",
                        retryable=False,
                        status=status,
                    )
                last_status, reason = status, f"HTTP {status}"
                retry_after = _retry_after(response.headers.get("Retry-After"), self._clock())
                wait = min(retry_after, self.max_retry_after_s) if retry_after is not None else None
            if attempt + 1 < self.attempts:
                self._sleep(wait if wait is not None else self._backoff(attempt))
        raise FulfilmentError(
            f"reward {reward.id!r} not delivered to {self._host} after {self.attempts} attempts (last: {reason})",
            retryable=True,
            status=last_status,
        )


def make_fulfiller(settings: ReferralSettings) -> Fulfiller:
    """The merchant's webhook when a URL is configured, else our own ledger."""
    if not settings.fulfiller_url:
        return LedgerFulfiller()
    try:
        return WebhookFulfiller(
            settings.fulfiller_url,
            settings.fulfiller_secret.get_secret_value(),
            timeout_s=settings.fulfiller_timeout_s,
            attempts=settings.fulfiller_attempts,
            allow_private=settings.allow_private_urls,
        )
    except ValueError as exc:  # a misconfiguration is the operator's input, reported as such (not a 500)
        raise InvalidInput(f"ADVOCACY_REFERRAL__FULFILLER_URL is not usable: {exc}") from exc
