"""`GET /v1/customers/{id}/relationships` and `POST /v1/relationships` over a real SQLite store."""

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


def relationships(client: TestClient, customer_id: str, **params: Any) -> list[dict[str, Any]]:
    response = client.get(f"/v1/customers/{customer_id}/relationships", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["customer_id"] == customer_id
    assert body["next"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


def summary(items: list[dict[str, Any]]) -> list[tuple[str, str, str, str | None]]:
    return [(i["type"], i["direction"], i["customer_id"], i["status"] or i["kind"]) for i in items]


def edge_counts(client: TestClient) -> dict[str, int]:
    counts: dict[str, int] = client.get("/v1/stats").json()["edges"]
    return counts


def referral(referrer: str, friend: str, **fields: Any) -> dict[str, Any]:
    return {"referrer_id": referrer, "friend_id": friend, "at": "2024-05-02T12:00:00Z", **fields}


def influence(source: str, target: str, **fields: Any) -> dict[str, Any]:
    return {"source_id": source, "target_id": target, **fields}


# --- reading -----------------------------------------------------------------------------------------------
def test_a_customers_relationships_show_referrals_and_influences_in_both_directions(client: TestClient) -> None:
    items = relationships(client, "cy")
    assert summary(items) == [
        ("INFLUENCES", "in", "ada", "follows"),
        ("INFLUENCES", "in", "bob", "follows"),
        ("REFERRED", "out", "dee", "clicked"),
    ]
    follows, _, referred = items
    assert (follows["weight"], follows["status"]) == (0.5, None)
    assert (referred["weight"], referred["kind"]) == (None, None)
    assert referred["at"] == "2024-03-01T12:00:00Z"


def test_relationships_filter_by_type_and_direction(client: TestClient) -> None:
    assert summary(relationships(client, "ada", type="INFLUENCES", direction="out")) == [
        ("INFLUENCES", "out", "bob", "follows"),
        ("INFLUENCES", "out", "cy", "follows"),
        ("INFLUENCES", "out", "dee", "follows"),
    ]
    assert summary(relationships(client, "eve", type="REFERRED")) == [("REFERRED", "in", "fay", "clicked")]
    assert relationships(client, "dee", direction="out") == []


def test_paging_through_relationships_returns_each_once_in_order(client: TestClient) -> None:
    everything = relationships(client, "ada")
    seen: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"after": after} if after else {})}
        page = client.get("/v1/customers/ada/relationships", params=params).json()
        seen.extend(page["items"])
        after = page["next"]
        if after is None:
            break
    assert len(everything) == 4
    assert seen == everything


def test_relationships_of_an_unknown_customer_are_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/customers/nobody/relationships"), 404, ":not-found")


@pytest.mark.parametrize(
    ("params", "source"),
    [({"limit": 0}, "query.limit"), ({"type": "FRIENDS"}, "query.type"), ({"direction": "up"}, "query.direction")],
)
def test_a_bad_relationship_query_is_a_422_problem_naming_the_parameter(
    client: TestClient, params: dict[str, Any], source: str
) -> None:
    body = assert_problem(client.get("/v1/customers/ada/relationships", params=params), 422, ":validation")
    assert [e["source"] for e in body["errors"]] == [source]


def test_a_cursor_the_api_did_not_return_is_a_422_problem(client: TestClient) -> None:
    response = client.get("/v1/customers/ada/relationships", params={"after": "not-a-cursor"})
    assert "cursor" in assert_problem(response, 422, ":invalid-input")["detail"]


# --- writing -----------------------------------------------------------------------------------------------
def test_a_batch_writes_referrals_and_influences_that_then_read_back(client: TestClient) -> None:
    batch = {
        "referrals": [referral("dee", "fay", code="DEE10", status="signed_up")],
        "influences": [influence("fay", "ada", kind="mentions", weight=2.5)],
    }
    response = client.post("/v1/relationships", json=batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"referrals": 1, "influences": 1}
    assert summary(relationships(client, "fay")) == [
        ("INFLUENCES", "in", "eve", "follows"),
        ("INFLUENCES", "out", "ada", "mentions"),
        ("REFERRED", "in", "dee", "signed_up"),
        ("REFERRED", "out", "eve", "clicked"),
    ]
    assert relationships(client, "fay", type="INFLUENCES", direction="out")[0]["weight"] == 2.5


def test_sending_the_same_batch_again_changes_nothing(client: TestClient) -> None:
    batch = {"referrals": [referral("bob", "eve")], "influences": [influence("dee", "eve", kind="shares")]}
    assert client.post("/v1/relationships", json=batch).status_code == 200
    after_first = (edge_counts(client), relationships(client, "eve"))
    assert client.post("/v1/relationships", json=batch).status_code == 200
    assert (edge_counts(client), relationships(client, "eve")) == after_first


def test_a_batch_updates_an_edge_by_its_natural_key_instead_of_adding_one(client: TestClient) -> None:
    before = edge_counts(client)
    batch = {
        "referrals": [referral("ada", "bob", status="converted")],
        "influences": [influence("ada", "bob", kind="follows", weight=3.0)],
    }
    assert client.post("/v1/relationships", json=batch).status_code == 200
    assert edge_counts(client) == before
    out = relationships(client, "ada", direction="out")
    assert ("REFERRED", "out", "bob", "converted") in summary(out)
    assert next(i for i in out if i["type"] == "INFLUENCES" and i["customer_id"] == "bob")["weight"] == 3.0


def test_a_row_naming_an_unknown_customer_refuses_the_whole_batch_naming_the_row(client: TestClient) -> None:
    before = edge_counts(client)
    batch = {
        "referrals": [referral("bob", "dee"), referral("bob", "ghost")],
        "influences": [influence("cy", "ada")],
    }
    body = assert_problem(client.post("/v1/relationships", json=batch), 422, ":invalid-input")
    assert [(e["source"], "'ghost'" in e["reason"]) for e in body["errors"]] == [("body.referrals[1]", True)]
    assert edge_counts(client) == before


def test_a_natural_key_given_twice_in_one_batch_is_refused_naming_both_rows(client: TestClient) -> None:
    batch = {"influences": [influence("cy", "ada", kind="mentions"), influence("cy", "ada", kind="mentions", weight=2)]}
    body = assert_problem(client.post("/v1/relationships", json=batch), 422, ":invalid-input")
    [problem] = body["errors"]
    assert problem["source"] == "body.influences[1]"
    assert "duplicate" in problem["reason"]
    assert "body.influences[0]" in problem["reason"]
    assert relationships(client, "cy", direction="out", type="INFLUENCES") == []


@pytest.mark.parametrize(
    ("batch", "source"),
    [
        ({"referrals": [{"referrer_id": "ada", "friend_id": "cy"}]}, "body.referrals[0].at"),
        ({"referrals": [referral("ada", "ada")]}, "body.referrals[0]"),
        ({"influences": [influence("ada", "cy", weight=0)]}, "body.influences[0].weight"),
        ({"influences": [influence("ada", "cy", kind="likes")]}, "body.influences[0].kind"),
        ({"influences": [], "events": []}, "body.events"),
    ],
)
def test_a_row_with_a_bad_field_is_a_422_problem_naming_the_field(
    client: TestClient, batch: dict[str, Any], source: str
) -> None:
    before = edge_counts(client)
    body = assert_problem(client.post("/v1/relationships", json=batch), 422, ":validation")
    assert [e["source"] for e in body["errors"]] == [source]
    assert edge_counts(client) == before
