"""OWASP API8 (security misconfiguration): secrets stay out of logs and out of answers.

One representative session runs with every logger at DEBUG and distinctive secrets configured: sign-in, good and
bad API keys, customer tokens and their one-time link, session cookies, webhooks with good and bad signatures, a
click, unsubscribe links, an invitation through an SMTP server that refuses (its password set), and a Neo4j store
that cannot be reached (its password in the URL). Then no secret may appear in:

- any log record as it was emitted, before any handler's filter touched it (message, arguments, exception text,
  stack, extra fields): a handler someone adds later (an error tracker) gets records raw;
- what the app's own root handler wrote (`engine.observability.configure_logging`, with its redaction filter);
- any response's headers or body, but for the answers that hand a credential to its owner.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import httpx2
import pytest
from fastapi.testclient import TestClient

from engine.unsubscribe import make_token
from engine.webhooks import sign
from graph.model import utcnow
from tests.api_support import api_client as make_client
from tests.api_support import as_customer, customer_token, sqlite_url
from tests.security.support import CAMPAIGN, contact_env, environment, exposed, leaks, seed_people, store_of

CONFIGURED: Final[dict[str, str]] = {
    "the SMTP password": "smtp-pw-Zq81LeakCheck",
    "the unsubscribe secret": "unsub-secret-Lk29LeakCheck",
    "the webhook secret": "whsec-Pp77LeakCheck",
    "the Shopify secret": "shpss-Yy12LeakCheck",
    "the click hash key": "clickkey-Hh55LeakCheck",
    "the fulfiller secret": "fulfil-secret-Ff31LeakCheck",
    "the SMS webhook secret": "sms-secret-Mm42LeakCheck",
    "the session secret": "session-secret-Ss33LeakCheck-0123456789",
    "the customer token key": "token-key-Tt44LeakCheck-0123456789abcdef",
    "the Neo4j password": "neo-pw-Nn66LeakCheck",
}
ENV: Final[dict[str, str]] = {
    "ADVOCACY_API__LOG_LEVEL": "DEBUG",
    "ADVOCACY_API__SESSION_SECRET": CONFIGURED["the session secret"],
    "ADVOCACY_API__CUSTOMER_TOKEN_KEYS": json.dumps({"k1": CONFIGURED["the customer token key"]}),
    "ADVOCACY_CONTACT__SMTP_HOST": "127.0.0.1",
    "ADVOCACY_CONTACT__SMTP_PORT": "1",
    "ADVOCACY_CONTACT__SMTP_USERNAME": "mailer",
    "ADVOCACY_CONTACT__SMTP_PASSWORD": CONFIGURED["the SMTP password"],
    "ADVOCACY_CONTACT__UNSUBSCRIBE_SECRET": CONFIGURED["the unsubscribe secret"],
    "ADVOCACY_CONTACT__SMS_WEBHOOK_SECRET": CONFIGURED["the SMS webhook secret"],
    "ADVOCACY_REFERRAL__WEBHOOK_SECRET": CONFIGURED["the webhook secret"],
    "ADVOCACY_REFERRAL__SHOPIFY_SECRET": CONFIGURED["the Shopify secret"],
    "ADVOCACY_REFERRAL__CLICK_HASH_KEY": CONFIGURED["the click hash key"],
    "ADVOCACY_REFERRAL__FULFILLER_SECRET": CONFIGURED["the fulfiller secret"],
}
NEO4J_URL: Final = f"bolt://leakcheck:{CONFIGURED['the Neo4j password']}@127.0.0.1:1"


class RawRecords(logging.Handler):
    """Keeps each record as it was emitted: it runs before the app's handler rewrites the record in place."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string still shows its parts below
            message = str(record.msg)
        exception = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
        extras = {k: v for k, v in vars(record).items() if k not in logging.makeLogRecord({}).__dict__}
        text = "\n".join([message, repr(record.args), exception, record.exc_text or "", record.stack_info or ""])
        self.seen.append((record.name, f"{text}\n{extras!r}"))


@dataclass
class Session:
    """The responses of the session, each with the secrets it may rightly carry (a credential for its owner)."""

    secrets: dict[str, str] = field(default_factory=lambda: dict(CONFIGURED))
    answers: list[tuple[httpx2.Response, frozenset[str]]] = field(default_factory=list)

    def keep(self, response: httpx2.Response, *allowed: str) -> httpx2.Response:
        self.answers.append((response, frozenset(allowed)))
        return response


Captured = tuple[list[tuple[str, str]], str, Session]


def browser(client: TestClient) -> TestClient:
    return TestClient(client.app, raise_server_exceptions=False, follow_redirects=False)


