"""The share widget on a merchant's page from another origin, in headless Chromium, against the API under uvicorn.

Three origins on loopback: the API (uvicorn over a seeded SQLite store), the merchant's site (a plain
`http.server` whose origin is in `api.cors_origins`; it loads the widget's script from the API and signs customer
tokens the way docs/widget.md shows) and a foreign site that is not allowed. Chromium enforces CORS for real, so the
foreign page proves the API's answers cannot be read from an origin nobody allowed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import jwt
import pytest

from engine.access import new_api_key
from graph.factory import open_store
from graph.model import EventKind, utcnow
from graph.program_store import Store
from tests.api_support import campaign_body, seed_network
from tests.e2e.browser_support import Chromium, DevTools, launch_chromium, serve_app
from tests.net_support import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = Path(os.environ.get("ADVOCACY_WIDGET_SCREENSHOT", "/tmp/advocacy-widget.png"))
KID = "k1"
CAMPAIGN = "spring"
WIDGET = "document.querySelector('advocacy-share')"
SHADOW = f"{WIDGET}.shadowRoot"
STATE = f"(() => {{ const w = {WIDGET}; const s = w && w.state; return s && (s.code || s.error) ? s : null; }})()"
QR_SHOWN = (
    f"(() => {{ const qr = {SHADOW}.querySelector('img.qr'); "
    "return !!qr && !qr.hidden && qr.complete && qr.naturalWidth > 0; })()"
)
"""The QR code arrives after the kit: the widget fetches it from the kit's `qr_url`."""
COPIED_TEXT = f"{SHADOW}.querySelector('.status.copied').textContent"
STATUS_TEXT = f"{SHADOW}.querySelector('.status:not(.copied)').textContent"


def sign_customer_token(key: str, customer_id: str, *, ttl: timedelta = timedelta(minutes=15)) -> str:
    """What the merchant's backend does for its signed-in customer (the Python example of docs/widget.md)."""
    now = int(time.time())
    claims = {
        "sub": customer_id,
        "aud": "advocacy:customer",
        "iat": now,
        "exp": now + int(ttl.total_seconds()),
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, key, algorithm="HS256", headers={"kid": KID})


def merchant_page(api: str, customer_id: str, *, token: str, provider: str | None = None, nonce: str = "") -> str:
    """A merchant's account page: their own markup, our script from the API's origin, one element."""
    provider_attribute = f' token-provider="{provider}"' if provider else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Your account · Shop</title><link rel="icon" href="data:,">
<script src="{api}/static/widget/advocacy-share.js" defer></script>
<script nonce="{nonce}">
  window.widgetEvents = [];
  for (const type of ["advocacy-ready", "advocacy-error", "advocacy-idea-sent"]) {{
    document.addEventListener(type, (event) => window.widgetEvents.push({{type, detail: event.detail}}));
  }}
  window.shop = {{
    customer: {json.dumps(customer_id)},
    providerCalls: 0,
    freshToken() {{
      window.shop.providerCalls += 1;
      return fetch("/token?customer=" + encodeURIComponent(window.shop.customer)).then((r) => r.json());
    }},
  }};
</script>
</head><body><h1>Your account</h1>
<advocacy-share api="{api}" campaign="{CAMPAIGN}" token="{token}"{provider_attribute}></advocacy-share>
</body></html>"""


@dataclass
class Merchant:
    """A merchant's site: pages for a signed-in customer and the backend route that signs their token."""

    api: str
    token_key: str
    token_requests: list[str] = field(default_factory=list)

    def respond(self, path: str) -> tuple[int, dict[str, str], str]:
        url = urlsplit(path)
        customer = parse_qs(url.query).get("customer", ["ada"])[0]
        html = {"Content-Type": "text/html; charset=utf-8"}
        if url.path == "/":
            token = sign_customer_token(self.token_key, customer)
            return 200, html, merchant_page(self.api, customer, token=token)
        if url.path == "/strict":
            nonce = secrets.token_urlsafe(16)
            policy = (
                f"default-src 'none'; script-src {self.api} 'nonce-{nonce}'; connect-src {self.api} 'self'; "
                "img-src data:; style-src 'self'"
            )
            token = sign_customer_token(self.token_key, customer)
            page = merchant_page(self.api, customer, token=token, nonce=nonce)
            return 200, {**html, "Content-Security-Policy": policy}, page
        if url.path == "/refused":
            forged = sign_customer_token(secrets.token_urlsafe(32), customer)  # right shape, wrong key: a 401
            return 200, html, merchant_page(self.api, customer, token=forged, provider="shop.freshToken")
        if url.path == "/token":
            self.token_requests.append(customer)
            token = sign_customer_token(self.token_key, customer)
            return 200, {"Content-Type": "application/json"}, json.dumps({"token": token})
        return 404, {"Content-Type": "text/plain"}, "not found"


