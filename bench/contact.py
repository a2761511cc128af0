"""Contact benchmark: contact-policy decisions per second on Redis and SQLite, beside plain Redis INCR.

    python -m bench.contact [--decisions 200000] [--processes 4] [--batch 100] [--redis-url redis://127.0.0.1:6390/9]

Policy section (`policy_rows`): worker processes (spawned, released together by a barrier) each reserve
contacts for their own many distinct people through `engine.limits` under the default policy (1 in 7 days and
3 in 30 overall, back-off after 2 ignored): 80% marketing, 10% invitations, 10% reward notices, on email or SMS,
a simulated second apart, so caps and back-off refuse a share of them. Each decision is the whole Lua script
(trim, every cap, back-off, record). The baseline is redis-py's INCR on one key per person from the same number
of processes with the same batching: the cheapest atomic step Redis offers, so the ratio is what the policy
costs on top of a round trip (the limiter writes pre-encoded RESP, while INCR goes through redis-py's own
pipeline, as plain client code would). Pipelined rows send `--batch` scripts per round trip (each still its own
atomic step); unpipelined rows one call per decision, as a worker sending one message does. SQLite runs the same
workload on one file, one `BEGIN IMMEDIATE` transaction per decision (and per batch). Each figure is the best of
`--repeat` runs: other work on this shared machine only ever slows a run down.

The Redis database (`--redis-url`, default db 9) is flushed first. Writes `bench/results/contact.json`. Never run
under pytest.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis

from bench.common import Row, machine_facts, print_table, write_results
from engine.contact_policy import ContactPolicy
from engine.limits import RedisContactLimiter, Reservation, SqliteContactLimiter
from graph.model import ContactChannel
from graph.outreach import MessageKind

START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
PEOPLE_PER_PROCESS = 20_000
POLICY = ContactPolicy()


def workload(worker: int, count: int) -> list[Reservation]:
    """`count` seeded reservations for this worker's own people, a simulated second apart."""
    rng = random.Random(1000 + worker)
    channels = [ContactChannel.EMAIL] * 4 + [ContactChannel.SMS]
    kinds = [MessageKind.MARKETING] * 8 + [MessageKind.INVITATION, MessageKind.TRANSACTIONAL]
    return [
        Reservation(
            f"customer:w{worker}-{rng.randrange(PEOPLE_PER_PROCESS)}",
            rng.choice(channels),
            rng.choice(kinds),
            START + timedelta(seconds=n),
            f"bench:w{worker}:{n}",
        )
        for n in range(count)
    ]


def _run(task: str, where: str, worker: int, count: int, batch: int) -> tuple[int, int]:
    """One worker's share; returns (decisions made, allowed)."""
    reservations = workload(worker, count)
    if task.startswith("incr"):
        client = redis.Redis.from_url(where)
        try:
            keys = [f"bench:incr:{r.person_key}" for r in reservations]
            if task == "incr_single":
                for key in keys:
                    client.incr(key)
            else:
                for offset in range(0, len(keys), batch):
                    pipe = client.pipeline(transaction=False)
                    for key in keys[offset : offset + batch]:
                        pipe.incr(key)
                    pipe.execute()
        finally:
            client.close()
        return len(keys), len(keys)
    limiter = RedisContactLimiter(where) if task.startswith("redis") else SqliteContactLimiter(where)
    allowed = 0
    try:
        if task.endswith("single"):
            for r in reservations:
                decision = limiter.reserve(r.person_key, r.channel, r.kind, at=r.at, policy=POLICY, token=r.token)
                allowed += decision.allowed
        else:
            for offset in range(0, len(reservations), batch):
                decisions = limiter.reserve_many(reservations[offset : offset + batch], policy=POLICY)
                allowed += sum(d.allowed for d in decisions)
    finally:
        limiter.close()
    return len(reservations), allowed


def _worker(task: str, where: str, worker: int, count: int, batch: int, barrier: Any, results: Any) -> None:
    barrier.wait(timeout=300)
    started = time.monotonic()
    made, allowed = _run(task, where, worker, count, batch)
    results.put((started, time.monotonic(), made, allowed))


