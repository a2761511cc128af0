"""OWASP API2, broken authentication: the credentials `tests/unit/test_api_auth.py` leaves out.

Signed unsubscribe links (altered, cut short, moved to another person, replayed), webhook signatures made with the
wrong key or replayed inside their window, and browser session cookies that were forged, signed with another
secret, used as the wrong kind of credential, or outlived the key they were signed in with. Expired unsubscribe
links, stale webhook timestamps and unsigned or altered webhook bodies are covered in `tests/unit/test_api_contact.py`
and `tests/unit/test_api_conversions.py`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from engine.access import issue_session
from engine.settings import Settings
from engine.unsubscribe import make_token
from engine.webhooks import sign
from graph.model import utcnow
from tests.api_support import PROBLEM_JSON, as_customer, customer_token, grant_key
from tests.security.support import anonymous, seeded_app

HTML = {"Accept": "text/html,application/xhtml+xml"}
SHOPIFY_SECRET = "shpss_security_test_secret"


def settings_of(client: TestClient) -> Settings:
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    return settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One admin-signed app for the module: ada and bob, the `spring` campaign, and Shopify configured."""
    env = {"ADVOCACY_REFERRAL__SHOPIFY_SECRET": SHOPIFY_SECRET}
    with seeded_app(tmp_path_factory.mktemp("authn"), env=env) as c:
        yield c


# --- unsubscribe links -------------------------------------------------------------------------------------------
def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def flip_byte(segment: str) -> str:
    raw = bytearray(_b64decode(segment))
    raw[7] ^= 0x01
    return _b64encode(bytes(raw))


def flip_signature_byte(token: str) -> str:
    payload, signature = token.split(".")
    return f"{payload}.{flip_byte(signature)}"


def move_to_bob(token: str) -> str:
    """The same signature over a payload rewritten to name bob: what someone holding ada's link would try."""
    payload, signature = token.split(".")
    return f"{_b64encode(_b64decode(payload).replace(b'customer:ada', b'customer:bob'))}.{signature}"


