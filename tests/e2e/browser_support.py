"""What the page tests in headless Chromium share: the app under uvicorn, Debian's `chromium` driven over the Chrome
DevTools Protocol with the `websockets` client (no browser is downloaded), and keyboard and mouse input.

`serve_app` runs the app as production does (`uvicorn api.app:create_app --factory`) over a given store, with its
public base URL set to where it listens, so links in kits open in the test's browser, and any further settings a
test needs (allowed origins, token keys) in its environment. `Chromium` is one browser
process: `page()` drives its first tab, `new_context()` opens a tab in a fresh browser context (its own cookies,
as a friend's browser would have).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.net_support import free_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("ADVOCACY_TEST_CHROMIUM", "/usr/bin/chromium")
WIDTH = 1400
UVICORN = (sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host", "127.0.0.1")


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


@contextlib.contextmanager
def serve_app(store_url: str, workdir: Path, *, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """The app under uvicorn on a free port, with `env` added to its settings; yields its base URL once `/readyz`
    answers 200."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    environment = {
        **os.environ,
        "ADVOCACY_STORE": store_url,
        "ADVOCACY_API__PUBLIC_BASE_URL": base,
        "ADVOCACY_CONTACT__SQLITE_PATH": str(workdir / "contacts.db"),
        "ADVOCACY_CONTACT__MAILDIR": str(workdir / "mail"),
        **(env or {}),
    }
    log_path = workdir / "uvicorn.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [*UVICORN, "--port", str(port), "--log-level", "warning"],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None:
                    pytest.fail(f"uvicorn exited: {log_path.read_text()}")
                with contextlib.suppress(httpx2.HTTPError):
                    if httpx2.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail("the app did not become ready within 60 s")
                time.sleep(0.2)
            yield base
        finally:
            stop(server)


KEYS: dict[str, tuple[str, int, str]] = {"Tab": ("Tab", 9, ""), "Enter": ("Enter", 13, "\r"), " ": ("Space", 32, " ")}
"""CDP key descriptions: key -> (code, Windows virtual key code, text it types)."""


class DevTools:
    """A minimal Chrome DevTools Protocol client for one target: numbered commands, events kept for inspection."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self._opened_at = 0

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
        """The first truthy value of `expression`; evaluating it while a page is being replaced is tried again."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except AssertionError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting for {expression}: {exc}") from exc
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {expression}")
            time.sleep(0.2)

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        """Emulate a screen of this size in CSS pixels (a phone when `mobile`)."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
        self.send("Emulation.setDeviceMetricsOverride", metrics)

    def capture(self, path: Path, *, width: int = WIDTH, mobile: bool = False) -> None:
        """A screenshot of the whole page at `width` CSS pixels, for a person to look at."""
        self.viewport(width, 900, mobile=mobile)
        height = self.send("Page.getLayoutMetrics")["cssContentSize"]["height"]
        self.viewport(width, min(int(height) + 1, 8000), mobile=mobile)
        time.sleep(0.3)
        shot = self.send("Page.captureScreenshot", {"format": "png"})
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        self.send("Emulation.clearDeviceMetricsOverride")

    def open(self, url: str, *, ready: str = "document.readyState === 'complete'") -> None:
        """Navigate and wait until the new document is loaded and `ready` holds in it."""
        self.evaluate("window.__left = true")
        self._opened_at = len(self.events)
        self.send("Page.navigate", {"url": url})
        self.wait_for(f"!window.__left && !!({ready})")

    def press(self, key: str) -> None:
        """One key press as a person's keyboard sends it (keyDown with its text, then keyUp)."""
        code, vk, text = KEYS[key]
        common = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "nativeVirtualKeyCode": vk}
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", **common, **({"text": text} if text else {})})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", **common})

    def type_text(self, text: str) -> None:
        self.send("Input.insertText", {"text": text})

    def focused(self) -> str:
        """`id` (or the text) of the element that has the keyboard focus."""
        value = self.evaluate(
            "(() => { const e = document.activeElement; return e ? (e.id || e.textContent.trim()) : ''; })()"
        )
        return str(value)

    def tab_to(self, element_id: str, *, limit: int = 40) -> int:
        """Press Tab until the element with `element_id` has the focus; how many presses it took."""
        for presses in range(1, limit + 1):
            self.press("Tab")
            if self.focused() == element_id:
                return presses
        raise AssertionError(f"#{element_id} not reached with {limit} presses of Tab")

    def click(self, selector: str, *, root: str = "document") -> None:
        """A real mouse click in the middle of the element (scrolled into view first), so the page sees a user
        gesture; `root` is an expression for where to look, such as a web component's shadow root."""
        box = self.evaluate(
            f"(() => {{ const e = ({root}).querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            event = {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1}
            self.send("Input.dispatchMouseEvent", event)

    def problems(self, *, this_page: bool = False) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far (since the last `open` if `this_page`)."""
        found = []
        for event in self.events[self._opened_at if this_page else 0 :]:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args", []))[:500])
            elif event["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(params["entry"].get("text", "") + " " + params["entry"].get("url", ""))
        return found


class Chromium:
    """One headless Chromium process and the DevTools sessions this test opened on it."""

    def __init__(self, port: int, stack: contextlib.ExitStack) -> None:
        self.port = port
        self._stack = stack
        version = httpx2.get(f"http://127.0.0.1:{port}/json/version", timeout=10).json()
        self.browser = self._attach(version["webSocketDebuggerUrl"])

    def _attach(self, url: str) -> DevTools:
        ws = self._stack.enter_context(connect(url, max_size=64 * 2**20, open_timeout=30))
        return DevTools(ws)

    def _page_session(self, target_id: str) -> DevTools:
        tools = self._attach(f"ws://127.0.0.1:{self.port}/devtools/page/{target_id}")
        for domain in ("Runtime", "Log", "Page"):
            tools.send(f"{domain}.enable")
        tools.send("Emulation.setFocusEmulationEnabled", {"enabled": True})  # focus, clipboard: as a visible tab
        return tools

    def page(self) -> DevTools:
        """The tab the browser opened with."""
        targets = httpx2.get(f"http://127.0.0.1:{self.port}/json/list", timeout=10).json()
        return self._page_session(next(t for t in targets if t["type"] == "page")["id"])

    def new_context(self) -> tuple[DevTools, str]:
        """A tab in a new browser context (no cookies shared with the others) and the context's id."""
        context = self.browser.send("Target.createBrowserContext", {"disposeOnDetach": True})["browserContextId"]
        target = self.browser.send("Target.createTarget", {"url": "about:blank", "browserContextId": context})
        return self._page_session(target["targetId"]), context

    def cookies(self, context: str | None = None) -> dict[str, dict[str, Any]]:
        """Every cookie of a browser context (the default one when None), HttpOnly ones included, by name."""
        params = {"browserContextId": context} if context else {}
        return {c["name"]: c for c in self.browser.send("Storage.getCookies", params)["cookies"]}

    def grant_clipboard(self, origin: str) -> None:
        self.browser.send(
            "Browser.grantPermissions",
            {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
        )


@contextlib.contextmanager
def launch_chromium(workdir: Path) -> Iterator[Chromium]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or deselect with -m 'not browser')")
    profile = workdir / "chromium-profile"
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
        with contextlib.ExitStack() as stack:
            yield Chromium(int(active.read_text().splitlines()[0]), stack)
    finally:
        stop(process)
        shutil.rmtree(profile, ignore_errors=True)
