"""Contact benchmark: contact-policy decisions per second on Redis and SQLite, beside plain Redis INCR.

    python -m bench.contact [--decisions 200000] [--processes 4] [--batch 100] [--redis-url redis://127.0.0.1:6390/9]
                            [--campaign-customers 100000] [--workers 2] [--concurrency 2] [--skip-policy]
                            [--launch plan_outreach|plan_then_dispatch_due] [--skip-campaign] [--profile 2000]

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

Campaign section (`campaign_rows`): end-to-end dispatch as in production, all on loopback. A fresh SQLite store
holds `--campaign-customers` customers (email consent on, in a time zone where it is mid-day now, so nobody is in
quiet hours), their scores (segment advocate), a referral campaign and one outreach listing all of them. An
aiosmtpd sink in this process counts what it receives. `--workers` real `celery worker` processes (prefork,
`--concurrency` each, started by `engine.worker_process`) use the Redis limiter on db 11 and a broker on
db 12, both flushed first. `advocacy.plan_outreach` is sent (or, with `--launch plan_then_dispatch_due`, this
process runs `OutreachService.plan` and sends one `advocacy.dispatch_due(limit=N)`: the same steps, without the
task's re-dispatch of messages still queued) and the outbox polled until every message is settled (sent, held or
failed): `campaign_100k_seconds` is that wall time from the launch (under its name whatever N is; N is in
`campaign_customers` and the machine facts), `campaign_dispatched_seconds` when the launching task returned.
Per-message send time comes from the workers' own task-succeeded log lines (the slowest run per outbox key, so
duplicate deliveries do not count as sends). `inline_messages_per_s` is the same flow in one process without a
broker (`InlineDispatcher`, `--inline-customers` of them), the baseline of `campaign_messages_per_s`.
`--profile N` instead runs that inline loop under cProfile and prints where a message's time goes.

`--skip-policy` keeps the policy rows of the existing results file (and says so in the machine facts);
`--skip-campaign` measures the policy only. The Redis databases (`--redis-url`, default db 9; 11 and 12) are
flushed first. Writes `bench/results/contact.json`. Never run under pytest.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import multiprocessing as mp
import os
import pstats
import random
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import celery
import psutil
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bench.common import RESULTS_DIR, Row, machine_facts, print_table, write_results
from bench.http import cpu_seconds, free_port, process_tree, quantile
from engine.celery_app import make_celery
from engine.channels import make_adapters
from engine.contact_policy import ContactPolicy, quiet_until
from engine.dispatch import InlineDispatcher
from engine.limits import RedisContactLimiter, Reservation, SqliteContactLimiter, make_limiter
from engine.outreach import OutreachService
from engine.settings import ApiSettings, ContactSettings, RedisSettings, Settings
from engine.worker_process import start_worker, stop_worker
from graph.factory import open_store
from graph.model import ContactChannel, Customer, CustomerScores, Segment, utcnow
from graph.outreach import Audience, AudienceKind, MessageKind, MessageStatus, OutboxCounts, Outreach
from graph.program import Campaign, RewardKind, RewardRule, RewardSide

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


def flush_redis(url: str) -> None:
    """Empty one Redis database (the bench's own numbers only)."""
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
                    flush_redis(url)
                target = where if where == url else f"{where}.{task}.{attempt}"
                rate, allowed = race(task, target, processes=processes, decisions=decisions, batch=batch)
                rates.append(rate)
            measured[metric] = max(rates)
            runs = ", ".join(f"{rate:,.0f}" for rate in rates)
            log(f"{metric}: best {max(rates):,.0f}/s of {runs}; {decisions:,} decisions, {allowed:.0%} allowed")
    flush_redis(url)
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


# --- the end-to-end campaign ------------------------------------------------------------------------------------
CAMPAIGN_ID = "bench-spring"
OUTREACH_ID = "bench-campaign"
SEED_CHUNK = 10_000
SETTLED = (MessageStatus.SENT, MessageStatus.HELD, MessageStatus.FAILED)
ZONES = (
    "Pacific/Honolulu",
    "America/Los_Angeles",
    "America/Denver",
    "America/Chicago",
    "America/New_York",
    "America/Sao_Paulo",
    "Atlantic/Azores",
    "Europe/London",
    "Europe/Paris",
    "Europe/Athens",
    "Europe/Moscow",
    "Asia/Dubai",
    "Asia/Karachi",
    "Asia/Kolkata",
    "Asia/Dhaka",
    "Asia/Bangkok",
    "Asia/Shanghai",
    "Asia/Tokyo",
    "Australia/Brisbane",
    "Pacific/Noumea",
    "Pacific/Auckland",
)
_TASK_LINE = re.compile(r"Task advocacy\.send_message\[[^\]]+\] succeeded in ([0-9.e-]+)s: \{'key': '([^']+)'")


def awake_zone(now: datetime, policy: ContactPolicy = POLICY) -> str:
    """A zone where it is 09:00-17:59 now, so quiet hours (from 21:00) are 3 hours or more away."""
    for name in ZONES:
        wall = now.astimezone(ZoneInfo(name))
        if 9 <= wall.hour < 18 and quiet_until(now, name, policy) is None:
            return name
    raise RuntimeError("no zone in ZONES is at mid-day now")  # 21 zones an hour or two apart cover every hour


def seed_campaign(store_url: str, customers: int, *, zone: str) -> None:
    """Customers who may all be emailed now, their advocate scores, a referral campaign, and one outreach to all."""
    now = utcnow()
    created = now - timedelta(days=400)
    store = open_store(store_url)
    try:
        store.save_campaign(
            Campaign(
                id=CAMPAIGN_ID,
                name="Spring referral",
                friend_offer="5 EUR off your first order",
                rewards=(
                    RewardRule(id="credit", side=RewardSide.REFERRER, kind=RewardKind.CREDIT, amount_minor=1000),
                    RewardRule(id="welcome", side=RewardSide.FRIEND, kind=RewardKind.DISCOUNT, amount_minor=500),
                ),
                created_at=created,
            )
        )
        ids = [f"c{i:07d}" for i in range(customers)]
        for start in range(0, customers, SEED_CHUNK):
            chunk = ids[start : start + SEED_CHUNK]
            store.upsert_customers(
                [
                    Customer(
                        id=cid,
                        name=f"Person {cid[1:]}",
                        email=f"{cid}@example.org",
                        timezone=zone,
                        consent={ContactChannel.EMAIL: True},
                        created_at=created,
                    )
                    for cid in chunk
                ]
            )
            store.write_scores(
                [
                    CustomerScores(customer_id=cid, run_id="bench", segment=Segment.ADVOCATE, explanation="seeded")
                    for cid in chunk
                ]
            )
        store.save_outreach(
            Outreach(
                id=OUTREACH_ID,
                name="Bench campaign",
                campaign_id=CAMPAIGN_ID,
                audience=Audience(kind=AudienceKind.CUSTOMERS, customer_ids=tuple(ids)),
                created_at=now,
            )
        )
    finally:
        store.close()


class CountingSink:
    """An SMTP server's handler that only counts recipients (called on the Controller's event-loop thread)."""

    def __init__(self) -> None:
        self.received = 0
        self.messages = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.messages += 1
        self.received += len(envelope.rcpt_tos)
        return "250 OK"


def _sink_process(port: int, received: Any, ready: Any, stop: Any) -> None:
    """The sink in its own process, for the inline baseline: its work then takes no GIL from the sender."""
    sink = CountingSink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    ready.set()
    try:
        while not stop.wait(0.2):
            received.value = sink.received
    finally:
        controller.stop()
        received.value = sink.received


def _redis_url(base: str, db: int) -> str:
    return f"{base.rsplit('/', 1)[0]}/{db}"


def worker_env(store_url: str, limiter_url: str, smtp_port: int) -> dict[str, str]:
    """What a production worker reads: the store, the Redis limiter, the SMTP server (as the tests set them)."""
    return {
        "ADVOCACY_STORE": store_url,
        "ADVOCACY_CONTACT__BACKEND": "redis",
        "ADVOCACY_CONTACT__REDIS_DB_URL": limiter_url,
        "ADVOCACY_CONTACT__SMTP_HOST": "127.0.0.1",
        "ADVOCACY_CONTACT__SMTP_PORT": str(smtp_port),
        "ADVOCACY_API__PUBLIC_BASE_URL": "https://shop.example",
    }


def _redis_server(url: str) -> psutil.Process | None:
    """The local Redis server, to count its CPU time too (None if it cannot be found)."""
    port = urlsplit(url).port or 6379
    with contextlib.suppress(psutil.AccessDenied, psutil.NoSuchProcess):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    return None


def send_times(logs: Iterable[Path]) -> tuple[int, list[float]]:
    """(send tasks run, per outbox key the slowest run in seconds) from the workers' task-succeeded lines."""
    runs = 0
    slowest: dict[str, float] = {}
    for path in logs:
        with path.open(errors="replace") as lines:
            for line in lines:
                match = _TASK_LINE.search(line)
                if match is None:
                    continue
                runs += 1
                seconds, key = float(match.group(1)), match.group(2)
                slowest[key] = max(seconds, slowest.get(key, 0.0))
    return runs, sorted(slowest.values())


def _settled(counts: OutboxCounts) -> int:
    return sum(counts.by_status.get(status, 0) for status in SETTLED)


def _outcome_rows(counts: OutboxCounts, received: int, prefix: str) -> list[Row]:
    rows = [Row(f"{prefix}_messages_{s.value}", counts.by_status.get(s, 0), "messages") for s in SETTLED]
    rows += [
        Row(f"{prefix}_messages_held_{reason.value}", count, "messages")
        for reason, count in counts.held_by_reason.items()
        if count
    ]
    rows.append(Row(f"{prefix}_smtp_received", received, "messages", f"{prefix}_messages_sent"))
    return rows


def campaign_rows(args: argparse.Namespace, log: Callable[[str], None] = print) -> tuple[list[Row], dict[str, Any]]:
    """The whole campaign through Celery workers into the SMTP sink; returns rows and facts about the run."""
    customers, workers, concurrency = args.campaign_customers, args.workers, args.concurrency
    limiter_url, broker_url = _redis_url(args.redis_url, 11), _redis_url(args.redis_url, 12)
    for url in (limiter_url, broker_url):
        flush_redis(url)
    zone = awake_zone(utcnow())
    facts: dict[str, Any] = {"campaign_timezone": zone, "campaign_audience": "customers (all N listed)"}
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        store_url = f"sqlite:///{Path(tmp) / 'campaign.db'}"
        started = time.perf_counter()
        seed_campaign(store_url, customers, zone=zone)
        log(f"seeded {customers:,} customers in {zone} in {time.perf_counter() - started:.1f} s")

        sink = CountingSink()
        port = free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=port)
        controller.start()
        logs = [Path(tmp) / f"worker{n}.log" for n in range(workers)]
        env = worker_env(store_url, limiter_url, port)
        procs: list[subprocess.Popen[bytes]] = []
        store = open_store(store_url)
        app = make_celery(Settings(redis=RedisSettings(url=broker_url)))
        try:
            for n, path in enumerate(logs):
                procs.append(start_worker(broker_url, path, concurrency=concurrency, name=f"bench{n}", env=env))
            redis_server = _redis_server(args.redis_url)
            cpu0 = [cpu_seconds(process_tree(p.pid)) for p in procs]
            redis_cpu0 = cpu_seconds(process_tree(redis_server.pid)) if redis_server else 0.0
            bench_cpu0 = time.process_time()
            load0 = os.getloadavg()[0]
            log(f"{workers} workers x {concurrency} processes ready; launching {OUTREACH_ID}")

            t0 = time.perf_counter()
            if args.launch == "plan_outreach":
                launched = app.send_task("advocacy.plan_outreach", args=[OUTREACH_ID])
            else:
                plan_here(store_url, limiter_url, port)
                launched = app.send_task("advocacy.dispatch_due", kwargs={"limit": customers})
            outbox_full_s = dispatched_s = first_sent_s = None
            deadline = t0 + args.campaign_timeout
            counts = store.outbox_counts(OUTREACH_ID)
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            ) as progress:
                bar = progress.add_task("settled", total=customers, rate="")
                while True:
                    counts = store.outbox_counts(OUTREACH_ID)
                    elapsed = time.perf_counter() - t0
                    if outbox_full_s is None and sum(counts.by_status.values()) >= customers:
                        outbox_full_s = elapsed
                    if dispatched_s is None and launched.ready():
                        dispatched_s = elapsed
                        launched.get(timeout=10)  # re-raises a failed plan or dispatch
                    if first_sent_s is None and counts.by_status.get(MessageStatus.SENT, 0):
                        first_sent_s = elapsed
                    done = _settled(counts)
                    rate = f"{done / elapsed:,.0f} msg/s" if elapsed > 0 else ""
                    progress.update(bar, completed=done, rate=rate)
                    if done >= customers:
                        break
                    if time.perf_counter() > deadline:
                        log(f"NOT settled within {args.campaign_timeout:.0f} s: {done:,} of {customers:,}")
                        break
                    time.sleep(0.5)
            seconds = time.perf_counter() - t0
            received = sink.received
            worker_cpu = sum(cpu_seconds(process_tree(p.pid)) - c for p, c in zip(procs, cpu0, strict=True))
            redis_cpu = cpu_seconds(process_tree(redis_server.pid)) - redis_cpu0 if redis_server else 0.0
            bench_cpu = time.process_time() - bench_cpu0
            facts["campaign_load_average_1m_at_launch"] = round(load0, 2)
            facts["campaign_load_average_1m_at_settled"] = round(os.getloadavg()[0], 2)
            facts["campaign_launch"] = args.launch
            facts["campaign_completed"] = completed = done >= customers
            if completed and dispatched_s is None:
                launched.get(timeout=600)
                dispatched_s = time.perf_counter() - t0
            if dispatched_s is not None:
                facts["campaign_launch_result"] = launched.get(timeout=10)
        finally:
            app.close()
            for proc in procs:
                stop_worker(proc)
            store.close()
            controller.stop()
        runs, slowest = send_times(logs)
    for url in (limiter_url, broker_url):
        flush_redis(url)
    moments = {"dispatched": dispatched_s, "first_sent": first_sent_s}
    log(f"settled {done:,} of {customers:,} messages in {seconds:.1f} s; {runs:,} send tasks ran")
    assert outbox_full_s is not None
    if completed:
        rows.append(Row("campaign_100k_seconds", round(seconds, 2), "s"))
    else:  # no time to report: what settled before the timeout, and at what rate
        rows.append(Row("campaign_settled_before_timeout", done, "messages", "campaign_customers"))
    rows += [
        Row("campaign_messages_per_s", round(done / seconds, 1), "messages/s", "inline_messages_per_s"),
        Row("campaign_customers", customers, "customers"),
        Row("campaign_plan_seconds", round(outbox_full_s, 2), "s"),
        Row("campaign_enqueue_per_s", round(customers / outbox_full_s, 1), "messages/s"),
        Row("campaign_send_tasks_run", runs, "tasks", "campaign_customers"),
    ]
    if slowest:
        rows += [
            Row("campaign_send_p50_ms", round(quantile(slowest, 0.5) * 1000, 2), "ms"),
            Row("campaign_send_p99_ms", round(quantile(slowest, 0.99) * 1000, 2), "ms"),
        ]
    rows += [Row(f"campaign_{name}_seconds", round(at, 2), "s") for name, at in moments.items() if at is not None]
    rows += _outcome_rows(counts, received, "campaign")
    rows += [
        Row("campaign_worker_cpu_s", round(worker_cpu, 1), "cpu-s"),
        Row("campaign_redis_cpu_s", round(redis_cpu, 1), "cpu-s"),
        Row("campaign_bench_process_cpu_s", round(bench_cpu, 1), "cpu-s"),
    ]
    return rows, facts


