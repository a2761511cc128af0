"""The share widget on a merchant's page from another origin, in headless Chromium, against the API under uvicorn.

Three origins on loopback: the API (uvicorn over a seeded SQLite store), the merchant's site (a plain
`http.server` whose origin is in `api.cors_origins`; it loads the widget's script from the API and signs customer
tokens the way docs/widget.md shows) and a foreign site that is not allowed. Chromium enforces CORS for real, so the
foreign page proves the API's answers cannot be read from an origin nobody allowed.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
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

import httpx
import jwt
import pytest
from websockets.sync.client import ClientConnection, connect

from engine.access import new_api_key
from graph.factory import open_store
from graph.model import EventKind, utcnow
from graph.program_store import Store
from tests.api_support import seed_network
from tests.unit.test_api_referrals import campaign_body

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("ADVOCACY_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(os.environ.get("ADVOCACY_WIDGET_SCREENSHOT", "/tmp/advocacy-widget.png"))
KID = "k1"
CAMPAIGN = "spring"
WIDGET = "document.querySelector('advocacy-share')"
SHADOW = f"{WIDGET}.shadowRoot"
STATE = f"(() => {{ const w = {WIDGET}; const s = w && w.state; return s && (s.code || s.error) ? s : null; }})()"
COPIED_TEXT = f"{SHADOW}.querySelector('.status.copied').textContent"
STATUS_TEXT = f"{SHADOW}.querySelector('.status:not(.copied)').textContent"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process group this test started (uvicorn, or chromium and its helpers)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


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
    api_port, merchant_port, foreign_port = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    merchant = f"http://127.0.0.1:{merchant_port}"
    token_key = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "ADVOCACY_STORE": store_url,
        "ADVOCACY_API__PUBLIC_BASE_URL": api,
        "ADVOCACY_API__CORS_ORIGINS": json.dumps([merchant]),
        "ADVOCACY_API__CUSTOMER_TOKEN_KEYS": json.dumps({KID: token_key}),
        "ADVOCACY_API__CUSTOMER_TOKEN_KID": KID,
        "ADVOCACY_CONTACT__SQLITE_PATH": str(tmp / "contacts.db"),
        "ADVOCACY_CONTACT__MAILDIR": str(tmp / "mail"),
    }
    log = (tmp / "uvicorn.log").open("wb")
    command = [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--port", str(api_port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    shop = Merchant(api, token_key)
    pages = [serve(shop, merchant_port), serve(shop, foreign_port)]
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"uvicorn exited: {(tmp / 'uvicorn.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("the app did not become ready within 60 s")
            time.sleep(0.2)
        created = httpx.post(
            f"{api}/v1/campaigns", json=campaign_body(), headers={"Authorization": f"Bearer {admin_key}"}, timeout=30
        )
        assert created.status_code == 201, created.text
        yield Sites(api, merchant, f"http://127.0.0.1:{foreign_port}", store_url, shop)
    finally:
        for page in pages:
            page.shutdown()
            page.server_close()
        stop(server)
        log.close()


class DevTools:
    """A minimal Chrome DevTools Protocol client: numbered commands, with events kept for inspection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.01)))
            if message.get("id") == msg_id:
                if "error" in message:
                    raise AssertionError(f"{method} failed: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            time.sleep(0.1)

    def open(self, url: str) -> None:
        """Navigate and wait for the new document: the old one is marked, so it cannot pass for the new one."""
        self.evaluate("window.leftBehind = true")
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_for("!window.leftBehind && document.readyState === 'complete'")

    def click(self, element: str) -> None:
        """A real mouse click in the middle of `element` (an expression), so the page sees a user gesture."""
        spot = self.evaluate(
            f"(() => {{ const e = {element}; e.scrollIntoView({{block: 'center'}});"
            " const r = e.getBoundingClientRect(); return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": spot["x"], "y": spot["y"], "button": "left", "clickCount": 1},
            )

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen since the last `open`."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args", []))[:500])
            elif event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(params["entry"].get("text", "") + " " + params["entry"].get("url", ""))
        return found


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or deselect with -m 'not browser')")
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-extensions",
            "--window-size=1000,900",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(active.read_text().splitlines()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=16 * 2**20, open_timeout=30) as ws:
            tools = DevTools(ws)
            for domain in ("Runtime", "Log", "Page"):
                tools.send(f"{domain}.enable")
            tools.send("Emulation.setFocusEmulationEnabled", {"enabled": True})  # headless has no focused window
            yield tools
    finally:
        stop(process)
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(tools: DevTools, path: Path) -> None:
    """The viewport, for a person to look at; the assertions do not depend on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(tools.send("Page.captureScreenshot", {"format": "png"})["data"]))


def codes_of(sites: Sites, customer_id: str) -> list[str]:
    with opened_store(sites.store_url) as store:
        return [code.code for code in store.list_codes(customer_id=customer_id, campaign_id=CAMPAIGN)]


def test_the_widget_on_a_merchant_page_shows_the_customers_own_link_and_copies_it(
    sites: Sites, browser: DevTools
) -> None:
    browser.send(
        "Browser.grantPermissions",
        {"origin": sites.merchant, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    browser.open(f"{sites.merchant}/?customer=ada")
    state = browser.wait_for(STATE)
    assert state["error"] is None, state
    assert state["customerId"] == "ada"
    assert [state["code"]] == codes_of(sites, "ada")  # the code the store issued for this customer
    assert state["link"] == f"{sites.api}/r/{state['code']}"

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

    browser.click(f"{SHADOW}.querySelector('button.copy')")
    assert browser.wait_for(f"{COPIED_TEXT} === 'Link copied'")  # announced: the paragraph is a live region
    assert browser.evaluate(f"{SHADOW}.querySelector('.status.copied').getAttribute('aria-live')") == "polite"
    assert browser.evaluate("navigator.clipboard.readText()") == state["link"]
    assert browser.evaluate("window.widgetEvents.map((e) => e.type)") == ["advocacy-ready"]
    screenshot(browser, SCREENSHOT)

    browser.send(
        "Emulation.setDeviceMetricsOverride", {"width": 360, "height": 800, "deviceScaleFactor": 1, "mobile": True}
    )
    try:
        assert browser.wait_for("document.readyState === 'complete' && innerWidth === 360")
        assert browser.evaluate("document.documentElement.scrollWidth") <= 360  # nothing overflows on a phone
        screenshot(browser, SCREENSHOT.with_name(SCREENSHOT.stem + "-mobile.png"))
    finally:
        browser.send("Emulation.clearDeviceMetricsOverride")
    assert browser.problems() == []


def test_an_idea_sent_through_the_widget_is_recorded_as_the_customers_event(sites: Sites, browser: DevTools) -> None:
    idea = "Gift wrap for the friend's first order"
    browser.open(f"{sites.merchant}/?customer=ada")
    assert browser.wait_for(STATE)["customerId"] == "ada"
    browser.evaluate(f"{SHADOW}.querySelector('#idea-text').value = {json.dumps(idea)}")
    browser.click(f"{SHADOW}.querySelector('form.idea button[type=submit]')")
    assert browser.wait_for(f"{STATUS_TEXT}.startsWith('Thanks') && {STATUS_TEXT}") == "Thanks! Your idea was sent."

    with opened_store(sites.store_url) as store:
        ideas = store.events_of("ada", kind=EventKind.IDEA)
    assert [(e.customer_id, e.attributes.get("text"), e.attributes.get("campaign_id")) for e in ideas] == [
        ("ada", idea, CAMPAIGN)
    ]
    sent = browser.evaluate("window.widgetEvents.filter((e) => e.type === 'advocacy-idea-sent')")
    assert [e["detail"]["id"] for e in sent] == [ideas[0].id]
    assert browser.evaluate(f"{SHADOW}.querySelector('#idea-text').value") == ""
    assert browser.problems() == []


def test_a_refused_token_is_replaced_once_by_the_token_provider(sites: Sites, browser: DevTools) -> None:
    browser.open(f"{sites.merchant}/refused?customer=bob")
    state = browser.wait_for(STATE)
    assert state["error"] is None, state
    assert state["customerId"] == "bob"
    assert [state["code"]] == codes_of(sites, "bob")
    assert browser.evaluate("window.shop.providerCalls") == 1
    assert sites.shop.token_requests.count("bob") == 1
    # the forged token's 401 is the one console error Chromium logs for a failed load; nothing else went wrong
    assert [p for p in browser.problems() if "401" not in p] == []


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

    preflight = httpx.options(
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
    styled = browser.evaluate(f"getComputedStyle({SHADOW}.querySelector('button.copy')).backgroundColor")
    assert styled == "rgb(29, 78, 216)"  # --advocacy-accent's default: the widget's stylesheet applied
    assert browser.problems() == []  # and no CSP violation was reported


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
    assert browser.problems() == []
