"""Backup and restore on both stores: a realistic store comes back with the same counts and the same deep reads.

SQLite: the online backup API while the app runs, integrity and schema checks, the atomic swap that keeps the old
file. Neo4j (marked): dump, wipe, load, the same graph property for property (datetimes with nanoseconds and
zones included). The `advocacy backup` commands through Typer's CliRunner on both.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from neo4j import Driver
from typer.testing import CliRunner, Result

from api.cli import app
from engine.referrals import ReferralService
from engine.settings import ReferralSettings
from graph.backup import (
    BEFORE_RESTORE,
    FORMAT,
    backup_sqlite,
    decode_value,
    dump_neo4j,
    encode_value,
    load_neo4j,
    read_header,
    restore_sqlite,
    store_route,
)
from graph.errors import InvalidInput, PolicyViolation
from graph.factory import open_store
from graph.model import GraphBatch, InfluenceKind
from graph.neo4j_store import Neo4jStore
from graph.outreach import Audience, AudienceKind, customer_key
from graph.program import Order, Refund, Signal, SignalKind, Signup
from graph.program_store import ERASED, Store
from graph.sqlite_store import SCHEMA_VERSION, SqliteStore
from tests.factories import (
    BASE_TIME,
    Clock,
    make_customer,
    make_event,
    make_influence,
    make_referral,
    make_run,
    make_scores,
)
from tests.neo4j_support import NEO4J_URL, open_neo4j, query, raw_driver
from tests.outreach_factories import make_message, make_outreach, make_suppression, make_template
from tests.program_factories import make_campaign

ACCOUNTS = ("cust00", "cust01", "friend1", "friend2", ERASED)


def seed(store: Store) -> None:
    """Customers and their ties, an analysis run, a campaign played forward, an outreach, one erasure."""
    clock = Clock(BASE_TIME)
    service = ReferralService(store, ReferralSettings(), clock=clock)
    people = [make_customer(id=f"cust{i:02d}", created_at=BASE_TIME - timedelta(days=400)) for i in range(12)]
    store.upsert_customers(people)
    store.add_influences(
        [make_influence(people[i], people[(i + 1) % 12], weight=0.1 * (i + 1)) for i in range(12)]
        + [make_influence(people[i], people[(i + 5) % 12], kind=InfluenceKind.CO_PURCHASE) for i in range(6)]
    )
    store.add_referrals([make_referral(people[6], people[7])])
    store.add_events([make_event(person, value=10.0 + n) for n, person in enumerate(people[:8])])
    store.save_run(make_run(id="run-1"))
    store.write_scores([make_scores(person, run_id="run-1") for person in people])

    service.create_campaign(make_campaign(id="spring", hold_days=14))
    jane, ann = service.issue_code("cust00", "spring"), service.issue_code("cust01", "spring")
    visit = service.click(
        jane.code, ip="203.0.113.9", user_agent="Firefox", referer="https://www.instagram.com/p/x", cookie=None
    )
    service.click(ann.code, ip="198.51.100.7", user_agent="Safari", referer=None, cookie="visitor-2")
    clock.advance(hours=1)
    friend = make_customer(id="friend1", email="friend1@example.org", phone="+33611111111", created_at=clock.now)
    signals = (Signal(kind=SignalKind.DEVICE, value="friend1-phone"),)
    service.signup(
        Signup(customer_id="friend1", at=clock.now, click_id=visit.click.id, signals=signals), customer=friend
    )
    clock.advance(days=1)
    service.process_order(
        Order(id="o-1", customer_id="friend1", amount_minor=6000, currency="EUR", at=clock.now, click_id=visit.click.id)
    )
    buyer = make_customer(id="friend2", email="friend2@example.net", created_at=BASE_TIME - timedelta(days=400))
    service.process_order(
        Order(id="o-2", customer_id="friend2", amount_minor=3000, currency="EUR", at=clock.now, code=ann.code),
        customer=buyer,
    )
    service.process_order(
        Order(id="o-3", customer_id="cust01", amount_minor=3000, currency="EUR", at=clock.now, code=ann.code)
    )
    clock.advance(days=15)
    service.advance()
    service.fulfil()
    clock.advance(days=2)
    service.process_refund(Refund(id="rf-1", order_id="o-2", amount_minor=3000, at=clock.now))

    store.save_template(make_template(id="share-wa", subject=None))
    audience = Audience(kind=AudienceKind.CUSTOMERS, customer_ids=("cust02", "cust03", "cust04"))
    outreach = make_outreach("spring", id="spring-invites", audience=audience)
    store.save_outreach(outreach)
    store.enqueue_messages([make_message(outreach, f"cust0{i}") for i in (2, 3, 4)])
    store.suppress(make_suppression(customer_key("cust04")))
    store.erase_customer("cust00")


def deep_reads(store: Store) -> dict[str, Any]:
    """What the app reads back, through the store protocol: a restore must change none of it."""
    return {
        "stats": store.stats(),
        "program": store.program_counts(),
        "customers": list(store.iter_customers()),
        "edges": sorted(store.iter_edges()),
        "scores": sorted(store.iter_scores(), key=lambda s: s.customer_id),
        "runs": store.list_runs(),
        "campaigns": store.list_campaigns(),
        "codes": store.list_codes(),
        "conversions": store.list_conversions(),
        "conversion": store.get_conversion("o-1"),
        "rewards": store.list_rewards(),
        "ledger": store.ledger_entries(),
        "balances": {account: store.balances(account) for account in ACCOUNTS},
        "template": store.get_template("share-wa"),
        "outreach": store.list_outreach(),
        "messages": store.list_messages("spring-invites"),
        "suppressions": store.suppressions([customer_key("cust04")]),
        "events": store.events_of("cust01"),
    }


def table_counts(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        return {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    """A seeded SQLite store, closed (as if the app were stopped)."""
    path = tmp_path / "live.db"
    store = SqliteStore(path)
    try:
        seed(store)
    finally:
        store.close()
    return path


def reads_of(path: Path) -> dict[str, Any]:
    store = SqliteStore(path)
    try:
        return deep_reads(store)
    finally:
        store.close()


# --- SQLite --------------------------------------------------------------------------------------------------------
def test_sqlite_backup_restored_into_a_fresh_store_has_every_row_and_the_same_deep_reads(
    seeded: Path, tmp_path: Path
) -> None:
    before = reads_of(seeded)
    counts = table_counts(seeded)
    assert before["balances"][ERASED], "the erased advocate's rewards stay under the tombstone"
    assert before["conversion"].attribution is not None
    assert counts["ledger_entries"] > 4
    assert counts["outbox"] == 3
    assert counts["erasure_tally"] > 0
    assert counts["clicks"] == 1, "the erased advocate's clicks are gone, the other advocate's stay"

    info = backup_sqlite(seeded, tmp_path / "backup.db")
    assert info.counts["table"] == counts
    assert info.schema_version == SCHEMA_VERSION
    assert info.path.stat().st_mode & 0o777 == 0o600, "a backup holds personal data"
    assert not list(tmp_path.glob("backup.db-*")), "the backup is one self-contained file"

    fresh = tmp_path / "fresh.db"
    restored = restore_sqlite(info.path, fresh)
    assert restored.kept is None
    assert table_counts(fresh) == counts
    assert reads_of(fresh) == before


def test_sqlite_backup_taken_while_a_writer_keeps_writing_is_one_instant(seeded: Path, tmp_path: Path) -> None:
    writer_store = SqliteStore(seeded)
    written: list[int] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            n = len(written)
            person = make_customer(id=f"w{n:06d}")
            # A customer and their event in one transaction: a copy that is one instant has both or neither.
            writer_store.write_batch(GraphBatch(customers=[person], events=[make_event(person, id=f"we{n:06d}")]))
            written.append(n)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        while len(written) < 50:
            assert thread.is_alive(), "the writer stopped before its 50th customer"
            threading.Event().wait(0.01)
        before = len(written)
        infos = [backup_sqlite(seeded, tmp_path / f"hot{n}.db") for n in range(5)]
        after = len(written)
    finally:
        stop.set()
        thread.join(timeout=30)
        writer_store.close()
    assert after > before, "the writer was still writing while the backups were taken"
    copied = []
    for info in infos:
        with contextlib.closing(sqlite3.connect(info.path)) as conn:
            people = conn.execute("SELECT count(*) FROM customers WHERE id LIKE 'w%'").fetchone()[0]
            events = conn.execute("SELECT count(*) FROM events WHERE id LIKE 'we%'").fetchone()[0]
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert people == events, f"{info.path.name}: {people} writer customers but {events} of their events"
        copied.append(people)
    assert before <= copied[0] <= copied[-1] <= after


def test_restoring_over_a_store_in_use_is_refused_and_changes_nothing(seeded: Path, tmp_path: Path) -> None:
    backup = backup_sqlite(seeded, tmp_path / "backup.db").path
    running = SqliteStore(seeded)
    try:
        running.upsert_customers([make_customer(id="late")])
        with pytest.raises(PolicyViolation, match="in use by another process"):
            restore_sqlite(backup, seeded)
        assert running.get_customer("late").id == "late"
    finally:
        running.close()
    assert not (tmp_path / f"live.db{BEFORE_RESTORE}").exists()
    assert not list(tmp_path.glob(".live.db.*")), "no temporary file is left behind"


def test_restoring_over_a_stopped_store_swaps_it_and_keeps_the_old_one(seeded: Path, tmp_path: Path) -> None:
    backup = backup_sqlite(seeded, tmp_path / "backup.db").path
    changed = SqliteStore(seeded)
    changed.upsert_customers([make_customer(id="after-backup")])
    changed.close()
    old_counts = table_counts(seeded)

    info = restore_sqlite(backup, seeded)

    kept = tmp_path / f"live.db{BEFORE_RESTORE}"
    assert info.kept == kept
    assert table_counts(kept) == old_counts, "the replaced store is kept whole, its log folded in"
    assert table_counts(seeded) == info.counts["table"] == table_counts(backup)
    assert table_counts(seeded)["customers"] == old_counts["customers"] - 1
    assert not list(tmp_path.glob("live.db-*")), "no log of the old store is left beside the new one"


def test_restoring_over_a_store_in_use_with_force_keeps_the_old_one_and_says_so(seeded: Path, tmp_path: Path) -> None:
    backup = backup_sqlite(seeded, tmp_path / "backup.db").path
    running = SqliteStore(seeded)
    try:
        running.upsert_customers([make_customer(id="late")])
        info = restore_sqlite(backup, seeded, force=True)
    finally:
        running.close()
    assert info.notes
    assert "restart them" in info.notes[0]
    assert table_counts(seeded) == table_counts(backup)
    assert "late" not in {c.id for c in reads_of(seeded)["customers"]}


def test_a_backup_from_a_newer_schema_is_refused(seeded: Path, tmp_path: Path) -> None:
    backup = backup_sqlite(seeded, tmp_path / "backup.db").path
    with contextlib.closing(sqlite3.connect(backup)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(InvalidInput, match=f"schema version {SCHEMA_VERSION + 1}, newer than"):
        restore_sqlite(backup, tmp_path / "fresh.db")
    assert not (tmp_path / "fresh.db").exists()


def test_a_corrupt_backup_is_refused_before_the_store_is_touched(seeded: Path, tmp_path: Path) -> None:
    backup = backup_sqlite(seeded, tmp_path / "backup.db").path
    data = bytearray(backup.read_bytes())
    page = 4096
    data[3 * page + 8 : 3 * page + 400] = b"\xa5" * 392
    backup.write_bytes(bytes(data))
    before = table_counts(seeded)
    with pytest.raises(InvalidInput, match="backup"):
        restore_sqlite(backup, seeded)
    assert table_counts(seeded) == before


def test_backup_never_creates_an_empty_store_nor_overwrites_a_backup(seeded: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no SQLite store"):
        backup_sqlite(tmp_path / "missing.db", tmp_path / "b.db")
    assert not (tmp_path / "missing.db").exists()
    first = backup_sqlite(seeded, tmp_path / "b.db")
    with pytest.raises(InvalidInput, match="already exists"):
        backup_sqlite(seeded, tmp_path / "b.db")
    assert backup_sqlite(seeded, tmp_path / "b.db", overwrite=True).counts == first.counts
    in_directory = backup_sqlite(seeded, tmp_path)
    assert in_directory.path.parent == tmp_path
    assert in_directory.path.name.startswith("live-")


def test_a_store_url_takes_the_backup_route_of_the_store_open_store_would_open(tmp_path: Path) -> None:
    absolute = tmp_path / "abs.db"
    assert store_route(f"sqlite:///{absolute}") == ("sqlite", str(absolute))
    assert store_route("sqlite:///relative.db") == ("sqlite", "relative.db")
    assert store_route("bolt://neo4j:secret@127.0.0.1:7687") == ("neo4j", "bolt://neo4j:secret@127.0.0.1:7687")
    with pytest.raises(InvalidInput, match="names no file"):
        store_route("sqlite:///")
    with pytest.raises(InvalidInput, match="not understood") as refused:
        store_route("mysql://root:secret@127.0.0.1/shop")
    assert "secret" not in str(refused.value)
    opened = open_store(f"sqlite:///{absolute}")
    try:
        assert opened.describe() == f"sqlite:///{absolute.as_posix()}"
    finally:
        opened.close()


# --- Neo4j values --------------------------------------------------------------------------------------------------
def test_every_neo4j_property_type_survives_json() -> None:
    from neo4j.spatial import CartesianPoint, WGS84Point
    from neo4j.time import Date, DateTime, Duration, Time

    paris = decode_value({"$datetime": "2024-10-27T02:30:00.123456789", "offset": 3600, "zone": "Europe/Paris"})
    values = [
        paris,
        decode_value({"$datetime": "2024-10-27T02:30:00", "offset": 7200, "zone": "Europe/Paris"}),
        decode_value({"$datetime": "2024-03-01T12:00:00.000000001", "offset": 19800}),
        DateTime(2024, 3, 1, 12, 0, 0, 7),
        Date(2024, 2, 29),
        Time(23, 59, 59, 999999999),
        decode_value({"$time": "12:00:00.000000007", "offset": 3600}),
        Duration(months=14, days=3, seconds=14706, nanoseconds=7),
        CartesianPoint((1.5, 2.0, 3.0)),
        WGS84Point((2.35, 48.85)),
        bytearray(b"\x00\xff"),
        [paris, paris],
        float("inf"),
        2**63 - 1,
        'text with "quotes" and é',
        [True, False],
        [],
    ]
    for value in values:
        text = json.dumps(encode_value(value), allow_nan=False)
        assert decode_value(json.loads(text)) == value, text
    assert paris.utcoffset() == timedelta(hours=1), "the second 02:30 of the night clocks go back"
    nan = decode_value(json.loads(json.dumps(encode_value(float("nan")))))
    assert nan != nan


# --- Neo4j ---------------------------------------------------------------------------------------------------------
PROBE = """
CREATE (a:BackupProbe {
    zoned: datetime('2024-10-27T02:30:00.123456789+01:00[Europe/Paris]'),
    offset: datetime('2024-03-01T12:00:00.000000001+05:30'),
    local: localdatetime('2024-03-01T12:00:00.000000001'), day: date('2024-02-29'),
    clock: time('12:00:00.000000007+01:00'), wall: localtime('23:59:59.999999999'),
    span: duration('P1Y2M3DT4H5M6.000000007S'), here: point({x: 1.5, y: 2.0, z: 3.0}),
    there: point({longitude: 2.35, latitude: 48.85}),
    times: [datetime('2024-03-01T12:00:00Z'), datetime('2024-03-02T12:00:00Z')],
    before_1970: datetime('1969-12-31T23:59:58.250000001Z'), utc_named: datetime('2024-03-01T12:00:00.5[UTC]'),
    far: datetime('9999-12-31T23:59:59.999999999Z'), early: datetime('0001-01-01T00:00:00Z'),
    london: datetime('2024-01-01T10:00:00[Europe/London]'),
    nan: 0.0 / 0.0, inf: 1.0 / 0.0, raw: $raw, big: 9007199254740993, text: 'é "quoted" \\n line'
})
CREATE (b:BackupProbe:Second {name: 'b'})
CREATE (a)-[:PROBED {at: datetime('2024-03-01T12:00:00.5Z'), weights: [0.5, 1.5]}]->(b)
CREATE (b)-[:PROBED]->(b)
"""


def whole_graph(driver: Driver) -> tuple[list[str], list[str]]:
    """Every node and relationship, property for property, independent of element ids."""
    nodes = {
        row["id"]: repr((sorted(row["labels"]), sorted(row["props"].items())))
        for row in query(driver, "MATCH (n) RETURN elementId(n) AS id, labels(n) AS labels, properties(n) AS props")
    }
    edges = [
        repr((row["type"], nodes[row["start"]], nodes[row["end"]], sorted(row["props"].items())))
        for row in query(
            driver,
            "MATCH (a)-[r]->(b) RETURN type(r) AS type, elementId(a) AS start, elementId(b) AS end, "
            "properties(r) AS props",
        )
    ]
    return sorted(nodes.values()), sorted(edges)


def wipe(driver: Driver) -> None:
    query(driver, "MATCH (n) DETACH DELETE n")


@contextlib.contextmanager
def empty_neo4j() -> Iterator[tuple[Neo4jStore, Driver]]:
    """The shared test database with nothing in it at all (`delete_all` leaves labels it does not know)."""
    with raw_driver() as driver:
        wipe(driver)
        store = open_neo4j()
        try:
            yield store, driver
        finally:
            store.close()


@pytest.mark.neo4j
def test_neo4j_dump_wipe_and_load_give_back_the_same_graph_and_deep_reads(tmp_path: Path) -> None:
    with empty_neo4j() as (store, driver):
        seed(store)
        query(driver, PROBE, raw=bytearray(b"\x00\x01\xfe\xff"))
        graph = whole_graph(driver)
        before = deep_reads(store)
        seen: list[tuple[str, int, int | None]] = []

        dumped = dump_neo4j(store, tmp_path / "graph.jsonl.gz", progress=lambda *step: seen.append(step))
        header = read_header(dumped.path)
        assert header["format"] == FORMAT
        assert header["counts"] == dumped.counts
        assert dumped.counts["label"]["Customer"] == 13
        assert dumped.counts["relationship type"]["PROBED"] == 2
        assert ("nodes", len(graph[0]), len(graph[0])) in seen

        wipe(driver)
        assert whole_graph(driver) == ([], [])
        loaded = load_neo4j(dumped.path, store, batch_size=7)

        assert loaded.counts == dumped.counts
        assert whole_graph(driver) == graph
        assert deep_reads(store) == before
        assert not query(driver, "MATCH (n:_AdvocacyRestore) RETURN n LIMIT 1")
        assert not query(driver, "SHOW CONSTRAINTS YIELD name WHERE name STARTS WITH 'advocacy_restore' RETURN name")
        with gzip.open(dumped.path, "rt", encoding="utf-8") as lines:
            assert (
                sum(1 for _ in lines) == 1 + dumped.counts["total"]["nodes"] + dumped.counts["total"]["relationships"]
            )


@pytest.mark.neo4j
def test_loading_into_a_non_empty_neo4j_is_refused_unless_told_to_wipe(tmp_path: Path) -> None:
    with empty_neo4j() as (store, driver):
        store.upsert_customers([make_customer(id="kept")])
        dumped = dump_neo4j(store, tmp_path / "one.jsonl.gz")
        store.upsert_customers([make_customer(id="newer")])

        with pytest.raises(PolicyViolation, match="not empty"):
            load_neo4j(dumped.path, store)
        assert {c.id for c in store.iter_customers()} == {"kept", "newer"}

        load_neo4j(dumped.path, store, wipe=True)
        assert {c.id for c in store.iter_customers()} == {"kept"}
        assert query(driver, "MATCH (n) RETURN count(n) AS n") == [{"n": 1}]


@pytest.mark.neo4j
def test_a_dump_missing_the_ends_of_a_relationship_is_refused(tmp_path: Path) -> None:
    with empty_neo4j() as (store, _):
        store.upsert_customers([make_customer(id=f"t{i}") for i in range(3)])
        store.add_influences([make_influence("t0", "t1"), make_influence("t1", "t2")])
        dumped = dump_neo4j(store, tmp_path / "full.jsonl.gz")
    with gzip.open(dumped.path, "rt", encoding="utf-8") as full:
        lines = full.readlines()
    cut = tmp_path / "cut.jsonl.gz"
    with gzip.open(cut, "wt", encoding="utf-8") as out:
        out.writelines(lines[:2] + lines[-1:])  # the header, one node, one relationship
    missing = r"1 INFLUENCES relationship\(s\) name a node the dump does not hold"
    with empty_neo4j() as (store, _), pytest.raises(InvalidInput, match=missing):
        load_neo4j(cut, store)


# --- the CLI -------------------------------------------------------------------------------------------------------
def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["backup", *args])


def test_cli_backs_up_and_restores_sqlite_and_refuses_a_store_in_use(seeded: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{seeded}"
    created = invoke("create", str(tmp_path / "cli.db"), "--store", url)
    assert created.exit_code == 0, created.output
    assert "ledger_entries" in created.stdout
    assert "bytes" in created.stdout

    fresh = tmp_path / "fresh.db"
    restored = invoke("restore", str(tmp_path / "cli.db"), "--store", f"sqlite:///{fresh}")
    assert restored.exit_code == 0, restored.output
    assert table_counts(fresh) == table_counts(seeded)

    running = SqliteStore(fresh)
    try:
        refused = invoke("restore", str(tmp_path / "cli.db"), "--store", f"sqlite:///{fresh}")
    finally:
        running.close()
    assert refused.exit_code == 1
    assert "in use by another process" in refused.stderr
    assert "Traceback" not in refused.output

    wrong = invoke("restore", str(tmp_path / "missing.db"), "--store", url)
    assert wrong.exit_code == 1
    assert "no backup at" in wrong.stderr


@pytest.mark.neo4j
def test_cli_dumps_and_restores_neo4j(tmp_path: Path) -> None:
    with empty_neo4j() as (store, driver):
        # Small on purpose: the whole programme's round trip is the test above; this one is about the commands.
        store.upsert_customers([make_customer(id=f"cli{i}") for i in range(5)])
        store.add_influences([make_influence(f"cli{i}", f"cli{i + 1}") for i in range(4)])
        store.save_campaign(make_campaign(id="cli-spring"))
        graph = whole_graph(driver)
    dump = tmp_path / "cli.jsonl.gz"
    created = invoke("create", str(dump), "--store", NEO4J_URL)
    assert created.exit_code == 0, created.output
    assert "Customer" in created.stdout
    assert "INFLUENCES" in created.stdout

    refused = invoke("restore", str(dump), "--store", NEO4J_URL)
    assert refused.exit_code == 1
    assert "not empty" in refused.stderr

    restored = invoke("restore", str(dump), "--store", NEO4J_URL, "--force")
    assert restored.exit_code == 0, restored.output
    with raw_driver() as driver:
        assert whole_graph(driver) == graph

    sqlite_target = invoke("restore", str(dump), "--store", f"sqlite:///{tmp_path / 'x.db'}")
    assert sqlite_target.exit_code == 1
    assert "is a Neo4j dump" in sqlite_target.stderr


def test_copies_are_not_left_behind_when_the_destination_directory_is_missing(seeded: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        backup_sqlite(seeded, tmp_path / "nowhere" / "b.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.db"]