def race(task: str, where: str, *, processes: int, decisions: int, batch: int) -> tuple[float, float]:
    """Decisions per second over all processes (first start to last finish), and the share allowed."""
    context = mp.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    share = decisions // processes
    workers = [
        context.Process(target=_worker, args=(task, where, n, share, batch, barrier, results)) for n in range(processes)
    ]
    for process in workers:
        process.start()
    outcomes = [results.get(timeout=1800) for _ in workers]
    for process in workers:
        process.join()
    seconds = max(end for _, end, _, _ in outcomes) - min(start for start, _, _, _ in outcomes)
    made = sum(o[2] for o in outcomes)
    return made / seconds, sum(o[3] for o in outcomes) / made


def _flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def policy_rows(args: argparse.Namespace, log: Callable[[str], None] = print) -> list[Row]:
    """Decisions per second on Redis (pipelined and not), on SQLite, and Redis INCR as the baseline."""
    url, processes, batch = args.redis_url, args.processes, args.batch
    measured: dict[str, float] = {}
    plan = [
        ("policy_decisions_per_s", "redis", url, args.decisions),
        ("redis_incr_per_s", "incr", url, args.decisions),
        ("policy_decisions_unpipelined_per_s", "redis_single", url, args.decisions // 4),
        ("redis_incr_unpipelined_per_s", "incr_single", url, args.decisions // 4),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-contact-") as tmp:
        sqlite_path = str(Path(tmp) / "contacts.db")
        plan += [
            ("policy_decisions_sqlite_per_s", "sqlite_single", sqlite_path, args.decisions // 10),
            ("policy_decisions_sqlite_batched_per_s", "sqlite", sqlite_path, args.decisions // 4),
        ]
        for metric, task, where, decisions in plan:
            rates = []
            for attempt in range(args.repeat):
                if where == url:
                    _flush(url)
                target = where if where == url else f"{where}.{task}.{attempt}"
                rate, allowed = race(task, target, processes=processes, decisions=decisions, batch=batch)
                rates.append(rate)
            measured[metric] = max(rates)
            runs = ", ".join(f"{rate:,.0f}" for rate in rates)
            log(f"{metric}: best {max(rates):,.0f}/s of {runs}; {decisions:,} decisions, {allowed:.0%} allowed")
    _flush(url)
    baselines = {
        "policy_decisions_per_s": "redis_incr_per_s",
        "policy_decisions_unpipelined_per_s": "redis_incr_unpipelined_per_s",
        "policy_decisions_sqlite_per_s": "policy_decisions_unpipelined_per_s",
        "policy_decisions_sqlite_batched_per_s": "policy_decisions_per_s",
    }
    return [
        Row(metric, round(value, 1), "ops/s" if "incr" in metric else "decisions/s", baselines.get(metric))
        for metric, value in measured.items()
    ]


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parse.add_argument("--decisions", type=int, default=200_000, help="reservations in the pipelined Redis run")
    parse.add_argument("--processes", type=int, default=4)
    parse.add_argument("--batch", type=int, default=100, help="reservations per pipeline (or SQLite transaction)")
    parse.add_argument("--redis-url", default="redis://127.0.0.1:6390/9", help="flushed first: not db 5 or 7")
    parse.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept (others share the CPU)")
    return parse


def main(argv: list[str] | None = None) -> None:
    """Every section appends its rows; one table and one results file for all of them."""
    args = parser().parse_args(argv)
    client = redis.Redis.from_url(args.redis_url)
    try:
        redis_version = client.info("server")["redis_version"]
    finally:
        client.close()
    machine = machine_facts(
        processes=args.processes,
        batch=args.batch,
        decisions=args.decisions,
        repeat=args.repeat,
        redis_version=redis_version,
        redis_py=redis.__version__,
    )
    rows: list[Row] = []
    rows += policy_rows(args)
    print_table(rows, title="Contact policy")
    print(f"wrote {write_results('contact', rows, machine)}")


if __name__ == "__main__":
    main()
