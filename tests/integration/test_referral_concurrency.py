"""Real Celery workers race over the same conversion events against the real store: one reward each, no more.

Two worker processes with two prefork children each receive every order three times, in shuffled order, while
the referrers' milestones (3rd and 10th success) depend on how many of their other orders were settled first.
"""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from engine.celery_app import make_celery
from engine.settings import RedisSettings, Settings
from graph.factory import open_store
from graph.program import ConversionStatus, Order, Refund, RewardState
from graph.program_store import Store
from tests.factories import BASE_TIME, make_customer
from tests.neo4j_support import NEO4J_URL
from tests.program_factories import make_campaign, make_code

pytestmark = [pytest.mark.redis, pytest.mark.celery]

REFERRERS = 4
ORDERS_PER_REFERRER = (12, 7, 3, 1)
COPIES = 3


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'race.db'}" if request.param == "sqlite" else NEO4J_URL
    store = open_store(url)
    store.delete_all()
    store.close()
    return url


def seed(store: Store) -> list[Order]:
    old = BASE_TIME - timedelta(days=900)
    referrers = [make_customer(id=f"adv{n}", email=f"adv{n}@example.com", created_at=old) for n in range(REFERRERS)]
    friends = [
        make_customer(id=f"fr{n}-{i}", email=f"fr{n}-{i}@example.org", phone=None, created_at=old)
        for n, count in enumerate(ORDERS_PER_REFERRER)
        for i in range(count)
    ]
    store.upsert_customers(referrers + friends)
    campaign = make_campaign(id="race", hold_days=0)
    store.save_campaign(campaign)
    orders = []
    for n, count in enumerate(ORDERS_PER_REFERRER):
        code = store.create_code(make_code(f"adv{n}", campaign, code=f"RACE{n}CODE"))
        for i in range(count):
            at = BASE_TIME + timedelta(hours=n * 100 + i)
            orders.append(
                Order(
                    id=f"ord-{n}-{i}",
                    customer_id=f"fr{n}-{i}",
                    amount_minor=3000,
                    currency="EUR",
                    at=at,
                    code=code.code,
                )
            )
    return orders


def test_racing_workers_issue_exactly_one_reward_per_conversion_and_rule(
    store_url: str, redis_url: str, celery_workers: list[subprocess.Popen[bytes]]
) -> None:
    store = open_store(store_url)
    try:
        orders = seed(store)
        app = make_celery(Settings(redis=RedisSettings(url=redis_url)))
        deliveries = [order for order in orders for _ in range(COPIES)]
        random.Random(7).shuffle(deliveries)
        results = [
            app.send_task("advocacy.process_order", args=[o.model_dump(mode="json")], kwargs={"store_url": store_url})
            for o in deliveries
        ]
        outcomes = [r.get(timeout=240) for r in results]
        app.close()

        by_order: dict[str, set[str]] = {}
        for outcome in outcomes:
            by_order.setdefault(outcome["order"]["id"], set()).add(outcome["status"])
        assert all(statuses == {ConversionStatus.ATTRIBUTED.value} for statuses in by_order.values()), by_order

        rewards = store.list_rewards(campaign_id="race", limit=10_000)
        per_key = Counter((r.conversion_id, r.rule_id) for r in rewards)
        assert max(per_key.values()) == 1, "a conversion delivered three times was rewarded twice"
        per_rule = Counter((r.customer_id, r.rule_id) for r in rewards)
        for n, count in enumerate(ORDERS_PER_REFERRER):
            assert per_rule[(f"adv{n}", "referrer-credit")] == count
            assert per_rule[(f"adv{n}", "third-badge")] == (1 if count >= 3 else 0), "milestone counted under lock"
            assert per_rule[(f"adv{n}", "tenth-bonus")] == (1 if count >= 10 else 0)
        assert sum(1 for r in rewards if r.rule_id == "friend-discount") == len(orders)
        assert all(r.state is RewardState.PENDING for r in rewards)
        assert len(store.ledger_entries()) == len(rewards), "one first entry per reward, no duplicates"

        # Refunds race too: each delivered twice, reversing each conversion once.
        refunds = [
            Refund(id=f"rf-{o.id}", order_id=o.id, amount_minor=o.amount_minor, at=o.at + timedelta(days=1))
            for o in orders[:10]
        ]
        app = make_celery(Settings(redis=RedisSettings(url=redis_url)))
        pending = [
            app.send_task("advocacy.process_refund", args=[r.model_dump(mode="json")], kwargs={"store_url": store_url})
            for r in refunds + refunds
        ]
        for result in pending:
            assert result.get(timeout=240)["status"] == ConversionStatus.REVERSED.value
        app.close()
        reversed_ids = {r.order_id for r in refunds}
        after = store.list_rewards(campaign_id="race", limit=10_000)
        assert all((r.state is RewardState.REVERSED) == (r.conversion_id in reversed_ids) for r in after)
        reversals = [e for e in store.ledger_entries() if e.to_state is RewardState.REVERSED]
        assert len(reversals) == sum(1 for r in after if r.conversion_id in reversed_ids)
    finally:
        store.close()
