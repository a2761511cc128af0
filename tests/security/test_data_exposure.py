"""OWASP API3, excessive data exposure: what public visitors, customers and failing requests get to read.

Each test drives real flows with people whose contact details are distinctive, then greps every raw body and
header it received for those details, for hashes that stand in for a visitor, for person keys and for secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from engine.settings import Settings
from engine.unsubscribe import make_token
from graph.model import utcnow
from tests.api_support import api_client as make_client
from tests.api_support import as_customer, customer_token, grant_key, sqlite_url
from tests.factories import make_customer
from tests.security.support import (
    CAMPAIGN,
    FRIEND_EMAIL,
    PERSONAL,
    anonymous,
    contact_env,
    environment,
    exposed,
    leaks,
    seed_people,
    seeded_app,
    store_of,
)

HTML = {"Accept": "text/html,application/xhtml+xml"}
PERSON_KEY = re.compile(r"email:[0-9a-f]{16,}|customer:[A-Za-z0-9]")
STACK_TRACE = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")
GRACE = {
    "id": "cust-70001",
    "name": "Grace Hopper",
    "email": "leak-check-grace@example.org",
    "phone": "+44 7700 900777",
}


def settings_of(client: TestClient) -> Settings:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    return settings


def secrets_of(settings: Settings) -> dict[str, str]:
    return {
        "the click hash key": settings.referral.click_hash_key.get_secret_value(),
        "the webhook secret": settings.referral.webhook_secret.get_secret_value(),
        "the unsubscribe secret": settings.contact.unsubscribe_secret.get_secret_value(),
        "the session secret": settings.api.session_secret.get_secret_value(),
        "the customer token key": settings.api.customer_token_keys[settings.api.customer_token_kid].get_secret_value(),
    }


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with seeded_app(tmp_path_factory.mktemp("exposure")) as c:
        store_of(c).upsert_customers([make_customer(**GRACE)])
        yield c


def code_of(client: TestClient, customer_id: str) -> str:
    response = client.post(f"/v1/customers/{customer_id}/codes", json={"campaign_id": "spring"})
    assert response.status_code in (200, 201), response.text
    code: str = response.json()["code"]
    return code


def click_hashes(client: TestClient, response: httpx2.Response) -> dict[str, str]:
    """The keyed hashes the click behind `response` was stored with, which stand in for the visitor."""
    click = store_of(client).get_click(response.cookies["adv_click"])
    assert click is not None
    hashes = {"the visitor hash": click.visitor}
    if click.ip_hash:
        hashes["the IP hash"] = click.ip_hash
    return hashes


def test_a_friend_following_a_link_and_its_pages_sees_no_contact_detail_hash_or_key(client: TestClient) -> None:
    code = code_of(client, GRACE["id"])
    friend = anonymous(client)
    followed = friend.get(f"/r/{code}", headers={"User-Agent": "leak-check-agent", "Referer": "https://forum.example/"})
    assert followed.status_code == 302
    forbidden = {
        **PERSONAL,
        "grace's email": GRACE["email"],
        "grace's phone": GRACE["phone"],
        "grace's surname": "Hopper",
        "grace's customer id": GRACE["id"],
        **click_hashes(client, followed),
        **secrets_of(settings_of(client)),
    }
    secret = settings_of(client).contact.unsubscribe_secret.get_secret_value()
    link = f"/u/{make_token(secret, 'customer:' + GRACE['id'], channel=None, issued_at=utcnow())}"
    crawl = [
        followed,
        friend.get(followed.headers["location"], headers=HTML),
        friend.get(f"/landing/{code}"),
        friend.get("/r/NOSUCHCODE1", headers=HTML),
        friend.get("/r/NOSUCHCODE1"),
        friend.get("/landing/NOSUCHCODE1", headers=HTML),
        friend.get(link, headers=HTML),
        friend.get(link),
        friend.post(link, headers=HTML),
    ]
    assert "Grace" in crawl[1].text, "the landing page greets with the first name only"
    for response in crawl:
        assert response.status_code < 500, response.text
        text = exposed(response)
        assert leaks(text, forbidden) == [], response.request.url
        assert not PERSON_KEY.search(text), response.request.url


def test_a_customers_own_responses_carry_nobody_elses_details(client: TestClient) -> None:
    """ada referred bob, who clicked, signed up and ordered; ada then invites a friend by email."""
    code = code_of(client, "ada")
    followed = anonymous(client).get(f"/r/{code}")
    click_id = followed.cookies["adv_click"]
    at = utcnow().isoformat()
    client.post("/v1/signups", json={"customer_id": "bob", "at": at, "click_id": click_id})
    order = {"id": "order-exposure", "customer_id": "bob", "amount_minor": 4200, "currency": "EUR", "at": at}
    assert client.post("/v1/orders", json={**order, "click_id": click_id}).status_code == 201
    forbidden = {name: value for name, value in PERSONAL.items() if not name.startswith("ada")} | {
        "bob's surname": "Stone",
        **click_hashes(client, followed),
        **secrets_of(settings_of(client)),
    }
    ada = as_customer(customer_token(client, "ada"))
    customer = anonymous(client)
    answers = [
        customer.get(path, headers=ada)
        for path in (
            "/v1/me",
            "/v1/customers/ada",
            "/v1/customers/ada/codes",
            "/v1/customers/ada/ledger",
            "/v1/customers/ada/events",
            "/v1/customers/ada/preferences",
            "/v1/customers/ada/kit?campaign_id=spring",
            "/v1/customers/ada/kit/render?campaign_id=spring&channel=email",
        )
    ]
    answers += [
        customer.post(
            "/v1/customers/ada/invitations", json={"campaign_id": "spring", "email": FRIEND_EMAIL}, headers=ada
        ),
        customer.post(
            "/v1/customers/ada/invitations", json={"campaign_id": "spring", "email": FRIEND_EMAIL}, headers=ada
        ),
        customer.post("/v1/customers/ada/responses", json={"kind": "idea", "text": "Gift wrap"}, headers=ada),
        customer.post("/v1/customers/ada/kit/more", json={"campaign_id": "spring", "locale": "fr"}, headers=ada),
        customer.get("/v1/customers/ada/events", headers=ada),
    ]
    assert client.get("/v1/customers/ada/ledger").json()["entries"], "ada earned from bob's order"
    for response in answers:
        assert response.status_code < 400, (response.request.url, response.text)
        text = exposed(response)
        assert leaks(text, forbidden) == [], response.request.url
        assert not PERSON_KEY.search(text), response.request.url


def test_problem_bodies_echo_no_credential_and_no_stack_trace(client: TestClient) -> None:
    key = grant_key(client, ("read",))
    wrong_key = key[:-6] + "ZZZZZZ"
    token = customer_token(client, "ada")
    forged_token = token[:-4] + "AAAA"
    stranger = anonymous(client)
    problems = [
        stranger.get("/v1/customers", headers={"Authorization": f"Bearer {wrong_key}"}),
        stranger.get("/v1/customers/ada", headers=as_customer(forged_token)),
        stranger.get("/v1/customers/bob", headers=as_customer(token)),
        stranger.get(f"/me/enter?token={forged_token}", headers={"Accept": "application/json"}),
        stranger.post("/login", data={"key": wrong_key}),
        client.get("/v1/customers/nobody-by-this-id"),
        client.get("/v1/nothing-here"),
        client.post("/v1/campaigns", content=b'{"id": "x", "name": ', headers={"Content-Type": "application/json"}),
        client.post("/v1/campaigns", content=b"\xff\xfe\x00garbage", headers={"Content-Type": "application/json"}),
        client.post("/v1/campaigns", json={"id": "bad id!", "name": "", "landing_url": "javascript:alert(1)"}),
        client.put("/v1/customers/ada", json={"id": "ada", "email": "not an address", "password": "hunter2"}),
        client.patch("/v1/customers/ada", json={}),
    ]
    forbidden = {
        "the wrong key's secret": wrong_key.split("_", 2)[2],
        "the real key's secret": key.split("_", 2)[2],
        "the customer token": token,
        "the forged token's signature": forged_token.rsplit(".", 1)[1],
        **secrets_of(settings_of(client)),
    }
    statuses = [response.status_code for response in problems]
    assert statuses == [401, 401, 403, 401, 401, 404, 404, 422, 422, 422, 422, 405], statuses
    for response in problems:
        text = exposed(response)
        assert leaks(text, forbidden) == [], response.request.url
        assert not STACK_TRACE.search(text), response.request.url
        assert "hunter2" not in text


def test_a_store_outage_tells_callers_to_retry_without_naming_the_store(tmp_path: Path) -> None:
    """Anyone may open `/r/{code}`: a 503 must not publish the database's user, host or driver error.

    `/readyz` is left out: it is the operators' probe, and `tests/faults` expect it to name the failing host.
    """
    url = "bolt://leakcheckuser:neo-pw-LeakCheck@127.0.0.1:1"
    key = {"Authorization": "Bearer adv_0123456789ab_" + "x" * 43}
    with environment(contact_env(tmp_path)), make_client(url, scopes=()) as down:
        answers = [down.get(path, headers=key) for path in ("/r/ABCDEF12", "/landing/ABCDEF12", "/v1/customers")]
        answers.append(
            down.post("/v1/campaigns", json={"id": "x", "name": "x"}, headers={**key, "Idempotency-Key": "k"})
        )
    for response in answers:
        assert response.status_code == 503, response.text
        assert int(response.headers["retry-after"]) > 0
        text = exposed(response)
        for detail in ("leakcheckuser", "neo-pw-LeakCheck", "bolt://", "127.0.0.1:1", "Errno", "ResolvedIPv4Address"):
            assert detail not in text, (response.request.url, detail)


def test_readiness_does_not_publish_where_the_store_lives(tmp_path: Path) -> None:
    """The probe may name the kind of store, not the server's directories."""
    with environment(contact_env(tmp_path)), make_client(sqlite_url(tmp_path), scopes=()) as c:
        ready = c.get("/readyz")
    assert ready.status_code == 200
    assert str(tmp_path) not in exposed(ready)


def test_an_invitation_result_tells_the_customer_nothing_about_the_mail_server(tmp_path: Path) -> None:
    env = {**contact_env(tmp_path), "ADVOCACY_CONTACT__SMTP_HOST": "127.0.0.1", "ADVOCACY_CONTACT__SMTP_PORT": "1"}
    with environment(env), make_client(sqlite_url(tmp_path)) as c:
        seed_people(store_of(c))
        assert c.post("/v1/campaigns", json=dict(CAMPAIGN)).status_code == 201
        body: dict[str, Any] = {"campaign_id": "spring", "email": FRIEND_EMAIL}
        answer = anonymous(c).post(
            "/v1/customers/ada/invitations", json=body, headers=as_customer(customer_token(c, "ada"))
        )
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] in ("queued", "failed")
    for detail in ("127.0.0.1", "Errno", "Connection", "refused"):
        assert detail not in answer.text, detail