HOSTILE_LINKS: dict[str, Callable[[str], str]] = {
    "a flipped signature byte": flip_signature_byte,
    "one character cut off": lambda token: token[:-1],
    "cut in half": lambda token: token[: len(token) // 2],
    "the signature dropped": lambda token: token.split(".")[0] + ".",
    "the payload dropped": lambda token: "." + token.split(".")[1],
    "moved to another person": move_to_bob,
    "a third segment added": lambda token: token + ".AAAA",
    "padded past the length limit": lambda token: token + "A" * 600,
    "base64 padding added": lambda token: token + "==",
}


def ada_link(client: TestClient) -> str:
    secret = settings_of(client).contact.unsubscribe_secret.get_secret_value()
    return make_token(secret, "customer:ada", channel=None, issued_at=utcnow())


def still_subscribed(client: TestClient, *customer_ids: str) -> bool:
    return not any(client.get(f"/v1/customers/{cid}/preferences").json()["unsubscribed"] for cid in customer_ids)


@pytest.mark.parametrize("alteration", HOSTILE_LINKS.values(), ids=HOSTILE_LINKS.keys())
def test_an_altered_unsubscribe_link_is_a_clear_401_and_unsubscribes_nobody(
    client: TestClient, alteration: Callable[[str], str]
) -> None:
    token = alteration(ada_link(client))
    browser = anonymous(client)
    for method in ("GET", "POST"):
        program = browser.request(method, f"/u/{token}")
        assert program.status_code == 401, (method, program.text)
        assert program.headers["content-type"].startswith(PROBLEM_JSON)
        assert "unsubscribe link" in program.json()["detail"]
        page = browser.request(method, f"/u/{token}", headers=HTML)
        assert page.status_code == 401
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["cache-control"] == "no-store"
        assert "does not work" in page.text
        assert token not in page.text, "the broken link is not echoed into the page"
    assert still_subscribed(client, "ada", "bob")


def test_replaying_a_used_unsubscribe_link_changes_nothing_and_reveals_nobody(client: TestClient) -> None:
    secret = settings_of(client).contact.unsubscribe_secret.get_secret_value()
    token = make_token(secret, "customer:bob", channel=None, issued_at=utcnow())
    browser = anonymous(client)
    first = browser.post(f"/u/{token}")
    assert first.status_code == 200, first.text
    when = client.get("/v1/customers/bob/preferences").json()["unsubscribed_at"]
    assert when is not None
    for method in ("POST", "GET", "POST"):
        again = browser.request(method, f"/u/{token}", headers=HTML)
        assert again.status_code == 200, again.text
        for personal in ("bob@", "leak-check-bob", "customer:bob", "Bob Stone"):
            assert personal not in again.text
    assert client.get("/v1/customers/bob/preferences").json()["unsubscribed_at"] == when, "a replay moves nothing"
    assert still_subscribed(client, "ada")


@pytest.mark.parametrize("person", ["customer:nobody-here", "email:" + "0" * 64], ids=["unknown customer", "friend"])
def test_a_validly_signed_link_for_someone_unknown_answers_without_an_error_or_a_hint(
    client: TestClient, person: str
) -> None:
    secret = settings_of(client).contact.unsubscribe_secret.get_secret_value()
    token = make_token(secret, person, channel=None, issued_at=utcnow())
    for method in ("GET", "POST"):
        response = anonymous(client).request(method, f"/u/{token}", headers=HTML)
        assert response.status_code == 200, response.text
        assert person not in response.text


# --- webhook signatures ------------------------------------------------------------------------------------------
def order_envelope(order_id: str, code: str | None = None) -> bytes:
    now = utcnow().isoformat()
    data: dict[str, Any] = {
        "order_id": order_id,
        "customer": {"id": "bob"},
        "amount": "42.00",
        "currency": "EUR",
        "paid_at": now,
        "referral_code": code,
    }
    return json.dumps({"id": f"evt-{order_id}", "type": "order.paid", "created_at": now, "data": data}).encode()


def post_event(client: TestClient, body: bytes, signature: str) -> Any:
    headers = {"X-Advocacy-Signature": signature, "Content-Type": "application/json"}
    return anonymous(client).post("/v1/webhooks/events", content=body, headers=headers)


def recorded(client: TestClient, order_id: str) -> bool:
    status: int = client.get(f"/v1/conversions/{order_id}").status_code
    return status == 200


def other_secrets(settings: Settings) -> dict[str, str]:
    """Every other key this server holds: a signature made with any of them must not pass for the webhook's."""
    return {
        "the Shopify secret": SHOPIFY_SECRET,
        "the click hash key": settings.referral.click_hash_key.get_secret_value(),
        "the fulfiller secret": settings.referral.fulfiller_secret.get_secret_value(),
        "the unsubscribe secret": settings.contact.unsubscribe_secret.get_secret_value(),
        "the SMS webhook secret": settings.contact.sms_webhook_secret.get_secret_value(),
        "the session secret": settings.api.session_secret.get_secret_value(),
        "the webhook secret with a trailing newline": settings.referral.webhook_secret.get_secret_value() + "\n",
    }


def test_an_event_signed_with_any_other_key_of_the_server_is_refused_and_records_nothing(client: TestClient) -> None:
    for index, (name, secret) in enumerate(other_secrets(settings_of(client)).items()):
        order_id = f"order-wrong-key-{index}"
        body = order_envelope(order_id)
        response = post_event(client, body, sign(body, secret, timestamp=int(utcnow().timestamp())))
        assert response.status_code == 401, name
        assert response.headers["content-type"].startswith(PROBLEM_JSON)
        assert secret.strip() not in response.text
        assert not recorded(client, order_id), name


def test_an_event_whose_signature_has_one_digit_changed_is_refused(client: TestClient) -> None:
    body = order_envelope("order-flipped")
    secret = settings_of(client).referral.webhook_secret.get_secret_value()
    signature = sign(body, secret, timestamp=int(utcnow().timestamp()))
    last = signature[-1]
    forged = signature[:-1] + ("0" if last != "0" else "1")
    assert post_event(client, body, forged).status_code == 401
    assert not recorded(client, "order-flipped")
    assert post_event(client, body, signature).status_code == 202, "the genuine signature is accepted"


def test_an_event_replayed_inside_its_window_pays_nothing_twice(client: TestClient) -> None:
    code = client.post("/v1/customers/ada/codes", json={"campaign_id": "spring"}).json()["code"]
    body = order_envelope("order-replayed", code)
    signature = sign(
        body, settings_of(client).referral.webhook_secret.get_secret_value(), timestamp=int(utcnow().timestamp())
    )
    first = post_event(client, body, signature)
    assert first.status_code == 202, first.text
    rewards = client.get("/v1/rewards", params={"campaign_id": "spring"}).json()["items"]
    assert {r["id"] for r in rewards} >= {"order-replayed:referrer-credit", "order-replayed:friend-discount"}
    for _ in range(2):
        again = post_event(client, body, signature)
        assert again.status_code in (200, 202), again.text
        assert again.json()["conversion"] == first.json()["conversion"]
    assert client.get("/v1/rewards", params={"campaign_id": "spring"}).json()["items"] == rewards


def shopify_order(order_id: int) -> bytes:
    return json.dumps(
        {
            "id": order_id,
            "financial_status": "paid",
            "currency": "EUR",
            "total_price": "42.00",
            "processed_at": utcnow().isoformat(),
            "customer": {"id": 115310627314723954, "first_name": "Ivy", "email": "ivy@example.org"},
        }
    ).encode()


def shopify_refund(order_id: int) -> bytes:
    return json.dumps(
        {
            "id": 509562969,
            "order_id": order_id,
            "created_at": utcnow().isoformat(),
            "transactions": [{"kind": "refund", "status": "success", "amount": "42.00"}],
        }
    ).encode()


def shopify_hmac(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/webhooks/shopify/orders-paid", shopify_order(820982911946100001)),
        ("/v1/webhooks/shopify/refunds-create", shopify_refund(820982911946100001)),
    ],
    ids=["orders-paid", "refunds-create"],
)
def test_a_shopify_delivery_signed_with_a_wrong_key_is_refused(client: TestClient, path: str, body: bytes) -> None:
    webhook_secret = settings_of(client).referral.webhook_secret.get_secret_value()
    for secret in (webhook_secret, SHOPIFY_SECRET + "x", SHOPIFY_SECRET.upper(), ""):
        signature = shopify_hmac(body, secret) if secret else ""
        response = anonymous(client).post(path, content=body, headers={"X-Shopify-Hmac-Sha256": signature})
        assert response.status_code == 401, (secret, response.text)
        assert SHOPIFY_SECRET not in response.text
    assert not recorded(client, "shopify:820982911946100001")


