"""What only the SQLite store promises about the programme: files from schema 1 migrate, erasure reaches the bytes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from graph.program import ConversionStatus, Signal, SignalKind
from graph.sqlite_store import SCHEMA_VERSION, SqliteStore
from tests.contract.conftest import convert, set_scene, sqlite_file_of_schema, sqlite_schema_of
from tests.factories import make_customer
from tests.program_factories import make_campaign, make_code, make_order


def test_a_file_of_schema_1_migrates_in_place_and_keeps_its_customers(tmp_path: Path) -> None:
    path = sqlite_file_of_schema(tmp_path / "v1.db", 1)

    store = SqliteStore(path)
    try:
        assert store.get_customer("ada").id == "ada"
        assert store.record_order(make_order("ada")).status is ConversionStatus.PENDING
    finally:
        store.close()
    assert sqlite_schema_of(path) == SCHEMA_VERSION


def test_a_file_of_schema_4_finds_an_advocates_code_in_a_campaign_by_one_index(tmp_path: Path) -> None:
    """Every kit asks for the advocate's code in its campaign; SQLite (no statistics) used to pick the campaign's
    index and read all of the campaign's codes. The plan is SQLite's own answer, not a timing."""
    path = sqlite_file_of_schema(tmp_path / "v4.db", 4)
    store = SqliteStore(path)
    try:
        ada, bob = make_customer(id="ada"), make_customer(id="bob")
        store.upsert_customers([ada, bob])
        campaign = make_campaign()
        store.save_campaign(campaign)
        mine = store.create_code(make_code(ada, campaign))
        store.create_code(make_code(bob, campaign))
        assert store.list_codes(customer_id="ada", campaign_id=campaign.id) == [mine]
    finally:
        store.close()
    assert sqlite_schema_of(path) == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    try:
        plan = " ".join(
            row[-1]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT code FROM codes WHERE customer_id = ? AND campaign_id = ? "
                "ORDER BY created_at_us, code",
                ("ada", campaign.id),
            )
        )
    finally:
        conn.close()
    assert "codes_by_advocate (customer_id=? AND campaign_id=?)" in plan, plan


def test_erasure_leaves_no_programme_data_of_the_person_in_the_files_bytes(tmp_path: Path) -> None:
    path = tmp_path / "erase.db"
    store = SqliteStore(path)
    try:
        scene = set_scene(store)
        victim = make_customer(id="zoe-4711", email="zoe.q@example.org", phone="+33612345678")
        store.upsert_customers([victim])
        personal = (Signal(kind=SignalKind.EMAIL, value="zoe.q@example.org"),)
        convert(store, scene, friend=victim, signals=personal)
        convert(store, scene, friend=victim, signals=personal)
        assert b"zoe.q@example.org" in file_bytes(path), "the search must see the data first"

        store.erase_customer(victim.id)
    finally:
        store.close()

    raw = file_bytes(path)
    for needle in ("zoe-4711", "zoe.q@example.org", "+33612345678"):
        assert needle.encode() not in raw


def file_bytes(path: Path) -> bytes:
    """The database file and its write-ahead log, as they are on disk."""
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))
