"""The API while Neo4j, then Redis, is down: alive but not ready, 503 problems with `Retry-After` instead of errors
or hangs, and serving again by itself once the service is back, with no restart of the app.

The app is the real one (`tests.api_support.api_client`, lifespan included, signed in with an admin key) on the
private servers; Redis is configured through the environment (contact limiter on db 1, Celery broker on db 0).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient

from graph.factory import open_store
from graph.model import ContactChannel, Customer, utcnow
from graph.outreach import Audience, AudienceKind, Outreach
from tests.api_support import PROBLEM_JSON, api_client
from tests.faults.conftest import Neo4jServer, RedisServer
from tests.program_factories import make_campaign, make_code

pytestmark = pytest.mark.slow

CODE = "ADAFAULTS"
UNSEEN_CODE = "ADAUNSEEN"
"""A code no request read before Neo4j went down, so the app has no copy of it."""
DOWN_ANSWER_S = 30.0
"""A request while a dependency is down answers within this (the Neo4j driver retries for 10 s, then gives up)."""
PROBE_S = 5.0
"""A probe answers within this whatever the dependencies do: an orchestrator's probe has a short timeout."""
CROWD = 40
"""Requests at once: as many as the app's thread pool has threads."""


def seed(store_url: str) -> None:
    store = open_store(store_url)
    try:
        store.upsert_customers(
            [
                Customer(
                    id="ada",
                    name="Ada",
                    email="ada@example.org",
                    consent={ContactChannel.EMAIL: True},
                    created_at=utcnow() - timedelta(days=400),
                )
            ]
        )
        campaign = make_campaign(id="spring", hold_days=0)
        store.save_campaign(campaign)
        store.create_code(make_code("ada", campaign, code=CODE))
        store.create_code(make_code("ada", campaign, code=UNSEEN_CODE))
        store.save_outreach(
            Outreach(
                id="push",
                name="push",
                campaign_id="spring",
                audience=Audience(kind=AudienceKind.CUSTOMERS, customer_ids=("ada",)),
                created_at=utcnow(),
            )
        )
    finally:
        store.close()


def assert_unavailable(response: httpx2.Response) -> dict[str, object]:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert int(response.headers["retry-after"]) > 0
    assert "Traceback" not in response.text
    body: dict[str, object] = response.json()
    assert body["type"] == "urn:advocacy:problem:store-unavailable"
    return body


def timed(client: TestClient, method: str, path: str, *, within_s: float = DOWN_ANSWER_S) -> httpx2.Response:
    started = time.monotonic()
    response: httpx2.Response = client.request(method, path, follow_redirects=False)
    took = time.monotonic() - started
    assert took < within_s, f"{method} {path} took {took:.1f} s while a dependency was down (at most {within_s:g})"
    return response


