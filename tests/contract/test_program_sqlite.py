"""What only the SQLite store promises about the programme: files from schema 1 migrate, erasure reaches the bytes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from graph.program import ConversionStatus, Signal, SignalKind
from graph.sqlite_store import _MIGRATIONS, SCHEMA_VERSION, SqliteStore
from tests.contract.conftest import convert, set_scene
from tests.factories import make_customer
from tests.program_factories import make_order


def test_a_file_of_schema_1_migrates_in_place_and_keeps_its_customers(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    try:
        for statement in _MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO customers (id, locale, timezone, consent, attributes) VALUES ('ada', 'en', 'UTC', '{}', '{}')"
        )
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
    finally:
        conn.close()

    store = SqliteStore(path)
    try:
        assert store.get_customer("ada").id == "ada"
        assert store.record_order(make_order("ada")).status is ConversionStatus.PENDING
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


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
