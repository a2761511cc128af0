"""What customers ask for and send back (kit, responses, invitations) and the public one-click unsubscribe page,
over a real SQLite store, the SQLite contact limiter and a Maildir in tmp_path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from fastapi.testclient import TestClient

from engine.settings import Settings
from engine.unsubscribe import make_token
from graph.model import ContactChannel, EventKind
from tests.factories import Clock
from tests.unit.test_api_outreach import (
    counts,
    held_reasons,
    launch,
    mail,
    outreach_client,
    post_outreach,
    recipients,
    seed_outreach_people,
)
from tests.unit.test_api_referrals import START, assert_problem, opened_program, post_campaign

HTML = {"accept": "text/html,application/xhtml+xml"}
FRIEND = "Grace.Hopper@Example.org"


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'advocacy.db'}"


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def client(url: str, clock: Clock, tmp_path: Path) -> Iterator[TestClient]:
    seed_outreach_people(url)
    with outreach_client(url, clock, tmp_path) as c:
        post_campaign(c)
        yield c


def kit(client: TestClient, customer_id: str, **params: str) -> dict[str, Any]:
    response = client.get(f"/v1/customers/{customer_id}/kit", params={"campaign_id": "spring", **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def invite(client: TestClient, advocate: str, address: str = FRIEND) -> dict[str, Any]:
    response = client.post(f"/v1/customers/{advocate}/invitations", json={"campaign_id": "spring", "email": address})
    assert response.status_code == 202, response.text
    assert address.lower() not in response.text.lower()
    body: dict[str, Any] = response.json()
    return body


def unsubscribe_link(directory: Path, to: str) -> str:
    """The path of the one-click link in the `List-Unsubscribe` header of the mail sent to `to`."""
    (message,) = [m for m in mail(directory) if str(m["To"]).lower() == to.lower()]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(r"<https?://[^/]+(/u/[A-Za-z0-9_.-]+)>", str(message["List-Unsubscribe"]))
    assert match is not None, message["List-Unsubscribe"]
    return match.group(1)


# --- kits ------------------------------------------------------------------------------------------------------
def test_a_codes_qr_code_is_an_svg_image_caches_may_keep_and_that_runs_nothing(client: TestClient) -> None:
    body = kit(client, "fay")
    image = client.get(urlsplit(body["qr_url"]).path)
    assert image.status_code == 200, image.text
    assert image.headers["content-type"] == "image/svg+xml"
    assert image.headers["cache-control"] == "public, max-age=86400"
    assert image.headers["content-security-policy"] == "default-src 'none'"
    assert image.headers["x-content-type-options"] == "nosniff"
    assert image.text.startswith("<svg")
    assert "href" not in image.text
    assert "<script" not in image.text
    assert f"<title>{body['link']}</title>" in image.text  # screen readers hear the link
    assert client.get(f"/qr/{body['code'].lower()}.svg").text == image.text  # as forgiving as the link


def test_an_unknown_codes_qr_code_is_not_found(client: TestClient) -> None:
    response = client.get("/qr/NOSUCHCODE.svg")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_kit_has_the_link_its_qr_code_a_message_per_channel_and_the_rewards(client: TestClient) -> None:
    body = kit(client, "fay")
    code = client.get("/v1/customers/fay/codes").json()["items"][0]["code"]
    assert (body["customer_id"], body["code"], body["link"]) == ("fay", code, f"http://127.0.0.1:8000/r/{code}")
    assert body["qr_url"] == f"http://127.0.0.1:8000/qr/{code}.svg"
    channels = [m["channel"] for m in body["messages"]]
    assert sorted(channels) == sorted(["email", "sms", "whatsapp", "x", "linkedin", "facebook", "copy_link"])
    messages = {m["channel"]: m for m in body["messages"]}
    assert all(body["link"] in m["text"] for channel, m in messages.items() if channel != "x")
    assert quote(body["link"], safe="") in messages["x"]["share_url"], "X carries the link beside the text"
    assert messages["copy_link"]["share_url"] is None
    assert body["reward_for_you"].startswith("10 EUR credit")
    assert body["friend_offer"] == "5 EUR off your first order"
    assert kit(client, "fay")["code"] == code


@pytest.mark.parametrize(
    ("customer_id", "segment", "template_segment"),
    [("ada", "influencer", "influencer"), ("bob", "prosumer", "prosumer"), ("fay", "advocate", None)],
)
def test_each_segment_gets_its_own_kit(
    client: TestClient, customer_id: str, segment: str, template_segment: str | None
) -> None:
    body = kit(client, customer_id)
    assert body["segment"] == segment
    expected = "-".join(p for p in ("builtin-share-whatsapp", template_segment, "en") if p)
    assert body["template_ids"]["whatsapp"] == expected


def test_kits_of_different_segments_say_different_things(client: TestClient) -> None:
    def whatsapp(customer_id: str) -> str:
        text: str = next(m for m in kit(client, customer_id)["messages"] if m["channel"] == "whatsapp")["text"]
        return text.replace(kit(client, customer_id)["link"], "LINK")

    assert len({whatsapp("ada"), whatsapp("bob"), whatsapp("fay")}) == 3


def test_a_marketers_template_for_a_segment_replaces_the_built_in_one(client: TestClient) -> None:
    template = {
        "id": "wa-prosumer",
        "purpose": "share",
        "channel": "whatsapp",
        "segment": "prosumer",
        "body": "Tried and tested by {{ advocate.first_name }}: {{ link }}",
    }
    assert client.post("/v1/templates", json=template).status_code == 201
    message = next(m for m in kit(client, "bob")["messages"] if m["channel"] == "whatsapp")
    assert message["text"].startswith("Tried and tested by Bob: http://127.0.0.1:8000/r/")
    assert kit(client, "ada")["template_ids"]["whatsapp"] == "builtin-share-whatsapp-influencer-en"


def test_a_kit_through_an_outreach_carries_the_customers_variant(client: TestClient) -> None:
    variants = [{"id": "a"}, {"id": "b", "channel_order": ["x", "copy_link"]}]
    post_outreach(client, "spring-ask", ("ada", "bob", "fay"), variants=variants)
    for customer_id in ("ada", "bob", "fay"):
        body = kit(client, customer_id, outreach_id="spring-ask")
        assert body["variant_id"] in ("a", "b")
        if body["variant_id"] == "b":
            assert [m["channel"] for m in body["messages"]] == ["x", "copy_link"]
        assert kit(client, customer_id, outreach_id="spring-ask")["variant_id"] == body["variant_id"]


def test_asking_for_a_kit_of_an_unknown_customer_campaign_or_outreach_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/customers/nobody/kit", params={"campaign_id": "spring"}), 404, ":not-found")
    assert_problem(client.get("/v1/customers/ada/kit", params={"campaign_id": "autumn"}), 404, ":not-found")
    response = client.get("/v1/customers/ada/kit", params={"campaign_id": "spring", "outreach_id": "nope"})
    assert_problem(response, 404, ":not-found")


def test_a_kit_needs_a_campaign(client: TestClient) -> None:
    problem = assert_problem(client.get("/v1/customers/ada/kit"), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == ["query.campaign_id"]


# --- responses -------------------------------------------------------------------------------------------------
def test_an_idea_is_recorded_as_the_customers_event(client: TestClient, clock: Clock, url: str) -> None:
    body = {"kind": "idea", "text": "  A gift-wrap option for referrals  ", "campaign_id": "spring"}
    response = client.post("/v1/customers/bob/responses", json=body)
    assert response.status_code == 201, response.text
    event = response.json()
    assert (event["customer_id"], event["kind"], event["attributes"]) == (
        "bob",
        "idea",
        {"text": "A gift-wrap option for referrals", "campaign_id": "spring"},
    )
    assert event["at"] == clock.now.isoformat().replace("+00:00", "Z")
    with opened_program(url) as store:
        (stored,) = store.events_of("bob", kind=EventKind.IDEA)
    assert stored.id == event["id"]
    assert stored.attributes["text"] == "A gift-wrap option for referrals"


@pytest.mark.parametrize("kind", ["feedback", "review", "content"])
def test_feedback_reviews_and_content_are_recorded_too(client: TestClient, url: str, kind: str) -> None:
    response = client.post("/v1/customers/ada/responses", json={"kind": kind, "text": "Lovely"})
    assert response.status_code == 201, response.text
    with opened_program(url) as store:
        assert [e.kind.value for e in store.events_of("ada")] == [kind]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "complaint", "text": "x"}, "body.kind"),
        ({"kind": "idea", "text": "   "}, "body.text"),
        ({"kind": "idea", "text": "x" * 5001}, "body.text"),
        ({"kind": "idea", "text": "x", "stars": 5}, "body.stars"),
    ],
)
def test_a_response_with_a_bad_field_is_a_422_problem_naming_it(
    client: TestClient, url: str, body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post("/v1/customers/ada/responses", json=body), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]
    with opened_program(url) as store:
        assert store.events_of("ada") == []


def test_a_response_from_an_unknown_customer_is_a_404_problem(client: TestClient) -> None:
    response = client.post("/v1/customers/nobody/responses", json={"kind": "idea", "text": "x"})
    assert_problem(response, 404, ":not-found")


# --- invitations -----------------------------------------------------------------------------------------------
def test_an_invitation_is_sent_to_the_friend_and_never_echoes_the_address(client: TestClient, tmp_path: Path) -> None:
    result = invite(client, "ada")
    assert result == {"outreach_id": "spring-invitations", "status": "sent", "reason": None, "detail": ""}
    assert recipients(tmp_path) == [FRIEND]


def test_a_second_advocate_inviting_the_same_friend_is_held_by_the_friends_cap(
    client: TestClient, tmp_path: Path
) -> None:
    assert invite(client, "ada")["status"] == "sent"
    second = invite(client, "bob", FRIEND.lower())
    assert (second["status"], second["reason"]) == ("held", "cap")
    assert "7 days" in second["detail"]
    assert recipients(tmp_path) == [FRIEND]
    assert held_reasons(client, "spring-invitations") == {"bob": "cap"}
    assert counts(client, "spring-invitations")["by_status"]["sent"] == 1


def test_one_advocate_may_invite_two_different_friends(client: TestClient, tmp_path: Path) -> None:
    invite(client, "ada")
    assert invite(client, "ada", "alan@example.net")["status"] == "sent"
    assert len(mail(tmp_path)) == 2


@pytest.mark.parametrize(
    ("advocate", "body", "status", "suffix"),
    [
        ("ada", {"campaign_id": "spring", "email": "not-an-address"}, 422, ":invalid-input"),
        ("ada", {"campaign_id": "spring"}, 422, ":validation"),
        ("nobody", {"campaign_id": "spring", "email": FRIEND}, 404, ":not-found"),
        ("ada", {"campaign_id": "autumn", "email": FRIEND}, 404, ":not-found"),
        ("eve", {"campaign_id": "spring", "email": FRIEND}, 409, ":policy-violation"),
    ],
)
def test_a_bad_invitation_is_a_problem_and_sends_nothing(
    client: TestClient, tmp_path: Path, advocate: str, body: dict[str, Any], status: int, suffix: str
) -> None:
    response = client.post(f"/v1/customers/{advocate}/invitations", json=body)
    assert_problem(response, status, suffix)
    assert FRIEND.lower() not in response.text.lower()
    assert mail(tmp_path) == []


# --- unsubscribing -------------------------------------------------------------------------------------------
def test_the_link_in_a_sent_message_unsubscribes_by_page_and_one_click(
    client: TestClient, clock: Clock, tmp_path: Path
) -> None:
    post_outreach(client, "spring-ask", ("ada",))
    launch(client, "spring-ask")
    link = unsubscribe_link(tmp_path, "ada@example.com")

    page = client.get(link, headers=HTML)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert "set-cookie" not in page.headers
    assert f'<form method="post" action="{link}">' in page.text
    assert "every channel" in page.text
    assert "<script" not in page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text), "nothing is loaded from elsewhere"

    clock.advance(days=31)
    post_outreach(client, "spring-later", ("ada",))
    launch(client, "spring-later")
    assert counts(client, "spring-later")["by_status"]["sent"] == 1, "opening the page alone changes nothing"

    done = client.post(link)
    assert done.status_code == 200, done.text
    assert "set-cookie" not in done.headers
    assert "You are unsubscribed" in done.text

    clock.advance(days=31)
    post_outreach(client, "spring-last", ("ada",))
    launch(client, "spring-last")
    assert held_reasons(client, "spring-last") == {"ada": "unsubscribed"}
    assert len(mail(tmp_path)) == 2


def test_the_one_click_post_of_a_mailbox_provider_works_and_repeating_it_is_harmless(
    client: TestClient, tmp_path: Path
) -> None:
    post_outreach(client, "spring-ask", ("bob",))
    launch(client, "spring-ask")
    link = unsubscribe_link(tmp_path, "bob@example.com")
    form = {"content-type": "application/x-www-form-urlencoded"}
    for _ in range(2):
        response = client.post(link, content=b"List-Unsubscribe=One-Click", headers=form)
        assert response.status_code == 200, response.text
        assert "You are unsubscribed" in response.text
    customer = client.get("/v1/customers/bob").json()["customer"]
    assert customer["consent"]["email"] is False


def test_a_friend_who_declines_is_never_invited_again_by_anyone(
    client: TestClient, clock: Clock, tmp_path: Path
) -> None:
    invite(client, "ada")
    link = unsubscribe_link(tmp_path, FRIEND)
    page = client.get(link, headers=HTML)
    assert "nobody can invite you" in page.text.lower()
    assert "No more invitations" in client.post(link).text
    clock.advance(days=60)
    again = invite(client, "bob")
    assert (again["status"], again["reason"]) == ("held", "declined")
    assert recipients(tmp_path) == [FRIEND]


def test_a_link_for_one_channel_says_so(client: TestClient, clock: Clock) -> None:
    secret = Settings().contact.unsubscribe_secret.get_secret_value()
    token = make_token(secret, "customer:ada", channel=ContactChannel.SMS, issued_at=clock.now)
    page = client.get(f"/u/{token}", headers=HTML)
    assert page.status_code == 200
    assert "by <strong>sms</strong>" in page.text
    assert "You will not hear from us by sms" in client.post(f"/u/{token}").text


@pytest.mark.parametrize("token", ["garbage", "abc.def", "Y3VzdG9tZXI6YWRhfCp8MTcxMTg4NjQwMA.AAAA"])
def test_a_forged_link_is_a_401_page_for_a_browser_and_a_problem_for_a_program(client: TestClient, token: str) -> None:
    for method in ("GET", "POST"):
        page = client.request(method, f"/u/{token}", headers=HTML)
        assert page.status_code == 401
        assert page.headers["content-type"].startswith("text/html")
        assert "This unsubscribe link does not work" in page.text
        assert_problem(client.request(method, f"/u/{token}"), 401, ":unauthorized")


def test_an_expired_link_changes_nothing(client: TestClient, clock: Clock, url: str) -> None:
    secret = Settings().contact.unsubscribe_secret.get_secret_value()
    token = make_token(secret, "customer:ada", channel=None, issued_at=clock.now - timedelta(days=401))
    problem = assert_problem(client.post(f"/u/{token}"), 401, ":unauthorized")
    assert "expired" in problem["detail"]
    page = client.get(f"/u/{token}", headers=HTML)
    assert page.status_code == 401
    assert "expired" in page.text
    with opened_program(url) as store:
        assert store.suppressions(["customer:ada"]) == {}