def inline_service(store_url: str, limiter_url: str, smtp_port: int) -> OutreachService:
    """The service a worker builds (`engine.tasks._outreach`), from the same settings, in this process."""
    settings = Settings(
        store=store_url,
        api=ApiSettings(public_base_url="https://shop.example"),
        contact=ContactSettings(backend="redis", redis_db_url=limiter_url, smtp_host="127.0.0.1", smtp_port=smtp_port),
    )
    store = open_store(store_url)
    return OutreachService(store, settings, limiter=make_limiter(settings), adapters=make_adapters(settings))


def plan_here(store_url: str, limiter_url: str, smtp_port: int) -> None:
    """`OutreachService.plan`, the first half of `advocacy.plan_outreach`, in this process."""
    service = inline_service(store_url, limiter_url, smtp_port)
    try:
        service.plan(OUTREACH_ID)
    finally:
        service.store.close()
        service.limiter.close()


def inline_campaign(
    args: argparse.Namespace, customers: int, *, profile: bool = False, log: Callable[[str], None] = print
) -> list[Row]:
    """The same campaign in one process with `InlineDispatcher`, the sink in a child process; or its profile."""
    limiter_url = _redis_url(args.redis_url, 11)
    flush_redis(limiter_url)
    context = mp.get_context("spawn")
    received, ready, stop = context.Value("q", 0), context.Event(), context.Event()
    port = free_port()
    sink = context.Process(target=_sink_process, args=(port, received, ready, stop), daemon=True)
    sink.start()
    ready.wait(timeout=60)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-inline-") as tmp:
            store_url = f"sqlite:///{Path(tmp) / 'inline.db'}"
            seed_campaign(store_url, customers, zone=awake_zone(utcnow()))
            service = inline_service(store_url, limiter_url, port)
            try:
                profiler = cProfile.Profile() if profile else None
                t0 = time.perf_counter()
                service.plan(OUTREACH_ID)
                planned = time.perf_counter() - t0
                keys = service.due(limit=customers, outreach_id=OUTREACH_ID)
                dispatcher = InlineDispatcher(service)
                t1 = time.perf_counter()
                if profiler is not None:
                    profiler.runcall(dispatcher.dispatch, keys)
                else:
                    dispatcher.dispatch(keys)
                sent_s = time.perf_counter() - t1
                counts = service.store.outbox_counts(OUTREACH_ID)
            finally:
                service.store.close()
                service.limiter.close()
    finally:
        stop.set()
        sink.join(timeout=30)
    flush_redis(limiter_url)
    log(f"inline: planned {customers:,} in {planned:.1f} s, sent {len(keys):,} in {sent_s:.1f} s")
    if profiler is not None:
        if args.profile_out:
            profiler.dump_stats(args.profile_out)
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)
        return []
    return [
        Row("inline_messages_per_s", round(len(keys) / sent_s, 1), "messages/s"),
        Row("inline_customers", customers, "customers"),
        Row("inline_plan_seconds", round(planned, 2), "s"),
        Row("inline_send_mean_ms", round(sent_s / len(keys) * 1000, 2), "ms"),
        *_outcome_rows(counts, int(received.value), "inline"),
    ]


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parse.add_argument("--decisions", type=int, default=200_000, help="reservations in the pipelined Redis run")
    parse.add_argument("--processes", type=int, default=4)
    parse.add_argument("--batch", type=int, default=100, help="reservations per pipeline (or SQLite transaction)")
    parse.add_argument(
        "--redis-url", default="redis://127.0.0.1:6390/9", help="flushed first, with dbs 11 and 12: not 5, 6 or 7"
    )
    parse.add_argument("--repeat", type=int, default=3, help="runs per figure; the best is kept (others share the CPU)")
    parse.add_argument("--campaign-customers", type=int, default=100_000)
    parse.add_argument("--workers", type=int, default=2, help="celery worker processes in the campaign")
    parse.add_argument("--concurrency", type=int, default=2, help="prefork processes per worker")
    parse.add_argument(
        "--launch",
        choices=("plan_outreach", "plan_then_dispatch_due"),
        default="plan_outreach",
        help="one advocacy.plan_outreach task, or plan in this process then one advocacy.dispatch_due(limit=N)",
    )
    parse.add_argument("--campaign-timeout", type=float, default=2400, help="seconds before the campaign gives up")
    parse.add_argument("--inline-customers", type=int, default=2000, help="customers in the inline baseline")
    parse.add_argument("--skip-policy", action="store_true", help="keep the policy rows of the existing results")
    parse.add_argument("--skip-campaign", action="store_true", help="measure the contact policy only")
    parse.add_argument("--profile", type=int, default=0, metavar="N", help="only profile an inline send to N")
    parse.add_argument("--profile-out", default=None, help="also write the profile here (for pstats or snakeviz)")
    parse.add_argument("--out", type=Path, default=None, help="results file (default bench/results/contact.json)")
    return parse


