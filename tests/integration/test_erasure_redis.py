"""Erasing a customer forgets their contact counts in the Redis limiter (`engine.erasure`).

Redis runs on database 14 of ADVOCACY_TEST_REDIS_URL, flushed per test; the store is SQLite in a temporary file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.erasure import erase_customer
from engine.limits import RedisContactLimiter
from graph.outreach import customer_key
from graph.sqlite_store import SqliteStore
from tests.factories import make_customer
from tests.unit.test_erasure import FRIEND, capped, contacted_once

pytestmark = pytest.mark.redis


def redis_url() -> str:
    return os.environ.get("ADVOCACY_TEST_REDIS_URL", "redis://127.0.0.1:6390/0").rsplit("/", 1)[0] + "/14"


@pytest.fixture
def client() -> Iterator[redis.Redis[bytes]]:
    opened: redis.Redis[bytes] = redis.Redis.from_url(redis_url(), socket_connect_timeout=2)
    try:
        opened.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {redis_url()} ({exc}); run `make redis-up` or deselect -m 'not redis'")
    try:
        yield opened
    finally:
        opened.flushdb()
        opened.close()


def test_erasure_deletes_the_customers_counts_from_redis_and_nobody_elses(
    client: redis.Redis[bytes], tmp_path: Path
) -> None:
    store = SqliteStore(tmp_path / "advocacy.db")
    limiter = RedisContactLimiter(client)
    try:
        store.upsert_customers([make_customer(id="zoe-4711"), make_customer(id="bob")])
        zoe, bob = customer_key("zoe-4711"), customer_key("bob")
        contacted_once(limiter, zoe, bob, FRIEND)
        assert any(b"zoe-4711" in key for key in client.scan_iter()), "the search must see the counts first"

        erase_customer(store, limiter, "zoe-4711")

        assert not any(b"zoe-4711" in key for key in client.scan_iter())
        assert not capped(limiter, zoe)
        assert capped(limiter, bob)
        assert capped(limiter, FRIEND)
    finally:
        limiter.close()
        store.close()
