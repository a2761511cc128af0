"""Campaigns, codes, the public link `/r/{code}` and the landing page over a real SQLite store.

The helpers at the top (a clock the test moves, a client whose programme uses it, the seeded people) are shared
by `test_api_conversions.py` and `test_api_rewards.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx2
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from engine.settings import Settings
from graph.program import CampaignStatus, CodeStatus
from graph.program_store import Store
from tests.api_support import PROBLEM_JSON, campaign_body, opened, sign_in, sqlite_url
from tests.factories import BASE_TIME, Clock, make_customer

START = BASE_TIME + timedelta(days=30)
"""The programme's "now" when a test starts: the seeded customers are a month old."""


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@contextmanager
def program_client(url: str, clock: Clock, **settings: Any) -> Iterator[TestClient]:
    """The real app (as `api_client` builds it) whose programme reads the test's clock."""
    app = create_app(Settings(store=url, **settings), clock=clock)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield sign_in(c)


@pytest.fixture
def client(url: str, clock: Clock) -> Iterator[TestClient]:
    with program_client(url, clock) as c:
        yield c


PEOPLE = {"ada": "Ada Lovelace", "bob": "Bob Stone", "cy": "Cy Young", "dee": "Dee Dee Ramone"}


def seed_people(url: str) -> dict[str, str]:
    """Four customers the store knows, created a month before the tests' "now"."""
    with opened(url) as store:
        store.upsert_customers([make_customer(id=cid, name=name) for cid, name in PEOPLE.items()])
    return PEOPLE


@pytest.fixture
def people(url: str) -> dict[str, str]:
    return seed_people(url)


@contextmanager
def opened_program(url: str) -> Iterator[Store]:
    with opened(url) as store:
        yield cast(Store, store)


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


def post_campaign(client: TestClient, **overrides: Any) -> dict[str, Any]:
    response = client.post("/v1/campaigns", json=campaign_body(**overrides))
    assert response.status_code == 201, response.text
    campaign: dict[str, Any] = response.json()
    return campaign


def issue_code(client: TestClient, customer_id: str, campaign_id: str = "spring", **body: Any) -> str:
    response = client.post(f"/v1/customers/{customer_id}/codes", json={"campaign_id": campaign_id, **body})
    assert response.status_code == 201, response.text
    code: str = response.json()["code"]
    return code


def follow(client: TestClient, code: str, **headers: str) -> httpx2.Response:
    """Open `/r/{code}` like a browser would, without following the redirect; then wait for the click's batch
    to be written, as the app's own signup and order handling does."""
    response: httpx2.Response = client.get(f"/r/{code}", headers=headers, follow_redirects=False)
    clicks = client.app.state.clicks  # type: ignore[attr-defined]
    assert clicks is None or clicks.flush(5)
    return response


# --- campaigns ---------------------------------------------------------------------------------------------
def test_a_posted_campaign_gets_the_server_time_and_can_be_read_and_listed(client: TestClient, clock: Clock) -> None:
    response = client.post("/v1/campaigns", json=campaign_body())
    assert response.status_code == 201, response.text
    campaign = response.json()
    assert campaign["created_at"] == clock.now.isoformat().replace("+00:00", "Z")
    assert campaign["landing_url"] == "/landing/{code}"
    assert response.headers["location"] == "/v1/campaigns/spring"
    assert client.get("/v1/campaigns/spring").json() == campaign
    assert client.get("/v1/campaigns").json() == {"items": [campaign]}


def test_posting_a_campaign_id_already_in_use_is_a_409_problem_and_keeps_the_first(client: TestClient) -> None:
    post_campaign(client)
    assert_problem(client.post("/v1/campaigns", json=campaign_body(name="Other")), 409, ":ledger-conflict")
    assert client.get("/v1/campaigns/spring").json()["name"] == "Spring referral"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"colour": "teal"}, "body.colour"),
        ({"id": "Not A Slug"}, "body.id"),
        ({"currency": "euro"}, "body.currency"),
        ({"hold_days": -1}, "body.hold_days"),
        ({"rewards": [{"id": "r", "side": "referrer", "kind": "credit"}]}, "body.rewards[0]"),
        ({"created_at": "2024-01-01T00:00:00Z"}, "body.created_at"),
    ],
)
def test_a_campaign_with_a_bad_field_is_a_422_problem_naming_it(
    client: TestClient, overrides: dict[str, Any], field: str
) -> None:
    body = assert_problem(client.post("/v1/campaigns", json=campaign_body(**overrides)), 422, ":validation")
    assert [e["source"] for e in body["errors"]] == [field]
    assert client.get("/v1/campaigns").json() == {"items": []}


