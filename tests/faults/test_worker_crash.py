"""A Celery worker SIGKILLed in the middle of its tasks while the broker connection is cut (Redis crashes and comes
back empty): late acks, the outbox and the store's idempotent settlement still send every message once and
issue every reward once.

What recovers the work is what production runs: a replacement worker, Celery beat's `dispatch_due` for the
outbox, and the merchant's webhook retries for orders whose delivery was never acknowledged (here: every order is
delivered again, as a sender that lost all its acknowledgements would).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from engine.celery_app import make_celery
from engine.settings import RedisSettings, Settings
from graph.factory import open_store
from graph.outreach import MessageStatus
from graph.program import ConversionStatus, Order
from graph.program_store import Store
from tests.factories import BASE_TIME, make_customer
from tests.faults.conftest import RedisServer, Workers, outreach_env
from tests.faults.test_redis_restart import LEASE_S, seed_campaigns, settle, wait_for_mail
from tests.integration.test_outreach_dispatch import Mailbox
from tests.program_factories import make_campaign, make_code

pytestmark = [pytest.mark.redis, pytest.mark.celery, pytest.mark.slow]

AUDIENCE = 160
ORDERS_PER_REFERRER = (30, 20, 12, 3)
COPIES = 2


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_send_during_a_broker_outage_sends_every_message_once(
    fresh_redis: RedisServer, mailbox: tuple[Mailbox, int], workers: Workers, tmp_path: Path
) -> None:
    box, smtp_port = mailbox
    store_url = f"sqlite:///{tmp_path / 'outbox.db'}"
    store = open_store(store_url)
    try:
        customers = seed_campaigns(store, ("crash",), AUDIENCE)
        env = outreach_env(store_url, fresh_redis, smtp_port, lease_s=LEASE_S)
        doomed = workers.start(fresh_redis.url(0), "doomed", env)
        app = make_celery(Settings(redis=RedisSettings(url=fresh_redis.url(0))))
        try:
            app.send_task("advocacy.plan_outreach", args=["crash"])
            wait_for_mail(box, 30)
            fresh_redis.stop(crash=True)  # the broker connection is cut under the busy worker ...
            workers.kill(doomed)  # ... which then dies mid-task
            time.sleep(1.0)
            fresh_redis.start()
            assert len(box.snapshot()) < AUDIENCE, "the crash came too late to test anything"

            workers.start(fresh_redis.url(0), "successor", env)
            settle(app, store, "crash", AUDIENCE)
        finally:
            app.close()

        counts = store.outbox_counts("crash")
        assert counts.by_status.get(MessageStatus.SENT, 0) == AUDIENCE, counts
        received = box.snapshot()
        ids_per_person: dict[str, set[str]] = {}
        for rcpt, message_id in received:
            ids_per_person.setdefault(rcpt, set()).add(message_id)
        assert set(ids_per_person) == {c.email for c in customers}, "nothing lost"
        assert all(len(ids) == 1 for ids in ids_per_person.values()), "one message (one Message-ID) per person"
        # A message the dead worker had handed to SMTP but not recorded goes again with the same Message-ID
        # (receivers drop it): at most one per pool process that was mid-send.
        assert len(received) - AUDIENCE <= 2, f"{len(received) - AUDIENCE} resends"
    finally:
        store.close()


def seed_orders(store: Store) -> list[Order]:
    """Four referrers whose friends order 30, 20, 12 and 3 times (milestones at the 3rd and 10th success)."""
    old = BASE_TIME - timedelta(days=900)
    referrers = [make_customer(id=f"adv{n}", email=f"adv{n}@example.com", created_at=old) for n in range(4)]
    friends = [
        make_customer(id=f"fr{n}-{i}", email=f"fr{n}-{i}@example.org", phone=None, created_at=old)
        for n, count in enumerate(ORDERS_PER_REFERRER)
        for i in range(count)
    ]
    store.upsert_customers(referrers + friends)
    campaign = make_campaign(id="crash", hold_days=0)
    store.save_campaign(campaign)
    orders: list[Order] = []
    for n, count in enumerate(ORDERS_PER_REFERRER):
        code = store.create_code(make_code(f"adv{n}", campaign, code=f"CRASH{n}CODE"))
        orders.extend(
            Order(
                id=f"ord-{n}-{i}",
                customer_id=f"fr{n}-{i}",
                amount_minor=3000,
                currency="EUR",
                at=BASE_TIME + timedelta(hours=n * 200 + 3 * i),  # under the fraud check's 10 a day per code
                code=code.code,
            )
            for i in range(count)
        )
    return orders


@pytest.mark.timeout(300)
def test_orders_redelivered_after_a_worker_crash_and_a_broker_outage_are_rewarded_once(
    fresh_redis: RedisServer, workers: Workers, tmp_path: Path
) -> None:
    store_url = f"sqlite:///{tmp_path / 'orders.db'}"
    store = open_store(store_url)
    try:
        orders = seed_orders(store)
        env = {"ADVOCACY_STORE": store_url}
        broker = fresh_redis.url(0)
        doomed = workers.start(broker, "orders", env)
        app = make_celery(Settings(redis=RedisSettings(url=broker)))
        deliveries = [order for order in orders for _ in range(COPIES)]
        random.Random(11).shuffle(deliveries)
        try:
            for order in deliveries:
                app.send_task("advocacy.process_order", args=[order.model_dump(mode="json")])
            deadline = time.monotonic() + 120
            while len(store.list_conversions(status=ConversionStatus.ATTRIBUTED, limit=1000)) < len(orders) // 4:
                assert time.monotonic() < deadline, "the workers never got going"
                time.sleep(0.02)
            fresh_redis.stop(crash=True)
            workers.kill(doomed)
            settled_before = len(store.list_conversions(status=ConversionStatus.ATTRIBUTED, limit=1000))
            assert settled_before < len(orders), "the crash came too late to test anything"
            time.sleep(1.0)
            fresh_redis.start()
            # The supervisor (systemd, Kubernetes) starts a worker in place of the dead one. (Workers must run
            # supervised anyway: a live worker, too, can exit with kombu 5.7's "Unrecoverable error:
            # AttributeError(... 'hostname')" when the connection drops while it holds unacknowledged messages.)
            workers.start(broker, "replacement", env)

            # The sender got no acknowledgement it can trust, so it delivers every order again.
            results = [app.send_task("advocacy.process_order", args=[o.model_dump(mode="json")]) for o in orders]
            outcomes = [result.get(timeout=120) for result in results]
        finally:
            app.close()

        assert {outcome["status"] for outcome in outcomes} == {ConversionStatus.ATTRIBUTED.value}
        conversions = store.list_conversions(limit=1000)
        assert sorted(c.order.id for c in conversions) == sorted(o.id for o in orders), "one conversion per order"
        rewards = store.list_rewards(campaign_id="crash", limit=10_000)
        per_key = Counter((r.conversion_id, r.rule_id) for r in rewards)
        assert max(per_key.values()) == 1, "no reward issued twice"
        per_rule = Counter((r.customer_id, r.rule_id) for r in rewards)
        for n, count in enumerate(ORDERS_PER_REFERRER):
            assert per_rule[(f"adv{n}", "referrer-credit")] == count
            assert per_rule[(f"adv{n}", "third-badge")] == (1 if count >= 3 else 0)
            assert per_rule[(f"adv{n}", "tenth-bonus")] == (1 if count >= 10 else 0)
        assert sum(1 for r in rewards if r.rule_id == "friend-discount") == len(orders)
        assert len(store.ledger_entries()) == len(rewards), "one first ledger entry per reward"
    finally:
        store.close()
