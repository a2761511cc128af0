"""A real `celery worker` process for the integration tests, the fault tests and the benches, started one way.

The worker leads its own process group (`start_new_session`), so `kill_worker` can SIGKILL it with its prefork
children at once, as a crash would, and `stop_worker` can finish what a warm shutdown leaves hanging.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import redis
from kombu.exceptions import OperationalError

from engine.celery_app import make_celery
from engine.settings import RedisSettings, Settings

ROOT: Final = Path(__file__).resolve().parents[1]


def start_worker(
    broker_url: str,
    log_path: Path,
    *,
    concurrency: int = 2,
    name: str = "worker",
    env: Mapping[str, str] | None = None,
    timeout_s: float = 90.0,
) -> subprocess.Popen[bytes]:
    """Start `celery worker` (prefork) on `broker_url`, its output appended to `log_path`, and wait for its ping.

    A broker that has just restarted (the ping's connection closed under it) is asked again. Raises
    `RuntimeError` with the worker's log if it exits or does not answer in `timeout_s`; it is killed then, never
    left running.
    """
    node = f"{name}-{os.getpid()}@"
    command = [sys.executable, "-m", "celery", "-A", "engine.celery_app", "worker", "--concurrency", str(concurrency)]
    command += ["--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "-n", node + "%h"]
    environment = {**os.environ, "ADVOCACY_REDIS__URL": broker_url, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments, no shell
            command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {proc.returncode}:\n{log_path.read_text()}")
            app = make_celery(Settings(redis=RedisSettings(url=broker_url)))
            try:
                replies = app.control.ping(timeout=1.0) or []
            except (redis.ConnectionError, OperationalError, OSError):
                replies = []
                time.sleep(0.2)
            finally:
                app.close()
            if any(node in next(iter(reply)) for reply in replies):
                return proc
        raise RuntimeError(f"celery worker did not answer within {timeout_s:g} s:\n{log_path.read_text()}")
    except BaseException:
        kill_worker(proc)
        raise


def kill_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its pool children at once: no clean shutdown, no acks, like a machine dying."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def stop_worker(proc: subprocess.Popen[bytes], *, timeout_s: float = 60.0) -> None:
    """A warm shutdown (SIGTERM: finish the tasks in hand), killed with its children only if it hangs."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_worker(proc)
