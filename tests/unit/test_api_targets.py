"""`/v1/analysis/runs` (start, compare), `/v1/targets` and `/v1/forecasts` over a real SQLite store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from engine import targeting
from graph.generator import generate_network
from graph.model import Segment
from tests.api_support import PROBLEM_JSON, api_client, opened, sqlite_url
from tests.factories import make_customer

FAST = {"mc_runs": 500, "seed": 11}
"""Few simulations and a fixed seed: each request answers in well under a second."""


@pytest.fixture(scope="module")
def seeded_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 generated customers, written once per module; each test gets its own copy."""
    folder = tmp_path_factory.mktemp("seeded")
    with opened(sqlite_url(folder)) as store:
        for batch in generate_network(300, seed=3):
            store.write_batch(batch)
    return folder / "advocacy.db"


@pytest.fixture
def url(tmp_path: Path, seeded_file: Path) -> str:
    shutil.copyfile(seeded_file, tmp_path / "advocacy.db")
    return sqlite_url(tmp_path)


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with api_client(url) as c:
        yield c


@pytest.fixture
def analysed(client: TestClient) -> dict[str, Any]:
    response = client.post("/v1/analysis/runs", json={"seed": 1})
    assert response.status_code == 201, response.text
    run: dict[str, Any] = response.json()
    return run


def assert_problem(response: httpx2.Response, status: int, type_suffix: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].endswith(type_suffix)
    assert body["detail"]
    assert body["instance"] == response.request.url.path
    return body


def segments_of(url: str) -> dict[str, Segment]:
    with opened(url) as store:
        return {s.customer_id: s.segment for s in store.iter_scores()}


def test_posting_a_run_answers_201_with_its_location_and_it_can_be_read_back(client: TestClient) -> None:
    response = client.post("/v1/analysis/runs", json={"seed": 2, "top_n": 5})
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "done"
    assert run["params"]["seed"] == 2
    assert run["summary"]["customers"] == 300
    assert response.headers["location"] == f"/v1/analysis/runs/{run['id']}"
    again = client.get(response.headers["location"])
    assert again.status_code == 200
    assert again.json()["id"] == run["id"]
    assert [r["id"] for r in client.get("/v1/analysis/runs").json()["items"]] == [run["id"]]


def test_posting_a_run_without_a_body_uses_the_default_parameters(client: TestClient) -> None:
    response = client.post("/v1/analysis/runs")
    assert response.status_code == 201, response.text
    assert response.json()["params"]["seed"] == 0


