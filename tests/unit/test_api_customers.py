"""`/v1/customers` over a real SQLite store: happy paths and every problem a client can cause."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from engine.contact_policy import Cap, ContactPolicy
from engine.limits import ContactLimiter
from graph.model import ContactChannel
from graph.outreach import HoldReason, MessageKind, customer_key
from tests.api_support import PROBLEM_JSON, api_client, opened, seed_network, sqlite_url
from tests.factories import BASE_TIME, make_customer

EMAIL, MARKETING = ContactChannel.EMAIL, MessageKind.MARKETING


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def client(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ADVOCACY_CONTACT__SQLITE_PATH", str(tmp_path / "contacts.db"))
    monkeypatch.setenv("ADVOCACY_CONTACT__MAILDIR", str(tmp_path / "mail"))
    with api_client(url) as c:
        yield c


def assert_problem(response: httpx2.Response, status: int, type_suffix: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].endswith(type_suffix)
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    return body


def test_cursor_pagination_walks_every_customer_exactly_once_in_id_order(client: TestClient, url: str) -> None:
    ids = sorted(f"p{i:03d}" for i in range(23))
    with opened(url) as store:
        store.upsert_customers([make_customer(id=cid) for cid in reversed(ids)])
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 5}
        if cursor:
            params["cursor"] = cursor
        response = client.get("/v1/customers", params=params)
        assert response.status_code == 200
        page = response.json()
        assert len(page["items"]) <= 5
        seen.extend(item["id"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
    assert pages == 5


def test_a_page_exactly_filled_by_the_last_customers_has_no_next_cursor(client: TestClient, url: str) -> None:
    with opened(url) as store:
        store.upsert_customers([make_customer(id=f"q{i}") for i in range(4)])
    first = client.get("/v1/customers", params={"limit": 2}).json()
    second = client.get("/v1/customers", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [c["id"] for c in second["items"]] == ["q2", "q3"]
    assert second["next_cursor"] is None


def test_an_empty_store_lists_no_customers(client: TestClient) -> None:
    assert client.get("/v1/customers").json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("limit", [0, 501])
def test_a_limit_outside_1_to_500_is_a_422_problem(client: TestClient, limit: int) -> None:
    body = assert_problem(client.get("/v1/customers", params={"limit": limit}), 422, ":validation")
    assert body["errors"][0]["source"] == "query.limit"


def test_a_forged_cursor_is_a_422_problem(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/customers", params={"cursor": "not-a-cursor!"}), 422, ":invalid-input")
    assert "cursor" in body["detail"]


def test_get_returns_the_customer_with_their_latest_analysis(client: TestClient, url: str) -> None:
    with opened(url) as store:
        seed_network(store)
    body = client.get("/v1/customers/ada").json()
    assert body["customer"]["name"] == "Ada Lovelace"
    assert body["analysis"]["segment"] == "influencer"
    assert body["analysis"]["explanation"] == "Ada Lovelace explained."
    assert body["analysis"]["scores"] == {"pagerank": 0.4}


def test_get_before_any_analysis_has_a_null_analysis(client: TestClient, url: str) -> None:
    with opened(url) as store:
        seed_network(store, analysed=False)
    assert client.get("/v1/customers/ada").json()["analysis"] is None


def test_get_of_an_unknown_customer_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/customers/nobody"), 404, ":not-found")


def test_a_404_problem_does_not_reveal_where_the_store_lives(client: TestClient) -> None:
    detail = client.get("/v1/customers/nobody").json()["detail"]
    assert "sqlite" not in detail
    assert ".db" not in detail


def test_put_creates_then_replaces_every_field(client: TestClient) -> None:
    created = client.put("/v1/customers/c-1", json={"id": "c-1", "name": "Cleo", "email": "cleo@example.com"})
    assert created.status_code == 200
    replaced = client.put("/v1/customers/c-1", json={"id": "c-1", "name": "Cleo B."})
    assert replaced.status_code == 200
    stored = client.get("/v1/customers/c-1").json()["customer"]
    assert stored["name"] == "Cleo B."
    assert stored["email"] is None


def test_put_with_an_unknown_field_is_refused_with_a_422_problem(client: TestClient) -> None:
    response = client.put("/v1/customers/c-2", json={"id": "c-2", "favourite_colour": "teal"})
    body = assert_problem(response, 422, ":validation")
    assert body["errors"][0]["source"] == "body.favourite_colour"
    assert_problem(client.get("/v1/customers/c-2"), 404, ":not-found")


def test_put_whose_body_id_differs_from_the_path_is_a_422_problem(client: TestClient) -> None:
    body = assert_problem(client.put("/v1/customers/c-3", json={"id": "c-4"}), 422, ":invalid-input")
    assert "c-4" in body["detail"]
    assert "c-3" in body["detail"]
    assert_problem(client.get("/v1/customers/c-4"), 404, ":not-found")
    assert_problem(client.get("/v1/customers/c-3"), 404, ":not-found")


def test_put_with_an_invalid_email_names_the_field(client: TestClient) -> None:
    body = assert_problem(client.put("/v1/customers/c-5", json={"id": "c-5", "email": "nope"}), 422, ":validation")
    assert body["errors"][0]["source"] == "body.email"


def test_erasure_returns_the_report_then_the_customer_is_gone(client: TestClient, url: str) -> None:
    with opened(url) as store:
        seed_network(store)
    report = client.delete("/v1/customers/ada")
    assert report.status_code == 200
    assert report.json() == {"customer_id": "ada", "edges_removed": 4, "events_removed": 0}
    assert_problem(client.get("/v1/customers/ada"), 404, ":not-found")
    assert_problem(client.delete("/v1/customers/ada"), 404, ":not-found")
    listed = [c["id"] for c in client.get("/v1/customers").json()["items"]]
    assert "ada" not in listed
    assert client.get("/v1/stats").json()["customers"] == 5


def test_erasure_forgets_when_the_customer_was_contacted(client: TestClient, url: str) -> None:
    with opened(url) as store:
        seed_network(store)
    limiter: ContactLimiter = client.app.state.contact_holder.get().limiter  # type: ignore[attr-defined]
    weekly = ContactPolicy(caps=(Cap(limit=1, window_days=7),), backoff_after_ignored=100)

    def reserve(customer_id: str, token: str) -> HoldReason | None:
        key = customer_key(customer_id)
        return limiter.reserve(key, EMAIL, MARKETING, at=BASE_TIME, policy=weekly, token=token).reason

    assert (reserve("ada", "first"), reserve("bob", "first")) == (None, None)
    assert reserve("ada", "second") is HoldReason.CAP

    assert client.delete("/v1/customers/ada").status_code == 200

    assert reserve("ada", "third") is None, "nothing counted about ada is left"
    assert reserve("bob", "second") is HoldReason.CAP
