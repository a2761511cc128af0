"""OWASP API7, server-side request forgery, and the open redirect next door.

The engine calls out to two configured URLs: the reward fulfiller (`ADVOCACY_REFERRAL__FULFILLER_URL`) and the SMS
and WhatsApp gateway (`ADVOCACY_CONTACT__SMS_WEBHOOK_URL`). Both share one guard (`engine.fulfilment`); these tests
reach it the way the app does, through `make_fulfiller` and `make_adapters`, with every spelling of a non-public
address, names whose DNS answers point inside, and redirects. `tests/integration/test_fulfilment_http.py` and
`tests/integration/test_channels.py` cover the guard's address table, DNS rebinding between check and call, and the
fulfiller's redirects against real servers.

A campaign's `landing_url` is never fetched by the server, so it is no SSRF target; it is where `/r/{code}` sends
a visitor's browser, so it must not be a script URL or another site disguised as a path.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any, Final

import httpx2
import pytest
from fastapi.testclient import TestClient

from engine.channels import DeliveryError, Outgoing, WebhookMessageAdapter, make_adapters
from engine.fulfilment import make_fulfiller
from engine.settings import ContactSettings, ReferralSettings, Settings
from graph.errors import InvalidInput
from graph.model import ContactChannel
from graph.outreach import MessageKind
from tests.api_support import PROBLEM_JSON
from tests.security.support import seeded_app

PUBLIC: Final = "93.184.216.34"
SPELLINGS: Final[dict[str, str]] = {
    "loopback": "http://127.0.0.1/hooks",
    "loopback, short form": "http://127.1/hooks",
    "loopback, decimal": "http://2130706433/hooks",
    "loopback, hex": "http://0x7f000001/hooks",
    "loopback, octal": "http://017700000001/hooks",
    "loopback, IPv6": "http://[::1]/hooks",
    "loopback, IPv4-mapped IPv6": "http://[::ffff:127.0.0.1]/hooks",
    "loopback, NAT64": "http://[64:ff9b::7f00:1]/hooks",
    "localhost": "http://localhost:8080/hooks",
    "LOCALHOST": "https://LOCALHOST/hooks",
    "unspecified": "http://0.0.0.0:9000/hooks",
    "unspecified, zero": "http://0/hooks",
    "unspecified, IPv6": "http://[::]/hooks",
    "private 10/8": "http://10.0.0.8/hooks",
    "private 172.16/12": "https://172.16.5.4/hooks",
    "private 192.168/16": "http://192.168.1.20/hooks",
    "cloud metadata": "http://169.254.169.254/latest/meta-data/",
    "cloud metadata, IPv4-mapped": "http://[::ffff:a9fe:a9fe]/latest/meta-data/",
    "unique local fc00::/7": "http://[fc00::1]/hooks",
    "unique local fd00::/8": "http://[fd12:3456::1]/hooks",
    "link-local IPv6": "http://[fe80::1]/hooks",
    "carrier-grade NAT": "http://100.64.0.1/hooks",
    "with credentials": "https://user:pass@127.0.0.1/hooks",
}


def fulfiller_from(url: str, *, allow_private: bool = False) -> Any:
    return make_fulfiller(ReferralSettings(fulfiller_url=url, allow_private_urls=allow_private))


def sms_from(url: str, *, allow_private: bool = False) -> Any:
    settings = Settings(
        contact=ContactSettings(sms_webhook_url=url), referral=ReferralSettings(allow_private_urls=allow_private)
    )
    return make_adapters(settings).get(ContactChannel.SMS)


CONFIGURED: Final = {"reward fulfiller": fulfiller_from, "SMS webhook": sms_from}


@pytest.mark.parametrize("url", SPELLINGS.values(), ids=SPELLINGS.keys())
@pytest.mark.parametrize("build", CONFIGURED.values(), ids=CONFIGURED.keys())
def test_a_configured_url_to_a_non_public_address_is_refused_however_it_is_spelt(build: Any, url: str) -> None:
    with pytest.raises(InvalidInput, match="refusing to call"):
        build(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/hooks", "http://[::1]/hooks", "http://2130706433/hooks"])
@pytest.mark.parametrize("build", CONFIGURED.values(), ids=CONFIGURED.keys())
def test_allow_private_urls_lets_development_use_a_local_url(build: Any, url: str) -> None:
    assert build(url, allow_private=True) is not None


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Answers for `socket.getaddrinfo` by host name, as a resolver someone else controls would give them."""
    answers: dict[str, list[str]] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        out = []
        for address in answers[host]:
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            sockaddr = (address, int(port or 0), 0, 0) if family == socket.AF_INET6 else (address, int(port or 0))
            out.append((family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", sockaddr))
        return out

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return answers


ANSWERS: Final[dict[str, list[str]]] = {
    "loopback": ["127.0.0.1"],
    "IPv6 loopback": ["::1"],
    "cloud metadata": ["169.254.169.254"],
    "a private address": ["10.1.2.3"],
    "a unique local IPv6 address": ["fd00::5"],
    "one public and one private address": [PUBLIC, "192.168.0.7"],
    "a public IPv6 then loopback": ["2606:2800:220:1:248:1893:25c8:1946", "127.0.0.1"],
}


@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
@pytest.mark.parametrize("build", CONFIGURED.values(), ids=CONFIGURED.keys())
def test_a_name_whose_dns_answer_points_inside_is_refused(
    dns: dict[str, list[str]], build: Any, answer: list[str]
) -> None:
    dns["hooks.merchant.example"] = answer
    with pytest.raises(InvalidInput, match="refusing to call"):
        build("https://hooks.merchant.example/rewards")


@pytest.mark.parametrize("build", CONFIGURED.values(), ids=CONFIGURED.keys())
def test_a_name_whose_dns_answer_is_public_is_accepted(dns: dict[str, list[str]], build: Any) -> None:
    dns["hooks.merchant.example"] = [PUBLIC]
    assert build("https://hooks.merchant.example/rewards") is not None


def outgoing() -> Outgoing:
    return Outgoing(
        key="spring:invite:customer:c1",
        to="+447700900123",
        subject=None,
        text="Join me",
        html=None,
        unsubscribe_url="https://shop.example/u/abc.def",
        kind=MessageKind.INVITATION,
    )


@pytest.mark.parametrize(
    ("status", "location"),
    [
        (302, "http://169.254.169.254/latest/meta-data/iam/"),
        (307, "http://127.0.0.1:6379/"),
        (308, "http://[::1]/admin"),
        (301, "http://2130706433/"),
    ],
)
def test_the_sms_webhook_never_follows_a_redirect_inside(status: int, location: str) -> None:
    seen: list[httpx2.Request] = []

    def gateway(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(status, headers={"Location": location})

    with httpx2.Client(transport=httpx2.MockTransport(gateway)) as client:
        adapter = WebhookMessageAdapter(
            ContactChannel.SMS, "https://sms.example/send", "secret", client=client, resolver=lambda h, p: [PUBLIC]
        )
        with pytest.raises(DeliveryError, match="redirect") as refused:
            adapter.send(outgoing())
    assert not refused.value.retryable
    assert [str(request.url.host) for request in seen] == [PUBLIC]


# --- where /r/{code} sends a browser ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with seeded_app(tmp_path_factory.mktemp("redirect"), campaign=False) as c:
        yield c


SCRIPT_URLS: Final = [
    "javascript:alert(document.cookie)//{code}",
    "JaVaScRiPt:alert(1)//{code}",
    " javascript:alert(1)//{code}",
    "\tjavascript:alert(1)//{code}",
    "java\nscript:alert(1)//{code}",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==#{code}",
    "vbscript:msgbox(1)//{code}",
    "file:///etc/passwd#{code}",
    "ftp://files.example/{code}",
    "{code}",
    "evil.example/{code}",
]


@pytest.mark.parametrize("landing_url", SCRIPT_URLS)
def test_a_campaign_cannot_send_visitors_to_a_script_data_or_non_web_url(client: TestClient, landing_url: str) -> None:
    response = client.post("/v1/campaigns", json={"id": "hostile", "name": "Hostile", "landing_url": landing_url})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    assert client.get("/v1/campaigns/hostile").status_code == 404


def leaves_the_site(location: str) -> bool:
    """Whether a browser reads `location` as another host: it drops tabs and newlines and reads `\\` as `/`."""
    cleaned = location.replace("\t", "").replace("\n", "").replace("\r", "").replace("\\", "/").lstrip()
    return cleaned.startswith("//")


OFF_SITE_PATHS: Final = {
    "protocol-relative": "//evil.example/{code}",
    "backslash": "/\\evil.example/{code}",
    "tab between the slashes": "/\t/evil.example/{code}",
    "three slashes": "///evil.example/{code}",
}


@pytest.mark.parametrize(
    ("index", "landing_url"), list(enumerate(OFF_SITE_PATHS.values())), ids=list(OFF_SITE_PATHS.keys())
)
def test_a_landing_path_keeps_visitors_on_this_site(client: TestClient, index: int, landing_url: str) -> None:
    """A relative `landing_url` "stays on this server" (graph/program.py); `//host` would be another site."""
    campaign_id = f"off-site-{index}"
    created = client.post("/v1/campaigns", json={"id": campaign_id, "name": "Path", "landing_url": landing_url})
    if created.status_code == 422:
        return
    assert created.status_code == 201, created.text
    code = client.post("/v1/customers/ada/codes", json={"campaign_id": campaign_id}).json()["code"]
    followed = TestClient(client.app, follow_redirects=False).get(f"/r/{code}")
    assert followed.status_code == 302
    assert not leaves_the_site(followed.headers["location"]), followed.headers["location"]


def test_an_absolute_landing_url_is_still_allowed_for_the_merchants_own_shop(client: TestClient) -> None:
    body = {"id": "shop-landing", "name": "Shop", "landing_url": "https://shop.example/welcome?ref={code}"}
    assert client.post("/v1/campaigns", json=body).status_code == 201
    code = client.post("/v1/customers/ada/codes", json={"campaign_id": "shop-landing"}).json()["code"]
    followed = TestClient(client.app, follow_redirects=False).get(f"/r/{code}")
    assert followed.headers["location"] == f"https://shop.example/welcome?ref={code}"