def test_a_run_with_an_unknown_parameter_is_refused_before_anything_runs(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/analysis/runs", json={"sede": 3}), 422, ":validation")
    assert body["errors"][0]["source"] == "body.sede"
    assert client.get("/v1/analysis/runs").json()["items"] == []


def test_a_run_over_an_empty_store_is_a_422_problem(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with api_client(sqlite_url(tmp_path / "empty")) as empty:
        assert_problem(empty.post("/v1/analysis/runs", json={}), 422, ":invalid-input")


def test_two_runs_compare_with_counts_for_each(client: TestClient, analysed: dict[str, Any]) -> None:
    second = client.post("/v1/analysis/runs", json={"seed": 5, "resolution": 2.0}).json()
    response = client.get(f"/v1/analysis/runs/{analysed['id']}/compare/{second['id']}")
    assert response.status_code == 200, response.text
    cmp = response.json()
    assert (cmp["run_a"], cmp["run_b"]) == (analysed["id"], second["id"])
    assert cmp["customers"] == [300, 300]
    assert cmp["params_changed"]["resolution"] == [1.0, 2.0]
    assert cmp["params_changed"]["seed"] == [1, 5]


def test_comparing_with_an_unknown_run_is_a_404_problem(client: TestClient, analysed: dict[str, Any]) -> None:
    response = client.get(f"/v1/analysis/runs/{analysed['id']}/compare/run-nope")
    assert_problem(response, 404, ":not-found")


def test_targets_are_k_distinct_askable_customers_with_a_bracketing_interval(
    client: TestClient, url: str, analysed: dict[str, Any]
) -> None:
    response = client.get("/v1/targets", params={"k": 5, **FAST})
    assert response.status_code == 200, response.text
    choice = response.json()
    seeds = [t["customer_id"] for t in choice["targets"]]
    assert len(seeds) == 5
    assert len(set(seeds)) == 5
    assert [t["rank"] for t in choice["targets"]] == [1, 2, 3, 4, 5]
    with opened(url) as store:
        assert store.existing_customer_ids(seeds) == set(seeds)
    segment = segments_of(url)
    assert Segment.DO_NOT_ASK in segment.values()  # the exclusion below is tested, not vacuous
    assert all(segment[s] is not Segment.DO_NOT_ASK for s in seeds)
    assert choice["excluded"]["segment do_not_ask"] == sum(s is Segment.DO_NOT_ASK for s in segment.values())
    low, high = choice["ci95"]
    assert low <= choice["expected_spread"] <= high
    assert choice["expected_spread"] >= 5
    assert choice["run_id"] == analysed["id"]
    assert (choice["k"], choice["mc_runs"], choice["seed"]) == (5, 500, 11)
    assert {b["method"] for b in choice["baselines"]} == {"degree", "pagerank", "degree_discount"}
    assert all(t["explanation"] for t in choice["targets"])


def test_a_seeded_choice_is_reused_until_the_store_changes_and_an_unseeded_one_is_drawn_each_time(
    client: TestClient, url: str, analysed: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen: list[int | None] = []
    real = targeting.choose_targets

    def counted(store: Any, **params: Any) -> Any:
        chosen.append(params["seed"])
        return real(store, **params)

    monkeypatch.setattr("engine.views.choose_targets", counted)
    first = client.get("/v1/targets", params={"k": 3, **FAST}).json()
    assert client.get("/v1/targets", params={"k": 3, **FAST}).json() == first
    assert chosen == [11]

    with opened(url) as store:
        store.upsert_customers([make_customer()])  # the counts change: the choice is made again
    assert client.get("/v1/targets", params={"k": 3, **FAST}).status_code == 200
    assert chosen == [11, 11]

    for _ in range(2):
        assert client.get("/v1/targets", params={"k": 3, "mc_runs": 500}).status_code == 200
    assert chosen == [11, 11, None, None]


def test_excluding_the_influencer_segment_leaves_no_influencer_among_the_targets(
    client: TestClient, url: str, analysed: dict[str, Any]
) -> None:
    segment = segments_of(url)
    influencers = {cid for cid, s in segment.items() if s is Segment.INFLUENCER}
    assert influencers
    default = client.get("/v1/targets", params={"k": 10, **FAST}).json()
    assert {t["customer_id"] for t in default["targets"]} & influencers  # so the exclusion has something to remove
    response = client.get("/v1/targets", params={"k": 10, "exclude_segment": ["influencer", "prosumer"], **FAST})
    assert response.status_code == 200, response.text
    choice = response.json()
    assert len(choice["targets"]) == 10
    assert not {t["customer_id"] for t in choice["targets"]} & influencers
    assert all(t["segment"] not in ("influencer", "prosumer") for t in choice["targets"])
    assert choice["excluded"]["segment influencer"] == len(influencers)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"k": 0}, "query.k"),
        ({"k": 5, "p": 2}, "query.p"),
        ({"k": 5, "p": 0}, "query.p"),
        ({"k": 5, "mc_runs": 99}, "query.mc_runs"),
        ({"k": 5, "mc_runs": 100_001}, "query.mc_runs"),
        ({"k": 5, "model": "sir"}, "query.model"),
        ({"k": 5, "exclude_segment": "vip"}, "query.exclude_segment[0]"),
        ({}, "query.k"),
    ],
)
def test_targets_with_a_parameter_out_of_range_is_a_422_problem_naming_it(
    client: TestClient, params: dict[str, Any], field: str
) -> None:
    body = assert_problem(client.get("/v1/targets", params=params), 422, ":validation")
    assert [e["source"] for e in body["errors"]] == [field]


def test_targets_before_any_analysis_is_a_problem_saying_to_run_one(client: TestClient) -> None:
    body = assert_problem(client.get("/v1/targets", params={"k": 5, **FAST}), 422, ":invalid-input")
    assert "no analysis yet" in body["detail"]


