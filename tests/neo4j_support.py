"""The test Neo4j: where it is, how to open it (failing clearly when it is down), and raw queries behind the store."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from neo4j import Driver, GraphDatabase

from graph.errors import StoreUnavailable
from graph.neo4j_store import Neo4jStore

NEO4J_URL = os.environ.get("ADVOCACY_TEST_NEO4J_URL", "bolt://127.0.0.1:7687")


def open_neo4j() -> Neo4jStore:
    """Neo4j is never skipped silently: when it is down the test fails and says how to start it or deselect it."""
    try:
        return Neo4jStore(NEO4J_URL, database="neo4j")
    except StoreUnavailable as exc:
        pytest.fail(
            f"Neo4j is not reachable at {NEO4J_URL}: {exc}\n"
            "run `make neo4j-up` (or set ADVOCACY_TEST_NEO4J_URL), or deselect these tests with -m 'not neo4j'",
            pytrace=False,
        )


def query(driver: Driver, text: str, **params: Any) -> list[dict[str, Any]]:
    """Run Cypher on the raw driver, as a marketer would, and return plain records."""
    records, _, _ = driver.execute_query(text, params, database_="neo4j")
    return [record.data() for record in records]


@contextmanager
def fresh_neo4j() -> Iterator[Neo4jStore]:
    """The test Neo4j, emptied first (the tests that use it run one at a time)."""
    opened = open_neo4j()
    opened.delete_all()
    try:
        yield opened
    finally:
        opened.close()


@contextmanager
def neo4j_workers(n: int) -> Iterator[list[Neo4jStore]]:
    """`n` stores, each with its own driver, as separate worker processes would have."""
    opened: list[Neo4jStore] = []
    try:
        opened.extend(open_neo4j() for _ in range(n))
        yield opened
    finally:
        for worker in opened:
            worker.close()


@contextmanager
def raw_driver() -> Iterator[Driver]:
    """A raw driver, to hold locks and look at the graph behind the store's back."""
    with GraphDatabase.driver(NEO4J_URL) as raw:
        yield raw


def hold_while(driver: Driver, hold: Callable[[Any], None], call: Callable[[], Any]) -> tuple[bool, Any]:
    """Run `hold` in an open transaction, start `call` in a thread, and commit a second later.

    Returns whether `call` was still waiting when the transaction committed, and what it returned.
    """
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", call()))
    with driver.session(database="neo4j") as session, session.begin_transaction() as tx:
        hold(tx)
        thread.start()
        thread.join(timeout=1.0)
        waited = thread.is_alive()
        tx.commit()
    thread.join(timeout=30)
    return waited, outcome.get("result")
