"""The dashboard in a real headless Chromium: the network is drawn, coloured, clickable, and error-free.

The browser is Debian's `chromium`, driven over the Chrome DevTools Protocol with the `websockets` client, so no
browser is downloaded. The app runs under uvicorn in a subprocess over a seeded SQLite store, as in production.
A full-page screenshot is written to `/tmp/advocacy-dashboard.png` (or `$ADVOCACY_SCREENSHOT`) for a person to see.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from graph.factory import open_store
from graph.model import Segment
from tests.factories import make_customer, make_influence, make_referral, make_run, make_scores

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("ADVOCACY_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOT = Path(os.environ.get("ADVOCACY_SCREENSHOT", "/tmp/advocacy-dashboard.png"))
CUSTOMERS = 60
WIDTH = 1400


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def seed(url: str) -> None:
    """Sixty customers in three communities, with hubs, referrals, and scores from one run."""
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
    finally:
        store.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process group this test started (uvicorn or chromium and its helpers)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def app_url(tmp_path: Path) -> Iterator[str]:
    store_url = f"sqlite:///{tmp_path / 'browser.db'}"
    seed(store_url)
    port = free_port()
    env = {**os.environ, "ADVOCACY_STORE": store_url}
    log = (tmp_path / "uvicorn.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(f"uvicorn exited: {(tmp_path / 'uvicorn.log').read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("the app did not become ready within 60 s")
            time.sleep(0.2)
        yield base
    finally:
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
            time.sleep(0.2)

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
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


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or deselect with -m 'not browser')")
    profile = tmp_path / "chromium-profile"
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
            "--hide-scrollbars",
            f"--window-size={WIDTH},1000",
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
        with connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=30) as ws:
            tools = DevTools(ws)
            for domain in ("Runtime", "Log", "Page"):
                tools.send(f"{domain}.enable")
            yield tools
    finally:
        stop(process)
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(tools: DevTools, path: Path, *, width: int = 1400, mobile: bool = False) -> None:
    """The whole page: the viewport is made as tall as the page (twice, since the canvas height follows the
    viewport's), the network is fitted with the page's own Fit button, then the page is captured."""
    for _ in range(2):
        size = tools.send("Page.getLayoutMetrics")["cssContentSize"]
        tools.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": math.ceil(size["height"]), "deviceScaleFactor": 1, "mobile": mobile},
        )
        time.sleep(0.3)
    tools.evaluate("window.scrollTo(0, 0); document.getElementById('zoom-fit').click()")
    time.sleep(0.8)  # the fit animation
    shot = tools.send("Page.captureScreenshot", {"format": "png"})
    path.write_bytes(base64.b64decode(shot["data"]))
    tools.send("Emulation.clearDeviceMetricsOverride")


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


def test_dashboard_draws_the_seeded_network_without_errors(app_url: str, browser: DevTools) -> None:
    expected = httpx.get(f"{app_url}/v1/graph/view", params={"limit": 200}, timeout=30).json()
    assert len(expected["nodes"]) == CUSTOMERS

    browser.send("Page.navigate", {"url": f"{app_url}/"})
    state = browser.wait_for("window.dashboard && window.dashboard.ready && window.dashboard")
    assert state["error"] is None
    assert state["nodesDrawn"] == len(expected["nodes"])
    assert state["edgesDrawn"] == len(expected["edges"])
    assert state["ranked_by"] == "influence"
    assert browser.evaluate("document.getElementById('network').dataset.nodesDrawn") == str(CUSTOMERS)
    status = browser.evaluate("document.getElementById('network-status').textContent")
    assert f"Showing {CUSTOMERS} of {CUSTOMERS} customers" in status

    pixels = browser.wait_for(f"(() => {{ const p = {COLOURED_PIXELS}; return p.orange > 20 && p; }})()")
    assert pixels["width"] > 300
    assert pixels["height"] > 300
    assert pixels["blue"] > 20, pixels  # prosumers
    assert pixels["green"] > 20, pixels  # advocates

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    screenshot(browser, SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 20_000

    time.sleep(0.5)
    spot = browser.evaluate(NODE_ON_SCREEN % "cust-002")
    browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": spot["x"], "y": spot["y"]})
    tip = browser.wait_for(
        "(() => { const t = document.querySelector('.vis-tooltip');"
        " return t && getComputedStyle(t).visibility === 'visible' && t.innerText; })()"
    )
    assert "Customer 2" in tip
    assert "Influencer" in tip

    browser.evaluate("document.querySelector('[data-focus-node=cust-000]').click()")
    why = browser.wait_for(
        "[...document.querySelectorAll('#node-detail-body dd.why')].map(e => e.textContent).join('')"
    )
    assert why.startswith("Customer 0 reaches")
    assert browser.evaluate("window.dashboard.error") is None

    browser.evaluate("document.querySelector('input[name=colour][value=community]').click()")
    legend = browser.evaluate("document.getElementById('legend-communities').innerText")
    assert "Community 0 (20)" in legend
    screenshot(browser, SCREENSHOT.with_name(SCREENSHOT.stem + "-selected.png"))

    browser.send(
        "Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}
    )
    time.sleep(0.5)
    assert browser.evaluate("document.documentElement.scrollWidth") <= 390  # nothing overflows sideways
    screenshot(browser, SCREENSHOT.with_name(SCREENSHOT.stem + "-mobile.png"), width=390, mobile=True)
    assert browser.problems() == []


def test_the_api_reference_renders_every_operation_offline(app_url: str, browser: DevTools) -> None:
    spec = httpx.get(f"{app_url}/openapi.json", timeout=30).json()
    operations = sum(len(item) for item in spec["paths"].values())
    browser.send("Page.navigate", {"url": f"{app_url}/docs"})
    shown = browser.wait_for(
        f"document.querySelectorAll('.opblock').length >= {operations} && document.querySelectorAll('.opblock').length"
    )
    assert shown == operations
    assert browser.problems() == []
