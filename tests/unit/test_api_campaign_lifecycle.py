"""`POST /v1/campaigns/{id}/pause|resume|end` over a real SQLite store, and what a stopped campaign does to links,
orders and codes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from tests.factories import Clock
from tests.unit.test_api_referrals import (
    START,
    assert_problem,
    follow,
    issue_code,
    post_campaign,
    program_client,
    seed_people,
)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def client(tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    url = f"sqlite:///{tmp_path / 'advocacy.db'}"
    seed_people(url)
    with program_client(url, clock) as c:
        post_campaign(c)
        yield c


def move(client: TestClient, action: str, campaign_id: str = "spring") -> dict[str, Any]:
    response = client.post(f"/v1/campaigns/{campaign_id}/{action}")
    assert response.status_code == 200, response.text
    campaign: dict[str, Any] = response.json()
    assert client.get(f"/v1/campaigns/{campaign_id}").json() == campaign
    return campaign


def sets_click_cookie(response: httpx2.Response) -> bool:
    return any(h.startswith("adv_click=") for h in response.headers.get_list("set-cookie"))


def order(client: TestClient, clock: Clock, order_id: str, code: str) -> dict[str, Any]:
    body = {
        "id": order_id,
        "customer_id": "bob",
        "amount_minor": 4200,
        "currency": "EUR",
        "at": clock.iso(),
        "code": code,
    }
    response = client.post("/v1/orders", json=body)
    assert response.status_code == 201, response.text
    conversion: dict[str, Any] = response.json()
    return conversion


# --- moving between states ---------------------------------------------------------------------------------
def test_pausing_and_resuming_a_campaign_changes_only_its_status(client: TestClient) -> None:
    before = client.get("/v1/campaigns/spring").json()
    paused = move(client, "pause")
    assert paused == {**before, "status": "paused"}
    assert move(client, "resume") == before


@pytest.mark.parametrize("action", ["pause", "resume", "end"])
def test_repeating_a_move_changes_nothing(client: TestClient, action: str) -> None:
    first = move(client, action)
    assert move(client, action) == first


def test_an_ended_campaign_cannot_be_resumed_or_paused(client: TestClient) -> None:
    ended = move(client, "end")
    assert ended["status"] == "ended"
    for action in ("resume", "pause"):
        problem = assert_problem(client.post(f"/v1/campaigns/spring/{action}"), 409, ":policy-violation")
        assert "ended" in problem["detail"]
    assert client.get("/v1/campaigns/spring").json() == ended


@pytest.mark.parametrize("action", ["pause", "resume", "end"])
def test_moving_an_unknown_campaign_is_a_404_problem(client: TestClient, action: str) -> None:
    assert_problem(client.post(f"/v1/campaigns/nope/{action}"), 404, ":not-found")


# --- what a stopped campaign does --------------------------------------------------------------------------
def test_a_paused_campaigns_link_attributes_nobody_until_it_resumes(client: TestClient) -> None:
    code = issue_code(client, "ada")
    move(client, "pause")
    paused = follow(client, code)
    assert paused.status_code == 302
    assert not sets_click_cookie(paused)
    move(client, "resume")
    assert sets_click_cookie(follow(client, code))


def test_an_order_through_a_paused_campaign_is_attributed_without_rewards(client: TestClient, clock: Clock) -> None:
    code = issue_code(client, "ada")
    move(client, "pause")
    conversion = order(client, clock, "order-paused", code)
    assert (conversion["status"], conversion["reward_ids"]) == ("attributed", [])
    move(client, "resume")
    assert order(client, clock, "order-live", code)["reward_ids"]


def test_an_ended_campaign_issues_no_new_codes(client: TestClient) -> None:
    move(client, "end")
    response = client.post("/v1/customers/ada/codes", json={"campaign_id": "spring"})
    assert "ended" in assert_problem(response, 422, ":invalid-input")["detail"]