def ready_again(client: TestClient, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (status := client.get("/readyz").status_code) != 200:
        assert time.monotonic() < deadline, f"/readyz still {status} {timeout_s:g} s after the service came back"
        time.sleep(0.5)


@pytest.mark.neo4j
@pytest.mark.timeout(300)
def test_with_neo4j_down_the_api_answers_503_problems_and_recovers_without_a_restart(
    fresh_neo4j: Neo4jServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Links whose code the app read shortly before keep redirecting (their clicks wait in memory and are written
    once Neo4j is back); everything else that needs the store answers 503 until then."""
    monkeypatch.setenv("ADVOCACY_REFERRAL__LINK_CACHE_S", "300")  # "shortly before", however slow the machine
    seed(fresh_neo4j.url)
    with api_client(fresh_neo4j.url) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/v1/customers/ada").json()["customer"]["id"] == "ada"
        assert client.get(f"/r/{CODE}", follow_redirects=False).status_code == 302
        clicks = client.app.state.clicks  # type: ignore[attr-defined]
        assert clicks.flush(10)

        fresh_neo4j.stop(crash=True)
        # Clients keep calling: each request waits on the dead store (the driver retries for 10 s), and together
        # they hold every thread of the app's pool. The probes must still answer at once.
        crowd: list[httpx2.Response] = []
        paths = ["/v1/customers/ada"] * (CROWD - 4) + [f"/r/{UNSEEN_CODE}"] * 4
        callers = [threading.Thread(target=lambda p=path: crowd.append(timed(client, "GET", p))) for path in paths]
        for caller in callers:
            caller.start()
        time.sleep(1.0)
        assert timed(client, "GET", "/healthz", within_s=PROBE_S).status_code == 200
        ready = assert_unavailable(timed(client, "GET", "/readyz", within_s=PROBE_S))
        assert ready["dependency"] == "store"
        assert f"127.0.0.1:{fresh_neo4j.port}" in str(ready["detail"])
        followed = [timed(client, "GET", f"/r/{CODE}", within_s=PROBE_S) for _ in range(3)]
        for caller in callers:
            caller.join(timeout=120)
        assert len(crowd) == CROWD
        for response in crowd:
            assert_unavailable(response)
        assert [r.status_code for r in followed] == [302] * 3, [r.text for r in followed]
        assert clicks.pending == 3

        fresh_neo4j.start()
        ready_again(client)
        assert clicks.flush(30)
        assert client.get("/v1/customers/ada").json()["customer"]["id"] == "ada"
        assert client.get(f"/r/{UNSEEN_CODE}", follow_redirects=False).status_code == 302

    store = open_store(fresh_neo4j.url)
    try:
        stored = [store.get_click(str(r.cookies["adv_click"])) for r in followed]
    finally:
        store.close()
    assert all(click is not None and click.code == CODE for click in stored), stored


@pytest.mark.redis
@pytest.mark.timeout(180)
def test_with_redis_down_the_api_is_not_ready_names_redis_and_recovers_without_a_restart(
    fresh_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADVOCACY_CONTACT__BACKEND", "redis")
    monkeypatch.setenv("ADVOCACY_CONTACT__REDIS_DB_URL", fresh_redis.url(1))
    monkeypatch.setenv("ADVOCACY_CONTACT__DISPATCH", "celery")
    monkeypatch.setenv("ADVOCACY_REDIS__URL", fresh_redis.url(0))
    store_url = f"sqlite:///{tmp_path / 'api.db'}"
    seed(store_url)
    kit = "/v1/customers/ada/kit?campaign_id=spring"
    with api_client(store_url) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get(kit).status_code == 200

        fresh_redis.stop(crash=True)
        assert timed(client, "GET", "/healthz").status_code == 200
        ready = assert_unavailable(timed(client, "GET", "/readyz"))
        assert ready["dependency"] == "redis"
        detail = str(ready["detail"])
        assert f"127.0.0.1:{fresh_redis.port}" in detail
        assert "contact limiter" in detail
        assert "task broker" in detail
        assert_unavailable(timed(client, "GET", kit))
        assert timed(client, "GET", f"/r/{CODE}").status_code == 302, "links need only the store"
        assert client.get("/v1/customers/ada").status_code == 200

        fresh_redis.start()
        ready_again(client)
        assert client.get(kit).status_code == 200


@pytest.mark.redis
@pytest.mark.timeout(180)
def test_with_the_broker_down_a_launch_is_a_503_and_launching_works_again_once_it_is_back(
    fresh_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADVOCACY_CONTACT__DISPATCH", "celery")
    monkeypatch.setenv("ADVOCACY_REDIS__URL", fresh_redis.url(0))
    store_url = f"sqlite:///{tmp_path / 'api.db'}"
    seed(store_url)
    with api_client(store_url) as client:
        assert client.get("/readyz").status_code == 200
        fresh_redis.stop(crash=True)
        assert_unavailable(timed(client, "POST", "/v1/outreach/push/launch"))
        assert client.get("/v1/outreach/push").json()["status"] == "draft", "nothing launched without a broker"

        fresh_redis.start()
        ready_again(client)
        launched = client.post("/v1/outreach/push/launch")
        assert launched.status_code == 202, launched.text
        assert launched.json()["task_id"]
