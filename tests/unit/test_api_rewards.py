"""Rewards, the ledger, payouts, the fraud review queue, the leak scan and the metrics over HTTP, and the whole
referral flow (code, click, signup, order, approval, payout, clawback) through HTTP only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.deps import get_fulfiller
from engine.fulfilment import FulfilmentError
from graph.program import Reward
from tests.api_support import sqlite_url
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
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def client(url: str, clock: Clock) -> Iterator[TestClient]:
    """An app with the campaign `spring` (14 days' hold, 7 days to review) and the seeded people."""
    seed_people(url)
    with program_client(url, clock) as c:
        post_campaign(c)
        yield c


def order(client: TestClient, clock: Clock, order_id: str, **fields: Any) -> dict[str, Any]:
    body = {"id": order_id, "customer_id": "bob", "amount_minor": 4200, "currency": "EUR", "at": clock.iso(), **fields}
    response = client.post("/v1/orders", json=body)
    assert response.status_code == 201, response.text
    conversion: dict[str, Any] = response.json()
    return conversion


def rewards(client: TestClient, **params: str) -> list[dict[str, Any]]:
    response = client.get("/v1/rewards", params=params)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def balance(client: TestClient, customer_id: str, state: str, currency: str = "EUR") -> int:
    for row in client.get(f"/v1/customers/{customer_id}/ledger").json()["balances"]:
        if row["currency"] == currency:
            return int(row["by_state"][state])
    return 0


# --- rewards and the ledger --------------------------------------------------------------------------------
def test_rewards_are_listed_by_customer_and_state_and_read_one_by_one(client: TestClient, clock: Clock) -> None:
    order(client, clock, "order-1", code=issue_code(client, "ada"))
    (referrer,) = rewards(client, customer_id="ada")
    assert (referrer["id"], referrer["state"], referrer["amount_minor"]) == ("order-1:referrer-credit", "pending", 1000)
    (friend,) = rewards(client, customer_id="bob")
    assert (friend["side"], friend["amount_minor"]) == ("friend", 500)
    assert rewards(client, state="approved") == []
    assert len(rewards(client, campaign_id="spring", state="pending")) == 2
    assert client.get("/v1/rewards/order-1:referrer-credit").json() == referrer


def test_an_unknown_reward_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/rewards/order-404:referrer-credit"), 404, ":not-found")


@pytest.mark.parametrize(("params", "field"), [({"state": "paid"}, "query.state"), ({"limit": 0}, "query.limit")])
def test_listing_rewards_with_a_bad_parameter_is_a_422_problem_naming_it(
    client: TestClient, params: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.get("/v1/rewards", params=params), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]


def test_the_ledger_lists_each_move_and_the_balance_it_adds_up_to(client: TestClient, clock: Clock) -> None:
    order(client, clock, "order-1", code=issue_code(client, "ada"))
    response = client.get("/v1/customers/ada/ledger")
    assert response.status_code == 200, response.text
    ledger = response.json()
    assert ledger["customer_id"] == "ada"
    assert [(e["from_state"], e["to_state"], e["amount_minor"]) for e in ledger["entries"]] == [(None, "pending", 1000)]
    (eur,) = ledger["balances"]
    assert eur["by_state"]["pending"] == 1000


def test_the_ledger_of_a_customer_without_rewards_is_empty_and_of_an_unknown_one_a_404(client: TestClient) -> None:
    assert client.get("/v1/customers/cy/ledger").json() == {"customer_id": "cy", "entries": [], "balances": []}
    assert_problem(client.get("/v1/customers/nobody/ledger"), 404, ":not-found")


def test_rewards_are_approved_only_once_their_hold_period_has_passed(client: TestClient, clock: Clock) -> None:
    order(client, clock, "order-1", code=issue_code(client, "ada"))
    clock.advance(days=13)
    early = client.post("/v1/rewards/advance")
    assert early.status_code == 200, early.text
    assert early.json() == {"moved": []}
    clock.advance(days=1, seconds=1)
    moved = client.post("/v1/rewards/advance").json()["moved"]
    assert sorted((r["id"], r["state"]) for r in moved) == [
        ("order-1:friend-discount", "approved"),
        ("order-1:referrer-credit", "approved"),
    ]
    assert client.post("/v1/rewards/advance").json() == {"moved": []}


def test_fulfilling_pays_approved_rewards_once(client: TestClient, clock: Clock) -> None:
    order(client, clock, "order-1", code=issue_code(client, "ada"))
    clock.advance(days=15)
    client.post("/v1/rewards/advance")
    response = client.post("/v1/rewards/fulfil")
    assert response.status_code == 200, response.text
    assert sorted(response.json()["fulfilled"]) == ["order-1:friend-discount", "order-1:referrer-credit"]
    assert response.json()["failed"] == {}
    assert client.post("/v1/rewards/fulfil").json() == {"fulfilled": [], "failed": {}}
    assert balance(client, "ada", "fulfilled") == 1000


class DownFulfiller:
    """The merchant's payout system, down."""

    def deliver(self, reward: Reward) -> None:
        raise FulfilmentError(f"merchant answered 503 for {reward.id}", retryable=True, status=503)


def test_rewards_the_fulfiller_cannot_pay_are_reported_and_stay_approved(client: TestClient, clock: Clock) -> None:
    order(client, clock, "order-1", code=issue_code(client, "ada"))
    clock.advance(days=15)
    client.post("/v1/rewards/advance")
    cast(FastAPI, client.app).dependency_overrides[get_fulfiller] = DownFulfiller
    report = client.post("/v1/rewards/fulfil").json()
    assert report["fulfilled"] == []
    assert report["failed"]["order-1:referrer-credit"] == "merchant answered 503 for order-1:referrer-credit"
    assert {r["state"] for r in rewards(client)} == {"approved"}


# --- fraud review ------------------------------------------------------------------------------------------
@pytest.fixture
def held(client: TestClient, clock: Clock) -> dict[str, Any]:
    """Bob's order through Ada's code, from the device Ada signed up on: one person, two accounts."""
    shared = [{"kind": "device", "value": "device-of-ada"}]
    assert (
        client.post("/v1/signups", json={"customer_id": "ada", "at": clock.iso(), "signals": shared}).status_code == 200
    )
    conversion = order(client, clock, "order-9", code=issue_code(client, "ada"), signals=shared)
    assert conversion["status"] == "held", conversion
    return conversion


def test_the_review_queue_lists_held_conversions_with_the_rules_that_held_them(
    client: TestClient, held: dict[str, Any]
) -> None:
    response = client.get("/v1/fraud/cases")
    assert response.status_code == 200, response.text
    (case,) = response.json()["items"]
    assert (case["order_id"], case["buyer_id"], case["referrer_id"], case["campaign_id"]) == (
        "order-9",
        "bob",
        "ada",
        "spring",
    )
    assert case["score"] >= 1.0
    assert any(reason.startswith("self_referral_shared_identity:") for reason in case["reasons"])
    assert response.json()["next"] is None
    assert client.get("/v1/fraud/cases", params={"campaign_id": "other"}).json()["items"] == []
    assert {r["state"] for r in rewards(client)} == {"held"}


def test_rejecting_a_held_conversion_rejects_its_rewards_and_empties_the_queue(
    client: TestClient, held: dict[str, Any]
) -> None:
    decision = {"approve": False, "reviewer": "maria", "note": "same device as the referrer"}
    response = client.post("/v1/fraud/cases/order-9/decision", json=decision)
    assert response.status_code == 200, response.text
    conversion = response.json()
    assert (conversion["status"], conversion["reviewed_by"], conversion["review_note"]) == (
        "rejected",
        "maria",
        "same device as the referrer",
    )
    assert {r["state"] for r in rewards(client)} == {"rejected"}
    assert client.get("/v1/fraud/cases").json()["items"] == []
    again = client.post("/v1/fraud/cases/order-9/decision", json=decision)
    assert_problem(again, 409, ":ledger-conflict")


def test_approving_a_held_conversion_makes_its_rewards_pending_for_the_hold_period(
    client: TestClient, held: dict[str, Any], clock: Clock
) -> None:
    response = client.post("/v1/fraud/cases/order-9/decision", json={"approve": True, "reviewer": "maria"})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "attributed"
    assert {r["state"] for r in rewards(client)} == {"pending"}
    clock.advance(days=15)
    assert len(client.post("/v1/rewards/advance").json()["moved"]) == 2


def test_a_decision_on_an_unknown_or_unheld_conversion_is_refused(client: TestClient, clock: Clock) -> None:
    decision = {"approve": True, "reviewer": "maria"}
    assert_problem(client.post("/v1/fraud/cases/order-404/decision", json=decision), 404, ":not-found")
    order(client, clock, "order-1", code=issue_code(client, "ada"))
    assert_problem(client.post("/v1/fraud/cases/order-1/decision", json=decision), 409, ":ledger-conflict")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"approve": True}, "body.reviewer"),
        ({"reviewer": "maria"}, "body.approve"),
        ({"approve": "perhaps", "reviewer": "m"}, "body.approve"),
    ],
)
def test_a_decision_with_a_bad_field_is_a_422_problem_naming_it(
    client: TestClient, held: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post("/v1/fraud/cases/order-9/decision", json=body), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]
    assert client.get("/v1/conversions/order-9").json()["status"] == "held"


