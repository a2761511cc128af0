"""The pages in a real headless Chromium, against the app under uvicorn over a seeded SQLite store.

A marketer signs in at `/login` with the keyboard and the dashboard draws the network; a customer opens their
page from the shop's link, copies their referral link (with the mouse, then with the keyboard), a friend opens it
in a browser of their own, and the friend's signup and order come back attributed and rewarded. Screenshots go to
`/tmp/advocacy-*.png` (or next to `$ADVOCACY_SCREENSHOT`) for a person to look at.
"""

from __future__ import annotations

import base64
import itertools
import math
import os
import random
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest

from engine.access import issue_customer_token, new_api_key, token_keys
from engine.settings import Settings
from graph.factory import open_store
from graph.model import Segment, utcnow
from tests.e2e.browser_support import Chromium, DevTools, launch_chromium, serve_app
from tests.factories import make_customer, make_influence, make_referral, make_run, make_scores
from tests.program_factories import make_campaign

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCREENSHOT = Path(os.environ.get("ADVOCACY_SCREENSHOT", "/tmp/advocacy-dashboard.png"))
CUSTOMERS = 60
CAMPAIGN = "spring"
OFFER = "5 EUR off your first order"
ADVOCATE = "cust-007"


def seed(url: str) -> str:
    """Sixty customers in three communities, with hubs, referrals, scores from one run and a running campaign;
    returns an admin API key stored the way `advocacy keys create` stores one."""
    rng = random.Random(7)
    ids = [f"cust-{i:03d}" for i in range(CUSTOMERS)]
    community = {cid: i % 3 for i, cid in enumerate(ids)}
    store = open_store(url)
    try:
        store.upsert_customers([make_customer(id=cid, name=f"Customer {i}") for i, cid in enumerate(ids)])
        hubs = ids[:6]
        influences = set()
        for cid in ids[6:]:
            hub = next(h for h in hubs if community[h] == community[cid])
            influences.add((hub, cid))
            peer = rng.choice([p for p in ids if community[p] == community[cid] and p != cid])
            influences.add((cid, peer))
        influences.update({(hubs[0], hubs[1]), (hubs[1], hubs[2]), (hubs[3], hubs[5])})
        store.add_influences([make_influence(s, t) for s, t in sorted(influences)])
        store.add_referrals([make_referral(hubs[i % 6], ids[10 + i]) for i in range(12)])
        degree = {cid: sum(cid in edge for edge in influences) for cid in ids}
        run = make_run(id="run-browser")
        store.save_run(run)
        segments = itertools.cycle([Segment.ADVOCATE, Segment.PASSIVE, Segment.PROSUMER, Segment.PASSIVE])
        store.write_scores(
            [
                make_scores(
                    cid,
                    run_id=run.id,
                    segment=Segment.INFLUENCER
                    if cid in hubs[:4]
                    else (Segment.DO_NOT_ASK if i % 11 == 5 else next(segments)),
                    scores={"pagerank": round(degree[cid] / (2 * len(influences)), 5)},
                    community=community[cid],
                    explanation=f"Customer {i} reaches {degree[cid]} people.",
                )
                for i, cid in enumerate(ids)
            ]
        )
        store.save_campaign(make_campaign(id=CAMPAIGN, friend_offer=OFFER, created_at=utcnow()))
        record, key = new_api_key("browser test", ["admin"], now=utcnow())
        store.save_api_key(record)
        return key
    finally:
        store.close()


class App:
    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key

    def api(self) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """One server for the module (starting it is most of a test's time); tests only add to its data."""
    workdir = tmp_path_factory.mktemp("app")
    store_url = f"sqlite:///{workdir / 'browser.db'}"
    key = seed(store_url)
    with serve_app(store_url, workdir) as url:
        yield App(url, key)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    with launch_chromium(tmp_path) as browser:
        yield browser


def shot(name: str) -> Path:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT.with_name(f"advocacy-{name}.png")


def sign_in_with_the_keyboard(page: DevTools, app: App, path: str = "/") -> None:
    """Open a marketer page signed out: it sends us to `/login`, where the key field has the focus; type the key,
    Tab to the button, press Enter, and land back on the page."""
    page.open(f"{app.url}{path}", ready="document.getElementById('key')")
    assert page.evaluate("location.pathname + location.search") == f"/login?next={path}"
    page.wait_for("document.activeElement && document.activeElement.id === 'key'")
    page.type_text(app.key)
    page.press("Tab")
    assert page.focused() == "Sign in"
    page.press("Enter")
    page.wait_for(f"location.pathname === {path!r} && document.readyState === 'complete'")


