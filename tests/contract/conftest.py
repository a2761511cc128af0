"""The one `store` fixture every contract test runs against: the SQLite file and the real Neo4j.

Neo4j is never skipped silently: when it is down, its half of the suite fails and says how to start it or
deselect it.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from graph.errors import StoreUnavailable
from graph.sqlite_store import SqliteStore
from graph.store import GraphStore

NEO4J_URL = os.environ.get("ADVOCACY_TEST_NEO4J_URL", "bolt://127.0.0.1:7687")


def open_neo4j() -> GraphStore:
    from graph.neo4j_store import Neo4jStore

    try:
        return Neo4jStore(NEO4J_URL, database="neo4j")
    except StoreUnavailable as exc:
        pytest.fail(
            f"Neo4j is not reachable at {NEO4J_URL}: {exc}\n"
            "run `make neo4j-up` (or set ADVOCACY_TEST_NEO4J_URL), or deselect these tests with -m 'not neo4j'",
            pytrace=False,
        )


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GraphStore]:
    if request.param == "sqlite":
        opened: GraphStore = SqliteStore(tmp_path / "contract.db")
    else:
        opened = open_neo4j()
        opened.delete_all()
    try:
        yield opened
    finally:
        opened.close()


def find_stored(store: GraphStore, needles: list[str]) -> list[str]:
    """Where any of `needles` still occurs in anything the store holds, read behind the store's back."""
    if isinstance(store, SqliteStore):
        return _find_in_sqlite(Path(store.describe().removeprefix("sqlite:///")), needles)
    return _find_in_neo4j(needles)


def _find_in_sqlite(path: Path, needles: list[str]) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        assert tables, f"no tables found in {path}"
        found: list[str] = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                found.extend(f"{table}: {value}" for value in row if any(n in str(value) for n in needles))
        return found
    finally:
        conn.close()


# Filtered by the server: the test database may hold other people's nodes, and shipping them all is slow.
_NEO4J_FIND = """
MATCH {pattern}
UNWIND keys(x) AS key
WITH x, key, x[key] AS value
UNWIND CASE WHEN value IS :: LIST<ANY> THEN value ELSE [value] END AS item
WITH x, key, toStringOrNull(item) AS text
WHERE any(needle IN $needles WHERE key CONTAINS needle OR text CONTAINS needle
          OR any(name IN {names} WHERE name CONTAINS needle))
RETURN {names} AS names, key, text LIMIT 200
"""


def _find_in_neo4j(needles: list[str]) -> list[str]:
    from neo4j import GraphDatabase

    parts = urlsplit(NEO4J_URL)
    auth: tuple[str, str] | None = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    found: list[str] = []
    with GraphDatabase.driver(parts.geturl(), auth=auth) as driver:
        for pattern, names in (("(x)", "labels(x)"), ("()-[x]->()", "[type(x)]")):
            query = _NEO4J_FIND.format(pattern=pattern, names=names)
            records, _, _ = driver.execute_query(query, needles=needles, database_="neo4j")
            found.extend(f"{record['names']}.{record['key']}: {record['text']}" for record in records)
    return found
