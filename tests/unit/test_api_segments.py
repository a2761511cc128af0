"""`GET /v1/segments` and `GET /v1/segments/{segment}/customers` over a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from graph.model import Segment
from tests.api_support import api_client, opened, seed_network, sqlite_url
from tests.factories import BASE_TIME, make_run
from tests.unit.test_api_referrals import assert_problem


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with opened(url) as store:
        seed_network(store)
    with api_client(url) as c:
        yield c


def segments(client: TestClient, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/segments", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def counts(body: dict[str, Any]) -> dict[str, int]:
    return {item["segment"]: item["count"] for item in body["items"]}


def definition(body: dict[str, Any], segment: Segment) -> str:
    found: str = next(item["definition"] for item in body["items"] if item["segment"] == segment.value)
    return found


def members(client: TestClient, segment: str, **params: Any) -> list[dict[str, Any]]:
    """Every member of the segment, walking the pages."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        query = {**params, **({"after": after} if after else {})}
        response = client.get(f"/v1/segments/{segment}/customers", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["segment"] == segment
        items.extend(page["items"])
        after = page["next"]
        if after is None:
            return items


# --- the segments ------------------------------------------------------------------------------------------
def test_every_segment_comes_with_its_count_and_definition_from_the_latest_run(client: TestClient) -> None:
    body = segments(client)
    assert body["run_id"] == "run-seed"
    assert counts(body) == {"influencer": 1, "prosumer": 1, "advocate": 2, "passive": 1, "do_not_ask": 1}
    assert [item["segment"] for item in body["items"]] == [
        "influencer",
        "prosumer",
        "advocate",
        "passive",
        "do_not_ask",
    ]
    assert "PageRank in the top 2%" in definition(body, Segment.INFLUENCER)
    assert "Never asked" in definition(body, Segment.DO_NOT_ASK)


def test_counts_and_definitions_follow_what_the_run_recorded(client: TestClient, url: str) -> None:
    recorded = {"influencer": 7, "prosumer": 0, "advocate": 30, "passive": 60, "do_not_ask": 3}
    run = make_run(
        id="run-tuned",
        started_at=BASE_TIME + timedelta(days=1),
        finished_at=BASE_TIME + timedelta(days=1, minutes=1),
        status="done",
        params={"thresholds": {"influencer_top_share": 0.05, "advocate_min_propensity": 0.7}},
        summary={"segments": recorded},
    )
    with opened(url) as store:
        store.save_run(run)
    body = segments(client)
    assert (body["run_id"], counts(body)) == ("run-tuned", recorded)
    assert "top 5%" in definition(body, Segment.INFLUENCER)
    assert "at least 0.7" in definition(body, Segment.ADVOCATE)
    assert counts(segments(client, run_id="run-seed"))["advocate"] == 2


def test_a_run_that_failed_or_is_still_running_is_not_the_latest(client: TestClient, url: str) -> None:
    with opened(url) as store:
        store.save_run(make_run(id="run-failed", started_at=BASE_TIME + timedelta(days=2), status="failed"))
        store.save_run(
            make_run(id="run-running", started_at=BASE_TIME + timedelta(days=3), finished_at=None, status="running")
        )
    assert segments(client)["run_id"] == "run-seed"


def test_before_any_analysis_every_segment_is_listed_with_a_zero_count(url: str) -> None:
    with opened(url) as store:
        seed_network(store, analysed=False)
    with api_client(url) as client:
        body = segments(client)
    assert body["run_id"] is None
    assert counts(body) == dict.fromkeys((s.value for s in Segment), 0)
    assert all(item["definition"] for item in body["items"])


def test_an_unknown_run_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/segments", params={"run_id": "run-nope"}), 404, ":not-found")


# --- the members -------------------------------------------------------------------------------------------
def test_a_segments_customers_come_in_id_order_each_with_their_explanation(client: TestClient) -> None:
    items = members(client, "advocate", limit=1)
    assert [(i["customer_id"], i["explanation"], i["run_id"]) for i in items] == [
        ("cy", "Cy explained.", "run-seed"),
        ("fay", "Fay explained.", "run-seed"),
    ]
    assert items[0]["community"] == 1
    assert items[0]["scores"] == {"pagerank": 0.15}


def test_a_page_ends_with_the_last_customer_id_and_the_last_page_with_null(client: TestClient) -> None:
    first = client.get("/v1/segments/advocate/customers", params={"limit": 1}).json()
    assert first["next"] == "cy"
    second = client.get("/v1/segments/advocate/customers", params={"limit": 1, "after": "cy"}).json()
    assert ([i["customer_id"] for i in second["items"]], second["next"]) == (["fay"], None)


def test_a_segment_nobody_is_in_has_an_empty_page(url: str) -> None:
    with opened(url) as store:
        seed_network(store, analysed=False)
    with api_client(url) as client:
        assert members(client, "influencer") == []


@pytest.mark.parametrize(
    ("path", "params", "source"),
    [
        ("/v1/segments/celebrities/customers", {}, "path.segment"),
        ("/v1/segments/advocate/customers", {"limit": 0}, "query.limit"),
        ("/v1/segments/advocate/customers", {"limit": 501}, "query.limit"),
    ],
)
def test_a_bad_segment_or_query_is_a_422_problem_naming_it(
    client: TestClient, path: str, params: dict[str, Any], source: str
) -> None:
    body = assert_problem(client.get(path, params=params), 422, ":validation")
    assert [e["source"] for e in body["errors"]] == [source]
