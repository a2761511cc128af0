"""`POST` and `GET /v1/customers/{id}/events` over a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api_support import api_client, opened, seed_network, sqlite_url
from tests.unit.test_api_referrals import assert_problem


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    url = sqlite_url(tmp_path)
    with opened(url) as store:
        seed_network(store)
    with api_client(url) as c:
        yield c


def event(event_id: str = "order-1", **fields: Any) -> dict[str, Any]:
    return {
        "id": event_id,
        "kind": "purchase",
        "at": "2024-05-03T18:20:00Z",
        "value": 89.9,
        "attributes": {"product": "Trail shoes"},
        **fields,
    }


def post(client: TestClient, customer_id: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    response = client.post(f"/v1/customers/{customer_id}/events", json=body)
    assert response.status_code == status, response.text
    stored: dict[str, Any] = response.json()
    return stored


def history(client: TestClient, customer_id: str, **params: Any) -> list[dict[str, Any]]:
    """Every event of the customer, walking the pages."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        query = {**params, **({"after": after} if after else {})}
        response = client.get(f"/v1/customers/{customer_id}/events", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        after = page["next"]
        if after is None:
            return items


def event_counts(client: TestClient) -> dict[str, int]:
    counts: dict[str, int] = client.get("/v1/stats").json()["events"]
    return counts


# --- recording ---------------------------------------------------------------------------------------------
def test_a_new_event_is_stored_for_the_customer_in_the_path(client: TestClient) -> None:
    stored = post(client, "ada", event())
    assert stored == {**event(), "customer_id": "ada"}
    assert history(client, "ada") == [stored]
    assert event_counts(client) == {"purchase": 1}


@pytest.mark.parametrize("kind", ["purchase", "review", "idea", "feedback", "share", "rating", "complaint"])
def test_every_kind_the_graph_knows_can_be_recorded(client: TestClient, kind: str) -> None:
    post(client, "bob", event(f"{kind}-1", kind=kind, value=None))
    assert [e["kind"] for e in history(client, "bob")] == [kind]


def test_the_same_event_sent_again_answers_the_stored_one_with_200_and_stores_nothing_more(
    client: TestClient,
) -> None:
    first = post(client, "ada", event())
    again = post(client, "ada", event(), status=200)
    assert again == first
    assert history(client, "ada") == [first]
    assert event_counts(client) == {"purchase": 1}


@pytest.mark.parametrize(
    "changed",
    [{"value": 10.0}, {"at": "2024-05-04T00:00:00Z"}, {"attributes": {}}, {"kind": "refund"}],
)
def test_an_id_sent_again_with_other_content_is_a_409_problem_and_keeps_the_first(
    client: TestClient, changed: dict[str, Any]
) -> None:
    first = post(client, "ada", event())
    assert_problem(client.post("/v1/customers/ada/events", json=event(**changed)), 409, ":ledger-conflict")
    assert history(client, "ada") == [first]


def test_an_id_already_used_by_another_customers_event_is_a_409_problem(client: TestClient) -> None:
    post(client, "ada", event())
    assert_problem(client.post("/v1/customers/bob/events", json=event()), 409, ":ledger-conflict")
    assert history(client, "bob") == []


@pytest.mark.parametrize("customer_id", ["nobody", "not an id!"])
def test_an_event_of_an_unknown_customer_is_a_404_problem(client: TestClient, customer_id: str) -> None:
    assert_problem(client.post(f"/v1/customers/{customer_id}/events", json=event()), 404, ":not-found")
    assert event_counts(client) == {}


@pytest.mark.parametrize(
    ("body", "source"),
    [
        (event(kind="dance"), "body.kind"),
        ({k: v for k, v in event().items() if k != "at"}, "body.at"),
        (event(id=""), "body.id"),
        (event(customer_id="bob"), "body.customer_id"),
        (event(value="lots"), "body.value"),
    ],
)
def test_an_event_with_a_bad_field_is_a_422_problem_naming_it(
    client: TestClient, body: dict[str, Any], source: str
) -> None:
    problem = assert_problem(client.post("/v1/customers/ada/events", json=body), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [source]
    assert event_counts(client) == {}


# --- reading -----------------------------------------------------------------------------------------------
def test_events_come_newest_first_and_pages_return_each_once(client: TestClient) -> None:
    times = ["2024-05-01T10:00:00Z", "2024-05-03T10:00:00Z", "2024-05-02T10:00:00Z", "2024-05-03T10:00:00Z"]
    for n, at in enumerate(times):
        post(client, "cy", event(f"e{n}", at=at))
    post(client, "dee", event("other"))
    assert [e["id"] for e in history(client, "cy", limit=1)] == ["e1", "e3", "e2", "e0"]
    assert history(client, "cy", limit=3) == history(client, "cy", limit=500)


def test_events_filter_by_kind(client: TestClient) -> None:
    post(client, "cy", event("p1"))
    post(client, "cy", event("i1", kind="idea", value=None, attributes={"text": "Gift wrap"}))
    assert [e["id"] for e in history(client, "cy", kind="idea")] == ["i1"]


def test_a_customer_without_events_has_an_empty_history(client: TestClient) -> None:
    response = client.get("/v1/customers/eve/events")
    assert response.json() == {"customer_id": "eve", "items": [], "next": None}


def test_the_events_of_an_unknown_customer_are_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/customers/nobody/events"), 404, ":not-found")


@pytest.mark.parametrize(
    ("params", "source"),
    [({"limit": 0}, "query.limit"), ({"limit": 501}, "query.limit"), ({"kind": "x"}, "query.kind")],
)
def test_a_bad_events_query_is_a_422_problem_naming_the_parameter(
    client: TestClient, params: dict[str, Any], source: str
) -> None:
    body = assert_problem(client.get("/v1/customers/ada/events", params=params), 422, ":validation")
    assert [e["source"] for e in body["errors"]] == [source]


def test_an_events_cursor_the_api_did_not_return_is_a_422_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/customers/ada/events", params={"after": "bm9wZQ"}), 422, ":invalid-input")
