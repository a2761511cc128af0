"""Kit store benchmark: what a customer's kit reads, on SQLite and on Neo4j, one read against six.

    python -m bench.kit_store [--customers 3000] [--kits 600] [--repeat 3] [--neo4j-url bolt://127.0.0.1:7687]
                              [--wipe] [--skip-neo4j]

A kit is made of the customer, their scores, their codes in the campaign, their referrals, their latest purchases
and the marketer's share templates. `Store.kit_reads` reads them in one transaction (one Cypher statement on
Neo4j); before it the engine made the six single reads (`get_customer`, `get_scores`, `list_codes`,
`referrals_from`, `events_of`, `list_templates`), each its own transaction. Both are measured here, in this
process, on the same seeded store (`load_synthetic`, the HTTP benchmark's campaign, a code for each customer
asked about): `*_six_reads_ms` is the baseline of `*_kit_reads_ms`, per kit. `*_kit_ms` is the whole kit
(`OutreachService.kit`: the reads, the engagement it records, the render), for scale: with the embedded store
the HTTP API makes the same kit on its event loop (`bench/http.py` measures that over HTTP); with Neo4j in a
threadpool. Each figure is the best of `--repeat` rounds over `--kits` customers, after one warm-up round; a
round times each in turn, so a slow spell of this shared machine (which only ever slows a pass down) falls on all.

Neo4j (`--neo4j-url`, default the test server) must be empty, or `--wipe` lets the benchmark delete everything
in it; `--skip-neo4j` measures SQLite only. Writes `bench/results/kit_store.json`. Never run under pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from bench.common import Row, machine_facts, print_table, write_results
from engine.ingest import load_synthetic
from engine.limits import SqliteContactLimiter
from engine.outreach import OutreachService
from engine.referrals import ReferralService
from engine.settings import ReferralSettings, Settings
from graph.factory import open_store
from graph.model import EventKind, utcnow
from graph.outreach import TemplatePurpose
from graph.program import Campaign
from graph.program_store import Store

ROOT: Final = Path(__file__).resolve().parents[1]
CAMPAIGN_FILE: Final = ROOT / "examples" / "campaign.json"


def six_reads(store: Store, customer_id: str, campaign_id: str) -> tuple[Any, ...]:
    """What the engine read for a kit before `kit_reads`, one transaction each."""
    return (
        store.get_customer(customer_id),
        store.get_scores(customer_id),
        store.list_codes(customer_id=customer_id, campaign_id=campaign_id),
        store.referrals_from(customer_id),
        store.events_of(customer_id, kind=EventKind.PURCHASE, limit=20),
        store.list_templates(TemplatePurpose.SHARE),
    )


def seed(store: Store, customers: int, kits: int) -> tuple[str, list[str]]:
    """The synthetic network, the campaign and a code for each of `kits` customers; their ids."""
    load_synthetic(store, customers, seed=7)
    campaign = Campaign.model_validate({**json.loads(CAMPAIGN_FILE.read_text()), "created_at": utcnow()})
    store.save_campaign(campaign)
    referrals = ReferralService(store, ReferralSettings(), clock=utcnow)
    ids = sorted(c.id for c in store.iter_customers())
    chosen = random.Random(7).sample(ids, min(kits, len(ids)))
    for customer_id in chosen:
        referrals.issue_code(customer_id, campaign.id)
    return campaign.id, chosen


def best_ms(calls: dict[str, Callable[[str], object]], ids: Sequence[str], repeat: int) -> dict[str, float]:
    """Best per-call time of each over `repeat` rounds, after a warm-up round; each round times one pass of
    every call in turn, so a slow spell of the machine falls on all of them rather than on one."""
    best = dict.fromkeys(calls, float("inf"))
    for round_ in range(repeat + 1):
        for name, call in calls.items():
            started = time.perf_counter()
            for customer_id in ids:
                call(customer_id)
            if round_:
                best[name] = min(best[name], (time.perf_counter() - started) / len(ids) * 1000)
    return best


def store_rows(name: str, store: Store, args: argparse.Namespace, tmp: Path) -> list[Row]:
    started = time.perf_counter()
    campaign_id, ids = seed(store, args.customers, args.kits)
    print(f"{name}: seeded {args.customers:,} customers, {len(ids):,} codes in {time.perf_counter() - started:.1f} s")
    mismatched = [
        cid for cid in ids[:50] if _as_six(store.kit_reads(cid, campaign_id)) != six_reads(store, cid, campaign_id)
    ]
    if mismatched:
        raise SystemExit(f"{name}: kit_reads differ from the six reads for {mismatched[:5]}")
    limiter = SqliteContactLimiter(tmp / f"{name}-contacts.db")
    service = OutreachService(store, Settings(), limiter=limiter, adapters={}, clock=utcnow)
    try:
        best = best_ms(
            {
                "six": lambda cid: six_reads(store, cid, campaign_id),
                "one": lambda cid: store.kit_reads(cid, campaign_id),
                "kit": lambda cid: service.kit(cid, campaign_id),
            },
            ids,
            args.repeat,
        )
        six, one, kit = best["six"], best["one"], best["kit"]
    finally:
        limiter.close()
    print(f"{name}: six reads {six:.3f} ms, kit_reads {one:.3f} ms ({six / one:.1f}x), whole kit {kit:.3f} ms")
    return [
        Row(f"{name}_six_reads_ms", six, "ms/kit"),
        Row(f"{name}_kit_reads_ms", one, "ms/kit", f"{name}_six_reads_ms"),
        Row(f"{name}_kit_ms", kit, "ms/kit"),
    ]


def _as_six(reads: Any) -> tuple[Any, ...]:
    return (
        reads.customer,
        reads.scores,
        list(reads.codes),
        list(reads.referrals),
        list(reads.purchases),
        list(reads.share_templates),
    )


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(prog="python -m bench.kit_store", description=__doc__.split("\n")[0])
    parse.add_argument("--customers", type=int, default=3000)
    parse.add_argument("--kits", type=int, default=600, help="customers whose kit is read, each pass")
    parse.add_argument("--repeat", type=int, default=5)
    parse.add_argument("--neo4j-url", default=os.environ.get("ADVOCACY_TEST_NEO4J_URL", "bolt://127.0.0.1:7687"))
    parse.add_argument("--wipe", action="store_true", help="let the benchmark empty a Neo4j that holds data")
    parse.add_argument("--skip-neo4j", action="store_true")
    return parse


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    machine = machine_facts(customers=args.customers, kits=args.kits, repeat=args.repeat)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kit-store-") as tmp:
        sqlite = open_store(f"sqlite:///{Path(tmp) / 'kits.db'}")
        try:
            rows += store_rows("sqlite", sqlite, args, Path(tmp))
        finally:
            sqlite.close()
        if not args.skip_neo4j:
            neo4j = open_store(args.neo4j_url)
            try:
                if neo4j.stats().customers and not args.wipe:
                    raise SystemExit(f"{neo4j.describe()} is not empty; pass --wipe to let the benchmark empty it")
                neo4j.delete_all()
                rows += store_rows("neo4j", neo4j, args, Path(tmp))
                neo4j.delete_all()
            finally:
                neo4j.close()
    machine["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print_table(rows, title="A kit's store reads (baseline: the six single reads, same run)")
    print(f"wrote {write_results('kit_store', rows, machine)}")


if __name__ == "__main__":
    main()