def test_a_landing_url_without_the_code_placeholder_is_refused(client: TestClient) -> None:
    response = client.post("/v1/campaigns", json=campaign_body(landing_url="https://shop.example/welcome"))
    body = assert_problem(response, 422, ":validation")
    assert "{code}" in body["errors"][0]["reason"]


def test_an_unknown_campaign_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/campaigns/nope"), 404, ":not-found")


# --- codes -------------------------------------------------------------------------------------------------
def test_a_generated_code_starts_with_the_advocates_name_and_is_listed_under_them(
    client: TestClient, people: dict[str, str]
) -> None:
    post_campaign(client)
    response = client.post("/v1/customers/ada/codes", json={"campaign_id": "spring"})
    assert response.status_code == 201, response.text
    code = response.json()
    assert code["code"].startswith("ADA")
    assert (code["customer_id"], code["campaign_id"], code["status"], code["vanity"]) == (
        "ada",
        "spring",
        "active",
        False,
    )
    assert response.headers["location"] == f"/v1/codes/{code['code']}"
    assert client.get(response.headers["location"]).json() == code
    assert client.get("/v1/customers/ada/codes").json() == {"items": [code]}
    assert client.get("/v1/customers/bob/codes").json() == {"items": []}


def test_a_vanity_code_is_normalised_and_read_back_in_any_spelling(client: TestClient, people: dict[str, str]) -> None:
    post_campaign(client)
    assert issue_code(client, "ada", vanity="ada-loves-10") == "ADALOVES10"
    for spelling in ("ADALOVES10", "adaloves10", "ada_loves-10"):
        response = client.get(f"/v1/codes/{spelling}")
        assert response.status_code == 200, spelling
        assert response.json()["vanity"] is True


def test_a_vanity_code_someone_already_has_is_a_409_problem(client: TestClient, people: dict[str, str]) -> None:
    post_campaign(client)
    issue_code(client, "ada", vanity="SUNSHINE")
    response = client.post("/v1/customers/bob/codes", json={"campaign_id": "spring", "vanity": "sunshine"})
    assert_problem(response, 409, ":ledger-conflict")
    assert client.get("/v1/customers/bob/codes").json() == {"items": []}


@pytest.mark.parametrize("vanity", ["FREE", "1234", "A!"])
def test_a_vanity_code_that_cannot_be_anyones_is_a_422_problem(
    client: TestClient, people: dict[str, str], vanity: str
) -> None:
    post_campaign(client)
    response = client.post("/v1/customers/ada/codes", json={"campaign_id": "spring", "vanity": vanity})
    assert_problem(response, 422, ":invalid-input")


def test_issuing_a_code_to_an_unknown_customer_or_in_an_unknown_campaign_is_a_404_problem(
    client: TestClient, people: dict[str, str]
) -> None:
    post_campaign(client)
    assert_problem(client.post("/v1/customers/nobody/codes", json={"campaign_id": "spring"}), 404, ":not-found")
    assert_problem(client.post("/v1/customers/ada/codes", json={"campaign_id": "autumn"}), 404, ":not-found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body.campaign_id"),
        ({"campaign_id": "Spring Sale"}, "body.campaign_id"),
        ({"campaign_id": "spring", "x": 1}, "body.x"),
    ],
)
def test_a_code_request_with_a_bad_field_is_a_422_problem_naming_it(
    client: TestClient, people: dict[str, str], body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post("/v1/customers/ada/codes", json=body), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]


def test_listing_the_codes_of_an_unknown_customer_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/customers/nobody/codes"), 404, ":not-found")


