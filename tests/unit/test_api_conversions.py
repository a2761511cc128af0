"""Signups, orders, refunds and signed webhooks over HTTP, and the conversions they become (`/v1/conversions`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from engine.settings import ReferralSettings
from engine.webhooks import sign
from tests.api_support import sqlite_url
from tests.factories import Clock
from tests.unit.test_api_referrals import (
    START,
    assert_problem,
    follow,
    issue_code,
    opened_program,
    post_campaign,
    program_client,
    seed_people,
)

WEBHOOK_SECRET = "dev-only-webhook-secret"
"""The development default of `ReferralSettings.webhook_secret`, which these apps run with."""
SHOPIFY_SECRET = "shpss_test_secret"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def client(url: str, clock: Clock) -> Iterator[TestClient]:
    """An app with the campaign `spring` and the people of `test_api_referrals`."""
    seed_people(url)
    with program_client(url, clock) as c:
        post_campaign(c)
        yield c


def order_body(clock: Clock, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "order-1",
        "customer_id": "bob",
        "amount_minor": 4200,
        "currency": "EUR",
        "at": clock.iso(minutes=5),
    }
    body.update(overrides)
    return body


# --- orders ------------------------------------------------------------------------------------------------
def test_an_order_with_a_checkout_code_is_attributed_rewarded_and_answered_201_with_its_location(
    client: TestClient, clock: Clock
) -> None:
    code = issue_code(client, "ada")
    response = client.post("/v1/orders", json=order_body(clock, code=code.lower()))
    assert response.status_code == 201, response.text
    conversion = response.json()
    assert conversion["status"] == "attributed"
    assert conversion["attribution"]["referrer_id"] == "ada"
    assert conversion["attribution"]["method"] == "checkout_code"
    assert sorted(conversion["reward_ids"]) == ["order-1:friend-discount", "order-1:referrer-credit"]
    assert response.headers["location"] == "/v1/conversions/order-1"
    assert client.get("/v1/conversions/order-1").json() == conversion


def test_the_same_order_delivered_again_answers_200_with_the_first_decision_and_no_second_reward(
    client: TestClient, clock: Clock
) -> None:
    code = issue_code(client, "ada")
    first = client.post("/v1/orders", json=order_body(clock, code=code))
    clock.advance(minutes=1)
    again = client.post("/v1/orders", json=order_body(clock, code=code))
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert len(client.get("/v1/rewards", params={"customer_id": "ada"}).json()["items"]) == 1


def test_an_order_id_redelivered_with_another_amount_is_a_409_problem(client: TestClient, clock: Clock) -> None:
    client.post("/v1/orders", json=order_body(clock))
    assert_problem(client.post("/v1/orders", json=order_body(clock, amount_minor=1)), 409, ":ledger-conflict")
    assert client.get("/v1/conversions/order-1").json()["order"]["amount_minor"] == 4200


def test_an_order_without_any_touch_is_recorded_unattributed(client: TestClient, clock: Clock) -> None:
    response = client.post("/v1/orders", json=order_body(clock))
    assert response.status_code == 201
    assert (response.json()["status"], response.json()["attribution"]) == ("unattributed", None)


def test_an_order_of_an_unknown_buyer_is_a_404_problem_unless_their_record_comes_with_it(
    client: TestClient, clock: Clock
) -> None:
    assert_problem(client.post("/v1/orders", json=order_body(clock, customer_id="newbie")), 404, ":not-found")
    customer = {"id": "newbie", "name": "New Bie", "email": "newbie@example.org"}
    response = client.post("/v1/orders", json=order_body(clock, customer_id="newbie", customer=customer))
    assert response.status_code == 201, response.text
    assert client.get("/v1/customers/newbie").json()["customer"]["name"] == "New Bie"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"coupon": "X"}, "body.coupon"),
        ({"amount_minor": -1}, "body.amount_minor"),
        ({"currency": "euros"}, "body.currency"),
        ({"at": "yesterday"}, "body.at"),
        ({"code": "!"}, "body.code"),
        ({"customer": {"id": "bob", "shoe_size": 44}}, "body.customer.shoe_size"),
        ({"customer": {"id": "rob"}}, "body"),
    ],
)
def test_an_order_with_a_bad_field_is_a_422_problem_naming_it(
    client: TestClient, clock: Clock, overrides: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post("/v1/orders", json=order_body(clock, **overrides)), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]
    assert_problem(client.get("/v1/conversions/order-1"), 404, ":not-found")


def test_the_cookie_set_by_the_link_attributes_a_later_order_carrying_its_click_id(
    client: TestClient, clock: Clock
) -> None:
    code = issue_code(client, "cy")
    click_id = follow(client, code).cookies["adv_click"]
    clock.advance(days=2)
    response = client.post("/v1/orders", json=order_body(clock, click_id=click_id))
    assert response.status_code == 201, response.text
    attribution = response.json()["attribution"]
    assert (attribution["referrer_id"], attribution["method"], attribution["code"]) == ("cy", "click", code)


# --- signups -----------------------------------------------------------------------------------------------
def test_a_signup_through_a_click_is_attributed_and_a_later_order_follows_it(client: TestClient, clock: Clock) -> None:
    code = issue_code(client, "ada")
    click_id = follow(client, code).cookies["adv_click"]
    signup = {"customer_id": "bob", "at": clock.iso(minutes=1), "click_id": click_id}
    response = client.post("/v1/signups", json=signup)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["customer_id"] == "bob"
    assert (result["attribution"]["referrer_id"], result["attribution"]["method"]) == ("ada", "click")
    assert client.post("/v1/signups", json=signup).json() == result
    order = client.post("/v1/orders", json=order_body(clock, at=clock.iso(days=3))).json()
    assert order["attribution"]["referrer_id"] == "ada"


def test_a_signup_without_code_or_click_is_recorded_without_attribution(client: TestClient, clock: Clock) -> None:
    response = client.post("/v1/signups", json={"customer_id": "bob", "at": clock.iso()})
    assert response.status_code == 200, response.text
    assert response.json() == {"customer_id": "bob", "attribution": None}


def test_a_signup_brings_the_new_customers_record_with_it(client: TestClient, clock: Clock) -> None:
    code = issue_code(client, "ada")
    body = {"customer_id": "gwen", "at": clock.iso(), "code": code, "customer": {"id": "gwen", "name": "Gwen"}}
    response = client.post("/v1/signups", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["attribution"]["method"] == "signup_code"
    assert client.get("/v1/customers/gwen").json()["customer"]["name"] == "Gwen"


def test_a_signup_of_an_unknown_customer_without_their_record_is_a_404_problem(
    client: TestClient, clock: Clock
) -> None:
    assert_problem(client.post("/v1/signups", json={"customer_id": "ghost", "at": clock.iso()}), 404, ":not-found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_id": "bob"}, "body.at"),
        ({"customer_id": "bob", "at": "2024-01-01T00:00:00Z", "referrer": "ada"}, "body.referrer"),
        (
            {"customer_id": "bob", "at": "2024-01-01T00:00:00Z", "signals": [{"kind": "dna", "value": "x"}]},
            "body.signals[0].kind",
        ),
    ],
)
def test_a_signup_with_a_bad_field_is_a_422_problem_naming_it(
    client: TestClient, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post("/v1/signups", json=body), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]


# --- refunds -----------------------------------------------------------------------------------------------
def test_a_full_refund_reverses_the_conversion_201_and_its_redelivery_answers_200(
    client: TestClient, clock: Clock
) -> None:
    code = issue_code(client, "ada")
    client.post("/v1/orders", json=order_body(clock, code=code))
    clock.advance(days=2)
    refund = {"id": "refund-1", "order_id": "order-1", "amount_minor": 4200, "at": clock.iso()}
    first = client.post("/v1/refunds", json=refund)
    assert first.status_code == 201, first.text
    assert (first.json()["status"], first.json()["refunded_minor"]) == ("reversed", 4200)
    again = client.post("/v1/refunds", json=refund)
    assert again.status_code == 200
    assert again.json() == first.json()
    states = {r["state"] for r in client.get("/v1/rewards", params={"campaign_id": "spring"}).json()["items"]}
    assert states == {"reversed"}


def test_a_partial_refund_keeps_the_conversion_and_its_rewards(client: TestClient, clock: Clock) -> None:
    code = issue_code(client, "ada")
    client.post("/v1/orders", json=order_body(clock, code=code))
    response = client.post(
        "/v1/refunds", json={"id": "refund-1", "order_id": "order-1", "amount_minor": 1000, "at": clock.iso(days=1)}
    )
    assert response.status_code == 201
    assert (response.json()["status"], response.json()["refunded_minor"]) == ("attributed", 1000)
    assert {r["state"] for r in client.get("/v1/rewards").json()["items"]} == {"pending"}


def test_a_refund_of_an_unknown_order_is_a_404_problem(client: TestClient, clock: Clock) -> None:
    refund = {"id": "refund-1", "order_id": "order-404", "amount_minor": 100, "at": clock.iso()}
    assert_problem(client.post("/v1/refunds", json=refund), 404, ":not-found")


def test_a_refund_with_a_bad_field_is_a_422_problem_naming_it(client: TestClient, clock: Clock) -> None:
    refund = {"id": "refund-1", "order_id": "order-1", "amount_minor": "lots", "at": clock.iso()}
    problem = assert_problem(client.post("/v1/refunds", json=refund), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == ["body.amount_minor"]


# --- listing conversions -----------------------------------------------------------------------------------
def test_conversions_page_by_order_id_with_a_next_cursor_until_the_last_page(client: TestClient, clock: Clock) -> None:
    code = issue_code(client, "ada")
    for n in range(5):
        client.post("/v1/orders", json=order_body(clock, id=f"order-{n}", code=code if n % 2 else None))
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/conversions", params=params).json()
        seen += [c["order"]["id"] for c in page["items"]]
        pages += 1
        after = page["next"]
        if after is None:
            break
    assert seen == [f"order-{n}" for n in range(5)]
    assert pages == 3


def test_conversions_filter_by_status_and_by_referrer(client: TestClient, clock: Clock) -> None:
    code = issue_code(client, "ada")
    client.post("/v1/orders", json=order_body(clock, id="o-plain"))
    client.post("/v1/orders", json=order_body(clock, id="o-coded", code=code))
    attributed = client.get("/v1/conversions", params={"status": "attributed"}).json()
    assert [c["order"]["id"] for c in attributed["items"]] == ["o-coded"]
    by_ada = client.get("/v1/conversions", params={"customer_id": "ada"}).json()
    assert [c["order"]["id"] for c in by_ada["items"]] == ["o-coded"]
    by_campaign = client.get("/v1/conversions", params={"campaign_id": "spring"}).json()
    assert [c["order"]["id"] for c in by_campaign["items"]] == ["o-coded"]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "query.limit"), ({"limit": 501}, "query.limit"), ({"status": "won"}, "query.status")],
)
def test_listing_conversions_with_a_bad_parameter_is_a_422_problem_naming_it(
    client: TestClient, params: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.get("/v1/conversions", params=params), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]


def test_an_unknown_conversion_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/conversions/order-404"), 404, ":not-found")


# --- our signed webhooks -----------------------------------------------------------------------------------
def order_event(clock: Clock, code: str | None = None, **data: Any) -> bytes:
    payload = {
        "id": "evt-1",
        "type": "order.paid",
        "created_at": clock.iso(),
        "data": {
            "order_id": "order-w1",
            "customer": {"id": "bob", "email": "bob@example.com"},
            "amount": "42.00",
            "currency": "EUR",
            "paid_at": clock.iso(),
            "referral_code": code,
            **data,
        },
    }
    return json.dumps(payload).encode()


def post_signed(
    client: TestClient, path: str, body: bytes, clock: Clock, *, secret: str = WEBHOOK_SECRET, age_s: int = 0
) -> Any:
    header = sign(body, secret, timestamp=int(clock.now.timestamp()) - age_s)
    return client.post(path, content=body, headers={"X-Advocacy-Signature": header, "content-type": "application/json"})


def test_a_signed_order_event_is_accepted_with_202_and_attributed(client: TestClient, clock: Clock) -> None:
    code = issue_code(client, "ada")
    response = post_signed(client, "/v1/webhooks/events", order_event(clock, code), clock)
    assert response.status_code == 202, response.text
    outcome = response.json()
    assert outcome["event"] == "order"
    assert outcome["conversion"]["status"] == "attributed"
    assert outcome["conversion"]["order"]["amount_minor"] == 4200
    assert client.get("/v1/conversions/order-w1").json() == outcome["conversion"]


def test_refund_and_signup_events_are_applied_too(client: TestClient, clock: Clock) -> None:
    code = issue_code(client, "ada")
    post_signed(client, "/v1/webhooks/events", order_event(clock, code), clock)
    refund = {
        "id": "evt-2",
        "type": "order.refunded",
        "created_at": clock.iso(),
        "data": {"refund_id": "r-1", "order_id": "order-w1", "amount_minor": 4200, "refunded_at": clock.iso()},
    }
    response = post_signed(client, "/v1/webhooks/events", json.dumps(refund).encode(), clock)
    assert response.status_code == 202, response.text
    assert (response.json()["event"], response.json()["conversion"]["status"]) == ("refund", "reversed")
    signup = {
        "id": "evt-3",
        "type": "customer.signed_up",
        "created_at": clock.iso(),
        "data": {"customer": {"id": "hal", "name": "Hal"}, "signed_up_at": clock.iso(), "referral_code": code},
    }
    response = post_signed(client, "/v1/webhooks/events", json.dumps(signup).encode(), clock)
    assert response.status_code == 202, response.text
    assert (response.json()["event"], response.json()["attribution"]["referrer_id"]) == ("signup", "ada")


@pytest.mark.parametrize(
    ("secret", "age_s"),
    [("not-the-secret", 0), (WEBHOOK_SECRET, 301), (WEBHOOK_SECRET, -301)],
    ids=["wrong secret", "replayed", "from the future"],
)
def test_a_badly_signed_event_is_a_401_problem_and_records_nothing(
    client: TestClient, clock: Clock, secret: str, age_s: int
) -> None:
    response = post_signed(client, "/v1/webhooks/events", order_event(clock), clock, secret=secret, age_s=age_s)
    assert_problem(response, 401, ":unauthorized")
    assert_problem(client.get("/v1/conversions/order-w1"), 404, ":not-found")


def test_an_event_whose_body_was_altered_after_signing_is_a_401_problem(client: TestClient, clock: Clock) -> None:
    body = order_event(clock)
    header = sign(body, WEBHOOK_SECRET, timestamp=int(clock.now.timestamp()))
    altered = body.replace(b'"42.00"', b'"4200.00"')
    response = client.post("/v1/webhooks/events", content=altered, headers={"X-Advocacy-Signature": header})
    assert_problem(response, 401, ":unauthorized")


def test_an_unsigned_event_is_a_401_problem(client: TestClient, clock: Clock) -> None:
    assert_problem(client.post("/v1/webhooks/events", content=order_event(clock)), 401, ":unauthorized")


def test_a_signed_event_with_bad_data_is_a_422_problem_naming_the_field(client: TestClient, clock: Clock) -> None:
    response = post_signed(client, "/v1/webhooks/events", order_event(clock, currency="euro"), clock)
    problem = assert_problem(response, 422, ":invalid-input")
    assert any(e["reason"].startswith("data.currency") for e in problem["errors"])


# --- Shopify -----------------------------------------------------------------------------------------------
def shopify_hmac(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify_order(clock: Clock, *, code: str | None = None, click_id: str | None = None) -> bytes:
    payload: dict[str, Any] = {
        "id": 820982911946154508,
        "financial_status": "paid",
        "currency": "EUR",
        "total_price": "42.00",
        "processed_at": clock.iso(),
        "customer": {"id": 115310627314723954, "first_name": "Ivy", "last_name": "Lee", "email": "ivy@example.org"},
        "discount_codes": [{"code": code, "amount": "5.00", "type": "fixed_amount"}] if code else [],
        "note_attributes": [{"name": "adv_click", "value": click_id}] if click_id else [],
    }
    return json.dumps(payload).encode()


@pytest.fixture
def shopify(url: str, clock: Clock) -> Iterator[TestClient]:
    seed_people(url)
    settings = ReferralSettings(shopify_secret=SecretStr(SHOPIFY_SECRET))
    with program_client(url, clock, referral=settings) as c:
        post_campaign(c)
        yield c


@pytest.mark.parametrize("path", ["/v1/webhooks/shopify/orders-paid", "/v1/webhooks/shopify/refunds-create"])
def test_shopify_deliveries_are_refused_with_403_while_no_secret_is_configured(
    client: TestClient, clock: Clock, path: str
) -> None:
    body = shopify_order(clock)
    assert_problem(
        client.post(path, content=body, headers={"X-Shopify-Hmac-Sha256": shopify_hmac(body)}), 403, ":forbidden"
    )


@pytest.mark.parametrize("header", [None, "bm90IHRoZSBobWFj", "!!"], ids=["missing", "wrong", "not base64"])
def test_a_shopify_order_without_the_right_hmac_is_a_401_problem(
    shopify: TestClient, clock: Clock, header: str | None
) -> None:
    headers = {"X-Shopify-Hmac-Sha256": header} if header else {}
    response = shopify.post("/v1/webhooks/shopify/orders-paid", content=shopify_order(clock), headers=headers)
    assert_problem(response, 401, ":unauthorized")
    assert shopify.get("/v1/conversions").json()["items"] == []


def test_a_shopify_order_with_a_referral_discount_code_is_attributed_and_its_refund_claws_back(
    shopify: TestClient, clock: Clock
) -> None:
    code = issue_code(shopify, "ada")
    body = shopify_order(clock, code=code)
    response = shopify.post(
        "/v1/webhooks/shopify/orders-paid", content=body, headers={"X-Shopify-Hmac-Sha256": shopify_hmac(body)}
    )
    assert response.status_code == 202, response.text
    conversion = response.json()["conversion"]
    assert conversion["order"]["id"] == "shopify:820982911946154508"
    assert conversion["order"]["customer_id"] == "shopify:115310627314723954"
    assert conversion["attribution"]["referrer_id"] == "ada"
    refund = json.dumps(
        {
            "id": 509562969,
            "order_id": 820982911946154508,
            "created_at": clock.iso(days=1),
            "transactions": [{"kind": "refund", "status": "success", "amount": "42.00", "currency": "EUR"}],
        }
    ).encode()
    response = shopify.post(
        "/v1/webhooks/shopify/refunds-create", content=refund, headers={"X-Shopify-Hmac-Sha256": shopify_hmac(refund)}
    )
    assert response.status_code == 202, response.text
    assert response.json()["conversion"]["status"] == "reversed"


def test_a_shopify_order_carrying_the_click_cookie_in_a_note_attribute_is_attributed_to_the_click(
    shopify: TestClient, clock: Clock, url: str
) -> None:
    code = issue_code(shopify, "cy")
    click_id = follow(shopify, code).cookies["adv_click"]
    body = shopify_order(clock, click_id=click_id)
    response = shopify.post(
        "/v1/webhooks/shopify/orders-paid", content=body, headers={"X-Shopify-Hmac-Sha256": shopify_hmac(body)}
    )
    assert response.status_code == 202, response.text
    assert response.json()["conversion"]["attribution"]["method"] == "click"
    with opened_program(url) as store:
        assert store.get_customer("shopify:115310627314723954").name == "Ivy Lee"
