"""Real services for integration tests: the Redis and Celery workers that `make test` provides and starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.settings import RedisSettings, Settings

ROOT = Path(__file__).resolve().parents[2]


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
    env = {**os.environ, "ADVOCACY_REDIS__URL": redis_url, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "engine.celery_app", "worker", "--concurrency", "2",
         "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
         "-n", f"test-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    from engine.celery_app import make_celery

    app = make_celery(Settings(redis=RedisSettings(url=redis_url)))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"celery worker exited with {proc.returncode}:\n{(tmp_path / 'worker.log').read_text()}")
        if app.control.ping(timeout=1.0):
            break
    else:
        proc.kill()
        pytest.fail(f"celery worker did not answer within 90 s:\n{(tmp_path / 'worker.log').read_text()}")
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        app.close()
