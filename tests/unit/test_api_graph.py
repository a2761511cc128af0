"""`/v1/import`, `/v1/stats`, `/v1/graph/view` and `/v1/analysis/runs` over a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api_support import PROBLEM_JSON, api_client, opened, seed_network, sqlite_url
from tests.factories import make_run


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with api_client(url) as c:
        yield c


BATCH = {
    "customers": [{"id": "ana", "name": "Ana"}, {"id": "ben"}],
    "influences": [{"source_id": "ana", "target_id": "ben", "kind": "follows", "weight": 2.0}],
    "referrals": [{"referrer_id": "ana", "friend_id": "ben", "status": "converted", "at": "2024-05-02T12:00:00Z"}],
    "events": [{"id": "ev-1", "customer_id": "ben", "kind": "purchase", "at": "2024-05-03T10:00:00Z", "value": 30}],
}


def test_import_writes_the_whole_batch_and_counts_it(client: TestClient) -> None:
    response = client.post("/v1/import", json=BATCH)
    assert response.status_code == 200
    assert response.json() == {"customers": 2, "influences": 1, "referrals": 1, "events": 1}
    stats = client.get("/v1/stats").json()
    assert stats["customers"] == 2
    assert stats["edges"] == {"REFERRED": 1, "INFLUENCES": 1}
    assert stats["events"] == {"purchase": 1}


def test_importing_the_same_batch_twice_changes_nothing(client: TestClient) -> None:
    client.post("/v1/import", json=BATCH)
    first = client.get("/v1/stats").json()
    assert client.post("/v1/import", json=BATCH).status_code == 200
    assert client.get("/v1/stats").json() == first


def test_an_edge_to_an_unknown_customer_refuses_the_whole_batch(client: TestClient) -> None:
    batch = {**BATCH, "influences": [{"source_id": "ana", "target_id": "ghost"}]}
    response = client.post("/v1/import", json=batch)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert "ghost" in response.json()["detail"]
    assert client.get("/v1/stats").json()["customers"] == 0


def test_an_import_row_with_an_unknown_field_is_a_422_problem_naming_the_row(client: TestClient) -> None:
    batch = {"customers": [{"id": "ana"}, {"id": "ben", "shoe_size": 44}]}
    response = client.post("/v1/import", json=batch)
    assert response.status_code == 422
    assert response.json()["errors"][0]["source"] == "body.customers[1].shoe_size"


def test_the_view_before_any_analysis_ranks_by_degree(client: TestClient, url: str) -> None:
    with opened(url) as store:
        seed_network(store, analysed=False)
    view = client.get("/v1/graph/view", params={"limit": 2}).json()
    assert view["ranked_by"] == "degree"
    assert view["run_id"] is None
    # ada has 4 edges; bob, cy and dee 3 each: the tie goes to the smaller id
    assert [n["id"] for n in view["nodes"]] == ["ada", "bob"]
    assert all(n["segment"] is None for n in view["nodes"])
    assert view["total_customers"] == 6
    assert view["total_edges"] == 8


def test_the_view_after_analysis_keeps_the_most_influential_and_only_edges_among_them(
    client: TestClient, url: str
) -> None:
    with opened(url) as store:
        seed_network(store)
    view = client.get("/v1/graph/view", params={"limit": 3}).json()
    assert view["ranked_by"] == "influence"
    assert view["run_id"] == "run-seed"
    nodes = {n["id"]: n for n in view["nodes"]}
    assert set(nodes) == {"ada", "bob", "cy"}
    assert nodes["ada"] == {
        "id": "ada",
        "label": "Ada Lovelace",
        "segment": "influencer",
        "community": 1,
        "influence": 0.4,
        "degree": 3,
    }
    pairs = {(e["source"], e["target"], e["type"]) for e in view["edges"]}
    assert pairs == {
        ("ada", "bob", "INFLUENCES"),
        ("ada", "cy", "INFLUENCES"),
        ("bob", "cy", "INFLUENCES"),
        ("ada", "bob", "REFERRED"),
    }


def test_the_whole_small_network_fits_in_one_view(client: TestClient, url: str) -> None:
    with opened(url) as store:
        seed_network(store)
    view = client.get("/v1/graph/view").json()
    assert len(view["nodes"]) == 6
    assert len(view["edges"]) == 8
    assert {n["segment"] for n in view["nodes"]} == {"influencer", "prosumer", "advocate", "passive", "do_not_ask"}


@pytest.mark.parametrize("limit", [0, 1001])
def test_a_view_limit_out_of_range_is_a_422_problem(client: TestClient, limit: int) -> None:
    response = client.get("/v1/graph/view", params={"limit": limit})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM_JSON)


def test_runs_are_listed_most_recent_first_and_read_one_by_one(client: TestClient, url: str) -> None:
    with opened(url) as store:
        older = make_run(id="run-a")
        newer = make_run(id="run-b", started_at=older.started_at.replace(day=2), status="failed")
        store.save_run(older)
        store.save_run(newer)
    listed = client.get("/v1/analysis/runs").json()["items"]
    assert [r["id"] for r in listed] == ["run-b", "run-a"]
    assert [r["id"] for r in client.get("/v1/analysis/runs", params={"limit": 1}).json()["items"]] == ["run-b"]
    one = client.get("/v1/analysis/runs/run-a").json()
    assert one["status"] == "finished"
    assert one["params"] == older.params


def test_an_unknown_run_is_a_404_problem(client: TestClient) -> None:
    response = client.get("/v1/analysis/runs/nope")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:advocacy:problem:not-found"