def serve(merchant: Merchant, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = merchant.respond(self.path)
            data = body.encode()
            self.send_response(HTTPStatus(status))
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass(frozen=True)
class Sites:
    api: str
    merchant: str
    foreign: str
    store_url: str
    shop: Merchant


@contextlib.contextmanager
def opened_store(url: str) -> Iterator[Store]:
    store: Store = open_store(url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sites]:
    tmp = tmp_path_factory.mktemp("widget")
    store_url = f"sqlite:///{tmp / 'widget.db'}"
    record, admin_key = new_api_key("widget test", ["admin"], now=utcnow())
    with opened_store(store_url) as store:
        seed_network(store)
        store.save_api_key(record)
    merchant_port, foreign_port = free_port(), free_port()
    merchant = f"http://127.0.0.1:{merchant_port}"
    token_key = secrets.token_urlsafe(32)
    env = {
        "ADVOCACY_API__CORS_ORIGINS": json.dumps([merchant]),
        "ADVOCACY_API__CUSTOMER_TOKEN_KEYS": json.dumps({KID: token_key}),
        "ADVOCACY_API__CUSTOMER_TOKEN_KID": KID,
    }
    with serve_app(store_url, tmp, env=env) as api:
        shop = Merchant(api, token_key)
        pages = [serve(shop, merchant_port), serve(shop, foreign_port)]
        try:
            created = httpx2.post(
                f"{api}/v1/campaigns",
                json=campaign_body(),
                headers={"Authorization": f"Bearer {admin_key}"},
                timeout=30,
            )
            assert created.status_code == 201, created.text
            yield Sites(api, merchant, f"http://127.0.0.1:{foreign_port}", store_url, shop)
        finally:
            for page in pages:
                page.shutdown()
                page.server_close()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    with launch_chromium(tmp_path_factory.mktemp("chromium")) as launched:
        yield launched


@pytest.fixture(scope="module")
def browser(chromium: Chromium) -> DevTools:
    """The one tab the tests share; each opens its page afresh and reads only that page's problems."""
    return chromium.page()


def codes_of(sites: Sites, customer_id: str) -> list[str]:
    with opened_store(sites.store_url) as store:
        return [code.code for code in store.list_codes(customer_id=customer_id, campaign_id=CAMPAIGN)]


def test_the_widget_on_a_merchant_page_shows_the_customers_own_link_and_copies_it(
    sites: Sites, chromium: Chromium, browser: DevTools
) -> None:
    chromium.grant_clipboard(sites.merchant)
    browser.open(f"{sites.merchant}/?customer=ada")
    state = browser.wait_for(STATE)
    assert state["error"] is None, state
    assert state["customerId"] == "ada"
    assert [state["code"]] == codes_of(sites, "ada")  # the code the store issued for this customer
    assert state["link"] == f"{sites.api}/r/{state['code']}"
    browser.wait_for(QR_SHOWN)

    shown = browser.evaluate(
        f"""(() => {{ const r = {SHADOW}; const qr = r.querySelector('img.qr');
        return {{link: r.querySelector('#link').value, code: r.querySelector('.code span').textContent,
                 rewards: r.querySelector('.rewards').textContent, qrLoaded: qr.complete && qr.naturalWidth > 0,
                 qrSrc: qr.getAttribute('src').slice(0, 26), qrAlt: qr.alt, inlineSvg: r.querySelectorAll('svg').length,
                 channels: [...r.querySelectorAll('a.channel')].map((a) => ({{channel: a.dataset.channel,
                   scheme: new URL(a.href).protocol, target: a.target, rel: a.rel}}))}}; }})()"""
    )
    assert shown["link"] == state["link"]
    assert shown["code"] == state["code"]
    assert "10 EUR credit" in shown["rewards"]
    assert "5 EUR off" in shown["rewards"]
    assert shown["qrLoaded"]
    assert shown["qrSrc"] == "data:image/svg+xml;charset"
    assert shown["qrAlt"]
    assert shown["inlineSvg"] == 0  # the API's SVG is an image, never markup in the page
    by_channel = {c["channel"]: c for c in shown["channels"]}
    assert list(by_channel) == ["whatsapp", "email", "sms", "x", "linkedin", "facebook"]
    assert by_channel["whatsapp"] == {
        "channel": "whatsapp",
        "scheme": "https:",
        "target": "_blank",
        "rel": "noopener noreferrer",
    }
    assert by_channel["email"]["scheme"] == "mailto:"

    browser.click("button.copy", root=SHADOW)
    assert browser.wait_for(f"{COPIED_TEXT} === 'Link copied'")  # announced: the paragraph is a live region
    assert browser.evaluate(f"{SHADOW}.querySelector('.status.copied').getAttribute('aria-live')") == "polite"
    assert browser.evaluate("navigator.clipboard.readText()") == state["link"]
    assert browser.evaluate("window.widgetEvents.map((e) => e.type)") == ["advocacy-ready"]
    browser.capture(SCREENSHOT, width=1000)

    browser.viewport(360, 800, mobile=True)
    try:
        assert browser.wait_for("document.readyState === 'complete' && innerWidth === 360")
        assert browser.evaluate("document.documentElement.scrollWidth") <= 360  # nothing overflows on a phone
        browser.capture(SCREENSHOT.with_name(SCREENSHOT.stem + "-mobile.png"), width=360, mobile=True)
    finally:
        browser.send("Emulation.clearDeviceMetricsOverride")
    assert browser.problems(this_page=True) == []


def test_an_idea_sent_through_the_widget_is_recorded_as_the_customers_event(sites: Sites, browser: DevTools) -> None:
    idea = "Gift wrap for the friend's first order"
    browser.open(f"{sites.merchant}/?customer=ada")
    assert browser.wait_for(STATE)["customerId"] == "ada"
    browser.evaluate(f"{SHADOW}.querySelector('#idea-text').value = {json.dumps(idea)}")
    browser.click("form.idea button[type=submit]", root=SHADOW)
    assert browser.wait_for(f"{STATUS_TEXT}.startsWith('Thanks') && {STATUS_TEXT}") == "Thanks! Your idea was sent."

    with opened_store(sites.store_url) as store:
        ideas = store.events_of("ada", kind=EventKind.IDEA)
    assert [(e.customer_id, e.attributes.get("text"), e.attributes.get("campaign_id")) for e in ideas] == [
        ("ada", idea, CAMPAIGN)
    ]
    sent = browser.evaluate("window.widgetEvents.filter((e) => e.type === 'advocacy-idea-sent')")
    assert [e["detail"]["id"] for e in sent] == [ideas[0].id]
    assert browser.evaluate(f"{SHADOW}.querySelector('#idea-text').value") == ""
    assert browser.problems(this_page=True) == []


def test_a_refused_token_is_replaced_once_by_the_token_provider(sites: Sites, browser: DevTools) -> None:
    browser.open(f"{sites.merchant}/refused?customer=bob")
    state = browser.wait_for(STATE)
    assert state["error"] is None, state
    assert state["customerId"] == "bob"
    assert [state["code"]] == codes_of(sites, "bob")
    assert browser.evaluate("window.shop.providerCalls") == 1
    assert sites.shop.token_requests.count("bob") == 1
    # the forged token's 401 is the one console error Chromium logs for a failed load; nothing else went wrong
    assert [p for p in browser.problems(this_page=True) if "401" not in p] == []


def test_a_page_from_an_origin_not_allowed_cannot_read_the_kit(sites: Sites, browser: DevTools) -> None:
    browser.open(f"{sites.foreign}/?customer=cy")
    state = browser.wait_for(STATE)
    assert state["code"] is None
    assert state["error"]["kind"] == "network"
    shown = browser.evaluate(f"{SHADOW}.querySelector('[role=alert]').textContent")
    assert shown == state["error"]["message"]
    assert "couldn't reach" in shown
    read = browser.evaluate(
        f"""fetch({json.dumps(f"{sites.api}/v1/customers/cy/kit?campaign_id={CAMPAIGN}")},
              {{headers: {{Authorization: 'Bearer ' + {WIDGET}.getAttribute('token')}}}})
           .then((r) => 'read ' + r.status, (e) => e.name)"""
    )
    assert read == "TypeError"
    assert codes_of(sites, "cy") == []  # the preflight was refused, so the kit was never even asked for

    preflight = httpx2.options(
        f"{sites.api}/v1/me",
        headers={
            "Origin": sites.foreign,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_the_widget_keeps_its_styles_under_a_strict_content_security_policy(sites: Sites, browser: DevTools) -> None:
    browser.open(f"{sites.merchant}/strict?customer=fay")
    state = browser.wait_for(STATE)
    assert state["error"] is None, state
    assert [state["code"]] == codes_of(sites, "fay")
    browser.wait_for(QR_SHOWN)  # fetched from the API (connect-src), shown as a data: image (img-src data:)
    styled = browser.evaluate(f"getComputedStyle({SHADOW}.querySelector('button.copy')).backgroundColor")
    assert styled == "rgb(29, 78, 216)"  # --advocacy-accent's default: the widget's stylesheet applied
    assert browser.problems(this_page=True) == []  # and no CSP violation was reported


def test_the_demo_page_runs_the_widget_against_its_own_server(sites: Sites, browser: DevTools) -> None:
    token = sign_customer_token(sites.shop.token_key, "dee")
    browser.open(f"{sites.api}/widget-demo?campaign={CAMPAIGN}#token={token}")
    state = browser.wait_for(STATE)
    assert state["error"] is None, state
    assert [state["code"]] == codes_of(sites, "dee")
    assert browser.evaluate("location.hash") == ""  # the token leaves the address bar at once
    snippet = browser.evaluate("document.querySelector('pre.snippet code').textContent")
    assert f'<script src="{sites.api}/static/widget/advocacy-share.js"' in snippet
    assert 'integrity="sha384-' in snippet
    assert browser.problems(this_page=True) == []