def test_the_smallest_positive_cascade_probability_still_ranks_by_pagerank(
    client: TestClient, analysed: dict[str, Any]
) -> None:
    """Schemathesis found `p` = 5e-324 overflowing PageRank's normalisation: the power iteration failed, a 500."""
    response = client.get("/v1/targets", params={"k": 3, "p": 5e-324, "method": "pagerank", **FAST})
    assert response.status_code == 200, response.text
    assert len(response.json()["targets"]) == 3


def test_a_community_cap_larger_than_any_int64_is_the_same_as_no_cap(
    client: TestClient, analysed: dict[str, Any]
) -> None:
    """Schemathesis found `max_per_community` = 2**64 overflowing the cap's int64: a 500."""
    capped = client.get("/v1/targets", params={"k": 5, "max_per_community": 2**64, **FAST})
    uncapped = client.get("/v1/targets", params={"k": 5, **FAST})
    assert capped.status_code == 200, capped.text
    assert [t["customer_id"] for t in capped.json()["targets"]] == [
        t["customer_id"] for t in uncapped.json()["targets"]
    ]


def test_a_forecast_of_three_seeds_has_ranges_around_its_expectations(
    client: TestClient, analysed: dict[str, Any]
) -> None:
    seeds = [t["customer_id"] for t in client.get("/v1/targets", params={"k": 3, **FAST}).json()["targets"]]
    body = {"seeds": seeds, "reward_per_referral": 10, "friend_reward": 5, "p": 0.05, "runs": 500, "seed": 4}
    response = client.post("/v1/forecasts", json=body)
    assert response.status_code == 200, response.text
    fc = response.json()
    assert fc["seeds"] == seeds
    assert fc["conversion_rate_source"].startswith("history")
    assert 0 < fc["conversion_rate"] < 1
    assert fc["expected_reached"] >= 3
    for expected, (low, high) in (
        (fc["expected_reached"], fc["reached_range"]),
        (fc["expected_referrals"], fc["referrals_range"]),
        (fc["expected_cost"], fc["cost_range"]),
    ):
        assert low <= expected <= high
    assert fc["expected_cost"] == pytest.approx(fc["expected_referrals"] * 15)


def test_a_forecast_at_a_given_conversion_rate_uses_it(client: TestClient) -> None:
    first = client.get("/v1/customers", params={"limit": 1}).json()["items"][0]["id"]
    response = client.post("/v1/forecasts", json={"seeds": [first], "conversion_rate": 0.0, "runs": 100})
    assert response.status_code == 200, response.text
    fc = response.json()
    assert (fc["conversion_rate"], fc["conversion_rate_source"]) == (0.0, "given")
    assert fc["expected_referrals"] == 0.0
    assert fc["expected_cost"] == 0.0


def test_a_forecast_naming_an_unknown_customer_is_a_404_problem(client: TestClient) -> None:
    response = client.post("/v1/forecasts", json={"seeds": ["nobody"], "conversion_rate": 0.1, "runs": 100})
    body = assert_problem(response, 404, ":not-found")
    assert "'nobody'" in body["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"seeds": []}, "body.seeds"),
        ({"seeds": ["a"], "conversion_rate": 1.5}, "body.conversion_rate"),
        ({"seeds": ["a"], "p": 2}, "body.p"),
        ({"seeds": ["a"], "reward_per_referral": -1}, "body.reward_per_referral"),
        ({"seeds": ["a"], "budget": 100}, "body.budget"),
    ],
)
def test_a_forecast_with_bad_input_is_a_422_problem_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post("/v1/forecasts", json=body), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]


def test_the_new_operations_are_documented_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert paths["/v1/analysis/runs"]["post"]["tags"] == ["analysis"]
    assert paths["/v1/targets"]["get"]["tags"] == ["targets"]
    assert paths["/v1/forecasts"]["post"]["tags"] == ["targets"]
    assert "/v1/analysis/runs/{run_a}/compare/{run_b}" in paths
    for path, method in (("/v1/analysis/runs", "post"), ("/v1/forecasts", "post")):
        content = paths[path][method]["requestBody"]["content"]["application/json"]
        assert content["examples"], path
        assert "503" in paths[path][method]["responses"]
    query = {p["name"] for p in paths["/v1/targets"]["get"]["parameters"]}
    assert {"k", "model", "p", "exclude_segment", "max_per_community", "only_consenting", "seed", "mc_runs"} <= query
