"""Redis, the broker and the contact limiter at once, crashes in the middle of a campaign and comes back empty.

Persistence is off on purpose (the worst case the limiter's docstring warns about): the queued send tasks and
every contact count are gone. The outbox in the store is the record of what was sent, so the engine must still
keep every promise: the campaign completes once Redis is back (Celery beat's `dispatch_due` finds what the lost
queue held and what failed sends left leased), nobody receives a message twice, and the weekly cap still holds
for a second campaign, which the lost counts alone would have let through to everyone reached before the crash.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery

from engine.celery_app import make_celery
from engine.settings import RedisSettings, Settings
from graph.factory import open_store
from graph.model import ContactChannel, Customer, CustomerScores, Segment, utcnow
from graph.outreach import Audience, AudienceKind, HoldReason, MessageStatus, Outreach
from graph.program_store import Store
from tests.faults.conftest import RedisServer, Workers, outreach_env
from tests.integration.test_outreach_dispatch import Mailbox, awake_zone
from tests.program_factories import make_campaign

pytestmark = [pytest.mark.redis, pytest.mark.celery, pytest.mark.slow]

AUDIENCE = 240
LEASE_S = 4.0


def seed_campaigns(store: Store, outreach_ids: tuple[str, ...], count: int = AUDIENCE) -> list[Customer]:
    """`count` consenting, awake advocates, and one outreach to all of them per id."""
    store.save_campaign(make_campaign(id="spring"))
    zone, created = awake_zone(), utcnow() - timedelta(days=400)
    customers = [
        Customer(
            id=f"p{i:04d}",
            name=f"Person {i}",
            email=f"p{i}@example.org",
            timezone=zone,
            consent={ContactChannel.EMAIL: True},
            created_at=created,
        )
        for i in range(count)
    ]
    store.upsert_customers(customers)
    store.write_scores(
        [CustomerScores(customer_id=c.id, run_id="seed", segment=Segment.ADVOCATE, explanation="") for c in customers]
    )
    audience = Audience(kind=AudienceKind.CUSTOMERS, customer_ids=tuple(c.id for c in customers))
    for outreach_id in outreach_ids:
        store.save_outreach(
            Outreach(id=outreach_id, name=outreach_id, campaign_id="spring", audience=audience, created_at=utcnow())
        )
    return customers


def settle(app: Celery, store: Store, outreach_id: str, expected: int, *, timeout_s: float = 150) -> None:
    """Run beat's `dispatch_due` every lease until every message of the outreach is sent, held or failed."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = store.outbox_counts(outreach_id).by_status
        if sum(counts.get(s, 0) for s in (MessageStatus.SENT, MessageStatus.HELD, MessageStatus.FAILED)) >= expected:
            return
        assert time.monotonic() < deadline, f"outreach {outreach_id} not settled in {timeout_s:g} s: {counts}"
        app.send_task("advocacy.dispatch_due").get(timeout=60)
        time.sleep(LEASE_S)


def wait_for_mail(box: Mailbox, at_least: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while len(box.snapshot()) < at_least:
        assert time.monotonic() < deadline, f"only {len(box.snapshot())} messages arrived in {timeout_s:g} s"
        time.sleep(0.05)


@pytest.mark.timeout(300)
def test_a_redis_crash_mid_campaign_loses_nothing_sends_nothing_twice_and_keeps_the_caps(
    fresh_redis: RedisServer, mailbox: tuple[Mailbox, int], workers: Workers, tmp_path: Path
) -> None:
    box, smtp_port = mailbox
    store_url = f"sqlite:///{tmp_path / 'campaign.db'}"
    store = open_store(store_url)
    try:
        customers = seed_campaigns(store, ("first", "second"))
        env = outreach_env(store_url, fresh_redis, smtp_port, lease_s=LEASE_S)
        worker = workers.start(fresh_redis.url(0), "restart", env)
        app = make_celery(Settings(redis=RedisSettings(url=fresh_redis.url(0))))
        try:
            app.send_task("advocacy.plan_outreach", args=["first"])
            wait_for_mail(box, 40)
            fresh_redis.restart(down_s=1.0)
            reached_before = len(box.snapshot())
            assert reached_before < AUDIENCE, "the crash came too late to test anything"

            settle(app, store, "first", AUDIENCE)
            app.send_task("advocacy.plan_outreach", args=["second"]).get(timeout=60)
            settle(app, store, "second", AUDIENCE)
        finally:
            app.close()
            workers.stop(worker)

        first = store.outbox_counts("first")
        second = store.outbox_counts("second")
        assert first.by_status.get(MessageStatus.SENT, 0) == AUDIENCE, first
        received = box.snapshot()
        per_person = Counter(rcpt for rcpt, _ in received)
        assert set(per_person) == {c.email for c in customers}, "nobody was lost"
        over = {rcpt: n for rcpt, n in per_person.items() if n > 1}
        assert not over, f"{len(over)} people got more than the cap of 1 in 7 days, e.g. {sorted(over.items())[:3]}"
        assert len({mid for _, mid in received}) == len(received) == AUDIENCE, "no message was sent twice"
        assert second.by_status.get(MessageStatus.SENT, 0) == 0, second
        assert second.held_by_reason.get(HoldReason.CAP, 0) == AUDIENCE, second
    finally:
        store.close()