def test_pause_resume_and_revoke_change_the_status_and_record_when(
    client: TestClient, people: dict[str, str], clock: Clock
) -> None:
    post_campaign(client)
    code = issue_code(client, "ada")
    clock.advance(hours=1)
    paused = client.post(f"/v1/codes/{code.lower()}/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    assert paused.json()["status_at"] == clock.now.isoformat().replace("+00:00", "Z")
    assert client.post(f"/v1/codes/{code}/resume").json()["status"] == "active"
    assert client.post(f"/v1/codes/{code}/revoke").json()["status"] == "revoked"
    assert client.get(f"/v1/codes/{code}").json()["status"] == CodeStatus.REVOKED.value


def test_rotating_a_code_gives_the_advocate_a_new_one_and_revokes_the_old(
    client: TestClient, people: dict[str, str], clock: Clock
) -> None:
    post_campaign(client)
    old = issue_code(client, "ada")
    clock.advance(days=1)
    response = client.post(f"/v1/codes/{old}/rotate")
    assert response.status_code == 200, response.text
    fresh = response.json()
    assert fresh["code"] != old
    assert (fresh["customer_id"], fresh["status"]) == ("ada", "active")
    stored_old = client.get(f"/v1/codes/{old}").json()
    assert (stored_old["status"], stored_old["replaced_by"]) == ("revoked", fresh["code"])
    assert client.post(f"/v1/codes/{old}/rotate").json()["code"] == fresh["code"]
    assert [c["code"] for c in client.get("/v1/customers/ada/codes").json()["items"]] == [old, fresh["code"]]


@pytest.mark.parametrize("action", ["pause", "resume", "revoke", "rotate"])
def test_changing_an_unknown_code_is_a_404_problem(client: TestClient, action: str) -> None:
    assert_problem(client.post(f"/v1/codes/NOSUCHCODE/{action}"), 404, ":not-found")


def test_reading_an_unknown_code_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/codes/NOSUCHCODE"), 404, ":not-found")


# --- the public link ---------------------------------------------------------------------------------------
def cookie_attributes(response: httpx2.Response, name: str = "adv_click") -> dict[str, str]:
    """The attributes of the `Set-Cookie` header that sets `name` (the link sets the visitor cookie too)."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            attributes: dict[str, str] = {}
            for part in header.split(";"):
                key, _, value = part.strip().partition("=")
                attributes[key.lower()] = value
            return attributes
    raise AssertionError(f"no {name} cookie set: {response.headers.get_list('set-cookie')}")


def test_the_link_records_a_click_sets_a_private_cookie_and_redirects_to_the_landing_page(
    client: TestClient, people: dict[str, str], url: str, clock: Clock
) -> None:
    post_campaign(client)
    code = issue_code(client, "ada")
    response = follow(client, code.lower(), referer="https://www.Instagram.com/p/xyz", **{"user-agent": "Firefox/128"})
    assert response.status_code == 302
    assert response.headers["location"] == f"/landing/{code}"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    attributes = cookie_attributes(response)
    click_id = attributes["adv_click"]
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "lax"
    assert attributes["max-age"] == str(30 * 86_400)
    assert attributes["path"] == "/"
    assert "secure" not in attributes
    with opened_program(url) as store:
        click = store.get_click(click_id)
    assert click is not None
    assert (click.code, click.at, click.source) == (code, clock.now, "instagram.com")
    assert "testclient" not in click.visitor
    visitor = cookie_attributes(response, "adv_visitor")
    assert "httponly" in visitor
    assert int(visitor["max-age"]) > 365 * 86_400


def test_one_browser_clicking_twice_counts_as_one_visitor(
    client: TestClient, people: dict[str, str], url: str, clock: Clock
) -> None:
    post_campaign(client)
    code = issue_code(client, "ada")
    first = follow(client, code)
    second = follow(client, code)
    assert "adv_visitor" not in [h.split("=")[0] for h in second.headers.get_list("set-cookie")]
    with opened_program(url) as store:
        clicks = [store.get_click(cookie_attributes(r)["adv_click"]) for r in (first, second)]
        activity = store.code_activity(code, since=clock.now - timedelta(days=1))
    assert clicks[0] is not None
    assert clicks[1] is not None
    assert clicks[0].visitor == clicks[1].visitor
    assert (activity.clicks, activity.distinct_visitors) == (2, 1)


def test_the_link_over_https_sets_a_secure_cookie(url: str, people: dict[str, str]) -> None:
    app = create_app(Settings(store=url))
    with TestClient(app, base_url="https://testserver") as secure:
        sign_in(secure)
        post_campaign(secure)
        code = issue_code(secure, "ada")
        assert "secure" in cookie_attributes(follow(secure, code))


def test_a_campaign_landing_elsewhere_redirects_there_with_the_code(client: TestClient, people: dict[str, str]) -> None:
    post_campaign(client, landing_url="https://shop.example/invite?ref={code}")
    code = issue_code(client, "ada")
    assert follow(client, code).headers["location"] == f"https://shop.example/invite?ref={code}"


def test_a_paused_code_still_redirects_but_sets_no_cookie(client: TestClient, people: dict[str, str]) -> None:
    post_campaign(client)
    code = issue_code(client, "ada")
    client.post(f"/v1/codes/{code}/pause")
    response = follow(client, code)
    assert response.status_code == 302
    assert response.headers["location"] == f"/landing/{code}"
    assert not any(h.startswith("adv_click=") for h in response.headers.get_list("set-cookie"))


def test_a_rotated_code_lands_on_the_offer_showing_the_new_code(client: TestClient, people: dict[str, str]) -> None:
    post_campaign(client)
    old = issue_code(client, "ada")
    fresh = client.post(f"/v1/codes/{old}/rotate").json()["code"]
    response = follow(client, old)
    assert response.headers["location"] == f"/landing/{fresh}"
    assert not any(h.startswith("adv_click=") for h in response.headers.get_list("set-cookie"))


@pytest.mark.parametrize("code", ["NOSUCHCODE", "%21%21", "a"])
def test_an_unknown_or_malformed_code_is_a_404_problem_for_an_api_client(client: TestClient, code: str) -> None:
    response = client.get(f"/r/{code}", follow_redirects=False)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert "set-cookie" not in response.headers


def test_an_unknown_code_is_a_404_page_for_a_browser(client: TestClient) -> None:
    response = client.get("/r/NOSUCHCODE", headers={"accept": "text/html"}, follow_redirects=False)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "<h1" in response.text


# --- the landing page --------------------------------------------------------------------------------------
def test_the_landing_page_shows_the_offer_the_code_and_only_the_referrers_first_name(
    client: TestClient, people: dict[str, str]
) -> None:
    post_campaign(client)
    code = issue_code(client, "dee")
    response = client.get(f"/landing/{code}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["referrer-policy"] == "no-referrer"
    html = response.text
    assert re.search(r"data-referrer>Dee<", html)
    assert "Ramone" not in html
    assert "dee@example.com" not in html
    assert re.search(rf"data-code[^>]*>{code}<", html)
    assert "5 EUR off your first order" in html


def test_following_the_link_ends_on_the_landing_page(client: TestClient, people: dict[str, str]) -> None:
    post_campaign(client)
    code = issue_code(client, "ada")
    response = client.get(f"/r/{code}")
    assert response.status_code == 200
    assert response.url.path == f"/landing/{code}"
    assert "Ada" in response.text


def test_the_landing_page_of_a_rotated_code_shows_the_new_code(client: TestClient, people: dict[str, str]) -> None:
    post_campaign(client)
    old = issue_code(client, "ada")
    fresh = client.post(f"/v1/codes/{old}/rotate").json()["code"]
    html = client.get(f"/landing/{old}").text
    assert re.search(rf"data-code[^>]*>{fresh}<", html)
    assert old not in html


def test_the_landing_page_of_an_ended_campaign_offers_nothing(
    client: TestClient, people: dict[str, str], url: str
) -> None:
    post_campaign(client)
    code = issue_code(client, "ada")
    with opened_program(url) as store:
        store.save_campaign(store.get_campaign("spring").model_copy(update={"status": CampaignStatus.ENDED}))
    html = client.get(f"/landing/{code}").text
    assert "data-ended" in html
    assert "data-offer" not in html
    assert "data-code" not in html


def test_the_landing_page_escapes_what_the_marketer_and_the_advocate_wrote(client: TestClient, url: str) -> None:
    with opened(url) as store:
        store.upsert_customers([make_customer(id="mal", name="<script>alert(1)</script> Smith")])
    post_campaign(client, friend_offer="<img src=x onerror=alert(2)>", name="<b>bold</b>")
    code = issue_code(client, "mal")
    html = client.get(f"/landing/{code}").text
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    assert "<b>bold" not in html


def test_the_landing_page_is_accessible_and_loads_nothing_from_elsewhere(
    client: TestClient, people: dict[str, str]
) -> None:
    post_campaign(client)
    html = client.get(f"/landing/{issue_code(client, 'ada')}").text
    assert '<html lang="en">' in html
    assert html.count("<h1") == 1
    assert "<main" in html
    assert 'name="viewport"' in html
    assert "<script" not in html
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert all(src.startswith(("/", "data:", "#")) for src in sources), sources
    assert not re.search(r"url\(\s*['\"]?https?:", html)


def test_the_landing_page_of_an_unknown_code_is_a_404_page(client: TestClient) -> None:
    response = client.get("/landing/NOSUCHCODE", headers={"accept": "text/html"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


# --- documentation -----------------------------------------------------------------------------------------
def test_the_programme_operations_are_documented_with_examples(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths["/r/{code}"]["get"]["tags"] == ["public"]
    assert "302" in paths["/r/{code}"]["get"]["responses"]
    assert "/landing/{code}" not in paths
    for path in ("/v1/campaigns", "/v1/customers/{customer_id}/codes", "/v1/orders", "/v1/signups", "/v1/refunds"):
        content = paths[path]["post"]["requestBody"]["content"]["application/json"]
        assert content["examples"], path
        assert "503" in paths[path]["post"]["responses"], path
    webhook = paths["/v1/webhooks/events"]["post"]
    assert "401" in webhook["responses"]
    assert webhook["requestBody"]["content"]["application/json"]["example"]["type"] == "order.paid"
    assert "403" in paths["/v1/webhooks/shopify/orders-paid"]["post"]["responses"]
    assert "image/svg+xml" in paths["/v1/metrics/cascades.svg"]["get"]["responses"]["200"]["content"]
