"""Real services for integration tests: the Redis and Celery workers that `make test` provides and starts.

`start_worker`, `kill_worker` and `stop_worker` are `engine.worker_process`'s (the fault tests and the benches
start workers the same way), named here for the tests that import them from this module.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.settings import RedisSettings, Settings
from engine.worker_process import kill_worker as kill_worker
from engine.worker_process import start_worker as start_worker
from engine.worker_process import stop_worker as stop_worker


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis (a separate database number, flushed), or a clear failure when it is not running."""
    url = os.environ.get("ADVOCACY_TEST_REDIS_URL", "redis://127.0.0.1:6390/0").rsplit("/", 1)[0] + "/5"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {url} ({exc}); run `make redis-up` or deselect with -m 'not redis'")
    finally:
        client.close()
    return url


@pytest.fixture
def celery_settings(redis_url: str) -> Settings:
    return Settings(redis=RedisSettings(url=redis_url))


@pytest.fixture
def celery_worker(redis_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` process (prefork, 2 processes) on the test Redis; stopped after the test."""
    proc = start_worker(redis_url, tmp_path / "worker.log")
    try:
        yield proc
    finally:
        stop_worker(proc)


@pytest.fixture
def celery_workers(redis_url: str, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two real worker processes with two prefork children each: four tasks run at once, racing."""
    procs = [start_worker(redis_url, tmp_path / f"worker{n}.log", name=f"race{n}") for n in range(2)]
    try:
        yield procs
    finally:
        for proc in procs:
            stop_worker(proc)
