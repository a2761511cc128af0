"""Outreach through real Celery workers on a real Redis, into a real SMTP server, within the contact policy.

A campaign to 1,000 customers is sent by two racing workers: each customer gets at most what the policy allows,
every message not sent says why, and a second campaign in the same week is held by the cap. Then a worker is
SIGKILLed in the middle of a campaign and another takes over: nothing is lost, nobody gets two messages.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from email import message_from_bytes
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from engine.celery_app import make_celery
from engine.settings import RedisSettings, Settings
from graph.factory import open_store
from graph.model import ContactChannel, Customer, CustomerScores, Segment, utcnow
from graph.outreach import Audience, AudienceKind, HoldReason, MessageStatus, Outreach
from graph.program_store import Store
from tests.integration.conftest import kill_worker, start_worker, stop_worker
from tests.net_support import free_port
from tests.program_factories import make_campaign

pytestmark = [pytest.mark.redis, pytest.mark.celery]

AUDIENCE = 1000
NO_CONSENT_EVERY = 10
DO_NOT_ASK_EVERY = 25


@dataclass
class Mailbox:
    """What the SMTP server received: one entry per delivered message, by recipient and Message-ID."""

    received: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message_id = message_from_bytes(content).get("Message-ID", "")
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.received.append((rcpt, message_id))
        return "250 OK"

    def snapshot(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.received)


@contextmanager
def smtp_sink() -> Iterator[tuple[Mailbox, int]]:
    """A real SMTP server (aiosmtpd) on a free loopback port recording what it is sent; yields it and its port."""
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with smtp_sink() as sink:
        yield sink


@pytest.fixture
def limiter_url(redis_url: str) -> str:
    url = redis_url.rsplit("/", 1)[0] + "/6"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def quiet_zone() -> str:
    """A time zone where it is night right now (inside the default 21:00-08:00 quiet hours)."""
    now = utcnow()
    for name in (
        "Pacific/Auckland",
        "Asia/Tokyo",
        "Asia/Kolkata",
        "Europe/Paris",
        "America/New_York",
        "America/Los_Angeles",
        "Pacific/Honolulu",
    ):
        hour = now.astimezone(ZoneInfo(name)).hour
        if hour >= 22 or hour < 7:
            return name
    raise AssertionError("some zone is always at night")


def awake_zone() -> str:
    now = utcnow()
    for name in (
        "Europe/Paris",
        "America/New_York",
        "Asia/Tokyo",
        "Pacific/Auckland",
        "America/Los_Angeles",
        "Asia/Kolkata",
        "Pacific/Honolulu",
    ):
        hour = now.astimezone(ZoneInfo(name)).hour
        if 9 <= hour < 20:
            return name
    raise AssertionError("some zone is always awake")


def seed(store: Store, prefix: str, count: int, *, night_every: int = 0) -> list[Customer]:
    awake, night = awake_zone(), quiet_zone()
    created = utcnow() - timedelta(days=400)
    customers = [
        Customer(
            id=f"{prefix}{i:05d}",
            name=f"Person {i}",
            email=f"{prefix}{i}@example.org",
            timezone=night if night_every and i % night_every == 3 else awake,
            consent={ContactChannel.EMAIL: i % NO_CONSENT_EVERY != 1},
            created_at=created,
        )
        for i in range(count)
    ]
    store.upsert_customers(customers)
    store.write_scores(
        [
            CustomerScores(
                customer_id=c.id,
                run_id="seed",
                segment=Segment.DO_NOT_ASK if i % DO_NOT_ASK_EVERY == 2 else Segment.ADVOCATE,
                explanation="seeded",
            )
            for i, c in enumerate(customers)
        ]
    )
    return customers


def outreach(store: Store, outreach_id: str, customers: list[Customer]) -> None:
    store.save_outreach(
        Outreach(
            id=outreach_id,
            name=outreach_id,
            campaign_id="spring",
            audience=Audience(kind=AudienceKind.CUSTOMERS, customer_ids=tuple(c.id for c in customers)),
            created_at=utcnow(),
        )
    )


def worker_env(store_url: str, limiter_url: str, smtp_port: int) -> dict[str, str]:
    return {
        "ADVOCACY_STORE": store_url,
        "ADVOCACY_CONTACT__BACKEND": "redis",
        "ADVOCACY_CONTACT__REDIS_DB_URL": limiter_url,
        "ADVOCACY_CONTACT__SMTP_HOST": "127.0.0.1",
        "ADVOCACY_CONTACT__SMTP_PORT": str(smtp_port),
        "ADVOCACY_CONTACT__LEASE_S": "6",
        "ADVOCACY_API__PUBLIC_BASE_URL": "https://shop.example",
    }


def wait_until_settled(store: Store, outreach_id: str, expected: int, timeout_s: float = 240) -> dict[Any, int]:
    """Until every message of the outreach is sent, held, failed or deferred past now (quiet hours)."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = store.outbox_counts(outreach_id)
        settled = sum(
            counts.by_status.get(s, 0) for s in (MessageStatus.SENT, MessageStatus.HELD, MessageStatus.FAILED)
        )
        deferred = len(
            store.list_messages(outreach_id, status=MessageStatus.QUEUED, reason=HoldReason.QUIET_HOURS, limit=10_000)
        )
        if settled + deferred >= expected:
            return dict(counts.by_status)
        if time.monotonic() > deadline:
            raise AssertionError(f"outreach {outreach_id} not settled in {timeout_s} s: {counts}")
        time.sleep(0.5)