def test_a_decision_signed_with_a_blank_name_is_refused(client: TestClient, held: dict[str, Any]) -> None:
    response = client.post("/v1/fraud/cases/order-9/decision", json={"approve": True, "reviewer": "   "})
    assert_problem(response, 422, ":invalid-input")


# --- leaks -------------------------------------------------------------------------------------------------
def test_the_leak_scan_finds_a_code_clicked_by_strangers_from_coupon_sites(client: TestClient, url: str) -> None:
    post_campaign(
        client,
        id="leaky",
        fraud={"leak_min_clicks": 4, "leak_min_distinct_visitors": 4, "leak_min_sources": 2},
    )
    posted = issue_code(client, "ada", "leaky")
    shared = issue_code(client, "cy", "leaky")
    sites = ["https://www.retailmenot.com/", "https://slickdeals.net/f/1", "https://old.reddit.com/r/deals", ""]
    for n, site in enumerate(sites * 2):
        client.cookies.clear()
        follow(client, posted, **({"referer": site} if site else {}), **{"user-agent": f"browser-{n}"})
    follow(client, shared, referer="https://mail.example.org/")
    response = client.post("/v1/codes/leaks/scan", params={"days": 7})
    assert response.status_code == 200, response.text
    scan = response.json()
    assert scan["days"] == 7
    assert [v["code"] for v in scan["items"]] == [posted]
    assert scan["items"][0]["leaked"] is True
    assert any("coupon" in reason for reason in scan["items"][0]["reasons"])


