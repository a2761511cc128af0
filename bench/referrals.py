"""Referral benchmark: orders attributed, fraud-checked and rewarded per second, on Neo4j and on SQLite.

    python -m bench.referrals [--orders 5000] [--neo4j-url bolt://127.0.0.1:7688] [--wipe] [--workers 1,4]

The workload: 1,000 advocates with a code each in one campaign (double-sided credit, a badge at the 3rd and a
bonus at the 10th success), a seeded referral graph of earlier friends around them (so the fraud rules' ring
and cluster searches have neighbourhoods to walk), then `--orders` new friends who each click a code and buy.
Each order goes through `ReferralService.process_order`: record, touches, attribution, fraud context and rules,
and the locked settlement with its rewards. The baseline is the least the store must do for an order: record it
(`record_order`, one transaction), so the ratio says what attribution, fraud checks and the ledger cost on top.
`--workers` runs the same orders from several processes at once, each delivering every order (duplicates
race), and checks that exactly one settlement and one reward per rule came out.

The Neo4j database must be empty or `--wipe` given. Writes `bench/results/referrals.json`. Never run under pytest.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import sys
import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Row, machine_facts, measure, print_table, write_results
from engine.referrals import ReferralService
from engine.settings import ReferralSettings
from graph.factory import open_store
from graph.model import Customer, Referral, ReferralStatus
from graph.program import (
    Campaign,
    ConversionStatus,
    Order,
    ReferralCode,
    RewardKind,
    RewardRule,
    RewardSide,
)
from graph.program_store import Store

START = datetime(2025, 1, 1, tzinfo=UTC)
ADVOCATES = 1000
EARLIER_FRIENDS = 5
RULES = (
    RewardRule(id="credit", side=RewardSide.REFERRER, kind=RewardKind.CREDIT, amount_minor=1000),
    RewardRule(id="welcome", side=RewardSide.FRIEND, kind=RewardKind.DISCOUNT, amount_minor=500),
    RewardRule(id="badge", side=RewardSide.REFERRER, kind=RewardKind.BADGE, milestone=3),
    RewardRule(id="bonus", side=RewardSide.REFERRER, kind=RewardKind.CASH, amount_minor=5000, milestone=10),
)


def _open(url: str) -> Store:
    return open_store(url)


def seed(url: str, orders: int) -> list[Order]:
    """Advocates, their codes and earlier referral trees; returns the orders to process (not yet recorded)."""
    rng = random.Random(42)
    store = _open(url)
    try:
        old = START - timedelta(days=700)
        advocates = [
            Customer(id=f"adv{i:05d}", name=f"Advocate {i}", email=f"adv{i}@example.com", created_at=old)
            for i in range(ADVOCATES)
        ]
        earlier = [
            Customer(id=f"old{i:06d}", email=f"old{i}@example.org", created_at=old)
            for i in range(ADVOCATES * EARLIER_FRIENDS)
        ]
        friends = [Customer(id=f"new{i:07d}", email=f"new{i}@example.net", created_at=START) for i in range(orders)]
        for chunk in range(0, len(advocates + earlier + friends), 10_000):
            store.upsert_customers((advocates + earlier + friends)[chunk : chunk + 10_000])
        referrals = [
            Referral(
                referrer_id=f"adv{i // EARLIER_FRIENDS:05d}",
                friend_id=f"old{i:06d}",
                status=ReferralStatus.CONVERTED,
                at=old,
            )
            for i in range(len(earlier))
        ]
        store.add_referrals(referrals)
        store.save_campaign(Campaign(id="bench", name="Bench", rewards=RULES, created_at=old))
        for i in range(ADVOCATES):
            store.create_code(
                ReferralCode(code=f"BENCH{i:05d}", customer_id=f"adv{i:05d}", campaign_id="bench", created_at=old)
            )
        return [
            Order(
                id=f"ord{i:07d}",
                customer_id=f"new{i:07d}",
                amount_minor=2000 + rng.randrange(8000),
                currency="EUR",
                at=START + timedelta(seconds=i),
                code=f"BENCH{rng.randrange(ADVOCATES):05d}",
            )
            for i in range(orders)
        ]
    finally:
        store.close()


def _process(url: str, orders: list[Order]) -> int:
    store = _open(url)
    try:
        service = ReferralService(store, ReferralSettings(), clock=lambda: START + timedelta(days=1))
        for order in orders:
            service.process_order(order)
        return len(orders)
    finally:
        store.close()


def run_store(name: str, url: str, orders: list[Order], workers: list[int]) -> list[Row]:
    rows: list[Row] = []
    half = len(orders) // 2
    store = _open(url)
    try:
        with measure() as m:
            for order in orders[:half]:
                store.record_order(order)
        rows.append(Row(f"{name}_record_order_per_s", m.per_second(half), "orders/s"))
    finally:
        store.close()
    with measure() as m:
        _process(url, orders[half:])
    rows.append(
        Row(
            f"{name}_process_order_per_s_1_worker",
            m.per_second(len(orders) - half),
            "orders/s",
            baseline=f"{name}_record_order_per_s",
        )
    )
    for n in (w for w in workers if w > 1):
        fresh = orders[:half]  # recorded but not settled: the racing workers settle them
        chunks = [fresh[i::n] + fresh[(i + 1) % n :: n] for i in range(n)]  # every order delivered twice
        ctx = mp.get_context("spawn")
        with measure() as m, ctx.Pool(n) as pool:
            pool.starmap(_process, [(url, chunk) for chunk in chunks])
        delivered = sum(len(c) for c in chunks)
        rows.append(
            Row(
                f"{name}_process_order_per_s_{n}_workers",
                m.per_second(delivered),
                "deliveries/s",
                baseline=f"{name}_process_order_per_s_1_worker",
            )
        )
    store = _open(url)
    try:
        statuses = Counter(c.status for c in store.iter_conversions("bench"))
        rewards = store.list_rewards(campaign_id="bench", limit=10_000_000)
        per_key = Counter((r.conversion_id, r.rule_id) for r in rewards)
        if max(per_key.values(), default=0) > 1 or statuses.get(ConversionStatus.PENDING, 0):
            sys.exit(f"{name}: duplicate rewards or unsettled orders: {statuses}")
        rows.append(Row(f"{name}_rewards_issued", len(rewards), "rewards"))
    finally:
        store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--neo4j-url", default=None, help="also measure this Neo4j (bolt://127.0.0.1:7688)")
    parser.add_argument("--wipe", action="store_true", help="delete everything in the Neo4j database first")
    parser.add_argument("--workers", default="1,4", help="process counts to race with, e.g. 1,4")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        orders = seed(url, args.orders)
        rows += run_store("sqlite", url, orders, workers)
    if args.neo4j_url:
        store = _open(args.neo4j_url)
        try:
            if store.stats().customers and not args.wipe:
                sys.exit("the Neo4j database is not empty; pass --wipe to delete everything in it")
            store.delete_all()
        finally:
            store.close()
        orders = seed(args.neo4j_url, args.orders)
        rows += run_store("neo4j", args.neo4j_url, orders, workers)
        rows.append(
            Row(
                "neo4j_vs_sqlite_process_ratio",
                next(r.value for r in rows if r.metric == "neo4j_process_order_per_s_1_worker")
                / next(r.value for r in rows if r.metric == "sqlite_process_order_per_s_1_worker"),
                "x",
            )
        )
    machine = machine_facts(orders=args.orders, advocates=ADVOCATES, workers=workers)
    print_table(rows, title=f"Referral processing, {args.orders:,} orders")
    print(f"\nwrote {write_results('referrals', rows, machine)}")


if __name__ == "__main__":
    main()
