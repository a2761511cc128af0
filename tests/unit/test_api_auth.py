"""Who may call what: the authorisation matrix over every `/v1` route, credentials, sessions, limits, idempotency.

The matrix tests walk the app's own routes, so a route added without an access rule, or with a rule that lets a
customer reach another customer's data, fails here.
"""

from __future__ import annotations

import gc
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import redis
from fastapi import APIRouter
from fastapi.testclient import TestClient

import api.app as app_module
from api.app import create_app
from api.auth import CUSTOMER_COOKIE, MARKETER_COOKIE, POLICY, LocalWindows, Rule
from api.routes import ROUTERS
from engine.access import Scope
from engine.settings import ApiSettings, Settings
from graph.model import utcnow
from tests.api_support import (
    PROBLEM_JSON,
    api_client,
    as_customer,
    customer_token,
    grant_key,
    seed_network,
    sqlite_url,
)

WEBHOOKS = "/v1/webhooks/"


def v1_routes() -> list[tuple[str, str]]:
    """Every `/v1` operation the app serves, from its own OpenAPI document (which lists every API route)."""
    paths = create_app(Settings(store="sqlite:///unused.db")).openapi()["paths"]
    return sorted(
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1/") and not path.startswith(WEBHOOKS)
        for method in operations
    )


ROUTES = v1_routes()