def full_page_with_network(page: DevTools, path: Path, *, width: int = 1400, mobile: bool = False) -> None:
    """The viewport is made as tall as the page (twice, since the canvas height follows the viewport's), the network
    is fitted with the page's own Fit button, then the page is captured."""
    for _ in range(2):
        size = page.send("Page.getLayoutMetrics")["cssContentSize"]
        page.viewport(width, math.ceil(size["height"]), mobile=mobile)
        time.sleep(0.3)
    page.evaluate("window.scrollTo(0, 0); document.getElementById('zoom-fit').click()")
    time.sleep(0.8)  # the fit animation
    path.write_bytes(base64.b64decode(page.send("Page.captureScreenshot", {"format": "png"})["data"]))
    page.send("Emulation.clearDeviceMetricsOverride")


NODE_ON_SCREEN = """(() => {
  document.getElementById('network').scrollIntoView({block: 'center'});
  const net = window.dashboardNetwork;
  const dom = net.canvasToDOM(net.getPosition('%s'));
  const box = document.querySelector('#network canvas').getBoundingClientRect();
  return {x: box.left + dom.x, y: box.top + dom.y};
})()"""

COLOURED_PIXELS = """(() => {
  const canvas = document.querySelector('#network canvas');
  const ctx = canvas.getContext('2d');
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let orange = 0, blue = 0, green = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (r > 190 && g > 70 && g < 120 && b < 40) orange++;
    if (r < 30 && g > 90 && g < 135 && b > 160) blue++;
    if (r < 30 && g > 130 && g < 175 && b > 95 && b < 140) green++;
  }
  return {orange, blue, green, width: canvas.width, height: canvas.height};
})()"""


