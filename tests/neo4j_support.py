"""The test Neo4j: where it is, how to open it (failing clearly when it is down), and raw queries behind the store."""

from __future__ import annotations

import os
from typing import Any

import pytest
from neo4j import Driver

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