def test_two_racing_workers_send_each_customer_at_most_what_the_policy_allows(
    tmp_path: Path, redis_url: str, limiter_url: str, mailbox: tuple[Mailbox, int]
) -> None:
    box, smtp_port = mailbox
    store_url = f"sqlite:///{tmp_path / 'outreach.db'}"
    store = open_store(store_url)
    try:
        store.save_campaign(make_campaign(id="spring"))
        customers = seed(store, "c", AUDIENCE, night_every=20)
        outreach(store, "first", customers)
        outreach(store, "second", customers)
    finally:
        store.close()
    env = worker_env(store_url, limiter_url, smtp_port)
    workers = [start_worker(redis_url, tmp_path / f"w{n}.log", name=f"out{n}", env=env) for n in range(2)]
    app = make_celery(Settings(redis=RedisSettings(url=redis_url)))
    store = open_store(store_url)
    try:
        app.send_task("advocacy.plan_outreach", args=["first"]).get(timeout=120)
        # The same plan delivered again, and every send task duplicated: nothing may be sent twice.
        app.send_task("advocacy.plan_outreach", args=["first"]).get(timeout=120)
        eligible = AUDIENCE - AUDIENCE // DO_NOT_ASK_EVERY
        wait_until_settled(store, "first", eligible)

        app.send_task("advocacy.plan_outreach", args=["second"]).get(timeout=120)
        wait_until_settled(store, "second", eligible)
    finally:
        app.close()
        for worker in workers:
            stop_worker(worker)

    try:
        first = store.outbox_counts("first")
        second = store.outbox_counts("second")
        held_first = first.held_by_reason
        no_consent = sum(1 for i in range(AUDIENCE) if i % NO_CONSENT_EVERY == 1 and i % DO_NOT_ASK_EVERY != 2)
        night = sum(
            1 for i in range(AUDIENCE) if i % 20 == 3 and i % NO_CONSENT_EVERY != 1 and i % DO_NOT_ASK_EVERY != 2
        )
        assert held_first.get(HoldReason.NO_CONSENT, 0) == no_consent
        deferred = store.list_messages("first", status=MessageStatus.QUEUED, limit=10_000)
        assert len(deferred) == night
        assert all(m.reason is HoldReason.QUIET_HOURS and m.not_before > utcnow() for m in deferred)
        sent_first = first.by_status.get(MessageStatus.SENT, 0)
        assert sent_first == eligible - no_consent - night

        assert second.by_status.get(MessageStatus.SENT, 0) == 0, "the weekly cap spans every campaign"
        assert second.held_by_reason.get(HoldReason.CAP, 0) == sent_first
        held = store.list_messages("second", status=MessageStatus.HELD, reason=HoldReason.CAP, limit=1)
        assert held[0].detail, "a hold-back says which cap"

        received = box.snapshot()
        per_person = Counter(rcpt for rcpt, _ in received)
        assert max(per_person.values()) == 1, "nobody gets two messages"
        assert len(per_person) == sent_first
        assert len({mid for _, mid in received}) == len(received)
    finally:
        store.close()


def test_a_worker_killed_mid_campaign_loses_and_duplicates_nothing(
    tmp_path: Path, redis_url: str, limiter_url: str, mailbox: tuple[Mailbox, int]
) -> None:
    box, smtp_port = mailbox
    store_url = f"sqlite:///{tmp_path / 'crash.db'}"
    store = open_store(store_url)
    try:
        store.save_campaign(make_campaign(id="spring"))
        customers = [c for i, c in enumerate(seed(store, "k", 400)) if i % NO_CONSENT_EVERY != 1]
        customers = [c for i, c in enumerate(customers) if int(c.id[1:]) % DO_NOT_ASK_EVERY != 2]
        random.Random(3).shuffle(customers)
        outreach(store, "crash", customers)
    finally:
        store.close()
    env = worker_env(store_url, limiter_url, smtp_port)
    app = make_celery(Settings(redis=RedisSettings(url=redis_url)))
    store = open_store(store_url)
    first = start_worker(redis_url, tmp_path / "doomed.log", name="doomed", env=env)
    doomed: subprocess.Popen[bytes] | None = first
    successor = None
    try:
        app.send_task("advocacy.plan_outreach", args=["crash"])
        deadline = time.monotonic() + 120
        while len(box.snapshot()) < 60:
            assert time.monotonic() < deadline, "the first worker never got going"
            time.sleep(0.05)
        kill_worker(first)
        doomed = None
        killed_at = len(box.snapshot())
        assert killed_at < len(customers), "the kill came too late to test anything"

        successor = start_worker(redis_url, tmp_path / "successor.log", name="successor", env=env)
        time.sleep(7)  # the dead worker's leases run out (lease 6 s)
        app.send_task("advocacy.dispatch_due").get(timeout=120)
        wait_until_settled(store, "crash", len(customers))
        time.sleep(1)
        app.send_task("advocacy.dispatch_due").get(timeout=120)
    finally:
        app.close()
        if doomed is not None:
            kill_worker(doomed)
        if successor is not None:
            stop_worker(successor)
    try:
        counts = store.outbox_counts("crash")
        assert counts.by_status.get(MessageStatus.SENT, 0) == len(customers), counts
        received = box.snapshot()
        ids_per_person: dict[str, set[str]] = {}
        for rcpt, mid in received:
            ids_per_person.setdefault(rcpt, set()).add(mid)
        assert len(ids_per_person) == len(customers), "nothing lost"
        assert all(len(ids) == 1 for ids in ids_per_person.values()), "one message (one Message-ID) per person"
        resent = len(received) - len(ids_per_person)
        # A message the dead worker had handed to SMTP but not yet recorded is sent again with the same
        # Message-ID (receivers drop it); at most one per pool process that was mid-send.
        assert resent <= 2, f"{resent} resends"
    finally:
        store.close()