def test_a_marketer_signs_in_with_the_keyboard_and_the_dashboard_draws_the_network(
    app: App, chromium: Chromium
) -> None:
    with app.api() as api:
        expected = api.get("/v1/graph/view", params={"limit": 200}).json()
    shown, total = len(expected["nodes"]), expected["total_customers"]
    assert shown >= CUSTOMERS
    page = chromium.page()
    sign_in_with_the_keyboard(page, app)

    state = page.wait_for("window.dashboard && window.dashboard.ready && window.dashboard")
    assert state["error"] is None
    assert state["nodesDrawn"] == len(expected["nodes"])
    assert state["edgesDrawn"] == len(expected["edges"])
    assert state["ranked_by"] == "influence"
    status = page.evaluate("document.getElementById('network-status').textContent")
    assert f"Showing {shown} of {total} customers" in status
    assert "Signed in as browser test" in page.evaluate("document.querySelector('.signout').innerText")

    pixels = page.wait_for(f"(() => {{ const p = {COLOURED_PIXELS}; return p.orange > 20 && p; }})()")
    assert pixels["width"] > 300
    assert pixels["height"] > 300
    assert pixels["blue"] > 20, pixels  # prosumers
    assert pixels["green"] > 20, pixels  # advocates
    full_page_with_network(page, SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 20_000

    time.sleep(0.5)
    spot = page.evaluate(NODE_ON_SCREEN % "cust-002")
    page.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": spot["x"], "y": spot["y"]})
    tip = page.wait_for(
        "(() => { const t = document.querySelector('.vis-tooltip');"
        " return t && getComputedStyle(t).visibility === 'visible' && t.innerText; })()"
    )
    assert "Customer 2" in tip
    assert "Influencer" in tip

    page.evaluate("document.querySelector('[data-focus-node=cust-000]').click()")
    why = page.wait_for("[...document.querySelectorAll('#node-detail-body dd.why')].map(e => e.textContent).join('')")
    assert why.startswith("Customer 0 reaches")

    page.evaluate("document.querySelector('input[name=colour][value=community]').click()")
    legend = page.evaluate("document.getElementById('legend-communities').innerText")
    assert "Community 0 (20)" in legend
    influencers = sum(1 for n in expected["nodes"] if n["segment"] == "influencer")
    page.evaluate(
        "(() => { const s = document.getElementById('network-highlight'); s.value = 'segment:influencer';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    assert page.evaluate("window.dashboard.highlighted") == influencers == 4
    assert f"{influencers} of {shown} customers in view highlighted" in page.evaluate(
        "document.getElementById('network-status').textContent"
    )

    page.viewport(390, 844, mobile=True)
    time.sleep(0.5)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing overflows sideways
    full_page_with_network(page, shot("dashboard-mobile"), width=390, mobile=True)
    assert page.problems() == []


def customer_link(app: App, customer_id: str) -> str:
    """What the shop's "your referral page" button opens (as `advocacy token <id> --link` prints it)."""
    settings = Settings()
    keys = token_keys(settings)
    token, _ = issue_customer_token(
        keys, settings.api.customer_token_kid, customer_id, now=utcnow(), ttl=timedelta(minutes=10)
    )
    return f"{app.url}/me/enter?token={token}"


def test_a_customer_copies_their_link_and_the_friend_who_follows_it_is_attributed_and_rewarded(
    app: App, chromium: Chromium
) -> None:
    page = chromium.page()
    # `window.pages` exists once pages.js has run, so the copy button has its handler before the click
    page.open(customer_link(app, ADVOCATE), ready="window.pages && document.querySelector('[data-referral-link]')")
    assert page.evaluate("location.pathname") == "/me"
    link = page.evaluate("document.getElementById('referral-link').value")
    code = page.evaluate("document.querySelector('[data-code]').textContent")
    assert link == f"{app.url}/r/{code}"
    assert page.evaluate("document.querySelector('[data-friend-offer]').textContent") == OFFER

    chromium.grant_clipboard(app.url)
    page.click("#copy-link")
    assert page.wait_for("window.pages.copied") == link
    assert page.evaluate("navigator.clipboard.readText()") == link
    assert page.wait_for("document.getElementById('copy-status').textContent").startswith("Link copied")

    page.evaluate("window.pages.copied = null; navigator.clipboard.writeText('')")
    page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
    page.tab_to("copy-link")  # from the top of the page, with the keyboard only
    page.press("Enter")
    assert page.wait_for("window.pages.copied") == link
    assert page.evaluate("navigator.clipboard.readText()") == link
    page.capture(shot("me"))

    friend, context = chromium.new_context()
    friend.open(link, ready="document.querySelector('[data-code]')")
    assert friend.evaluate("location.pathname") == f"/landing/{code}"
    assert friend.evaluate("document.querySelector('[data-offer]').textContent") == OFFER
    assert friend.evaluate("document.querySelector('[data-code]').textContent") == code
    assert friend.evaluate("document.querySelector('[data-referrer]').textContent") == "Customer"  # first name only
    friend.capture(shot("landing"), width=390, mobile=True)
    click_id = chromium.cookies(context)["adv_click"]["value"]
    assert "adv_click" not in chromium.cookies()  # the advocate's own browser holds no click of theirs

    now = utcnow().isoformat()
    with app.api() as api:
        signup = api.post(
            "/v1/signups",
            json={
                "customer_id": "friend-1",
                "at": now,
                "click_id": click_id,
                "customer": {"id": "friend-1", "name": "Fay Friend", "email": "fay@friends.example"},
            },
        )
        assert signup.status_code == 200, signup.text
        assert signup.json()["attribution"]["referrer_id"] == ADVOCATE
        order = api.post(
            "/v1/orders",
            json={
                "id": "order-friend-1",
                "customer_id": "friend-1",
                "amount_minor": 4200,
                "currency": "EUR",
                "at": now,
                "click_id": click_id,
            },
        )
        assert order.status_code == 201, order.text
        conversion = order.json()
        assert conversion["status"] == "attributed", conversion
        assert conversion["attribution"]["referrer_id"] == ADVOCATE
        assert conversion["attribution"]["code"] == code
        rewards = api.get("/v1/rewards", params={"customer_id": ADVOCATE}).json()["items"]
    assert [(r["rule_id"], r["state"], r["amount_minor"]) for r in rewards] == [("referrer-credit", "pending", 1000)]

    page.open(f"{app.url}/me", ready="document.querySelector('[data-successes]')")
    assert page.evaluate("document.querySelector('[data-successes]').textContent").startswith("1 friend bought")
    assert page.evaluate("document.querySelector('[data-balance=pending] dd').textContent") == "10 EUR"
    assert page.evaluate("document.querySelector('[data-milestone]').dataset.milestone") == "3"
    assert page.problems() == []
    assert friend.problems() == []


PAGES = ("/targets", "/campaigns", "/kits?customer=cust-000", "/fraud", "/referrals")


def test_the_programme_pages_render_without_errors_and_fit_a_phone(app: App, chromium: Chromium) -> None:
    page = chromium.page()
    sign_in_with_the_keyboard(page, app, "/targets")
    assert page.wait_for("document.querySelectorAll('[data-target]').length") == 10
    assert page.evaluate("document.querySelector('[data-forecast-value=reached]') !== null")
    for path in PAGES:
        page.open(f"{app.url}{path}")
        assert page.evaluate("document.querySelectorAll('h1').length") == 1, path
        name = path.strip("/").split("?")[0]
        page.capture(shot(name))
        page.viewport(390, 844, mobile=True)
        time.sleep(0.3)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
        page.send("Emulation.clearDeviceMetricsOverride")
    assert page.problems() == []


def test_the_api_reference_renders_every_operation_offline(app: App, chromium: Chromium) -> None:
    spec = httpx2.get(f"{app.url}/openapi.json", timeout=30).json()
    operations = sum(len(item) for item in spec["paths"].values())
    page = chromium.page()
    page.open(f"{app.url}/docs")
    shown = page.wait_for(
        f"document.querySelectorAll('.opblock').length >= {operations} && document.querySelectorAll('.opblock').length"
    )
    assert shown == operations
    assert page.problems() == []
