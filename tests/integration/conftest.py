"""Real services for integration tests: the Redis and Celery workers that `make test` provides and starts."""

from __future__ import annotations

import contextlib
import os
import signal
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


def start_worker(
    redis_url: str,
    log_path: Path,
    *,
    concurrency: int = 2,
    name: str = "test",
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a real `celery worker` process (prefork) on the test Redis and wait until it answers a ping.

    The worker leads its own process group, so `kill_worker` can SIGKILL it with its children, as a crash would.
    """
    env = {**os.environ, "ADVOCACY_REDIS__URL": redis_url, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "engine.celery_app",
                "worker",
                "--concurrency",
                str(concurrency),
                "--pool",
                "prefork",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "-n",
                f"{name}-{os.getpid()}@%h",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    from engine.celery_app import make_celery

    app = make_celery(Settings(redis=RedisSettings(url=redis_url)))
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"celery worker exited with {proc.returncode}:\n{log_path.read_text()}")
            replies = app.control.ping(timeout=1.0) or []
            if any(f"{name}-{os.getpid()}@" in next(iter(reply)) for reply in replies):
                return proc
        proc.kill()
        pytest.fail(f"celery worker did not answer within 90 s:\n{log_path.read_text()}")
    finally:
        app.close()


def kill_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its pool children at once: no clean shutdown, no acks, like a machine dying."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


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
