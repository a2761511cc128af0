"""The pages, rendered on the server: who may open them, what they show, and what their forms do.

Marketer pages need the session `/login` sets and send a signed-out browser there; the customer's page needs the
session `/me/enter` sets. Every form posts the session's CSRF token. The client's own `Authorization` header (an
admin key from `api_client`) only sets data up through `/v1`: pages read cookies, never that header.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.auth import CUSTOMER_COOKIE, MARKETER_COOKIE
from engine import views
from graph.model import utcnow
from tests.api_support import api_client, customer_token, grant_key, opened, seed_network, sqlite_url
from tests.factories import make_customer, make_run, make_scores
from tests.program_factories import make_campaign
from tests.unit.test_api_referrals import opened_program

MARKETER_PAGES = ("/", "/targets", "/campaigns", "/kits", "/fraud", "/referrals", "/referrals/order-1")
MARKETER_FORMS = ("/campaigns", "/outreach", "/kits/preview", "/fraud/order-1/decision")
CUSTOMER_FORMS = ("/me/preferences", "/me/ideas")
HTML = {"accept": "text/html"}


@pytest.fixture(autouse=True)
def contact_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The contact limiter and the development mailbox live in the test's directory, not the working one."""
    monkeypatch.setenv("ADVOCACY_CONTACT__SQLITE_PATH", str(tmp_path / "contacts.db"))
    monkeypatch.setenv("ADVOCACY_CONTACT__MAILDIR", str(tmp_path / "mail"))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with api_client(url) as c:
        yield c


@pytest.fixture
def seeded(client: TestClient, url: str) -> TestClient:
    """Six analysed customers (see `seed_network`) and the running campaign `spring`."""
    with opened_program(url) as store:
        seed_network(store)
        store.save_campaign(make_campaign(id="spring", created_at=utcnow()))
    return client


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def sign_in(client: TestClient, scopes: tuple[str, ...] = ("admin",), *, name: str = "maria") -> str:
    """Sign in at /login as a marketer browser does; the session's CSRF token."""
    client.cookies.clear()
    response = client.post("/login", data={"key": grant_key(client, scopes, name=name), "next": "/fraud"})
    assert response.status_code == 200, response.text  # followed the redirect to /fraud
    assert MARKETER_COOKIE in client.cookies
    return csrf_of(response.text)


def enter_as_customer(client: TestClient, customer_id: str) -> str:
    """Open the customer's page from the shop's link, as their browser does; the session's CSRF token."""
    client.cookies.clear()
    response = client.get("/me/enter", params={"token": customer_token(client, customer_id)})
    assert response.status_code == 200, response.text
    assert CUSTOMER_COOKIE in client.cookies
    return csrf_of(response.text)


def page(client: TestClient, path: str, **params: Any) -> str:
    response = client.get(path, params=params or None, headers=HTML)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    html: str = response.text
    return html


def text_of(html: str) -> str:
    """What a person reads: tags dropped, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def kpi(html: str, name: str) -> str:
    match = re.search(rf'data-kpi="{name}">\s*(.*?)\s*</dd>', html, re.S)
    assert match, name
    return text_of(match.group(1))


def api(client: TestClient, method: str, path: str, **kwargs: Any) -> Any:
    response = client.request(method, path, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def issue_code(client: TestClient, customer_id: str, campaign_id: str = "spring") -> str:
    code: str = api(client, "POST", f"/v1/customers/{customer_id}/codes", json={"campaign_id": campaign_id})["code"]
    return code


def order(client: TestClient, order_id: str, buyer: str, **fields: Any) -> dict[str, Any]:
    body = {"id": order_id, "customer_id": buyer, "amount_minor": 4200, "currency": "EUR", "at": utcnow().isoformat()}
    conversion: dict[str, Any] = api(client, "POST", "/v1/orders", json={**body, **fields})
    return conversion


def referred_order(client: TestClient, order_id: str = "order-1") -> tuple[str, str]:
    """Bob follows Ada's link, then orders with its click: attributed to Ada. The code and the click id."""
    code = issue_code(client, "ada")
    client.cookies.clear()
    click = client.get(f"/r/{code}", follow_redirects=False)
    assert click.status_code == 302, click.text
    click_id = click.cookies["adv_click"]
    client.cookies.clear()
    assert order(client, order_id, "bob", click_id=click_id)["status"] == "attributed"
    return code, click_id


