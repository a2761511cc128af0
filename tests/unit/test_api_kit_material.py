"""`POST /v1/customers/{id}/kit/more` and `GET /v1/customers/{id}/kit/render` over a real SQLite store, the
SQLite contact limiter and a Maildir in tmp_path (the app is built as `test_api_outreach` builds it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from tests.api_support import opened
from tests.factories import Clock, make_customer
from tests.unit.test_api_contact import kit
from tests.unit.test_api_outreach import outreach_client, seed_outreach_people
from tests.unit.test_api_referrals import START, assert_problem, post_campaign

EVERY_CHANNEL = ["whatsapp", "email", "sms", "x", "linkedin", "facebook", "copy_link"]


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'advocacy.db'}"
    seed_outreach_people(url)
    return url


@pytest.fixture
def client(url: str, tmp_path: Path) -> Iterator[TestClient]:
    with outreach_client(url, Clock(START), tmp_path) as c:
        post_campaign(c)
        yield c


def more(client: TestClient, customer_id: str = "ada", **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/customers/{customer_id}/kit/more", json={"campaign_id": "spring", **body})
    assert response.status_code == 200, response.text
    material: dict[str, Any] = response.json()
    return material


def render(client: TestClient, customer_id: str = "ada", **params: str) -> httpx2.Response:
    query = {"campaign_id": "spring", "channel": "whatsapp", **params}
    response: httpx2.Response = client.get(f"/v1/customers/{customer_id}/kit/render", params=query)
    return response


def text_of(material: dict[str, Any], channel: str) -> str:
    found: str = next(m["text"] for m in material["messages"] if m["channel"] == channel)
    return found


# --- more material for a friend ----------------------------------------------------------------------------
def test_more_material_is_the_customers_own_kit_with_a_message_on_every_channel(client: TestClient) -> None:
    material = more(client)
    own = kit(client, "ada")
    assert (material["code"], material["link"], material["qr_url"]) == (own["code"], own["link"], own["qr_url"])
    assert [m["channel"] for m in material["messages"]] == EVERY_CHANNEL
    assert material["messages"] == own["messages"]


def test_more_material_speaks_the_friends_language(client: TestClient) -> None:
    english, french = more(client, "fay"), more(client, "fay", locale="fr")
    assert french["locale"] == "fr"
    assert french["link"] == english["link"]
    assert "pensé à toi" in text_of(french, "whatsapp")
    assert "thought of you" in text_of(english, "whatsapp")
    assert kit(client, "fay")["locale"] == "en"


def test_more_material_covers_the_channels_asked_for_in_that_order(client: TestClient) -> None:
    material = more(client, channels=["sms", "whatsapp"])
    assert [m["channel"] for m in material["messages"]] == ["sms", "whatsapp"]


def test_asking_for_more_material_again_keeps_the_same_code(client: TestClient) -> None:
    first = more(client, "fay")
    assert more(client, "fay")["code"] == first["code"]
    assert [c["code"] for c in client.get("/v1/customers/fay/codes").json()["items"]] == [first["code"]]


@pytest.mark.parametrize(
    ("customer_id", "body"),
    [("nobody", {"campaign_id": "spring"}), ("ada", {"campaign_id": "autumn"})],
)
def test_more_material_for_an_unknown_customer_or_campaign_is_a_404_problem(
    client: TestClient, customer_id: str, body: dict[str, Any]
) -> None:
    assert_problem(client.post(f"/v1/customers/{customer_id}/kit/more", json=body), 404, ":not-found")
    assert client.get("/v1/customers/ada/codes").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "source"),
    [
        ({}, "body.campaign_id"),
        ({"campaign_id": "spring", "locale": "French please"}, "body.locale"),
        ({"campaign_id": "spring", "channels": []}, "body.channels"),
        ({"campaign_id": "spring", "channels": ["pigeon"]}, "body.channels[0]"),
        ({"campaign_id": "spring", "friend": "Grace"}, "body.friend"),
    ],
)
def test_a_bad_material_request_is_a_422_problem_naming_the_field(
    client: TestClient, body: dict[str, Any], source: str
) -> None:
    problem = assert_problem(client.post("/v1/customers/ada/kit/more", json=body), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [source]


# --- one message rendered ----------------------------------------------------------------------------------
def test_a_message_renders_as_an_html_fragment_with_its_link_qr_code_and_share_link(client: TestClient) -> None:
    response = render(client)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-store"
    own = kit(client, "ada")
    html = response.text
    assert html.startswith('<article class="kit-message" lang="en" data-channel="whatsapp">')
    assert f'<a href="{own["link"]}">{own["link"]}</a>' in html
    assert "<svg" in html
    assert 'href="https://wa.me/?text=' in html


def test_a_message_renders_as_text_with_an_emails_subject_first(client: TestClient) -> None:
    response = render(client, channel="email", format="text")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    email = next(m for m in kit(client, "ada")["messages"] if m["channel"] == "email")
    assert response.text == f"{email['subject']}\n\n{email['text']}\n"


def test_what_a_customer_typed_into_their_name_is_escaped_in_the_html(client: TestClient, url: str) -> None:
    with opened(url) as store:
        store.upsert_customers([make_customer(id="mal", name="<b>Mal</b> Function")])
    html = render(client, "mal", channel="email").text
    assert "<b>Mal" not in html
    assert "&lt;b&gt;Mal&lt;/b&gt;" in html


@pytest.mark.parametrize(("customer_id", "params"), [("nobody", {}), ("ada", {"campaign_id": "autumn"})])
def test_rendering_for_an_unknown_customer_or_campaign_is_a_404_problem(
    client: TestClient, customer_id: str, params: dict[str, str]
) -> None:
    assert_problem(render(client, customer_id, **params), 404, ":not-found")


@pytest.mark.parametrize(
    ("params", "source"), [({"channel": "pigeon"}, "query.channel"), ({"format": "pdf"}, "query.format")]
)
def test_a_bad_render_query_is_a_422_problem_naming_the_parameter(
    client: TestClient, params: dict[str, str], source: str
) -> None:
    problem = assert_problem(render(client, **params), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [source]