def test_a_replayed_shopify_order_pays_nothing_twice(client: TestClient) -> None:
    """Shopify signs no timestamp, so a replay cannot be refused by age: the order id makes it harmless."""
    body = shopify_order(820982911946100002)
    headers = {"X-Shopify-Hmac-Sha256": shopify_hmac(body, SHOPIFY_SECRET)}
    answers = [anonymous(client).post("/v1/webhooks/shopify/orders-paid", content=body, headers=headers) for _ in "123"]
    assert [a.status_code for a in answers] == [202, 202, 202], answers[0].text
    assert answers[1].json()["conversion"] == answers[2].json()["conversion"] == answers[0].json()["conversion"]
    conversions = client.get("/v1/conversions", params={"limit": 500}).json()["items"]
    assert [c["order"]["id"] for c in conversions].count("shopify:820982911946100002") == 1


# --- browser sessions --------------------------------------------------------------------------------------------
def signed_in_cookie(client: TestClient, key: str) -> str:
    response = anonymous(client).post("/login", data={"key": key})
    assert response.status_code == 303, response.text
    cookie: str | None = response.cookies.get("advocacy_session")
    assert cookie
    return cookie


def resigned(cookie: str, secret: str, **changes: Any) -> str:
    """The cookie's own claims, changed and signed again with `secret`: a forger's best attempt."""
    claims = {**jwt.decode(cookie, options={"verify_signature": False}), **changes}
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": "s1"})


def forged_sessions(cookie: str, real_secret: str) -> dict[str, str]:
    header, payload, signature = cookie.split(".")
    unsigned_header = _b64encode(json.dumps({"alg": "none", "typ": "JWT", "kid": "s1"}).encode())
    past = int((utcnow() - timedelta(hours=1)).timestamp())
    return {
        "a flipped signature byte": f"{header}.{payload}.{flip_byte(signature)}",
        "signed with another secret": resigned(cookie, "another-secret-of-at-least-32-bytes!!"),
        "signed with no algorithm": f"{unsigned_header}.{payload}.",
        "expired an hour ago": resigned(cookie, real_secret, iat=past - 60, exp=past),
        "naming another key, signed with another secret": resigned(
            cookie, "another-secret-of-at-least-32-bytes!!", sub="0123456789ab"
        ),
        "its payload of another key": f"{header}.{_b64encode(json.dumps({'sub': 'zzzzzzzz'}).encode())}.{signature}",
        "not a token at all": "undefined",
    }


