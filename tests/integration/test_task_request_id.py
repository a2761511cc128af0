"""A request's id follows the task it publishes into a real Celery worker, whose log line and counters show it."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from engine.celery_app import make_celery
from engine.settings import RedisSettings, Settings
from tests.api_support import api_client, sqlite_url
from tests.integration.conftest import kill_worker, start_worker

pytestmark = [pytest.mark.redis, pytest.mark.celery]

TASK = "advocacy.advance_rewards"
"""Cheap: it opens the SQLite store and finds no reward to move."""


@pytest.fixture
def broker_url() -> Iterator[str]:
    """Redis database 13, flushed before and after."""
    url = os.environ.get("ADVOCACY_TEST_REDIS_URL", "redis://127.0.0.1:6390/0").rsplit("/", 1)[0] + "/13"
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {url} ({exc}); run `make redis-up` or deselect with -m 'not redis'")
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


def wait_for_line(log_path: Path, *needles: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if all(needle in line for needle in needles):
                return line
        time.sleep(0.2)
    pytest.fail(f"no worker log line with {needles} in {timeout_s} s:\n{log_path.read_text(errors='replace')}")


def test_a_task_published_while_serving_a_request_logs_under_its_request_id(broker_url: str, tmp_path: Path) -> None:
    store_url = sqlite_url(tmp_path)
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    log_path = tmp_path / "worker.log"
    worker = start_worker(
        broker_url,
        log_path,
        concurrency=1,
        name="reqid",
        env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "ADVOCACY_API__LOG_FORMAT": "json"},
    )
    celery = make_celery(Settings(redis=RedisSettings(url=broker_url)))
    request_id = f"it-{uuid.uuid4().hex[:12]}"
    try:
        with api_client(store_url) as client:
            app = cast(FastAPI, client.app)

            def publish() -> dict[str, Any]:
                return {"task_id": celery.send_task(TASK, kwargs={"store_url": store_url}).id}

            app.add_api_route("/test-publish", publish, methods=["POST"])
            response = client.post("/test-publish", headers={"X-Request-ID": request_id})
        task_id = response.json()["task_id"]
        assert celery.AsyncResult(task_id).get(timeout=60) == []

        line = json.loads(wait_for_line(log_path, task_id, "succeeded"))
        assert line["request_id"] == request_id
        assert line["task_name"] == TASK
        assert line["task_id"] == task_id
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics_dir))  # type: ignore[no-untyped-call]
        assert registry.get_sample_value("advocacy_celery_tasks_total", {"task": TASK, "outcome": "success"}) == 1
    finally:
        celery.close()
        kill_worker(worker)
