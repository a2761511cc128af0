"""Probes, problem details for failures, and the OpenAPI document."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.auth import MARKETER_COOKIE
from engine.access import issue_session
from graph.model import utcnow
from graph.sqlite_store import SqliteStore
from tests.api_support import PROBLEM_JSON, api_client, sqlite_url

UNREACHABLE_NEO4J = "bolt://127.0.0.1:1"  # nothing listens on port 1


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with api_client(sqlite_url(tmp_path)) as c:
        yield c


@pytest.fixture
def down() -> Iterator[TestClient]:
    """A client holding a well-formed key: checking it needs the store, which is down, so the answer is 503."""
    with api_client(UNREACHABLE_NEO4J, scopes=()) as c:
        c.headers["Authorization"] = "Bearer adv_0123456789ab_" + "k" * 43
        yield c


def test_healthz_and_readyz_answer_when_the_store_is_up(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["store"].startswith("sqlite:///")


def test_with_an_unreachable_store_the_app_starts_and_is_alive_but_not_ready(down: TestClient) -> None:
    assert down.get("/healthz").status_code == 200
    ready = down.get("/readyz")
    assert ready.status_code == 503
    assert ready.headers["content-type"].startswith(PROBLEM_JSON)
    assert int(ready.headers["retry-after"]) > 0
    body = ready.json()
    assert body["type"] == "urn:advocacy:problem:store-unavailable"
    assert body["dependency"] == "store"
    assert "store" in body["detail"]
    assert "127.0.0.1:1" in body["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/customers"),
        ("GET", "/v1/customers/ada"),
        ("DELETE", "/v1/customers/ada"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/graph/view"),
        ("GET", "/v1/analysis/runs"),
    ],
)
def test_with_an_unreachable_store_api_routes_answer_503_with_retry_after(
    down: TestClient, method: str, path: str
) -> None:
    response = down.request(method, path)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert int(response.headers["retry-after"]) > 0
    assert "Traceback" not in response.text


def test_with_an_unreachable_store_the_dashboard_is_a_503_page_not_a_stack_trace(down: TestClient) -> None:
    """A signed-in marketer (checking the session's key needs the store) sees a 503 page, not a sign-in loop."""
    settings = down.app.state.settings  # type: ignore[attr-defined]
    session, _ = issue_session(
        settings.api.session_secret.get_secret_value(), "marketer", "0123456789ab", now=utcnow(), ttl=timedelta(hours=1)
    )
    down.cookies.set(MARKETER_COOKIE, session)
    response = down.get("/", headers={"accept": "text/html"})
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert "Retry-After" in response.headers
    assert "not answering" in response.text
    assert "Traceback" not in response.text


def test_a_store_that_fails_after_startup_answers_503(client: TestClient) -> None:
    client.app.state.store_holder.get().close()  # type: ignore[attr-defined]
    response = client.get("/v1/stats")
    assert response.status_code == 503
    assert response.headers["retry-after"]


def test_an_unexpected_exception_is_a_500_problem_without_internals(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(self: SqliteStore) -> None:
        raise RuntimeError("secret internal state /etc/passwd")

    monkeypatch.setattr(SqliteStore, "stats", explode)
    response = client.get("/v1/stats")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["type"] == "urn:advocacy:problem:internal"
    assert "secret" not in response.text
    assert "Traceback" not in response.text


def test_an_unknown_route_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.json()["instance"] == "/v1/nothing-here"


@pytest.mark.parametrize("body", [b"\x80{}", b"{"])
def test_a_body_that_is_not_json_text_is_the_invalid_input_problem(client: TestClient, body: bytes) -> None:
    """Schemathesis found bytes that are not UTF-8 answered with FastAPI's bare, undocumented 400."""
    response = client.put("/v1/customers/c1", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    problem = response.json()
    assert problem["type"] == "urn:advocacy:problem:validation"
    assert [error["kind"] for error in problem["errors"]] == ["json_invalid"]


def test_every_problem_response_documents_the_problem_shape_under_problem_json(client: TestClient) -> None:
    """Documented under application/json only, a problem's shape was never checked against what is sent."""
    spec = client.get("/openapi.json").json()
    documented = [
        response["content"][PROBLEM_JSON]
        for item in spec["paths"].values()
        for op in item.values()
        for response in op["responses"].values()
        if PROBLEM_JSON in response.get("content", {})
    ]
    assert len(documented) > 100
    assert all(content["schema"] == {"$ref": "#/components/schemas/Problem"} for content in documented)
    assert "Problem" in spec["components"]["schemas"]


def test_every_api_operation_is_documented_with_tag_summary_and_problem_responses(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    assert {(path, method) for path, method, _ in operations} >= {
        ("/v1/customers", "get"),
        ("/v1/customers/{customer_id}", "get"),
        ("/v1/customers/{customer_id}", "put"),
        ("/v1/customers/{customer_id}", "delete"),
        ("/v1/import", "post"),
        ("/v1/stats", "get"),
        ("/v1/analysis/runs", "get"),
        ("/v1/analysis/runs/{run_id}", "get"),
        ("/v1/graph/view", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    }
    for path, method, op in operations:
        assert op.get("tags"), (path, method)
        assert op.get("summary"), (path, method)
        if path.startswith("/v1/"):
            assert "503" in op["responses"], (path, method)
            assert PROBLEM_JSON in op["responses"]["503"]["content"], (path, method)
    put_body = spec["paths"]["/v1/customers/{customer_id}"]["put"]["requestBody"]["content"]["application/json"]
    assert put_body["examples"]["customer"]["value"]["id"] == "cust-0042"
    schemas = spec["components"]["schemas"]
    for name in ("CustomerPage", "CustomerDetail", "GraphView", "ImportResult", "Problem"):
        assert schemas[name].get("examples"), name


def test_a_started_app_freezes_its_startup_heap_once_per_process(tmp_path: Path) -> None:
    """Full collections walking the startup heap were the kit's p99 under load (see `api.app`). In a fresh
    interpreter, as a uvicorn worker starts: frozen after the first start, and a second app freezes nothing more."""
    script = f"""
import gc
from fastapi.testclient import TestClient
from api.app import create_app
from engine.settings import Settings
assert gc.get_freeze_count() == 0
with TestClient(create_app(Settings(store={sqlite_url(tmp_path)!r}))) as client:
    assert client.get("/healthz").status_code == 200
first = gc.get_freeze_count()
with TestClient(create_app(Settings(store={sqlite_url(tmp_path)!r}))):
    pass
print(first, gc.get_freeze_count())
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    first, second = map(int, done.stdout.split())
    assert first > 100_000
    assert second - first < 500, "a second app's start froze its objects too (~1,700 more)"