# --- who may open what -----------------------------------------------------------------------------------------
def test_every_marketer_page_sends_a_signed_out_browser_to_sign_in_and_back(seeded: TestClient) -> None:
    for path in MARKETER_PAGES:
        response = seeded.get(path, headers=HTML, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == f"/login?next={path}"
    for path in MARKETER_FORMS:
        response = seeded.post(path, data={"csrf_token": "x"}, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next=")


def test_every_marketer_page_renders_for_a_signed_in_marketer_with_a_nav_and_a_sign_out_form(
    seeded: TestClient,
) -> None:
    referred_order(seeded)
    csrf = sign_in(seeded)
    for path in MARKETER_PAGES:
        response = seeded.get(path, headers=HTML)
        assert response.status_code == 200, (path, response.text[:500])
        html = response.text
        assert html.count("<h1") == 1, path
        assert re.search(r'<nav aria-label="Main">', html), path
        assert f'<input type="hidden" name="csrf_token" value="{csrf}">' in html, path
        assert 'action="/logout"' in html, path
        assert response.headers["cache-control"] == "no-store", path
        assert response.headers["x-frame-options"] == "DENY", path
    signed_out = seeded.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert signed_out.status_code == 303
    assert seeded.get("/", follow_redirects=False).status_code == 303


def test_a_revoked_key_ends_the_pages_of_the_sessions_it_opened(seeded: TestClient) -> None:
    sign_in(seeded, name="temp")
    (key,) = [k for k in api(seeded, "GET", "/v1/api-keys") if k["name"] == "temp"]
    api(seeded, "DELETE", f"/v1/api-keys/{key['id']}")
    assert seeded.get("/targets", follow_redirects=False).headers["location"] == "/login?next=/targets"


def test_a_customer_session_cannot_open_marketer_pages_or_post_their_forms(seeded: TestClient) -> None:
    csrf = enter_as_customer(seeded, "ada")
    for path in MARKETER_PAGES:
        response = seeded.get(path, headers=HTML, follow_redirects=False)
        assert (response.status_code, response.headers.get("location")) == (303, f"/login?next={path}"), path
    response = seeded.post("/campaigns", data={"csrf_token": csrf, "id": "x", "name": "X"}, follow_redirects=False)
    assert response.status_code == 303
    seeded.cookies.set(MARKETER_COOKIE, seeded.cookies[CUSTOMER_COOKIE])  # a customer's session under the other name
    assert seeded.get("/", follow_redirects=False).status_code == 303
    assert [c["id"] for c in api(seeded, "GET", "/v1/campaigns")["items"]] == ["spring"]


def test_a_marketer_session_cannot_open_the_customer_page(seeded: TestClient) -> None:
    csrf = sign_in(seeded)
    assert seeded.get("/me", headers=HTML).status_code == 401
    response = seeded.post("/me/ideas", data={"csrf_token": csrf, "text": "hello"}, headers=HTML)
    assert response.status_code == 401
    seeded.cookies.set(CUSTOMER_COOKIE, seeded.cookies[MARKETER_COOKIE])  # a marketer's session under the other name
    assert seeded.get("/me", headers=HTML).status_code == 401
    seeded.cookies.clear()
    assert "open your referral page from the link" in seeded.get("/me", headers=HTML).text


@pytest.mark.parametrize("token", [None, "", "not-the-session-token"])
def test_every_form_refuses_a_missing_or_wrong_csrf_token_and_changes_nothing(
    seeded: TestClient, token: str | None
) -> None:
    field = {} if token is None else {"csrf_token": token}
    sign_in(seeded)
    forms: dict[str, dict[str, str | list[str]]] = {
        "/campaigns": {"id": "summer", "name": "Summer", "referrer_kind": "credit", "referrer_amount": "10"},
        "/outreach": {"campaign_id": "spring", "name": "Top", "customer_ids": ["ada"]},
        "/kits/preview": {"customer": "ada", "campaign": "spring", "body": "Hi"},
        "/fraud/order-1/decision": {"decision": "approve"},
    }
    for path, data in forms.items():
        response = seeded.post(path, data={**data, **field}, headers=HTML, follow_redirects=False)
        assert response.status_code == 403, (path, response.text[:300])
        assert "CSRF" in response.text
    enter_as_customer(seeded, "ada")
    customer_forms = {"/me/preferences": {"action": "unsubscribe"}, "/me/ideas": {"text": "An idea"}}
    for path, fields in customer_forms.items():
        response = seeded.post(path, data={**fields, **field}, headers=HTML, follow_redirects=False)
        assert response.status_code == 403, path
    assert [c["id"] for c in api(seeded, "GET", "/v1/campaigns")["items"]] == ["spring"]
    assert api(seeded, "GET", "/v1/outreach")["items"] == []
    assert api(seeded, "GET", "/v1/customers/ada/preferences")["unsubscribed"] is False
    assert api(seeded, "GET", "/v1/customers/ada/events", params={"kind": "idea"})["items"] == []


def test_a_form_refuses_the_csrf_token_of_another_session(seeded: TestClient) -> None:
    other = sign_in(seeded, name="someone else")
    sign_in(seeded)
    response = seeded.post("/campaigns", data={"csrf_token": other, "id": "summer", "name": "Summer"}, headers=HTML)
    assert response.status_code == 403


def test_forms_that_change_money_or_campaigns_need_the_scope_the_api_would(seeded: TestClient) -> None:
    csrf = sign_in(seeded, ("read",))
    assert "it needs the <code>rewards:write</code> scope" in page(seeded, "/fraud")
    attempts: dict[str, dict[str, str | list[str]]] = {
        "/campaigns": {"id": "summer", "name": "Summer"},
        "/outreach": {"campaign_id": "spring", "name": "Top", "customer_ids": ["ada"]},
        "/fraud/order-1/decision": {"decision": "approve"},
    }
    for path, data in attempts.items():
        response = seeded.post(path, data={**data, "csrf_token": csrf}, headers=HTML)
        assert response.status_code == 403, path
        assert "lacks the scope" in response.text
    assert api(seeded, "GET", "/v1/outreach")["items"] == []


def test_a_key_may_post_the_forms_whose_api_routes_it_may_call_and_no_others(seeded: TestClient) -> None:
    held = held_order(seeded)
    csrf = sign_in(seeded, ("read", "campaigns:write"))
    created = seeded.post("/campaigns", data={**builder(), "csrf_token": csrf}, follow_redirects=False)
    assert created.status_code == 303, created.text[:300]
    decided = seeded.post(f"/fraud/{held}/decision", data={"csrf_token": csrf, "decision": "approve"}, headers=HTML)
    assert decided.status_code == 403
    assert "rewards:write" in decided.text
    assert api(seeded, "GET", f"/v1/conversions/{held}")["status"] == "held"


# --- the dashboard ----------------------------------------------------------------------------------------------
def test_dashboard_shows_the_counts_segments_and_top_influencers(seeded: TestClient) -> None:
    sign_in(seeded)
    html = page(seeded, "/")
    assert kpi(html, "customers") == "6"
    assert kpi(html, "referred") == "3"
    assert kpi(html, "influences") == "5"
    assert "run-seed" in html
    assert re.search(r'data-segment="advocate">2<', html)
    assert re.search(r'data-segment="influencer">1<', html)
    rows = re.findall(r'data-focus-node="([^"]+)"', html)
    assert rows == ["ada", "bob", "cy", "dee", "eve", "fay"]
    assert "Ada Lovelace explained." in html


def test_dashboard_shows_a_run_whose_process_died_as_abandoned_not_running(seeded: TestClient, url: str) -> None:
    sign_in(seeded)
    with opened_program(url) as store:
        silent = utcnow() - timedelta(hours=1)
        beat = {"step": "reach", "heartbeat_at": silent.isoformat()}
        store.save_run(make_run(id="run-killed", started_at=silent, finished_at=None, status="running", summary=beat))
    html = page(seeded, "/")
    assert "run-killed" in html
    assert re.search(r'class="status status--abandoned">abandoned<', html)


def test_dashboard_shows_the_programme_kpis_overall_and_per_campaign(seeded: TestClient, url: str) -> None:
    with opened_program(url) as store:
        store.save_campaign(make_campaign(id="autumn", name="Autumn", created_at=utcnow()))
    sign_in(seeded)
    before = page(seeded, "/")
    assert (kpi(before, "participation"), kpi(before, "k-factor"), kpi(before, "cost-per-customer")) == (
        "0.0 % 0 of 6",
        "– 0 new customers",
        "–",
    )
    referred_order(seeded)
    sign_in(seeded)
    html = page(seeded, "/")
    assert kpi(html, "participation") == "16.7 % 1 of 6"  # Ada's link got a click
    assert kpi(html, "k-factor") == "1.00 1 new customers"  # Bob bought
    assert kpi(html, "conversion") == "100.0 % 1 orders from 1 visitors"
    assert kpi(html, "cost-per-customer") == "15 EUR"  # 10 EUR credit to Ada, 5 EUR off for Bob
    autumn = page(seeded, "/", campaign="autumn")
    assert kpi(autumn, "k-factor") == "– 0 new customers"
    assert '<option value="autumn" selected>' in autumn
    assert seeded.get("/", params={"campaign": "nope"}, headers=HTML).status_code == 404


def test_the_dashboard_network_has_a_legend_and_a_filter_for_segments(seeded: TestClient) -> None:
    sign_in(seeded)
    html = page(seeded, "/")
    assert 'id="legend-segments"' in html
    assert 'id="legend-communities"' in html
    options = re.findall(r'<option value="(segment:[a-z_]+)">', html)
    assert options == [f"segment:{s}" for s in ("influencer", "prosumer", "advocate", "passive", "do_not_ask")]


def test_dashboard_before_any_data_says_so_instead_of_showing_numbers(client: TestClient) -> None:
    sign_in(client)
    html = page(client, "/")
    assert kpi(html, "customers") == "0"
    assert "No analysis has scored customers yet" in html
    assert "None yet" in html
    assert "data-focus-node" not in html


def test_customer_names_are_escaped(client: TestClient, url: str) -> None:
    with opened(url) as store:
        store.upsert_customers([make_customer(id="x1", name="<script>alert(1)</script>")])
        store.write_scores([make_scores("x1", explanation="<img src=x onerror=alert(2)>")])
    sign_in(client)
    html = page(client, "/")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html


def test_page_is_accessible_in_structure(seeded: TestClient) -> None:
    sign_in(seeded)
    html = page(seeded, "/")
    assert '<html lang="en">' in html
    for landmark in ("<header", "<main", "<nav", "<footer"):
        assert landmark in html
    assert 'href="#main"' in html
    assert html.count("<h1") == 1
    assert 'role="status"' in html
    assert re.search(r'id="network"[^>]*tabindex="0"', html)
    assert re.search(r'id="network"[^>]*aria-label="[^"]+"', html)
    assert "<caption" in html


def labelled_controls(html: str) -> list[str]:
    """Visible form controls that no label wraps or names (`<label for>`) and no `aria-label` describes."""
    labels = set(re.findall(r'<label for="([^"]+)"', html))
    unwrapped = re.sub(r"<label\b[^>]*>.*?</label>", "", html, flags=re.S)  # labels do not nest
    unnamed = []
    for tag in re.findall(r"<(?:input|select|textarea)\b[^>]*>", unwrapped):
        if 'type="hidden"' in tag or "aria-label=" in tag:
            continue
        ident = re.search(r'id="([^"]+)"', tag)
        if not ident or ident.group(1) not in labels:
            unnamed.append(tag)
    return unnamed


def test_every_form_control_has_a_label(seeded: TestClient) -> None:
    referred_order(seeded)
    sign_in(seeded)
    for path in MARKETER_PAGES:
        assert labelled_controls(page(seeded, path, customer="ada")) == [], path
    enter_as_customer(seeded, "ada")
    assert labelled_controls(page(seeded, "/me")) == []


def test_the_pages_load_their_scripts_and_styles_from_this_server_only(seeded: TestClient) -> None:
    sign_in(seeded)
    html = page(seeded, "/") + page(seeded, "/targets")
    enter_as_customer(seeded, "ada")
    html += page(seeded, "/me")
    sources = {s for s in re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', html) if not s.startswith("data:")}
    assert {s.split("?")[0] for s in sources} >= {
        "/static/css/dashboard.css",
        "/static/js/dashboard.js",
        "/static/js/pages.js",
        "/static/vendor/vis-network.min.js",
    }
    for src in sources:
        assert src.startswith("/"), src
        assert seeded.get(src).status_code == 200, src
    vendor = seeded.get("/static/vendor/vis-network.min.js")
    assert "javascript" in vendor.headers["content-type"]
    assert len(vendor.content) > 100_000


def test_the_api_reference_is_served_from_vendored_files(client: TestClient) -> None:
    html = client.get("/docs").text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        assert asset.startswith("/static/vendor/"), asset
        assert client.get(asset).status_code == 200, asset
    assert "/openapi.json" in html


# --- targets, forecasts and outreach ----------------------------------------------------------------------------
def rows_of(html: str) -> list[tuple[str, bool]]:
    """The targets table: each customer id and whether its "ask" box is ticked."""
    return [
        (cid, "checked" in box)
        for box, cid in re.findall(r'(<input type="checkbox" name="pick" value="([^"]+)"[^>]*>)', html)
    ]


def test_the_targets_page_lists_whom_to_ask_with_why_and_a_forecast_within_the_budget(seeded: TestClient) -> None:
    sign_in(seeded)
    html = page(seeded, "/targets", k=2, rate="10", budget="1000")
    rows = rows_of(html)
    assert len(rows) == 2
    assert all(ticked for _, ticked in rows)
    assert "eve" not in {cid for cid, _ in rows}  # do_not_ask
    assert "Ada Lovelace explained." in html
    assert 'data-forecast-value="reached"' in html
    assert 'data-budget="within"' in html  # two customers at 15 EUR a referral cannot cost 1,000 EUR
    assert "Conversion rate 10.0 % (given)" in text_of(html)
    assert "10 EUR to the referrer and 5 EUR to the friend" in text_of(html)
    assert re.search(r'name="customer_ids" value="[^"]+"', html)


def test_unticking_targets_forecasts_for_those_kept_and_a_tiny_budget_is_exceeded(seeded: TestClient) -> None:
    sign_in(seeded)
    (first, _), (second, _) = rows_of(page(seeded, "/targets", k=2))
    html = seeded.get(f"/targets?k=2&rate=100&budget=0.01&picking=1&pick={first}", headers=HTML).text
    assert rows_of(html) == [(first, True), (second, False)]
    assert re.findall(r'name="customer_ids" value="([^"]+)"', html) == [first]
    assert "If you ask 1 customer in Spring referral" in text_of(html)
    assert 'data-budget="over"' in html  # the first target reaches someone; every friend buys at 15 EUR
    nothing = seeded.get("/targets?k=2&picking=1", headers=HTML).text
    assert "Pick at least one customer" in nothing
    assert "customer_ids" not in nothing


def test_the_targets_are_chosen_once_while_the_store_is_unchanged_and_again_after_an_analysis(
    seeded: TestClient, url: str
) -> None:
    with opened_program(url) as store:
        first = views.targets_view(store, k=2, campaign=None)
        again = views.targets_view(store, k=2, campaign=None)
        assert first.choice is not None
        assert again.choice is first.choice
        assert first.forecast is not None
        assert first.forecast.forecast is not None
        assert again.forecast is not None
        assert again.forecast.forecast is first.forecast.forecast
        store.save_run(make_run(id="run-later", started_at=utcnow(), finished_at=utcnow()))
        after = views.targets_view(store, k=2, campaign=None)
        assert after.choice is not None
        assert after.choice is not first.choice


def test_a_target_erased_since_the_last_load_is_gone_from_the_targets_page_at_once(seeded: TestClient) -> None:
    sign_in(seeded)
    (first, _), _ = rows_of(page(seeded, "/targets", k=2))
    seeded.delete(f"/v1/customers/{first}").raise_for_status()
    assert first not in {cid for cid, _ in rows_of(page(seeded, "/targets", k=2))}


def test_the_targets_page_explains_what_is_missing_instead_of_failing(client: TestClient, url: str) -> None:
    with opened(url) as store:
        seed_network(store, analysed=False)
    sign_in(client)
    html = page(client, "/targets")
    assert "data-targets-problem" in html
    assert "Run an analysis" in html
    assert "data-target=" not in html


def test_a_budget_or_rate_that_cannot_be_read_is_named_on_the_targets_page(seeded: TestClient) -> None:
    sign_in(seeded)
    html = text_of(page(seeded, "/targets", k=2, budget="lots", rate="200"))
    assert "Budget: must be a decimal string" in html
    assert "Conversion rate: a percentage between 0 and 100" in html


def test_launching_an_outreach_to_the_picked_targets_plans_a_message_for_each(seeded: TestClient) -> None:
    csrf = sign_in(seeded)
    response = seeded.post(
        "/outreach",
        data={"csrf_token": csrf, "campaign_id": "spring", "name": "Spring VIPs", "customer_ids": ["ada", "bob"]},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    (outreach,) = api(seeded, "GET", "/v1/outreach")["items"]
    assert response.headers["location"] == f"/campaigns?launched={outreach['id']}"
    assert outreach["id"].startswith("spring-vips-")
    assert (outreach["status"], outreach["campaign_id"]) == ("running", "spring")
    assert outreach["audience"] == {**outreach["audience"], "kind": "customers", "customer_ids": ["ada", "bob"]}
    counts = api(seeded, "GET", f"/v1/outreach/{outreach['id']}/counts")
    assert sum(counts["by_status"].values()) == 2
    html = page(seeded, response.headers["location"])
    assert f'data-outreach-id="{outreach["id"]}" class="row--new"' in html
    assert "Spring VIPs" in html


def test_an_outreach_without_customers_or_campaign_is_refused(seeded: TestClient) -> None:
    csrf = sign_in(seeded)
    empty = seeded.post("/outreach", data={"csrf_token": csrf, "campaign_id": "spring", "name": "X"}, headers=HTML)
    assert empty.status_code == 422
    assert "at least one customer" in empty.text
    unknown = {"csrf_token": csrf, "campaign_id": "nope", "name": "X", "customer_ids": ["ada"]}
    assert seeded.post("/outreach", data=unknown, headers=HTML).status_code == 404
    assert api(seeded, "GET", "/v1/outreach")["items"] == []


# --- campaigns --------------------------------------------------------------------------------------------------
def builder(**fields: str) -> dict[str, str]:
    return {
        "id": "summer",
        "name": "Summer referral",
        "currency": "EUR",
        "friend_offer": "10 EUR off your first order",
        "referrer_kind": "credit",
        "referrer_amount": "12.50",
        "friend_kind": "discount",
        "friend_amount": "10",
        "milestone": "3",
        "hold_days": "30",
        **fields,
    }


def test_the_campaign_builder_creates_a_double_sided_campaign(seeded: TestClient) -> None:
    csrf = sign_in(seeded)
    response = seeded.post("/campaigns", data={**builder(), "csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/campaigns?created=summer"
    campaign = api(seeded, "GET", "/v1/campaigns/summer")
    assert (campaign["name"], campaign["friend_offer"], campaign["hold_days"]) == (
        "Summer referral",
        "10 EUR off your first order",
        30,
    )
    rules = {(r["id"], r["side"], r["kind"], r["amount_minor"], r["milestone"]) for r in campaign["rewards"]}
    assert rules == {
        ("referrer-credit", "referrer", "credit", 1250, None),
        ("friend-discount", "friend", "discount", 1000, None),
        ("badge-at-3", "referrer", "badge", 0, 3),
    }
    html = page(seeded, "/campaigns", created="summer")
    assert "Campaign summer created" in html
    assert "12.50 EUR credit for each friend who buys" in text_of(html)


@pytest.mark.parametrize(
    ("fields", "status", "message"),
    [
        ({"referrer_amount": "ten"}, 422, "referrer reward amount"),
        ({"id": "Not A Slug"}, 422, "id:"),
        ({"currency": "EU"}, 422, "currency"),
        ({"milestone": "0"}, 422, "milestone"),
        ({"id": "spring"}, 409, "exists"),
    ],
)
def test_a_wrong_campaign_comes_back_on_the_form_with_what_to_fix(
    seeded: TestClient, fields: dict[str, str], status: int, message: str
) -> None:
    csrf = sign_in(seeded)
    response = seeded.post("/campaigns", data={**builder(**fields), "csrf_token": csrf}, headers=HTML)
    assert response.status_code == status, response.text[:300]
    error = re.search(r'<p class="flash flash--error" role="alert" id="builder-error">(.*?)</p>', response.text, re.S)
    assert error
    assert message in error.group(1)
    assert 'value="Summer referral"' in response.text  # what was typed stays
    assert [c["id"] for c in api(seeded, "GET", "/v1/campaigns")["items"]] == ["spring"]


def test_the_campaigns_page_shows_the_forecast_beside_the_outreach_launch(seeded: TestClient) -> None:
    sign_in(seeded)
    html = page(seeded, "/campaigns", k=2)
    launch = html[html.index('id="launch"') :]
    assert len(re.findall(r'name="customer_ids"', launch)) == 2
    assert 'id="forecast"' in html
    assert 'data-campaign="spring"' in html


# --- kits ---------------------------------------------------------------------------------------------------------
def test_the_kit_preview_shows_a_customers_link_messages_and_marketer_templates(seeded: TestClient) -> None:
    api(
        seeded,
        "POST",
        "/v1/templates",
        json={"id": "wa-hello", "purpose": "share", "channel": "whatsapp", "body": "Hello from {{ advocate.name }}"},
    )
    sign_in(seeded)
    html = page(seeded, "/kits", customer="ada", campaign="spring")
    (code,) = api(seeded, "GET", "/v1/customers/ada/codes")["items"]
    assert f"/r/{code['code']}" in html
    assert "<svg" in html
    for channel in ("whatsapp", "email", "sms"):
        assert f'data-channel="{channel}"' in html
    assert 'data-template="wa-hello"' in html
    assert "Hello from Ada Lovelace" in html
    assert "<h1" in html
    assert html.count("<h1") == 1
    unknown = page(seeded, "/kits", customer="nobody", campaign="spring")
    assert "flash--error" in unknown


def test_trying_a_template_previews_it_for_the_customer_or_lists_its_problems(seeded: TestClient) -> None:
    csrf = sign_in(seeded)
    form = {"csrf_token": csrf, "customer": "ada", "campaign": "spring", "purpose": "share", "channel": "sms"}
    good = seeded.post("/kits/preview", data={**form, "body": "Hi, {{ advocate.first_name }} here: {{ link }}"})
    assert good.status_code == 200, good.text[:300]
    preview = re.search(r"data-draft-preview>(.*?)</p>", good.text, re.S)
    assert preview
    assert preview.group(1).startswith("Hi, Ada here: http")
    bad = seeded.post("/kits/preview", data={**form, "body": "{{ secret_sauce }}"})
    assert bad.status_code == 422
    assert "secret_sauce" in text_of(bad.text)
    assert api(seeded, "GET", "/v1/templates")["items"] == []


# --- fraud ----------------------------------------------------------------------------------------------------------
def held_order(client: TestClient) -> str:
    """Bob's order through Ada's code from the device Ada signed up on: held for review."""
    shared = [{"kind": "device", "value": "device-of-ada"}]
    api(client, "POST", "/v1/signups", json={"customer_id": "ada", "at": utcnow().isoformat(), "signals": shared})
    conversion = order(client, "order-9", "bob", code=issue_code(client, "ada"), signals=shared)
    assert conversion["status"] == "held", conversion
    return "order-9"


@pytest.mark.parametrize(
    ("decision", "status", "rewards"), [("approve", "attributed", "pending"), ("reject", "rejected", "rejected")]
)
def test_a_fraud_case_is_reviewed_from_the_queue_and_leaves_it(
    seeded: TestClient, decision: str, status: str, rewards: str
) -> None:
    order_id = held_order(seeded)
    csrf = sign_in(seeded)
    queue = page(seeded, "/fraud")
    assert f'data-case="{order_id}"' in queue
    assert "self_referral_shared_identity" in queue
    response = seeded.post(
        f"/fraud/{order_id}/decision",
        data={"csrf_token": csrf, "decision": decision, "note": "checked the device"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    conversion = api(seeded, "GET", f"/v1/conversions/{order_id}")
    assert (conversion["status"], conversion["reviewed_by"], conversion["review_note"]) == (
        status,
        "maria",
        "checked the device",
    )
    assert {r["state"] for r in api(seeded, "GET", "/v1/rewards")["items"]} == {rewards}
    after = page(seeded, response.headers["location"])
    assert f"Order {order_id} {'approved' if decision == 'approve' else 'rejected'}." in after
    assert "data-queue-empty" in after
    again = seeded.post(f"/fraud/{order_id}/decision", data={"csrf_token": csrf, "decision": decision}, headers=HTML)
    assert again.status_code == 409


# --- referrals from link to reward --------------------------------------------------------------------------------
def test_a_referral_is_followed_from_the_link_to_the_reward_ledger(seeded: TestClient) -> None:
    code, _ = referred_order(seeded)
    api(seeded, "POST", "/v1/rewards/advance")  # nothing is due yet: the entries stay as they were
    sign_in(seeded)
    listing = page(seeded, "/referrals")
    assert 'data-order="order-1"' in listing
    assert "Ada Lovelace" in listing
    assert page(seeded, "/referrals", status="held").count("data-order=") == 0
    html = page(seeded, "/referrals/order-1")
    readable = text_of(html)
    assert f"Ada Lovelace shared code {code} in Spring referral" in readable
    assert re.search(r'<li class="touch--decisive" aria-current="step" data-touch="click">', html)
    assert "Attributed to Ada Lovelace by click" in readable
    assert re.findall(r'data-reward="([^"]+)" data-state="([a-z]+)"', html) == [
        ("order-1:referrer-credit", "pending"),
        ("order-1:friend-discount", "pending"),
    ]
    assert html.count('data-entry="pending"') == 2
    assert seeded.get("/referrals/order-404", headers=HTML).status_code == 404


def test_a_visit_after_the_order_is_shown_on_the_trail_but_marked_as_unable_to_count(seeded: TestClient) -> None:
    code = issue_code(seeded, "ada")
    click_id = seeded.get(f"/r/{code}", follow_redirects=False).cookies["adv_click"]
    an_hour_ago = (utcnow() - timedelta(hours=1)).isoformat()
    assert order(seeded, "order-2", "bob", click_id=click_id, at=an_hour_ago)["status"] == "unattributed"
    sign_in(seeded)
    html = page(seeded, "/referrals/order-2")
    assert "data-after-order" in html
    assert "No referrer" in html
    assert "No reward: the conversion was not attributed." in text_of(html)


# --- the customer's page --------------------------------------------------------------------------------------------
def test_the_customer_page_shows_their_link_qr_kit_and_preferences(seeded: TestClient) -> None:
    enter_as_customer(seeded, "ada")
    response = seeded.get("/me", headers=HTML)
    html = response.text
    (code,) = api(seeded, "GET", "/v1/customers/ada/codes")["items"]
    link = re.search(r'id="referral-link" type="text" readonly value="([^"]+)"', html)
    assert link
    assert link.group(1).endswith(f"/r/{code['code']}")
    assert 'data-copy="referral-link"' in html
    assert 'role="img"' in html  # the QR code, titled with the link
    assert "https://wa.me/?text=" in html
    assert 'rel="noopener noreferrer"' in html
    assert "Hi Ada, share" in html
    assert "3 more friends" in text_of(html)  # the badge at the third friend
    assert response.headers["referrer-policy"] == "no-referrer"
    assert 'id="consent-email" name="consent" value="email" checked' in html


def test_the_customer_page_shows_only_the_signed_in_customers_data(seeded: TestClient) -> None:
    code, _ = referred_order(seeded)  # Ada referred Bob: Ada has a 10 EUR credit, Bob 5 EUR off
    enter_as_customer(seeded, "bob")
    bob = seeded.get("/me", params={"customer_id": "ada", "customer": "ada"}, headers=HTML).text
    assert code not in bob
    assert "Ada" not in bob
    assert "Hi Bob" in bob
    assert re.findall(r'data-balance="([a-z]+)"', bob) == ["pending"]
    assert "5 EUR" in text_of(bob[bob.index('id="rewards"') :])
    enter_as_customer(seeded, "ada")
    ada = page(seeded, "/me")
    assert code in ada
    assert "1 friend bought through you" in text_of(ada)
    assert "10 EUR" in text_of(ada[ada.index('id="rewards"') :])
    assert "2 more friends" in text_of(ada)


def test_the_customer_page_picks_the_first_running_campaign_unless_told(seeded: TestClient, url: str) -> None:
    with opened_program(url) as store:
        store.save_campaign(make_campaign(id="autumn", name="Autumn referral", created_at=utcnow()))
        store.save_campaign(make_campaign(id="old", name="Old referral", status="ended", created_at=utcnow()))
    enter_as_customer(seeded, "ada")
    assert "Your link for Spring referral" in page(seeded, "/me")
    assert "Your link for Autumn referral" in page(seeded, "/me", campaign="autumn")
    assert seeded.get("/me", params={"campaign": "old"}, headers=HTML).status_code == 404


def test_a_customer_changes_consent_and_unsubscribes_from_their_page(seeded: TestClient) -> None:
    csrf = enter_as_customer(seeded, "ada")
    shown = ["email", "sms", "whatsapp", "push"]
    response = seeded.post(
        "/me/preferences",
        data={"csrf_token": csrf, "campaign": "spring", "action": "save", "shown": shown, "consent": ["sms"]},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/me?campaign=spring&done=preferences#preferences"
    prefs = api(seeded, "GET", "/v1/customers/ada/preferences")
    assert prefs["consent"] == {"email": False, "sms": True, "whatsapp": False, "push": False}
    assert "Your preferences are saved." in page(seeded, "/me", done="preferences")
    gone = seeded.post("/me/preferences", data={"csrf_token": csrf, "action": "unsubscribe"}, follow_redirects=False)
    assert gone.status_code == 303
    assert api(seeded, "GET", "/v1/customers/ada/preferences")["unsubscribed"] is True
    html = page(seeded, "/me")
    assert "data-unsubscribed" in html
    assert "checked" not in html.split('id="preferences"')[1].split("</section>")[0]
    assert "Subscribe again to the ticked channels" in html
    again = seeded.post(
        "/me/preferences",
        data={"csrf_token": csrf, "action": "save", "shown": shown, "consent": ["email"]},
        follow_redirects=False,
    )
    assert again.status_code == 303, "the customer themself may opt in again"
    prefs = api(seeded, "GET", "/v1/customers/ada/preferences")
    assert prefs["unsubscribed"] is False
    assert prefs["consent"] == {"email": True, "sms": False, "whatsapp": False, "push": False}


def test_a_customer_sends_an_idea_which_is_recorded_as_their_event(seeded: TestClient) -> None:
    csrf = enter_as_customer(seeded, "ada")
    response = seeded.post(
        "/me/ideas",
        data={"csrf_token": csrf, "campaign": "spring", "kind": "idea", "text": "Gift wrap for referrals"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert "Thank you! Your idea reached the team." in page(seeded, response.headers["location"].split("#")[0])
    (event,) = api(seeded, "GET", "/v1/customers/ada/events", params={"kind": "idea"})["items"]
    assert event["attributes"] == {"text": "Gift wrap for referrals", "campaign_id": "spring"}
    empty = seeded.post("/me/ideas", data={"csrf_token": csrf, "text": "   "}, headers=HTML)
    assert empty.status_code == 422
    assert "1 to 5,000 characters" in empty.text


def test_the_customer_page_without_a_running_campaign_says_so(client: TestClient, url: str) -> None:
    with opened(url) as store:
        seed_network(store)
    enter_as_customer(client, "ada")
    html = page(client, "/me")
    assert "There is no referral programme running right now" in html
    assert "referral-link" not in html