def concrete(path: str, customer: str = "ada") -> str:
    return re.sub(r"\{[^}]+\}", lambda m: customer if m.group(0) == "{customer_id}" else "x1", path)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for the whole matrix, anonymous by default; each test sends its own credential."""
    with api_client(sqlite_url(tmp_path_factory.mktemp("auth")), scopes=()) as c:
        seed_network(c.app.state.store_holder.get())  # type: ignore[attr-defined]
        yield c


def call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    return client.request(method, path, headers=headers or {}, json={} if method in ("POST", "PUT") else None)


@contextmanager
def browser_of(client: TestClient) -> Iterator[TestClient]:
    """A second browser (own cookie jar) on the same running app; entering it would run the lifespan again."""
    yield TestClient(client.app, follow_redirects=False)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_every_v1_route_has_exactly_one_access_rule_and_no_rule_is_stale() -> None:
    assert set(ROUTES) - set(POLICY) == set(), "routes without an access rule"
    assert set(POLICY) - set(ROUTES) == {("GET", "/metrics")}, "access rules for routes that do not exist"


def test_the_openapi_document_names_the_credentials_on_exactly_the_guarded_routes() -> None:
    """`authorise` reads the credentials itself; the document must still say which routes ask for them."""
    schema = create_app(Settings(store="sqlite:///unused.db")).openapi()
    asking = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == [{"bearer": []}, {"marketerSession": []}, {"customerSession": []}]
    }
    assert asking == set(ROUTES)
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": ANY}
    assert schemes["marketerSession"] == {"type": "apiKey", "in": "cookie", "name": MARKETER_COOKIE, "description": ANY}
    assert schemes["customerSession"] == {"type": "apiKey", "in": "cookie", "name": CUSTOMER_COOKIE, "description": ANY}


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_v1_route_refuses_a_caller_without_credentials(client: TestClient, method: str, path: str) -> None:
    response = call(client, method, concrete(path))
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_a_customer_token_is_refused_on_every_route_but_its_own_customers(
    client: TestClient, method: str, path: str
) -> None:
    ada = as_customer(customer_token(client, "ada"))
    rule = POLICY[(method, path)]
    if "{customer_id}" in path:
        other = call(client, method, concrete(path, customer="bob"), ada)
        assert other.status_code == 403, "another customer's data"
        assert "own customer" in other.json()["detail"] or not rule.customer_self
    own = call(client, method, concrete(path, customer="ada"), ada)
    if rule.customer_self:
        assert own.status_code not in (401, 403), own.json()
    else:
        assert own.status_code == 403


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_each_route_opens_to_its_own_scope_or_admin_and_to_no_other_scope(
    client: TestClient, method: str, path: str
) -> None:
    rule: Rule = POLICY[(method, path)]
    for scope in Scope:
        key = grant_key(client, (scope.value,))
        status = call(client, method, concrete(path), bearer(key)).status_code
        if scope in (rule.scope, Scope.ADMIN):
            assert status not in (401, 403), (scope, status)
        else:
            assert status == 403, (scope, status)


def test_an_unknown_a_malformed_and_a_revoked_key_are_all_401(client: TestClient) -> None:
    admin = grant_key(client, ("admin",))
    doomed = grant_key(client, ("read",))
    assert client.get("/v1/customers", headers=bearer(doomed)).status_code == 200
    key_id = doomed.split("_")[1]
    assert client.delete(f"/v1/api-keys/{key_id}", headers=bearer(admin)).status_code == 200
    for credential in (doomed, doomed[:-2] + "zz", "adv_nothing", "Basic abc"):
        assert client.get("/v1/customers", headers=bearer(credential)).status_code == 401
    assert client.get("/v1/customers", headers={"Authorization": "Basic YTpi"}).status_code == 401


def test_keys_are_listed_without_secrets_and_a_created_key_works_at_once(client: TestClient) -> None:
    admin = bearer(grant_key(client, ("admin",)))
    created = client.post("/v1/api-keys", json={"name": "crm sync", "scopes": ["customers:write"]}, headers=admin)
    assert created.status_code == 201
    key = created.json()["key"]
    listed = client.get("/v1/api-keys", headers=admin).json()
    assert key.split("_", 2)[2] not in str(listed)
    assert all("key" not in item and "secret_hash" not in item for item in listed)
    assert client.put("/v1/customers/zed", json={"id": "zed", "name": "Zed"}, headers=bearer(key)).status_code in (
        200,
        201,
    )
    assert client.post("/v1/api-keys", json={"name": "x", "scopes": ["root"]}, headers=admin).status_code == 422


def test_me_names_the_customer_of_a_token_and_the_scopes_of_a_key(client: TestClient) -> None:
    assert client.get("/v1/me", headers=as_customer(customer_token(client, "cy"))).json() == {
        "kind": "customer",
        "customer_id": "cy",
        "key_id": None,
        "name": None,
        "scopes": None,
    }
    me = client.get("/v1/me", headers=bearer(grant_key(client, ("read", "orders:write")))).json()
    assert (me["kind"], me["scopes"]) == ("marketer", ["orders:write", "read"])


def test_a_backend_key_issues_customer_tokens_that_reach_only_that_customer(client: TestClient) -> None:
    backend = bearer(grant_key(client, ("tokens:issue",)))
    issued = client.post("/v1/customer-tokens", json={"customer_id": "dee", "ttl_s": 600}, headers=backend)
    assert issued.status_code == 201
    token = as_customer(issued.json()["token"])
    assert client.get("/v1/customers/dee", headers=token).status_code == 200
    assert client.get("/v1/customers/ada", headers=token).status_code == 403
    assert client.post("/v1/customer-tokens", json={"customer_id": "nobody"}, headers=backend).status_code == 404
    assert (
        client.post(
            "/v1/customer-tokens", json={"customer_id": "dee"}, headers=as_customer(customer_token(client, "dee"))
        ).status_code
        == 403
    )


def test_expired_and_forged_customer_tokens_are_401(client: TestClient) -> None:
    expired = customer_token(client, "ada", ttl_s=60, now=utcnow() - timedelta(minutes=5))
    assert client.get("/v1/customers/ada", headers=as_customer(expired)).status_code == 401
    header, payload, signature = customer_token(client, "ada").split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    response = client.get("/v1/customers/ada", headers=as_customer(forged))
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM_JSON)


# --- browsers: sign-in, sessions, CSRF, the customer's one-time link ------------------------------------------------
def test_signing_in_sets_an_httponly_session_and_a_wrong_key_shows_the_form_again(client: TestClient) -> None:
    key = grant_key(client, ("read",))
    with browser_of(client) as browser:
        wrong = browser.post("/login", data={"key": "adv_0123456789ab_" + "x" * 43})
        assert wrong.status_code == 401
        assert "Sign in" in wrong.text
        right = browser.post("/login", data={"key": key, "next": "//evil.example/steal"})
        assert right.status_code == 303
        assert right.headers["location"] == "/"
        cookie = right.headers["set-cookie"]
        assert "advocacy_session=" in cookie
        assert "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()
        assert browser.get("/v1/customers").status_code == 200


def test_a_session_must_echo_its_csrf_secret_on_unsafe_api_calls(client: TestClient) -> None:
    key = grant_key(client, ("admin",))
    with browser_of(client) as browser:
        browser.post("/login", data={"key": key})
        body = {"name": "x", "scopes": ["read"]}
        assert browser.post("/v1/api-keys", json=body).status_code == 403
        assert browser.post("/v1/api-keys", json=body, headers={"X-CSRF-Token": "guess"}).status_code == 403


def test_revoking_a_key_ends_the_sessions_signed_in_with_it(client: TestClient) -> None:
    key = grant_key(client, ("read",))
    admin = bearer(grant_key(client, ("admin",)))
    with browser_of(client) as browser:
        browser.post("/login", data={"key": key})
        assert browser.get("/v1/stats").status_code == 200
        client.delete(f"/v1/api-keys/{key.split('_')[1]}", headers=admin)
        assert browser.get("/v1/stats").status_code == 401


def test_a_customer_link_opens_once_and_its_replay_is_refused(client: TestClient) -> None:
    token = customer_token(client, "fay")
    with browser_of(client) as browser:
        first = browser.get(f"/me/enter?token={token}")
        assert first.status_code == 303
        assert first.headers["location"] == "/me"
        assert "advocacy_customer=" in first.headers["set-cookie"]
        assert browser.get("/v1/customers/fay").status_code == 200
        assert browser.get("/v1/customers/ada").status_code == 403
    with browser_of(client) as thief:
        replay = thief.get(f"/me/enter?token={token}", headers={"Accept": "application/json"})
        assert replay.status_code == 401
        assert "already used" in replay.json()["detail"]


# --- limits, idempotency, CORS -----------------------------------------------------------------------------------
@pytest.fixture
def tight(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        store=sqlite_url(tmp_path),
        api=ApiSettings(rate_limit_public="3/minute", rate_limit_key="5/minute", cors_origins=["https://shop.example"]),
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_public_routes_are_limited_per_client_address_with_retry_after(tight: TestClient) -> None:
    statuses = [tight.get("/r/NOSUCHCODE", follow_redirects=False).status_code for _ in range(4)]
    assert statuses[:3] != [429] * 3
    assert statuses[3] == 429
    limited = tight.get("/r/NOSUCHCODE", headers={"Accept": "application/json"})
    assert limited.headers["content-type"].startswith(PROBLEM_JSON)
    assert 0 < int(limited.headers["retry-after"]) <= 60


def test_api_calls_are_limited_per_credential_not_per_address(tight: TestClient) -> None:
    first, second = bearer(grant_key(tight, ("read",))), bearer(grant_key(tight, ("read",)))
    assert [tight.get("/v1/stats", headers=first).status_code for _ in range(6)][-1] == 429
    assert tight.get("/v1/stats", headers=second).status_code == 200


def test_a_route_that_reads_its_caller_counts_each_request_once(tight: TestClient) -> None:
    """`/v1/me` takes the principal the guard admitted; asking the guard again would spend the limit twice."""
    key = bearer(grant_key(tight, ("read",)))
    assert [tight.get("/v1/me", headers=key).status_code for _ in range(6)] == [200] * 5 + [429]


def test_a_caller_without_credentials_is_refused_before_the_body_is_read(client: TestClient) -> None:
    """Who may call is settled first: an anonymous caller learns nothing from how the body would be validated."""
    broken = client.post("/v1/campaigns", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 401
    invalid = client.post("/v1/campaigns", json={"id": 7})
    assert invalid.status_code == 401


@pytest.mark.parametrize(("guard", "route_class"), [("v1", "V1Route"), ("public", "PublicRoute")])
def test_a_guarded_router_whose_routes_would_skip_the_guard_is_refused_when_the_app_is_made(
    monkeypatch: pytest.MonkeyPatch, guard: str, route_class: str
) -> None:
    unguarded = APIRouter(prefix="/v1")

    @unguarded.get("/open")
    def open_route() -> dict[str, bool]:
        return {"open": True}

    monkeypatch.setattr(app_module, "ROUTERS", (*ROUTERS, (unguarded, guard)))
    with pytest.raises(TypeError, match=f"route_class={route_class}"):
        create_app(Settings(store="sqlite:///unused.db"))


def test_cors_lets_the_configured_origin_send_a_token_and_no_other(tight: TestClient) -> None:
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    allowed = tight.options("/v1/me", headers={"Origin": "https://shop.example", **preflight})
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    other = tight.options("/v1/me", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in other.headers


CAMPAIGN = {"id": "idem", "name": "Idempotent", "friend_offer": "10% off"}


def test_a_retried_post_with_the_same_key_replays_the_first_answer(client: TestClient) -> None:
    admin = bearer(grant_key(client, ("admin",)))
    headers = {**admin, "Idempotency-Key": "create-idem-1"}
    first = client.post("/v1/campaigns", json=CAMPAIGN, headers=headers)
    again = client.post("/v1/campaigns", json=CAMPAIGN, headers=headers)
    assert first.status_code == 201
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    other_body = client.post("/v1/campaigns", json={**CAMPAIGN, "name": "Else"}, headers=headers)
    assert other_body.status_code == 422
    assert other_body.json()["type"].endswith("idempotency-key-reused")
    without_key = client.post("/v1/campaigns", json=CAMPAIGN, headers=admin)
    assert without_key.status_code == 409, "the campaign exists: without the key the retry is a conflict"


def test_idempotency_keys_are_private_to_their_caller(client: TestClient) -> None:
    one, two = bearer(grant_key(client, ("admin",))), bearer(grant_key(client, ("admin",)))
    body = {"id": "per-caller", "name": "Per caller"}
    first = client.post("/v1/campaigns", json=body, headers={**one, "Idempotency-Key": "shared"})
    second = client.post("/v1/campaigns", json=body, headers={**two, "Idempotency-Key": "shared"})
    assert first.status_code == 201
    assert "idempotent-replayed" not in second.headers
    assert second.status_code == 409


def test_a_retry_while_the_first_request_runs_is_told_to_wait(client: TestClient) -> None:
    key = grant_key(client, ("admin",))
    store = client.app.state.store_holder.get()  # type: ignore[attr-defined]
    body = b'{"id":"slow","name":"Slow"}'
    record_key = f"key:{key.split('_')[1]}:POST /v1/campaigns:k-running"
    assert (
        store.begin_idempotent(record_key, hashlib.sha256(body).hexdigest(), now=utcnow(), ttl=timedelta(hours=1))
        is None
    )
    response = client.post(
        "/v1/campaigns",
        content=body,
        headers={**bearer(key), "Idempotency-Key": "k-running", "Content-Type": "application/json"},
    )
    assert response.status_code == 409
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("value", [b"", b"with space", "é".encode(), b"x" * 256])
def test_a_malformed_idempotency_key_is_a_422_problem(client: TestClient, value: bytes) -> None:
    credentials = {name.encode(): text.encode() for name, text in bearer(grant_key(client, ("admin",))).items()}
    headers = {**credentials, b"Idempotency-Key": value}  # bytes: a header value need not be text
    response = client.post("/v1/campaigns", json=CAMPAIGN, headers=headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM_JSON)


def test_the_local_window_lets_hits_in_again_as_old_ones_leave_it() -> None:
    windows = LocalWindows()
    assert [windows.hit("k", 2, 10, t) for t in (0.0, 1.0)] == [None, None]
    assert windows.hit("k", 2, 10, 5.0) == 5.0
    assert windows.hit("other", 2, 10, 5.0) is None
    assert windows.hit("k", 2, 10, 10.5) is None
    assert windows.hit("k", 2, 10, 10.6) == pytest.approx(0.4)


def test_the_local_windows_are_nothing_the_garbage_collector_walks() -> None:
    """One window per address that clicked, up to `MAX_KEYS`: each a container the collector tracks would be
    walked by every full collection of the API process."""
    windows = LocalWindows()
    for n in range(50):
        assert windows.hit(f"ip:10.0.0.{n}", 3, 60, float(n)) is None
    assert windows.hit("ip:10.0.0.7", 1, 60, 8.0) is not None
    assert not [key for key, hits in windows._hits.items() if gc.is_tracked(hits)]


def test_the_local_windows_forget_idle_keys_when_there_are_many(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalWindows, "MAX_KEYS", 3)
    windows = LocalWindows()
    for key, at in (("a", 0.0), ("b", 1.0), ("c", 15.0)):
        assert windows.hit(key, 2, 10, at) is None
    assert windows.hit("d", 2, 10, 20.0) is None
    assert sorted(windows._hits) == ["c", "d"]
    assert windows.hit("c", 2, 10, 21.0) is None
    assert windows.hit("c", 2, 10, 22.0) == pytest.approx(3.0)


@pytest.mark.redis
def test_limits_stored_in_redis_are_shared_by_every_api_process(tmp_path: Path) -> None:
    base = os.environ.get("ADVOCACY_TEST_REDIS_URL", "redis://127.0.0.1:6390/0").rsplit("/", 1)[0]
    storage = f"{base}/15"
    redis.Redis.from_url(storage).flushdb()
    settings = Settings(
        store=sqlite_url(tmp_path), api=ApiSettings(rate_limit_public="3/minute", rate_limit_storage=storage)
    )
    with (
        TestClient(create_app(settings), raise_server_exceptions=False) as one,
        TestClient(create_app(settings), raise_server_exceptions=False) as two,
    ):
        statuses = [client.get("/r/NOSUCHCODE").status_code for client in (one, two, one, two)]
    assert statuses[:3] != [429] * 3
    assert statuses[3] == 429