def test_a_forged_or_foreign_marketer_session_cookie_opens_neither_the_api_nor_the_dashboard(
    client: TestClient,
) -> None:
    cookie = signed_in_cookie(client, grant_key(client, ("admin",)))
    secret = settings_of(client).api.session_secret.get_secret_value()
    genuine = anonymous(client)
    genuine.cookies.set("advocacy_session", cookie)
    assert genuine.get("/v1/stats").status_code == 200, "the genuine cookie works"
    for name, forged in forged_sessions(cookie, secret).items():
        browser = anonymous(client)
        browser.cookies.set("advocacy_session", forged)
        api = browser.get("/v1/stats")
        assert api.status_code == 401, (name, api.text)
        assert api.headers["content-type"].startswith(PROBLEM_JSON), name
        page = browser.get("/", headers=HTML)
        assert (page.status_code, page.headers.get("location")) == (303, "/login?next=/"), name


def test_a_forged_customer_session_cookie_is_refused_on_the_api_and_on_their_page(client: TestClient) -> None:
    token = customer_token(client, "ada")
    entering = anonymous(client)
    assert entering.get(f"/me/enter?token={token}").status_code == 303
    cookie = entering.cookies.get("advocacy_customer")
    assert cookie
    secret = settings_of(client).api.session_secret.get_secret_value()
    forgeries = {
        **forged_sessions(cookie, secret),
        "moved to bob with another secret": resigned(cookie, "another-secret-of-at-least-32-bytes!!", sub="bob"),
    }
    for name, forged in forgeries.items():
        browser = anonymous(client)
        browser.cookies.set("advocacy_customer", forged)
        assert browser.get("/v1/customers/ada").status_code == 401, name
        assert browser.get("/v1/customers/bob").status_code == 401, name
        assert browser.get("/me", headers=HTML).status_code == 401, name


def test_a_session_cookie_is_no_bearer_token_and_a_customer_token_is_no_session_cookie(client: TestClient) -> None:
    """Each credential is checked against its own key and audience, so one kind cannot pass for the other."""
    secret = settings_of(client).api.session_secret.get_secret_value()
    session, _ = issue_session(secret, "customer", "ada", now=utcnow(), ttl=timedelta(hours=1))
    marketer_session, _ = issue_session(secret, "marketer", "0123456789ab", now=utcnow(), ttl=timedelta(hours=1))
    browser = anonymous(client)
    assert browser.get("/v1/customers/ada", headers=as_customer(session)).status_code == 401
    assert browser.get("/v1/stats", headers=as_customer(marketer_session)).status_code == 401
    token = customer_token(client, "ada")
    for cookie_name in ("advocacy_customer", "advocacy_session"):
        holder = anonymous(client)
        holder.cookies.set(cookie_name, token)
        assert holder.get("/v1/customers/ada").status_code == 401, cookie_name


def test_a_dashboard_session_ends_when_its_key_is_revoked_and_its_forms_do_nothing(client: TestClient) -> None:
    key = grant_key(client, ("admin",))
    browser = anonymous(client)
    browser.cookies.set("advocacy_session", signed_in_cookie(client, key))
    assert browser.get("/", headers=HTML).status_code == 200
    csrf = jwt.decode(browser.cookies["advocacy_session"], options={"verify_signature": False})["csrf"]
    assert client.delete(f"/v1/api-keys/{key.split('_')[1]}").status_code == 200
    page = browser.get("/campaigns", headers=HTML)
    assert (page.status_code, page.headers.get("location")) == (303, "/login?next=/campaigns")
    form = {"csrf_token": csrf, "id": "after-revocation", "name": "After revocation"}
    posted = browser.post("/campaigns", data=form, headers=HTML)
    assert posted.status_code == 303
    assert posted.headers["location"].startswith("/login")
    assert client.get("/v1/campaigns/after-revocation").status_code == 404


def test_sign_in_with_a_revoked_key_is_refused(client: TestClient) -> None:
    key = grant_key(client, ("read",))
    client.delete(f"/v1/api-keys/{key.split('_')[1]}")
    response = anonymous(client).post("/login", data={"key": key})
    assert response.status_code == 401
    assert "advocacy_session" not in response.headers.get("set-cookie", "")