def run_the_session(client: TestClient, session: Session) -> None:
    seed_people(store_of(client))
    assert client.post("/v1/campaigns", json=dict(CAMPAIGN)).status_code == 201
    created = session.keep(client.post("/v1/api-keys", json={"name": "crm", "scopes": ["admin"]}), "the API key")
    key = created.json()["key"]
    session.secrets["the API key"] = key.split("_", 2)[2]
    wrong = key[:-8] + "WrongKey"
    session.secrets["a presented wrong key"] = wrong.split("_", 2)[2]
    admin = {"Authorization": f"Bearer {key}"}
    stranger = browser(client)

    session.keep(stranger.get("/v1/customers", headers=admin))
    session.keep(stranger.get("/v1/customers", headers={"Authorization": f"Bearer {wrong}"}))
    session.keep(stranger.get("/v1/customers", headers={"Authorization": f"Basic {key}"}))
    session.keep(
        stranger.post("/v1/campaigns", json={"id": "again", "name": "x"}, headers={**admin, "Idempotency-Key": "i1"})
    )

    signed_in = browser(client)
    login = session.keep(signed_in.post("/login", data={"key": key, "next": "/"}), "the session cookie")
    assert login.status_code == 303
    session.secrets["the session cookie"] = login.cookies["advocacy_session"]
    session.keep(browser(client).post("/login", data={"key": wrong}))
    session.keep(signed_in.get("/v1/stats"))
    session.keep(signed_in.get("/", headers={"Accept": "text/html"}))
    tampered = browser(client)
    tampered.cookies.set("advocacy_session", session.secrets["the session cookie"][:-3] + "AAA")
    session.keep(tampered.get("/v1/stats"))

    token = customer_token(client, "ada")
    session.secrets["the customer token"] = token
    session.keep(stranger.get("/v1/customers/ada", headers=as_customer(token)))
    session.keep(stranger.get("/v1/customers/ada/kit", params={"campaign_id": "spring"}, headers=as_customer(token)))
    session.keep(stranger.get("/v1/customers/ada", headers=as_customer(token[:-5] + "AAAAA")))
    entering = browser(client)
    entered = session.keep(entering.get("/me/enter", params={"token": token}), "the customer session cookie")
    session.secrets["the customer session cookie"] = entered.cookies["advocacy_customer"]
    session.keep(browser(client).get("/me/enter", params={"token": token}, headers={"Accept": "application/json"}))
    session.keep(entering.get("/me", headers={"Accept": "text/html"}))
    invitation = {"campaign_id": "spring", "email": "leak-check-friend@example.org"}
    invited = session.keep(stranger.post("/v1/customers/ada/invitations", json=invitation, headers=as_customer(token)))
    assert invited.json()["status"] != "sent", "the SMTP server refused: the configured one was used"

    code = client.post("/v1/customers/ada/codes", json={"campaign_id": "spring"}).json()["code"]
    session.keep(stranger.get(f"/r/{code}", headers={"User-Agent": "leak-check"}))

    body = json.dumps({"id": "evt-1", "type": "order.paid", "created_at": utcnow().isoformat(), "data": {}}).encode()
    now = int(time.time())
    for secret, status in (("not-the-secret", 401), (CONFIGURED["the webhook secret"], 422)):
        headers = {"X-Advocacy-Signature": sign(body, secret, timestamp=now), "Content-Type": "application/json"}
        assert session.keep(stranger.post("/v1/webhooks/events", content=body, headers=headers)).status_code == status
    session.keep(
        stranger.post("/v1/webhooks/shopify/orders-paid", content=b"{}", headers={"X-Shopify-Hmac-Sha256": "AAAA"})
    )

    link = make_token(CONFIGURED["the unsubscribe secret"], "customer:bob", channel=None, issued_at=utcnow())
    session.secrets["an unsubscribe token"] = link
    page = session.keep(stranger.get(f"/u/{link}", headers={"Accept": "text/html"}), "an unsubscribe token")
    assert page.status_code == 200, "the configured unsubscribe secret signs links"
    session.keep(stranger.post(f"/u/{link}"))
    session.keep(stranger.post(f"/u/{link[:-2]}xx"))


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Captured:
    """Runs the session and the unreachable-store calls once; yields what was logged raw, written, and answered.

    The app's root handler writes to whatever `sys.stderr` is when it writes, so redirecting stderr captures it.
    """
    directory = tmp_path_factory.mktemp("logs")
    raw, written, session = RawRecords(), io.StringIO(), Session()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(raw)
    try:
        with environment({**ENV, **contact_env(directory)}), contextlib.redirect_stderr(written):
            with make_client(sqlite_url(directory), scopes=("admin",)) as client:
                run_the_session(client, session)
            with make_client(NEO4J_URL, scopes=()) as down:
                for path in ("/readyz", "/r/ABCDEF12", "/v1/customers"):
                    session.keep(down.get(path, headers={"Authorization": "Bearer adv_0123456789ab_" + "x" * 43}))
    finally:
        root.removeHandler(raw)
        root.setLevel(level)
    return raw.seen, written.getvalue(), session


def client_side(name: str, text: str) -> bool:
    """The test client's own request log (`httpx2`, to http://testserver): the test's traffic, not the app's logs."""
    return name == "httpx2" and "http://testserver" in text


def test_no_secret_is_in_any_log_record_as_it_was_emitted(captured: Captured) -> None:
    raw, _, session = captured
    assert any(name == "advocacy.access" for name, _ in raw), "the app logged the session"
    found = {
        (name, secret) for name, text in raw if not client_side(name, text) for secret in leaks(text, session.secrets)
    }
    assert found == set()


def test_no_secret_is_in_what_the_apps_log_handler_wrote(captured: Captured) -> None:
    _, written, session = captured
    assert "GET /v1/customers/{customer_id}" in written, "the root handler wrote the session's access log"
    assert leaks(written, session.secrets) == []
    assert "leakcheck:***@127.0.0.1:1" in written, "the unreachable store was reported, its password masked"


def test_no_response_carries_a_secret_but_to_the_owner_it_was_made_for(captured: Captured) -> None:
    _, _, session = captured
    assert len(session.answers) > 25
    for response, allowed in session.answers:
        others: Mapping[str, str] = {k: v for k, v in session.secrets.items() if k not in allowed}
        assert leaks(exposed(response), others) == [], response.request.url