POLICY_FACTS = ("processes", "batch", "decisions", "repeat")


def main(argv: list[str] | None = None) -> None:
    """Every section appends its rows; one table and one results file for all of them."""
    args = parser().parse_args(argv)
    if args.profile:
        inline_campaign(args, args.profile, profile=True)
        return
    client = redis.Redis.from_url(args.redis_url)
    try:
        redis_version = client.info("server")["redis_version"]
    finally:
        client.close()
    machine = machine_facts(redis_version=redis_version, redis_py=redis.__version__, celery=celery.__version__)
    rows: list[Row] = []
    if args.skip_policy:
        kept = json.loads((RESULTS_DIR / "contact.json").read_text())
        rows += [Row(**row) for row in kept["rows"] if not row["metric"].startswith(("campaign_", "inline_"))]
        machine.update({key: kept["machine"].get(key) for key in POLICY_FACTS})
        machine["policy_rows_measured_at"] = kept["machine"].get("policy_rows_measured_at") or kept["machine"].get(
            "measured_at"
        )
    else:
        machine.update(processes=args.processes, batch=args.batch, decisions=args.decisions, repeat=args.repeat)
        rows += policy_rows(args)
        machine["policy_rows_measured_at"] = machine["measured_at"]
    if not args.skip_campaign:
        rows += inline_campaign(args, args.inline_customers)
        campaign, facts = campaign_rows(args)
        rows += campaign
        machine.update(
            campaign_customers=args.campaign_customers,
            workers=args.workers,
            concurrency=args.concurrency,
            inline_customers=args.inline_customers,
            **facts,
        )
    machine["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    print_table(rows, title="Contact policy and dispatch")
    print(f"wrote {write_results('contact', rows, machine, args.out)}")


if __name__ == "__main__":
    main()