def test_the_leak_scan_finds_nothing_in_clicks_older_than_its_window(client: TestClient, clock: Clock) -> None:
    post_campaign(
        client, id="leaky", fraud={"leak_min_clicks": 1, "leak_min_distinct_visitors": 1, "leak_min_sources": 1}
    )
    follow(client, issue_code(client, "ada", "leaky"), referer="https://www.retailmenot.com/")
    assert len(client.post("/v1/codes/leaks/scan").json()["items"]) == 1
    clock.advance(days=8)
    assert client.post("/v1/codes/leaks/scan").json()["items"] == []
    assert len(client.post("/v1/codes/leaks/scan", params={"days": 30}).json()["items"]) == 1


@pytest.mark.parametrize("days", [0, 366])
def test_a_leak_scan_window_out_of_range_is_a_422_problem(client: TestClient, days: int) -> None:
    problem = assert_problem(client.post("/v1/codes/leaks/scan", params={"days": days}), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == ["query.days"]


# --- metrics -----------------------------------------------------------------------------------------------
def test_metrics_and_cascades_of_an_unknown_campaign_are_404_problems(client: TestClient) -> None:
    for path in ("/v1/metrics", "/v1/metrics/cascades", "/v1/metrics/cascades.svg"):
        assert_problem(client.get(path, params={"campaign_id": "nope"}), 404, ":not-found")


def test_metrics_of_a_programme_without_activity_have_no_rates(client: TestClient) -> None:
    metrics = client.get("/v1/metrics").json()
    assert (metrics["clicks"], metrics["signups"], metrics["attributed_conversions"]) == (0, 0, 0)
    assert metrics["k_factor"] is None
    assert metrics["conversion_rate"] is None
    svg = client.get("/v1/metrics/cascades.svg")
    assert svg.status_code == 200
    assert "No referral cascades yet" in svg.text


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/v1/metrics/cascades", {"top": -1}, "query.top"),
        ("/v1/metrics/cascades.svg", {"width": 10}, "query.width"),
    ],
)
def test_metrics_parameters_out_of_range_are_422_problems(
    client: TestClient, path: str, params: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.get(path, params=params), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]


