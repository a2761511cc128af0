"""OWASP API4, unrestricted resource consumption: bodies, batches and pages have ceilings.

A body over the limit must be refused with 413 whether its size is declared (`Content-Length`) or streamed
(chunked), before the app buffers and parses it; a batch holds at most `MAX_BATCH` rows; every page size or count
in a query has a maximum, and a million is refused; hostile JSON (deep nesting, giant numbers) is a 4xx, never a 500.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.schemas_customers import MAX_BATCH
from engine.settings import Settings
from engine.webhooks import sign
from graph.model import utcnow
from tests.api_support import PROBLEM_JSON
from tests.security.support import seeded_app

SPEC: Final = create_app(Settings(store="sqlite:///unused.db")).openapi()
DEFAULT_LIMIT: Final = 10 * 2**20
"""What a sane JSON API accepts by default; `ApiSettings.max_body_bytes` overrides it once the setting exists."""
UNBOUNDED_ON_PURPOSE: Final = {"seed": "a random seed, not a size", "max_per_community": "a cap on picks, not a size"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with seeded_app(tmp_path_factory.mktemp("limits"), campaign=False) as c:
        yield c


def body_limit(client: TestClient) -> int:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    return int(getattr(settings.api, "max_body_bytes", DEFAULT_LIMIT))


def oversized(limit: int) -> bytes:
    """A JSON object one MiB over `limit` that would otherwise fail validation cheaply (an unknown field)."""
    return b'{"padding": "' + b"x" * (limit + 2**20) + b'"}'


def streamed(body: bytes, chunk: int = 2**20) -> Iterator[bytes]:
    for start in range(0, len(body), chunk):
        yield body[start : start + chunk]


def customer_count(client: TestClient) -> int:
    count: int = client.get("/v1/stats").json()["customers"]
    return count


@pytest.mark.parametrize("path", ["/v1/import", "/v1/relationships", "/v1/webhooks/events"])
def test_a_body_declared_over_the_limit_is_refused_with_a_413_problem(client: TestClient, path: str) -> None:
    response = client.post(path, content=oversized(body_limit(client)), headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text[:300]
    assert response.headers["content-type"].startswith(PROBLEM_JSON)


@pytest.mark.parametrize("path", ["/v1/import", "/v1/relationships", "/v1/campaigns"])
def test_a_streamed_body_that_grows_over_the_limit_is_refused_with_a_413_problem(client: TestClient, path: str) -> None:
    body = oversized(body_limit(client))
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"stream-{path.rsplit('/', 1)[1]}"}
    response = client.post(path, content=streamed(body), headers=headers)
    assert response.request.headers.get("transfer-encoding") == "chunked", "no Content-Length was declared"
    assert response.status_code == 413, response.text[:300]
    assert response.headers["content-type"].startswith(PROBLEM_JSON)


def test_a_body_under_the_limit_still_goes_through(client: TestClient) -> None:
    customers = [{"id": f"bulk-{i}", "name": "x" * 150} for i in range(2000)]
    response = client.post("/v1/import", json={"customers": customers})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["customers"] == 2000


def test_an_import_holds_at_most_a_batch_of_rows_like_relationship_batches(client: TestClient) -> None:
    """One import is one transaction: without a cap, a body of tiny rows holds the store's write lock for long."""
    before = customer_count(client)
    rows = [{"id": f"cap-{i}"} for i in range(MAX_BATCH + 1)]
    response = client.post("/v1/import", json={"customers": rows})
    assert response.status_code == 422, response.text[:300]
    assert customer_count(client) == before


HOSTILE_JSON: Final[dict[str, bytes]] = {
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
    "an object nested 50,000 deep": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "a 5,000-digit number": b'{"customers": [{"id": "n", "attributes": {"n": ' + b"9" * 5000 + b"}}]}",
    "a number too big for a float": b'{"customers": [{"id": "e", "attributes": {"n": 1e999999}}]}',
    "NaN": b'{"customers": [{"id": "f", "attributes": {"n": NaN}}]}',
    "-Infinity": b'{"customers": [{"id": "g", "attributes": {"n": -Infinity}}]}',
}


@pytest.mark.parametrize("body", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_hostile_json_is_a_client_error_never_a_server_error(client: TestClient, body: bytes) -> None:
    """Python's JSON reader takes `NaN` and `Infinity`, which are not JSON: stored, they read back as null."""
    answer = client.post("/v1/import", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= answer.status_code < 500, answer.text[:300]
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    secret = client.app.state.settings.referral.webhook_secret.get_secret_value()  # type: ignore[attr-defined]
    signed = {"X-Advocacy-Signature": sign(body, secret, timestamp=int(utcnow().timestamp()))}
    webhook = client.post("/v1/webhooks/events", content=body, headers=signed)
    assert 400 <= webhook.status_code < 500, webhook.text[:300]


def integer_query_parameters() -> list[tuple[str, str, str, dict[str, Any]]]:
    out = []
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter.get("schema", {})
                if parameter["in"] == "query" and "integer" in {
                    schema.get("type"),
                    *(option.get("type") for option in schema.get("anyOf", [])),
                }:
                    out.append((method.upper(), path, parameter["name"], schema))
    return sorted(out)


PARAMETERS: Final = integer_query_parameters()


def maximum(schema: dict[str, Any]) -> int | None:
    found = schema.get("maximum")
    for option in schema.get("anyOf", []):
        found = found if found is not None else option.get("maximum")
    return found


def test_every_integer_in_a_query_has_a_ceiling_unless_it_is_no_size() -> None:
    assert any(name == "limit" for _, _, name, _ in PARAMETERS)
    unbounded = {(m, p, n) for m, p, n, s in PARAMETERS if maximum(s) is None and n not in UNBOUNDED_ON_PURPOSE}
    assert unbounded == set()


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [(m, p, n) for m, p, n, _ in PARAMETERS if n not in UNBOUNDED_ON_PURPOSE],
    ids=[f"{m} {p} {n}" for m, p, n, _ in PARAMETERS if n not in UNBOUNDED_ON_PURPOSE],
)
def test_a_page_size_or_count_of_a_million_is_a_422_naming_it(
    client: TestClient, method: str, path: str, name: str
) -> None:
    concrete = re.sub(r"\{[^}]+\}", lambda m: "ada" if m.group(0) == "{customer_id}" else "x1", path)
    response = client.request(method, concrete, params={name: 1_000_000})
    assert response.status_code == 422, response.text[:300]
    assert f"query.{name}" in {error["source"] for error in response.json()["errors"]}
