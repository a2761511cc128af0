"""Soak run: the API, a Celery worker and the store under mixed traffic for a bounded time, on loopback.

    python -m bench.soak [--minutes 3] [--rate 60] [--customers 3000] [--coded 2500] [--audience 20]
                         [--overlap 2] [--launch-every 30] [--warmup S] [--seed 7] [--no-plot] [--keep]

`--minutes 3` (the default) is a smoke of the whole set-up; `--minutes 30` is a real soak.

Processes, all on 127.0.0.1:
- the API: uvicorn, 1 worker (`bench.http.Server`), over a fresh SQLite store seeded by `bench.http.prepare`
  (`--customers` synthetic customers, the campaign of `examples/campaign.json`, `--coded` of them with a code),
  an admin key, an `orders:write` key, and people to reach by email (consent given, in a time zone where it is
  mid-day, so quiet hours hold nobody back); rate limits raised far above the load, as in `bench/http.py`;
- contact backend `redis` and dispatch `celery` on the shared Redis 127.0.0.1:6390, broker on db 9 and limiter
  on db 10 (only those two are flushed, before and after);
- one `celery worker` (prefork, concurrency 2), started by `engine.worker_process.start_worker`;
- an aiosmtpd sink in this process (`bench.contact.CountingSink`, counting per recipient too) as the mail server;
- the load: a separate process (`--drive`), httpx2 on asyncio, open loop: `--rate` requests a second on a fixed
  schedule, each kind drawn by weight (`MIX`: redirects `/r/{code}` 60%, kits with the customer's own token 15%,
  orders 15%, signups 5%, the landing page a redirect leads to 3%, redeliveries of an accepted order 2%), and
  every `--launch-every` s an outreach to `--audience` new people plus `--overlap` people the previous one
  reached (`POST /v1/outreach`, `/launch`, then its `/counts` twice). Orders come from friends who clicked: the
  click id is read from the redirect's cookie; half of the friends signed up first. Each order has its own id and
  `Idempotency-Key`; a redelivery repeats an accepted order with the same key (a replay) or a new one (200).
  Every request is timed from its *scheduled* send time (no coordinated omission).

Every 5 s this process samples the resident memory (RSS, children included) and open descriptors of the API and
the worker, the SQLite file's size, the broker queue and the sink, the CPU used by the API, the worker, the load
and the whole machine (other work on a shared machine stalls the API too), the API's threads and its descriptors
on the store file (one per SQLite connection). `--keep` keeps the run's directory: records, logs and the store.

After the load the queue must drain, then the invariants are checked through the store: every accepted order
settled once, no reward or ledger entry twice, no message sent twice (per recipient at most what the contact
policy allows in the run, the sink's count equal to the outbox's `sent`). An error is any 5xx, any connection
failure, any 4xx the request did not expect (429 included: the limits are raised), and any request left
unanswered at the end.

Memory is judged after warm-up (`--warmup`, 30 s, or 60 s for runs of 10 minutes or more): the end sample must be
within `start * (1 + 20%) + 30 MB`; the slope of RSS over the measured time is reported too, since a 3-minute run
cannot show a slow leak. Latency rows of the whole measured time compare with the first minute after warm-up, and
the last minute's p99 with the first minute's, so drift shows. Writes `bench/results/soak.json` and
`bench/results/soak.svg` (RSS and p99 over time). Processes are stopped on exit, on Ctrl-C or SIGTERM too.
Never run under pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import astuple, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any, Final, NamedTuple

import httpx2
import psutil
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.common import RESULTS_DIR, Row, machine_facts, print_table, write_results
from bench.contact import CountingSink, awake_zone, flush_redis, worker_env
from bench.http import (
    TOKEN_KID,
    Fixture,
    Server,
    cpu_seconds,
    free_port,
    kit_path,
    prepare,
    process_tree,
    quantile,
    run_fastest,
    smoke,
)
from engine.access import issue_customer_token, new_api_key
from engine.contact_policy import ContactPolicy
from engine.settings import ReferralSettings
from engine.worker_process import start_worker, stop_worker
from graph.factory import open_store, sqlite_path
from graph.model import ContactChannel, Customer, utcnow
from graph.outreach import MessageStatus
from graph.program import ConversionStatus
from graph.program_store import Store

ROOT: Final = Path(__file__).resolve().parents[1]
REDIS_BASE: Final = "redis://127.0.0.1:6390"
BROKER_DB: Final = 9
LIMITER_DB: Final = 10
RATE: Final = 60.0
"""The default rate. The API spends about 6 CPU-ms on a request of this mix and the generator about 5 (measured
with httpx), so 100 requests/s needs more than a core of this shared 2-core machine and saturates (requests queue
for seconds); a soak is meant to watch a steady system, not a queue."""
SATURATED_LAG_MS: Final = 1000.0
SAMPLE_EVERY_S: Final = 5.0
PLOT_WINDOW_S: Final = 15.0
GROWTH_SHARE: Final = 0.20
GROWTH_MB: Final = 30.0
BOUND_TEXT: Final = (
    f"end RSS <= start RSS * {1 + GROWTH_SHARE:g} + {GROWTH_MB:g} MB (start: first sample after warm-up)"
)
DRAIN_TIMEOUT_S: Final = 120.0
GRACE_S: Final = 15.0
TOKEN_TTL: Final = timedelta(minutes=30)
TOKEN_REFRESH_S: Final = 20 * 60.0
"""Customer tokens live at most an hour (`api.customer_token_max_ttl_s`): a long soak re-issues them, as a shop's
backend would."""
FIRST_LAUNCH_S: Final = 5.0
COUNTS_AFTER_S: Final = (10.0, 20.0)
CLICK_COOKIE: Final = ReferralSettings().click_cookie

REDIRECT, LANDING, KIT, ORDER, REDELIVERY, SIGNUP = "redirect", "landing", "kit", "order", "order_redelivery", "signup"
OUTREACH, LAUNCH, COUNTS = "outreach_create", "outreach_launch", "outreach_counts"
MIX: Final[tuple[tuple[str, int], ...]] = (
    (REDIRECT, 60),
    (KIT, 15),
    (ORDER, 15),
    (SIGNUP, 5),
    (LANDING, 3),
    (REDELIVERY, 2),
)
MAIN_KINDS: Final = (REDIRECT, KIT, ORDER, SIGNUP, LANDING, REDELIVERY)
"""Kinds frequent enough for a p99 per minute; the outreach kinds get their whole-run figures only."""
ALL_KINDS: Final = (*MAIN_KINDS, OUTREACH, LAUNCH, COUNTS)


def launch_times(seconds: float, every: float) -> list[float]:
    """When outreach launches are scheduled, so that each one's last `/counts` falls within the run."""
    last = seconds - max(COUNTS_AFTER_S) - 5
    return [FIRST_LAUNCH_S + k * every for k in range(int(max(0.0, last - FIRST_LAUNCH_S) // every) + 1)]


def outreach_customer_id(n: int) -> str:
    return f"soak-out-{n:05d}"


# --- the load process ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Call:
    """One request as the load sends it; `check` adds what the status alone does not show, `then` uses the answer."""

    kind: str
    method: str
    path: str
    expect: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    ref: str = ""
    check: Callable[[httpx2.Response], str] | None = None
    then: Callable[[httpx2.Response], None] | None = None


def _json_headers(key: str, idempotency_key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _click_of(response: httpx2.Response) -> str | None:
    """The click id the redirect set in its cookie (absent for a paused or revoked code)."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        if name.strip() == CLICK_COOKIE:
            return rest.split(";", 1)[0].strip() or None
    return None


def _replayed(response: httpx2.Response) -> str:
    return "" if response.headers.get("idempotent-replayed") == "true" else "not-replayed"


class Traffic:
    """What the load's friends, customers and shop do, with the state one request leaves for the next."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.rng = random.Random(int(spec["seed"]))
        self.codes: list[str] = spec["codes"]
        self.kit_customers: list[str] = spec["kit_customers"]
        self.campaign_id: str = spec["campaign_id"]
        self.orders_key: str = spec["orders_key"]
        self.token_keys: dict[str, str] = {spec["kid"]: spec["token_key"]}
        self.kid: str = spec["kid"]
        self.run_id: str = spec["run_id"]
        self.tokens: dict[str, tuple[str, float]] = {}
        self.clicks: deque[str] = deque(maxlen=50_000)
        self.friends: deque[tuple[str, str]] = deque(maxlen=50_000)
        self.accepted: list[tuple[str, bytes, str]] = []
        self.numbers = itertools.count()

    def call(self, kind: str) -> Call:
        if kind == REDIRECT:
            return Call(REDIRECT, "GET", f"/r/{self.rng.choice(self.codes)}", 302, then=self._harvest)
        if kind == LANDING:
            return Call(LANDING, "GET", f"/landing/{self.rng.choice(self.codes)}", 200)
        if kind == KIT:
            customer = self.rng.choice(self.kit_customers)
            headers = {"Authorization": f"Bearer {self._token(customer)}"}
            return Call(KIT, "GET", kit_path(customer, self.campaign_id), 200, headers=headers)
        if kind == SIGNUP:
            return self._signup()
        if kind == ORDER:
            return self._order()
        if kind == REDELIVERY and self.accepted:
            return self._redelivery()
        return self.call(REDIRECT)  # no order accepted yet to deliver again

    def _token(self, customer_id: str) -> str:
        held = self.tokens.get(customer_id)
        if held is None or time.monotonic() - held[1] > TOKEN_REFRESH_S:
            token = issue_customer_token(self.token_keys, self.kid, customer_id, now=utcnow(), ttl=TOKEN_TTL)[0]
            held = self.tokens[customer_id] = (token, time.monotonic())
        return held[0]

    def _harvest(self, response: httpx2.Response) -> None:
        click = _click_of(response)
        if click is not None:
            self.clicks.append(click)

    def _friend(self) -> tuple[str, dict[str, Any]]:
        friend = f"soak-f{next(self.numbers):07d}"
        return friend, {"id": friend, "name": f"Friend {friend[6:]}", "email": f"{friend}@friends.example.org"}

    def _touch(self, body: dict[str, Any], click: str | None) -> None:
        """The click the friend came through, or else (before any click was seen) a code typed at checkout."""
        if click is not None:
            body["click_id"] = click
        else:
            body["code"] = self.rng.choice(self.codes)

    def _signup(self) -> Call:
        friend, customer = self._friend()
        click = self.clicks.popleft() if self.clicks else None
        body: dict[str, Any] = {"customer_id": friend, "at": _now_iso(), "customer": customer}
        self._touch(body, click)

        def signed_up(_: httpx2.Response) -> None:
            if click is not None:
                self.friends.append((friend, click))

        headers = _json_headers(self.orders_key, f"{self.run_id}-signup-{friend}")
        return Call(SIGNUP, "POST", "/v1/signups", 200, headers, json.dumps(body).encode(), friend, then=signed_up)

    def _order(self) -> Call:
        number = next(self.numbers)
        order_id = f"soak-o{number:07d}"
        body: dict[str, Any] = {
            "id": order_id,
            "amount_minor": self.rng.choice((1500, 2500, 4200, 9900)),
            "currency": "EUR",
            "at": _now_iso(),
        }
        if self.friends and self.rng.random() < 0.5:
            friend, click = self.friends.popleft()
            body["customer_id"] = friend
            body["click_id"] = click
        else:
            friend, customer = self._friend()
            body["customer_id"] = friend
            body["customer"] = customer
            self._touch(body, self.clicks.popleft() if self.clicks else None)
        payload, key = json.dumps(body).encode(), f"{self.run_id}-order-{order_id}"

        def accepted(_: httpx2.Response) -> None:
            self.accepted.append((order_id, payload, key))

        return Call(
            ORDER, "POST", "/v1/orders", 201, _json_headers(self.orders_key, key), payload, order_id, None, accepted
        )

    def _redelivery(self) -> Call:
        order_id, payload, key = self.rng.choice(self.accepted)
        if self.rng.random() < 0.5:  # a client retrying after a lost answer: the first answer, replayed
            headers = _json_headers(self.orders_key, key)
            return Call(REDELIVERY, "POST", "/v1/orders", 201, headers, payload, order_id, _replayed)
        again = f"{key}-again-{next(self.numbers)}"  # the shop sending the order again: the stored conversion
        return Call(REDELIVERY, "POST", "/v1/orders", 200, _json_headers(self.orders_key, again), payload, order_id)


async def generate(spec: dict[str, Any]) -> dict[str, Any]:
    """Send the schedule and write one CSV line per request; returns what the orchestrator cannot read there."""
    with Path(spec["records"]).open("w", newline="", buffering=1 << 16) as out:
        return await _generate(spec, csv.writer(out).writerow)


async def _generate(spec: dict[str, Any], write: Callable[[Sequence[object]], object]) -> dict[str, Any]:
    rate, seconds = float(spec["rate"]), float(spec["seconds"])
    traffic = Traffic(spec)
    kinds, weights = zip(*MIX, strict=True)
    clock = time.perf_counter
    slots = asyncio.Semaphore(int(spec["max_connections"]))
    lags: list[float] = []
    samples: list[dict[str, Any]] = []
    pending: dict[asyncio.Task[object], tuple[str, float]] = {}
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # every friend is a new browser
    client = httpx2.AsyncClient(
        base_url=spec["base"],
        timeout=httpx2.Timeout(30.0),
        # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them: with equal timeouts a
        # request can be sent on a connection the server is closing at that moment (a ReadError no browser shows).
        limits=httpx2.Limits(
            max_connections=int(spec["max_connections"]), max_keepalive_connections=64, keepalive_expiry=2.0
        ),
        cookies=jar,
        follow_redirects=False,
    )
    start = clock() + max(0.0, float(spec["start_at"]) - time.time())
    cpu0 = time.process_time()

    def record(call: Call, scheduled: float, status: int, error: str) -> None:
        latency_ms = (clock() - scheduled) * 1000
        write([call.kind, f"{scheduled - start:.4f}", f"{latency_ms:.3f}", status, call.expect, error, call.ref])

    async def send(call: Call, scheduled: float) -> httpx2.Response | None:
        async with slots:  # waiting for a connection is part of the latency
            sent = clock()
            try:
                response = await client.request(call.method, call.path, headers=call.headers, content=call.body)
            except httpx2.HTTPError as exc:
                record(call, scheduled, 0, type(exc).__name__)
                return None
        lags.append(sent - scheduled)
        error = call.check(response) if call.check is not None and response.status_code == call.expect else ""
        record(call, scheduled, response.status_code, error)
        if response.status_code != call.expect and len(samples) < 30:
            samples.append({"kind": call.kind, "status": response.status_code, "body": response.text[:400]})
        if response.status_code == call.expect and call.then is not None:
            call.then(response)
        return response

    async def outreach(number: int, scheduled: float) -> None:
        """Create and launch one outreach, then read its counts twice while the worker sends it."""
        audience, overlap = int(spec["audience"]), int(spec["overlap"])
        ids = [outreach_customer_id(n) for n in range(number * audience, (number + 1) * audience)]
        ids += [outreach_customer_id(n) for n in range(number * audience - overlap, number * audience) if n >= 0]
        outreach_id = f"soak-{number:04d}"
        body = {
            "id": outreach_id,
            "name": f"Soak outreach {number}",
            "campaign_id": spec["campaign_id"],
            "audience": {"kind": "customers", "customer_ids": ids},
        }
        admin = _json_headers(spec["admin_key"])
        created = await send(Call(OUTREACH, "POST", "/v1/outreach", 201, admin, json.dumps(body).encode()), scheduled)
        if created is not None and created.status_code == 201:
            launch = Call(LAUNCH, "POST", f"/v1/outreach/{outreach_id}/launch", 202, admin, ref=outreach_id)
            await send(launch, clock())
        for after in COUNTS_AFTER_S:
            await asyncio.sleep(max(0.0, scheduled + after - clock()))
            read = {"Authorization": f"Bearer {spec['admin_key']}"}
            await send(Call(COUNTS, "GET", f"/v1/outreach/{outreach_id}/counts", 200, read, ref=outreach_id), clock())

    def spawn(coroutine: Coroutine[Any, Any, object], kind: str, scheduled: float) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coroutine)
        pending[task] = (kind, scheduled)
        task.add_done_callback(pending.pop)

    launches = iter(launch_times(seconds, float(spec["launch_every"])))
    next_launch = next(launches, None)
    launched = 0
    unfinished = 0
    await asyncio.sleep(max(0.0, start - clock()))
    try:
        for n in range(int(rate * seconds)):
            scheduled = start + n / rate
            while next_launch is not None and start + next_launch <= scheduled:
                spawn(outreach(launched, start + next_launch), OUTREACH, start + next_launch)
                launched += 1
                next_launch = next(launches, None)
            delay = scheduled - clock()
            if delay > 0:
                await asyncio.sleep(delay)
            call = traffic.call(traffic.rng.choices(kinds, weights)[0])
            spawn(send(call, scheduled), call.kind, scheduled)
        if pending:
            await asyncio.wait(list(pending), timeout=GRACE_S)
            for task, (kind, scheduled) in list(pending.items()):
                task.cancel()
                unfinished += 1
                write([kind, f"{scheduled - start:.4f}", f"{(clock() - scheduled) * 1000:.3f}", 0, 0, "unfinished", ""])
    finally:
        await client.aclose()
    lags.sort()
    return {
        "scheduled": int(rate * seconds),
        "launches": launched,
        "unfinished": unfinished,
        "send_lag_p99_ms": round(quantile(lags, 0.99) * 1000, 2) if lags else None,
        "generator_cpu_s": round(time.process_time() - cpu0, 1),
        "tokens_issued": len(traffic.tokens),
        "error_samples": samples,
    }


def drive(spec_path: Path) -> None:
    """The load process: run the schedule, print its summary as one JSON line."""
    print(json.dumps(run_fastest(generate(json.loads(spec_path.read_text())))))


# --- measuring ---------------------------------------------------------------------------------------------------
class Record(NamedTuple):
    kind: str
    scheduled_s: float
    latency_ms: float
    status: int
    expected: int
    error: str
    ref: str

    @property
    def failed(self) -> bool:
        return bool(self.error) or self.status != self.expected


def read_records(path: Path) -> list[Record]:
    with path.open(newline="") as lines:
        return [
            Record(kind, float(at), float(ms), int(status), int(expected), error, ref)
            for kind, at, ms, status, expected, error, ref in csv.reader(lines)
        ]


@dataclass(frozen=True, slots=True)
class Sample:
    """One look at the processes, `t_s` seconds after the load's schedule began."""

    t_s: float
    api_rss_mb: float
    worker_rss_mb: float
    api_fds: int
    worker_fds: int
    sqlite_mb: float
    broker_queue: int
    smtp_received: int
    api_cpu_pct: float
    worker_cpu_pct: float
    load_cpu_pct: float
    machine_cpu_pct: float
    api_threads: int
    api_db_connections: int
    """Descriptors the API holds on the store file: one per SQLite connection, and the store opens one per thread."""


class CpuMeter:
    """CPU use of a set of processes since the previous reading, in % of one core."""

    def __init__(self, procs: Callable[[], Sequence[psutil.Process]]) -> None:
        self._procs = procs
        self._last = (time.monotonic(), cpu_seconds(procs()))

    def read(self) -> float:
        now, cpu = time.monotonic(), cpu_seconds(self._procs())
        (then, before), self._last = self._last, (now, cpu)
        return round(max(0.0, cpu - before) / max(now - then, 1e-9) * 100, 1)


def _threads(procs: Sequence[psutil.Process]) -> int:
    total = 0
    for each in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += each.num_threads()
    return total


def _open_on(procs: Sequence[psutil.Process], path: Path) -> int:
    total = 0
    for each in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += sum(1 for f in each.open_files() if f.path == str(path))
    return total


def _rss_mb(procs: Sequence[psutil.Process]) -> float:
    total = 0
    for each in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += each.memory_info().rss
    return total / 2**20


def _fds(procs: Sequence[psutil.Process]) -> int:
    total = 0
    for each in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += each.num_fds()
    return total


def _sqlite_mb(db: Path) -> float:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists()) / 2**20


def _queue_length(broker: redis.Redis[bytes]) -> int:
    """Tasks waiting in the broker plus those a worker holds unacknowledged (kombu's Redis transport)."""
    return int(broker.llen("celery")) + int(broker.hlen("unacked"))


class RecipientSink(CountingSink):
    """The bench's SMTP sink, also counting what each recipient received (a message sent twice shows here)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_recipient: Counter[str] = Counter()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.by_recipient.update(address.lower() for address in envelope.rcpt_tos)
        return await super().handle_DATA(server, session, envelope)


# --- the run -----------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Soak:
    """Everything the run started, so that `close` stops it all whatever happened."""

    tmp: Path
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            _reap_children()


def _reap_children() -> None:
    """The last resort on an interrupted start (a worker or server not yet handed back): our own children only."""
    for child in psutil.Process().children():
        with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess, PermissionError):
            if os.getpgid(child.pid) == child.pid:
                os.killpg(child.pid, signal.SIGKILL)
            else:
                child.kill()


def _stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def seed_extra(fixture: Fixture, people: int, *, zone: str) -> str:
    """What `bench.http.prepare` does not make: a key for the shop's backend and the people outreach reaches."""
    store = open_store(fixture.store_url)
    try:
        record, orders_key = new_api_key("soak-orders", ["orders:write"], now=utcnow())
        store.save_api_key(record)
        store.upsert_customers(
            [
                Customer(
                    id=outreach_customer_id(n),
                    name=f"Reachable {n}",
                    email=f"{outreach_customer_id(n)}@example.org",
                    timezone=zone,
                    consent={ContactChannel.EMAIL: True},
                    created_at=utcnow() - timedelta(days=100),
                )
                for n in range(people)
            ]
        )
    finally:
        store.close()
    return orders_key


def sample_loop(
    load: subprocess.Popen[bytes],
    *,
    start_at: float,
    deadline_s: float,
    api: Sequence[psutil.Process],
    worker_pid: int,
    db: Path,
    broker: redis.Redis[bytes],
    sink: RecipientSink,
    log: Callable[[str], None],
) -> list[Sample]:
    """Every `SAMPLE_EVERY_S` until the load process ends; a load that overruns its deadline is stopped."""
    samples: list[Sample] = []
    tick = start_at
    meters = {
        "api": CpuMeter(lambda: api),
        "worker": CpuMeter(lambda: process_tree(worker_pid)),
        "load": CpuMeter(lambda: process_tree(load.pid)),
    }
    psutil.cpu_percent()
    while load.poll() is None:
        now = time.time()
        if now - start_at > deadline_s:
            log("the load process overran its deadline; stopping it")
            _stop_process_group(load)
            break
        if now >= tick:
            workers = process_tree(worker_pid)
            sample = Sample(
                t_s=round(now - start_at, 2),
                api_rss_mb=round(_rss_mb(api), 1),
                worker_rss_mb=round(_rss_mb(workers), 1),
                api_fds=_fds(api),
                worker_fds=_fds(workers),
                sqlite_mb=round(_sqlite_mb(db), 2),
                broker_queue=_queue_length(broker),
                smtp_received=sink.received,
                api_cpu_pct=meters["api"].read(),
                worker_cpu_pct=meters["worker"].read(),
                load_cpu_pct=meters["load"].read(),
                machine_cpu_pct=psutil.cpu_percent() * (psutil.cpu_count() or 1),
                api_threads=_threads(api),
                api_db_connections=_open_on(api, db),
            )
            samples.append(sample)
            if len(samples) % 6 == 1:
                log(
                    f"  t={sample.t_s:6.0f} s  api {sample.api_rss_mb:6.1f} MB  worker {sample.worker_rss_mb:6.1f} MB"
                    f"  fds {sample.api_fds}/{sample.worker_fds}  sqlite {sample.sqlite_mb:.1f} MB"
                    f"  queue {sample.broker_queue}  mails {sample.smtp_received}  cpu% api {sample.api_cpu_pct:.0f}"
                    f" load {sample.load_cpu_pct:.0f} machine {sample.machine_cpu_pct:.0f}"
                    f"  api threads {sample.api_threads}, db connections {sample.api_db_connections}"
                )
            tick += SAMPLE_EVERY_S * max(1, math.ceil((now - tick) / SAMPLE_EVERY_S + 1e-9))
        time.sleep(0.25)
    return samples


def drain(store: Store, broker: redis.Redis[bytes], outreach_ids: Sequence[str], *, timeout_s: float) -> dict[str, Any]:
    """Wait until the broker holds no task and no outbox message is queued or being sent."""
    started = time.perf_counter()
    while True:
        queued = _queue_length(broker)
        unsettled = 0
        for outreach_id in outreach_ids:
            counts = store.outbox_counts(outreach_id).by_status
            unsettled += counts.get(MessageStatus.QUEUED, 0) + counts.get(MessageStatus.SENDING, 0)
        waited = time.perf_counter() - started
        if (queued == 0 and unsettled == 0) or waited > timeout_s:
            return {
                "drained": queued == 0 and unsettled == 0,
                "seconds": waited,
                "tasks": queued,
                "messages": unsettled,
            }
        time.sleep(1.0)


def check_orders(store: Store, accepted: set[str]) -> dict[str, Any]:
    """Every accepted order settled once; no conversion with a reward or a ledger step twice."""
    conversions = {c.id: c for c in store.iter_conversions() if c.id.startswith("soak-o")}
    statuses = Counter(c.status.value for c in conversions.values())
    missing = sorted(accepted - conversions.keys())
    unsettled = [
        order_id
        for order_id in accepted & conversions.keys()
        if conversions[order_id].status is ConversionStatus.PENDING
    ]
    rewards = store.list_rewards(limit=10_000_000)
    per_rule = Counter((r.conversion_id, r.rule_id) for r in rewards)
    duplicate_rewards = sum(n - 1 for n in per_rule.values() if n > 1)
    listed = Counter(reward_id for c in conversions.values() for reward_id in c.reward_ids)
    duplicate_listed = sum(n - 1 for n in listed.values() if n > 1)
    known_ids = {r.id for r in rewards}
    unrecorded = sum(1 for reward_id in listed if reward_id not in known_ids)
    entries = store.ledger_entries()
    steps = Counter((e.reward_id, e.from_state, e.to_state) for e in entries)
    duplicate_entries = sum(n - 1 for n in steps.values() if n > 1)
    return {
        "conversions": len(conversions),
        "by_status": dict(statuses),
        "missing": len(missing),
        "missing_examples": missing[:5],
        "unsettled": len(unsettled),
        "rewards": len(rewards),
        "duplicate_rewards": duplicate_rewards + duplicate_listed,
        "rewards_listed_but_absent": unrecorded,
        "ledger_entries": len(entries),
        "duplicate_ledger_entries": duplicate_entries,
    }


def check_outbox(store: Store, outreach_ids: Sequence[str], sink: RecipientSink, *, run_s: float) -> dict[str, Any]:
    """No message sent twice: per recipient at most what the policy allows in the run; sink and outbox agree."""
    policy = ContactPolicy()
    allowed = min(cap.limit for cap in policy.caps if cap.window_days * 86_400 >= run_s)
    by_status: Counter[str] = Counter()
    held: Counter[str] = Counter()
    for outreach_id in outreach_ids:
        counts = store.outbox_counts(outreach_id)
        by_status.update({status.value: n for status, n in counts.by_status.items()})
        held.update({reason.value: n for reason, n in counts.held_by_reason.items()})
    over = {address: n for address, n in sink.by_recipient.items() if n > allowed}
    return {
        "allowed_per_recipient": allowed,
        "by_status": dict(by_status),
        "held_by_reason": dict(held),
        "smtp_received": sink.received,
        "recipients": len(sink.by_recipient),
        "duplicate_sends": sum(n - 1 for n in sink.by_recipient.values() if n > 1),
        "recipients_over_policy": len(over),
        "over_policy_examples": dict(itertools.islice(over.items(), 5)),
    }


def _log_problems(path: Path) -> dict[str, Any]:
    """Tracebacks and error lines a process wrote, with the first of them as evidence."""
    if not path.exists():
        return {"tracebacks": 0, "error_lines": 0, "first": None}
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    errors = [line for line in lines if " ERROR" in line or "ERROR/" in line or "CRITICAL" in line]
    first = None
    at = text.find("Traceback")
    if at >= 0:
        first = text[max(0, text.rfind("\n", 0, max(0, at - 300))) : at + 2500]
    elif errors:
        first = errors[0][:2500]
    return {"tracebacks": text.count("Traceback"), "error_lines": len(errors), "first": first}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the run measured, ready for the rows."""

    args: argparse.Namespace
    seconds: float
    warmup_s: float
    records: list[Record]
    samples: list[Sample]
    load: dict[str, Any]
    drained: dict[str, Any]
    orders: dict[str, Any]
    outbox: dict[str, Any]
    logs: dict[str, dict[str, Any]]
    cpu_s: dict[str, float]
    launches: int


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> Outcome:
    seconds = args.minutes * 60.0
    warmup_s = args.warmup if args.warmup is not None else (30.0 if args.minutes < 10 else 60.0)
    if warmup_s + 60 > seconds:
        raise SystemExit(f"--minutes {args.minutes:g} leaves no full minute after a {warmup_s:g} s warm-up")
    broker_url, limiter_url = f"{REDIS_BASE}/{BROKER_DB}", f"{REDIS_BASE}/{LIMITER_DB}"
    for url in (broker_url, limiter_url):
        flush_redis(url)
    launches = launch_times(seconds, args.launch_every)
    soak = Soak(Path(tempfile.mkdtemp(prefix="bench-soak-")))
    try:
        tmp = soak.tmp
        if args.keep:
            log(f"keeping {tmp} (records.csv, api.log, worker.log, the store)")
        else:
            soak.stack.callback(_remove_tree, tmp)
        for url in (broker_url, limiter_url):
            soak.stack.callback(flush_redis, url)
        fixture = prepare(tmp, customers=args.customers, coded=args.coded, log=log)
        zone = awake_zone(utcnow())
        orders_key = seed_extra(fixture, len(launches) * args.audience, zone=zone)
        db = Path(sqlite_path(fixture.store_url))

        sink = RecipientSink()
        smtp_port = free_port()
        controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
        controller.start()
        soak.stack.callback(controller.stop)

        contact = worker_env(fixture.store_url, limiter_url, smtp_port)
        env = {**fixture.env, **contact, "ADVOCACY_REDIS__URL": broker_url, "ADVOCACY_CONTACT__DISPATCH": "celery"}
        worker_log, api_log = tmp / "worker.log", tmp / "api.log"
        worker = start_worker(broker_url, worker_log, concurrency=2, name="soak", env=env)
        soak.stack.callback(stop_worker, worker)
        server = soak.stack.enter_context(
            Server("api.app:create_app", "/healthz", workers=1, env=env, log_path=api_log)
        )
        smoke(server.base, fixture)
        log(f"API on {server.base}, worker pid {worker.pid}, SMTP sink on :{smtp_port}, people in {zone}")

        start_at = time.time() + 5.0
        spec = {
            "base": server.base,
            "rate": args.rate,
            "seconds": seconds,
            "start_at": start_at,
            "seed": args.seed,
            "run_id": f"soak{os.getpid()}",
            "codes": fixture.codes,
            "kit_customers": [customer for customer, _ in fixture.tokens],
            "campaign_id": fixture.campaign_id,
            "orders_key": orders_key,
            "admin_key": fixture.admin_key,
            "kid": TOKEN_KID,
            "token_key": json.loads(fixture.env["ADVOCACY_API__CUSTOMER_TOKEN_KEYS"])[TOKEN_KID],
            "audience": args.audience,
            "overlap": args.overlap,
            "launch_every": args.launch_every,
            "max_connections": 64,
            "records": str(tmp / "records.csv"),
        }
        spec_path = tmp / "load.json"
        spec_path.write_text(json.dumps(spec))
        load_out = tmp / "load.out"
        with load_out.open("wb") as out:
            load = subprocess.Popen(
                [sys.executable, "-m", "bench.soak", "--drive", str(spec_path)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        soak.stack.callback(_stop_process_group, load)
        api_procs = server.processes()
        cpu0 = {"api": cpu_seconds(api_procs), "worker": cpu_seconds(process_tree(worker.pid))}
        broker = redis.Redis.from_url(broker_url)
        soak.stack.callback(broker.close)
        log(f"load: {args.rate:g} requests/s for {args.minutes:g} min, {len(launches)} outreach launches")
        samples = sample_loop(
            load,
            start_at=start_at,
            deadline_s=seconds + GRACE_S + 60,
            api=api_procs,
            worker_pid=worker.pid,
            db=db,
            broker=broker,
            sink=sink,
            log=log,
        )
        cpu = {
            "api": cpu_seconds(api_procs) - cpu0["api"],
            "worker": cpu_seconds(process_tree(worker.pid)) - cpu0["worker"],
        }
        output = load_out.read_text(errors="replace").strip().splitlines()
        if load.returncode != 0 or not output:
            raise RuntimeError(f"the load process failed ({load.returncode}):\n" + "\n".join(output[-40:]))
        summary: dict[str, Any] = json.loads(output[-1])
        records = read_records(Path(spec["records"]))
        store = open_store(fixture.store_url)
        soak.stack.callback(store.close)
        outreach_ids = [o.id for o in store.list_outreach() if o.id.startswith("soak-")]
        drained = drain(store, broker, outreach_ids, timeout_s=DRAIN_TIMEOUT_S)
        log(f"queue {'drained' if drained['drained'] else 'NOT drained'} after {drained['seconds']:.1f} s")
        accepted = {r.ref for r in records if r.kind == ORDER and not r.failed}
        orders = check_orders(store, accepted)
        outbox = check_outbox(store, outreach_ids, sink, run_s=seconds + drained["seconds"])
        logs = {"api": _log_problems(api_log), "worker": _log_problems(worker_log)}
        return Outcome(
            args, seconds, warmup_s, records, samples, summary, drained, orders, outbox, logs, cpu, len(launches)
        )
    finally:
        soak.close()


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- the report --------------------------------------------------------------------------------------------------
def _ms(records: Sequence[Record], q: float) -> float:
    return quantile(sorted(r.latency_ms for r in records), q)


def _memory(samples: Sequence[Sample], warmup_s: float, seconds: float, who: str) -> dict[str, float]:
    measured = [s for s in samples if warmup_s <= s.t_s <= seconds + SAMPLE_EVERY_S]
    if len(measured) < 2:
        return {}
    values = [getattr(s, f"{who}_rss_mb") for s in measured]
    start, end = values[0], values[-1]
    bound = start * (1 + GROWTH_SHARE) + GROWTH_MB
    slope = statistics.linear_regression([s.t_s / 60 for s in measured], values).slope
    fds = [getattr(s, f"{who}_fds") for s in measured]
    return {
        "start": start,
        "end": end,
        "peak": max(values),
        "growth_pct": (end - start) / start * 100 if start else float("nan"),
        "bound": bound,
        "within": float(end <= bound),
        "slope": slope,
        "fds_start": fds[0],
        "fds_end": fds[-1],
    }


def rows_for(outcome: Outcome) -> list[Row]:
    """The named figures; latency rows compare with the first minute after warm-up, or with nothing."""
    records, warmup_s, seconds = outcome.records, outcome.warmup_s, outcome.seconds
    measured = [r for r in records if r.scheduled_s >= warmup_s and not r.failed]
    first = [r for r in measured if r.scheduled_s < warmup_s + 60]
    last = [r for r in measured if r.scheduled_s >= seconds - 60]
    span = seconds - warmup_s
    errors = [r for r in records if r.failed]
    rows = [
        Row("soak_minutes", outcome.args.minutes, "min"),
        Row("rate_target", outcome.args.rate, "req/s"),
        Row("requests_total", len(records), "requests"),
        Row("achieved_rps", round(len(measured) / span, 1), "req/s", "rate_target"),
        Row("errors_total", len(errors), "requests"),
    ]
    if outcome.load.get("send_lag_p99_ms") is not None:
        rows.append(Row("load_send_lag_p99_ms", outcome.load["send_lag_p99_ms"], "ms"))
    for kind in ALL_KINDS:
        mine = [r for r in measured if r.kind == kind]
        if not mine:
            continue
        if kind in MAIN_KINDS:
            rows.append(Row(f"{kind}_rps", round(len(mine) / span, 2), "req/s"))
            rows.append(Row(f"{kind}_p50_ms", round(_ms(mine, 0.50), 2), "ms"))
            early = [r for r in first if r.kind == kind]
            late = [r for r in last if r.kind == kind]
            baseline = f"{kind}_p99_ms_first_minute"
            rows.append(Row(f"{kind}_p99_ms", round(_ms(mine, 0.99), 2), "ms", baseline))
            rows.append(Row(baseline, round(_ms(early, 0.99), 2), "ms"))
            rows.append(Row(f"{kind}_p99_ms_last_minute", round(_ms(late, 0.99), 2), "ms", baseline))
        else:
            rows.append(Row(f"{kind}_p99_ms", round(_ms(mine, 0.99), 2), "ms"))
        failed = sum(1 for r in errors if r.kind == kind)
        if failed:
            rows.append(Row(f"{kind}_errors", failed, "requests"))
    for who in ("api", "worker"):
        memory = _memory(outcome.samples, warmup_s, seconds, who)
        if not memory:
            continue
        rows += [
            Row(f"{who}_rss_start_mb", round(memory["start"], 1), "MB"),
            Row(f"{who}_rss_end_mb", round(memory["end"], 1), "MB", f"{who}_rss_start_mb"),
            Row(f"{who}_rss_growth_pct", round(memory["growth_pct"], 1), "%"),
            Row(f"{who}_rss_bound_mb", round(memory["bound"], 1), "MB"),
            Row(f"{who}_rss_within_bound", memory["within"], "1 = yes"),
            Row(f"{who}_rss_slope_mb_per_min", round(memory["slope"], 3), "MB/min"),
            Row(f"{who}_fds_start", memory["fds_start"], "fds"),
            Row(f"{who}_fds_end", memory["fds_end"], "fds", f"{who}_fds_start"),
        ]
    measured_samples = [s for s in outcome.samples if s.t_s >= warmup_s]
    if measured_samples:
        rows += [
            Row("sqlite_mb_start", measured_samples[0].sqlite_mb, "MB"),
            Row("sqlite_mb_end", measured_samples[-1].sqlite_mb, "MB", "sqlite_mb_start"),
            Row("api_db_connections_start", measured_samples[0].api_db_connections, "fds"),
            Row("api_db_connections_end", measured_samples[-1].api_db_connections, "fds", "api_db_connections_start"),
            Row("api_cpu_pct_mean", round(statistics.fmean(s.api_cpu_pct for s in measured_samples), 1), "%"),
            Row("machine_cpu_pct_mean", round(statistics.fmean(s.machine_cpu_pct for s in measured_samples), 1), "%"),
        ]
    handled = len(records) or 1
    orders, outbox, drained = outcome.orders, outcome.outbox, outcome.drained
    rows += [
        Row("api_cpu_ms_per_request", round(outcome.cpu_s["api"] * 1000 / handled, 2), "cpu-ms"),
        Row("orders_accepted", len({r.ref for r in records if r.kind == ORDER and not r.failed}), "orders"),
        Row("conversions_recorded", orders["conversions"], "conversions", "orders_accepted"),
        Row("conversions_unsettled", orders["unsettled"] + orders["missing"], "conversions"),
        Row("rewards_issued", orders["rewards"], "rewards"),
        Row("duplicate_rewards", orders["duplicate_rewards"], "rewards"),
        Row("duplicate_ledger_entries", orders["duplicate_ledger_entries"], "entries"),
        Row("outreach_launches", outcome.launches, "launches"),
        Row("messages_planned", sum(outbox["by_status"].values()), "messages"),
        Row("messages_sent", outbox["by_status"].get(MessageStatus.SENT.value, 0), "messages"),
        Row("messages_held", outbox["by_status"].get(MessageStatus.HELD.value, 0), "messages"),
        Row("smtp_received", outbox["smtp_received"], "messages", "messages_sent"),
        Row("duplicate_sends", outbox["duplicate_sends"], "messages"),
        Row("recipients_over_policy", outbox["recipients_over_policy"], "people"),
        Row("queue_drained", float(drained["drained"]), "1 = yes"),
        Row("queue_drain_seconds", round(drained["seconds"], 1), "s"),
        Row("api_log_tracebacks", outcome.logs["api"]["tracebacks"], "tracebacks"),
        Row("worker_log_tracebacks", outcome.logs["worker"]["tracebacks"], "tracebacks"),
    ]
    return rows


def verdicts(outcome: Outcome, rows: Sequence[Row]) -> list[str]:
    """One line per promise of the soak: met or not, and the figure that says so."""
    value = {row.metric: row.value for row in rows}
    lines = [f"memory bound: {BOUND_TEXT}"]
    for who in ("api", "worker"):
        if f"{who}_rss_within_bound" in value:
            lines.append(
                f"{who} RSS {value[f'{who}_rss_start_mb']:.1f} -> {value[f'{who}_rss_end_mb']:.1f} MB "
                f"(bound {value[f'{who}_rss_bound_mb']:.1f} MB, slope {value[f'{who}_rss_slope_mb_per_min']:+.2f} "
                f"MB/min): {'OK' if value[f'{who}_rss_within_bound'] else 'EXCEEDED'}"
            )
    errors = Counter((r.kind, r.status, r.error) for r in outcome.records if r.failed)
    lines.append(
        f"errors: {int(value['errors_total'])}"
        + (
            ""
            if not errors
            else " (" + ", ".join(f"{k} {s} {e}".strip() + f" x{n}" for (k, s, e), n in errors.most_common(8)) + ")"
        )
    )
    lag = outcome.load.get("send_lag_p99_ms") or 0.0
    if outcome.load.get("unfinished") or lag > SATURATED_LAG_MS:
        cores = (os.cpu_count() or 1) * 100
        lines.append(
            f"SATURATED: requests waited {lag / 1000:.1f} s (p99) for a free connection and "
            f"{outcome.load.get('unfinished', 0)} were unanswered at the end: the API fell behind its schedule "
            f"(it used {value.get('api_cpu_pct_mean', float('nan')):.0f}% of a core on average, the machine "
            f"{value.get('machine_cpu_pct_mean', float('nan')):.0f}% of {cores}%), so the p99 rows are queueing; "
            "the samples' cpu columns tell whether other work on the machine or the rate was the cause"
        )
    checks = {
        "every accepted order settled once": value["conversions_unsettled"] == 0
        and value["duplicate_rewards"] == 0
        and value["duplicate_ledger_entries"] == 0,
        "no message sent twice": value["duplicate_sends"] == 0
        and value["recipients_over_policy"] == 0
        and value["smtp_received"] == value["messages_sent"],
        "queue drained": bool(value["queue_drained"]),
    }
    lines += [f"{name}: {'OK' if ok else 'FAILED'}" for name, ok in checks.items()]
    return lines


def plot(outcome: Outcome, path: Path) -> Path | None:
    """RSS of the API and the worker, and p99 per window of the busiest kinds, over the run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (memory, latency) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    times = [s.t_s / 60 for s in outcome.samples]
    memory.plot(times, [s.api_rss_mb for s in outcome.samples], label="API")
    memory.plot(times, [s.worker_rss_mb for s in outcome.samples], label="worker (with its pool)")
    memory.axvline(outcome.warmup_s / 60, color="grey", linestyle=":", linewidth=1)
    memory.set_ylabel("RSS (MB)")
    connections = memory.twinx()
    connections.plot(
        times, [s.api_db_connections for s in outcome.samples], color="tab:green", linestyle="--", linewidth=1
    )
    connections.set_ylabel("API descriptors on the store (dashed)")
    memory.legend(loc="center right")
    memory.set_title(f"Soak: {outcome.args.rate:g} req/s for {outcome.args.minutes:g} min")
    windows = int(outcome.seconds // PLOT_WINDOW_S)
    for kind in (REDIRECT, KIT, ORDER, SIGNUP):
        by_window: dict[int, list[float]] = {}
        for r in outcome.records:
            if r.kind == kind and not r.failed:
                by_window.setdefault(int(r.scheduled_s // PLOT_WINDOW_S), []).append(r.latency_ms)
        xs = [(w + 0.5) * PLOT_WINDOW_S / 60 for w in range(windows) if w in by_window]
        ys = [quantile(sorted(by_window[w]), 0.99) for w in range(windows) if w in by_window]
        latency.plot(xs, ys, marker=".", label=kind)
    latency.axvline(outcome.warmup_s / 60, color="grey", linestyle=":", linewidth=1)
    latency.set_yscale("log")
    latency.set_ylabel(f"p99 per {PLOT_WINDOW_S:g} s (ms)")
    latency.set_xlabel("minutes")
    latency.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)
    return path


def report(outcome: Outcome, *, draw: bool = True) -> None:
    rows = rows_for(outcome)
    said = verdicts(outcome, rows)
    machine = machine_facts(
        soak_minutes=outcome.args.minutes,
        rate=outcome.args.rate,
        mix=dict(MIX),
        warmup_s=outcome.warmup_s,
        customers=outcome.args.customers,
        coded_customers=outcome.args.coded,
        outreach={
            "launch_every_s": outcome.args.launch_every,
            "audience": outcome.args.audience,
            "overlap": outcome.args.overlap,
        },
        processes="uvicorn api.app (1 worker, httptools) + celery worker (prefork, concurrency 2) + aiosmtpd sink; "
        "load: httpx2 asyncio open loop in its own process",
        redis={"broker": f"{REDIS_BASE}/{BROKER_DB}", "limiter": f"{REDIS_BASE}/{LIMITER_DB}"},
        memory_bound=BOUND_TEXT,
        first_minute=f"requests scheduled in [{outcome.warmup_s:g}, {outcome.warmup_s + 60:g}) s",
        load=outcome.load,
        drain=outcome.drained,
        orders=outcome.orders,
        outbox=outcome.outbox,
        errors_by_kind={
            f"{kind} {status} {error}".strip(): n
            for (kind, status, error), n in Counter(
                (r.kind, r.status, r.error) for r in outcome.records if r.failed
            ).items()
        },
        cpu_seconds={who: round(s, 1) for who, s in outcome.cpu_s.items()},
        logs=outcome.logs,
        samples=[list(astuple(s)) for s in outcome.samples],
        samples_columns=[f.name for f in fields(Sample)],
        load_average_at_end=[round(x, 2) for x in os.getloadavg()],
        notes=said,
    )
    print_table(
        rows, title=f"Soak: {outcome.args.rate:g} req/s for {outcome.args.minutes:g} min (baseline: first minute)"
    )
    print()
    for line in said:
        print(f"- {line}")
    for who, problems in outcome.logs.items():
        if problems["first"]:
            print(f"\nfirst problem in the {who} log:\n{problems['first']}")
    for sample in outcome.load.get("error_samples", [])[:5]:
        print(f"\nerror answer: {sample}")
    print(f"\nwrote {write_results('soak', rows, machine)}")
    if draw:
        drawn = plot(outcome, RESULTS_DIR / "soak.svg")
        if drawn is not None:
            print(f"wrote {drawn}")


def parser() -> argparse.ArgumentParser:
    parse = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parse.add_argument("--minutes", type=float, default=3.0, help="length of the load (3: a smoke; 30: a soak)")
    parse.add_argument("--rate", type=float, default=RATE, help="requests per second, all kinds together")
    parse.add_argument("--customers", type=int, default=3000, help="synthetic customers in the store")
    parse.add_argument("--coded", type=int, default=2500, help="of them, how many have a code (and ask for kits)")
    parse.add_argument("--audience", type=int, default=20, help="new people each outreach reaches")
    parse.add_argument("--overlap", type=int, default=2, help="people of the previous outreach asked again (capped)")
    parse.add_argument("--launch-every", type=float, default=30.0, help="seconds between outreach launches")
    parse.add_argument("--warmup", type=float, default=None, help="seconds before memory and latency count")
    parse.add_argument("--seed", type=int, default=7)
    parse.add_argument("--no-plot", action="store_true", help="skip bench/results/soak.svg")
    parse.add_argument("--keep", action="store_true", help="keep the temporary directory: records, logs, store")
    parse.add_argument("--drive", type=Path, help=argparse.SUPPRESS)
    return parse


def _terminate(signum: int, _: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    args = parser().parse_args()
    if args.drive is not None:
        drive(args.drive)
        return
    signal.signal(signal.SIGTERM, _terminate)  # unwind the `finally` that stops every process
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background (inherited SIG_IGN)
    outcome = run(args)
    report(outcome, draw=not args.no_plot)


if __name__ == "__main__":
    main()