# --- the whole flow ----------------------------------------------------------------------------------------
def test_code_click_signup_order_approval_payout_and_clawback_through_http_only(
    client: TestClient, clock: Clock
) -> None:
    code = issue_code(client, "ada")
    link = follow(client, code, referer="https://www.instagram.com/ada")
    assert link.status_code == 302
    click_id = link.cookies["adv_click"]

    clock.advance(hours=2)
    signup = client.post("/v1/signups", json={"customer_id": "bob", "at": clock.iso(), "click_id": click_id}).json()
    assert signup["attribution"]["referrer_id"] == "ada"

    clock.advance(days=1)
    conversion = order(client, clock, "order-42", click_id=click_id, amount_minor=5000)
    assert conversion["status"] == "attributed"
    assert balance(client, "ada", "pending") == 1000
    assert balance(client, "bob", "pending") == 500

    clock.advance(days=14, seconds=1)
    assert len(client.post("/v1/rewards/advance").json()["moved"]) == 2
    assert len(client.post("/v1/rewards/fulfil").json()["fulfilled"]) == 2
    assert balance(client, "ada", "fulfilled") == 1000

    metrics = client.get("/v1/metrics", params={"campaign_id": "spring"}).json()
    assert (metrics["clicks"], metrics["signups"], metrics["attributed_conversions"]) == (1, 1, 1)
    assert metrics["acquired_customers"] == 1
    assert metrics["reward_cost_minor"] == {"EUR": 1500}
    cascades = client.get("/v1/metrics/cascades").json()
    assert [g["customers"] for g in cascades["generations"]] == [1, 1]
    assert cascades["top_seeds"][0]["seed_id"] == "ada"
    svg = client.get("/v1/metrics/cascades.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.startswith("<svg")
    assert "generation 1: 1 customers" in svg.text

    clock.advance(days=3)
    refund = {"id": "refund-42", "order_id": "order-42", "amount_minor": 5000, "at": clock.iso(), "reason": "returned"}
    reversed_ = client.post("/v1/refunds", json=refund)
    assert reversed_.status_code == 201, reversed_.text
    assert reversed_.json()["status"] == "reversed"
    ledger = client.get("/v1/customers/ada/ledger").json()
    assert [e["to_state"] for e in ledger["entries"]] == ["pending", "approved", "fulfilled", "reversed"]
    assert balance(client, "ada", "fulfilled") == 0
    assert balance(client, "ada", "reversed") == 1000
    assert client.get("/v1/metrics").json()["attributed_conversions"] == 0
