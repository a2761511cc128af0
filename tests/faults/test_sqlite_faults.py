"""The embedded SQLite store under fire: the API writing from its thread pool while a worker process writes to the
same file, and a disk that fills up.

No "database is locked" may reach anyone: every request succeeds or gets a deliberate problem, every write of the
worker goes through, and the logs hold no raw SQLite error. A full disk refuses the write with the store's own
error (a 503 problem over HTTP), leaves nothing of it half written, and the file still opens and reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest

from engine.access import new_api_key
from engine.channels import make_adapters
from engine.limits import make_limiter
from engine.outreach import OutreachService
from engine.settings import ContactSettings, Settings
from graph.errors import StoreUnavailable
from graph.factory import open_store
from graph.model import ContactChannel, Customer, utcnow
from graph.outreach import Audience, AudienceKind, MessageStatus, Outreach
from graph.program_store import Store
from graph.sqlite_store import SqliteStore
from tests.api_support import PROBLEM_JSON, api_client
from tests.e2e.browser_support import serve_app
from tests.faults.conftest import ROOT
from tests.faults.sqlite_writer import CODES
from tests.integration.test_outreach_dispatch import awake_zone
from tests.program_factories import make_campaign, make_code

pytestmark = pytest.mark.slow

LOAD_S = 10.0
API_THREADS = 4
AUDIENCE = 400
LOCKED = ("database is locked", "database table is locked", "database is busy", "sqlite3.OperationalError")


def seed(store: Store, tmp_path: Path) -> str:
    """Advocates with codes, an outreach planned to `AUDIENCE` customers, and an admin API key (returned)."""
    zone, created = awake_zone(), utcnow() - timedelta(days=400)
    campaign = make_campaign(id="spring", hold_days=0)
    store.save_campaign(campaign)
    people = [
        Customer(id=f"c{i}", email=f"c{i}@example.org", timezone=zone, consent={ContactChannel.EMAIL: True})
        for i in range(AUDIENCE)
    ]
    advocates = [Customer(id=f"adv{n}", email=f"adv{n}@example.org", created_at=created) for n in range(CODES)]
    store.upsert_customers(people + advocates)
    for n in range(CODES):
        store.create_code(make_code(f"adv{n}", campaign, code=f"ADV{n}CODE"))
    store.save_outreach(
        Outreach(
            id="busy",
            name="busy",
            campaign_id="spring",
            audience=Audience(kind=AudienceKind.CUSTOMERS, customer_ids=tuple(c.id for c in people)),
            created_at=utcnow(),
        )
    )
    settings = Settings(contact=ContactSettings(sqlite_path=str(tmp_path / "plan-contacts.db")))
    OutreachService(store, settings, limiter=make_limiter(settings), adapters=make_adapters(settings)).plan("busy")
    record, key = new_api_key("faults", ("admin",), now=utcnow())
    store.save_api_key(record)
    return key


def api_writer(base: str, key: str, thread: int, until: float, answers: list[tuple[str, int, str]]) -> None:
    """POST orders (each creating its buyer) and PUT customers until `until`, keeping every answer."""
    zone = awake_zone()
    with httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
        n = 0
        while time.monotonic() < until:
            n += 1
            buyer = {"id": f"b{thread}-{n}", "email": f"b{thread}-{n}@example.org"}
            order = {
                "id": f"aord{thread}-{n}",
                "customer_id": buyer["id"],
                "amount_minor": 3000,
                "currency": "EUR",
                "at": utcnow().isoformat(),
                "code": f"ADV{n % CODES}CODE",
                "customer": buyer,
            }
            response = client.post("/v1/orders", json=order)
            answers.append(("order", response.status_code, response.text if response.status_code >= 300 else ""))
            update = {
                "id": f"c{n % AUDIENCE}",
                "email": f"c{n % AUDIENCE}@example.org",
                "locale": "fr",
                "timezone": zone,
                "consent": {"email": True},
            }
            response = client.put(f"/v1/customers/{update['id']}", json=update)
            answers.append(("customer", response.status_code, response.text if response.status_code >= 300 else ""))


@pytest.mark.timeout(240)
def test_the_api_and_a_worker_writing_at_once_never_show_anyone_a_locked_database(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'busy.db'}"
    store = open_store(store_url)
    try:
        key = seed(store, tmp_path)
    finally:
        store.close()
    log = tmp_path / "uvicorn.log"  # where serve_app writes the server's output
    answers: list[tuple[str, int, str]] = []
    with serve_app(store_url, tmp_path, env={"ADVOCACY_API__RATE_LIMIT_KEY": "1000000/minute"}) as base:
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.sqlite_writer", store_url, str(LOAD_S), "busy", str(tmp_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        until = time.monotonic() + LOAD_S
        threads = [threading.Thread(target=api_writer, args=(base, key, n, until, answers)) for n in range(API_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    worker = json.loads(out)

    statuses = Counter((kind, status) for kind, status, _ in answers)
    assert not [text for _, _, text in answers if any(word in text for word in LOCKED)]
    failed = [answer for answer in answers if answer[1] not in (200, 201)]
    assert not failed, f"every write succeeded: {statuses}, e.g. {failed[:3]}"
    assert worker["errors"] == [], worker["errors"][:5]
    assert worker["orders"] > 0
    assert sum(worker["sends"].values()) > 0
    logged = log.read_text()
    assert not [word for word in LOCKED if word in logged], "the API logged a locked database"
    assert "unhandled error" not in logged

    store = open_store(store_url)
    try:
        conversions = {c.order.id for c in store.iter_conversions()}
        api_orders = {f"aord{t}" for t in range(API_THREADS)}
        assert sum(1 for order_id in conversions if order_id.startswith("word")) == worker["orders"]
        posted = statuses[("order", 201)]
        assert posted > 0
        assert sum(1 for order_id in conversions if order_id.rpartition("-")[0] in api_orders) == posted
        outbox = store.outbox_counts("busy").by_status
        expected = Counter(worker["sends"])
        expected[MessageStatus.QUEUED.value] = AUDIENCE - sum(worker["sends"].values())
        assert {status.value: n for status, n in outbox.items() if n} == {k: n for k, n in expected.items() if n}, (
            "every message the worker handled is recorded as it ended, the rest still queued"
        )
    finally:
        store.close()


# --- a full disk -----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def tiny_disk(tmp_path: Path) -> Iterator[tuple[Path, int | None]]:
    """A 2 MB tmpfs (as root), else a plain directory and a page limit the test sets on its own connection."""
    where = tmp_path / "tiny"
    where.mkdir()
    mounted = False
    if os.geteuid() == 0:
        mount = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)]
        mounted = subprocess.run(mount, check=False, capture_output=True).returncode == 0
    try:
        yield where, None if mounted else 400
    finally:
        if mounted:
            subprocess.run(["umount", str(where)], check=False)


def fill(store: SqliteStore, page_limit: int | None) -> tuple[int, StoreUnavailable]:
    """Write ever smaller batches of bulky customers until not even one more fits; each refused batch must leave
    nothing behind. How many were written, and the last refusal."""
    if page_limit is not None:
        store._connection().execute(f"PRAGMA max_page_count = {page_limit}")  # this thread's connection only
    written, refusal, size = 0, None, 200
    for batch in range(2000):
        customers = [
            Customer(id=f"full{batch}-{i}", name="x" * 200, attributes={"note": "y" * 600}) for i in range(size)
        ]
        try:
            store.upsert_customers(customers)
        except StoreUnavailable as exc:
            assert store.stats().customers == written, "a refused batch left nothing behind"
            refusal = exc
            if size == 1:
                return written, refusal
            size = max(1, size // 5)
            continue
        written += size
    raise AssertionError(f"the disk never filled up ({written} customers written, last refusal {refusal})")


@pytest.mark.timeout(120)
def test_a_full_disk_refuses_the_write_clearly_and_leaves_a_store_that_opens_and_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tiny_disk(tmp_path) as (where, page_limit):
        path = where / "full.db"
        store = SqliteStore(path)
        try:
            record, key = new_api_key("faults", ("admin",), now=utcnow())
            store.save_api_key(record)
            written, error = fill(store, page_limit)
            assert written > 0
            assert "disk is full" in error.detail, error.detail
        finally:
            store.close()

        if page_limit is None:  # the disk itself is full (closing the store gave the log's space back): fill it
            with api_client(f"sqlite:///{path}", scopes=()) as client:  # through the API, which must say so
                client.headers["Authorization"] = f"Bearer {key}"
                bulky = {"name": "z" * 200, "attributes": {"note": "y" * 600}}
                for n in range(5000):
                    response = client.put(f"/v1/customers/late{n}", json={"id": f"late{n}", **bulky})
                    if response.status_code != 200:
                        break
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith(PROBLEM_JSON)
                assert response.json()["type"] == "urn:advocacy:problem:store-unavailable"
                assert int(response.headers["retry-after"]) > 0
                assert "sqlite3" not in response.text
                assert "disk is full" in caplog.text, "the operator's log says why (the client is told to retry)"
                assert client.get("/v1/customers/full0-0").status_code == 200, "reads still work"
                written += n

        reopened = SqliteStore(path)
        try:
            assert reopened.stats().customers == written
            assert reopened.get_customer("full0-0").name == "x" * 200
        finally:
            reopened.close()
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as check:
            assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
