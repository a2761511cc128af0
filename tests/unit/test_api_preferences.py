"""`GET` and `PUT /v1/customers/{id}/preferences` over a real SQLite store, and what the contact policy makes of
the preferences a customer set."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from engine.contact_policy import ContactPolicy, precheck
from graph.model import ContactChannel
from graph.outreach import HoldReason, MessageKind, customer_key
from graph.program_store import Store
from tests.api_support import api_client, opened, seed_network, sqlite_url
from tests.factories import BASE_TIME
from tests.outreach_factories import make_suppression
from tests.unit.test_api_referrals import assert_problem

AFTERNOON_IN_PARIS = BASE_TIME + timedelta(days=40)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
def client(url: str) -> Iterator[TestClient]:
    with opened(url) as store:
        seed_network(store)
    with api_client(url) as c:
        yield c


def preferences(client: TestClient, customer_id: str = "ada") -> dict[str, Any]:
    response = client.get(f"/v1/customers/{customer_id}/preferences")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def put(client: TestClient, body: dict[str, Any], customer_id: str = "ada") -> dict[str, Any]:
    response = client.put(f"/v1/customers/{customer_id}/preferences", json=body)
    assert response.status_code == 200, response.text
    changed: dict[str, Any] = response.json()
    assert changed == preferences(client, customer_id)
    return changed


def suppress(url: str, customer_id: str, channel: ContactChannel | None = None) -> None:
    with opened(url) as store:
        cast(Store, store).suppress(make_suppression(customer_key(customer_id), channel=channel))


def hold_on(url: str, customer_id: str, channel: ContactChannel, kind: MessageKind) -> HoldReason | None:
    """What the contact policy says about messaging the customer now, from what the store holds."""
    with opened(url) as store:
        program = cast(Store, store)
        key = customer_key(customer_id)
        hold = precheck(
            customer=program.get_customer(customer_id),
            person_key=key,
            channel=channel,
            kind=kind,
            segment=None,
            suppressions=program.suppressions([key]).get(key, []),
            now=AFTERNOON_IN_PARIS,
            policy=ContactPolicy(),
            has_address=True,
        )
    return hold.reason if hold is not None else None


# --- reading -----------------------------------------------------------------------------------------------
def test_preferences_show_consent_on_every_channel_language_and_time_zone(client: TestClient) -> None:
    assert preferences(client) == {
        "customer_id": "ada",
        "consent": {"email": True, "sms": False, "whatsapp": False, "push": False},
        "unsubscribed": False,
        "unsubscribed_at": None,
        "channel_unsubscribed": {},
        "locale": "en",
        "timezone": "Europe/Paris",
    }


def test_preferences_hold_no_address_key_or_other_persons_data(client: TestClient, url: str) -> None:
    suppress(url, "bob")
    response = client.get("/v1/customers/ada/preferences")
    assert "@" not in response.text
    assert "customer:" not in response.text
    assert "+33" not in response.text
    assert response.json()["unsubscribed"] is False


def test_preferences_of_an_unknown_customer_are_a_404_problem(client: TestClient) -> None:
    assert_problem(client.get("/v1/customers/nobody/preferences"), 404, ":not-found")
    assert_problem(client.put("/v1/customers/nobody/preferences", json={"unsubscribed": True}), 404, ":not-found")


# --- changing ----------------------------------------------------------------------------------------------
def test_a_change_sets_what_it_names_and_keeps_the_rest(client: TestClient) -> None:
    changed = put(client, {"consent": {"sms": True}, "locale": "fr-CA", "timezone": "America/Toronto"})
    assert changed["consent"] == {"email": True, "sms": True, "whatsapp": False, "push": False}
    assert (changed["locale"], changed["timezone"]) == ("fr-CA", "America/Toronto")
    assert put(client, {"consent": {"email": False}})["consent"] == {
        "email": False,
        "sms": True,
        "whatsapp": False,
        "push": False,
    }
    assert put(client, {}) == preferences(client)


def test_withdrawing_consent_holds_marketing_on_that_channel(client: TestClient, url: str) -> None:
    assert hold_on(url, "ada", ContactChannel.EMAIL, MessageKind.MARKETING) is None
    put(client, {"consent": {"email": False}})
    assert hold_on(url, "ada", ContactChannel.EMAIL, MessageKind.MARKETING) is HoldReason.NO_CONSENT


def test_unsubscribing_clears_every_consent_and_stops_even_reward_notices(client: TestClient, url: str) -> None:
    changed = put(client, {"unsubscribed": True})
    assert changed["unsubscribed"] is True
    assert changed["unsubscribed_at"] is not None
    assert set(changed["consent"].values()) == {False}
    assert hold_on(url, "ada", ContactChannel.EMAIL, MessageKind.MARKETING) is HoldReason.UNSUBSCRIBED
    assert hold_on(url, "ada", ContactChannel.EMAIL, MessageKind.TRANSACTIONAL) is HoldReason.UNSUBSCRIBED


def test_unsubscribing_again_changes_nothing(client: TestClient, url: str) -> None:
    first = put(client, {"unsubscribed": True})
    assert put(client, {"unsubscribed": True, "consent": {"sms": False}}) == first
    with opened(url) as store:
        assert len(cast(Store, store).suppressions([customer_key("ada")])[customer_key("ada")]) == 1


@pytest.mark.parametrize("body", [{"consent": {"email": True}}, {"unsubscribed": False}])
def test_after_an_unsubscribe_consent_cannot_quietly_come_back(client: TestClient, body: dict[str, Any]) -> None:
    unsubscribed = put(client, {"unsubscribed": True})
    problem = assert_problem(client.put("/v1/customers/ada/preferences", json=body), 409, ":policy-violation")
    assert "unsubscribed" in problem["detail"]
    assert preferences(client) == unsubscribed


def test_a_channel_left_through_its_own_link_is_shown_and_cannot_be_consented_to_here(
    client: TestClient, url: str
) -> None:
    suppress(url, "ada", ContactChannel.SMS)
    assert preferences(client)["channel_unsubscribed"] == {"sms": "2024-03-01T12:00:00Z"}
    assert_problem(
        client.put("/v1/customers/ada/preferences", json={"consent": {"sms": True}}), 409, ":policy-violation"
    )
    assert put(client, {"consent": {"whatsapp": True}})["consent"]["whatsapp"] is True


def test_unsubscribing_and_consenting_at_once_is_a_422_problem(client: TestClient) -> None:
    body = {"unsubscribed": True, "consent": {"email": True}}
    assert_problem(client.put("/v1/customers/ada/preferences", json=body), 422, ":invalid-input")
    assert preferences(client)["unsubscribed"] is False


@pytest.mark.parametrize(
    ("body", "source"),
    [
        ({"timezone": "Mars/Olympus"}, "body.timezone"),
        ({"locale": "english please"}, "body.locale"),
        ({"consent": {"pigeon": True}}, "body.consent.pigeon.[key]"),
        ({"consent": {"email": "maybe"}}, "body.consent.email"),
        ({"email": "ada@example.org"}, "body.email"),
    ],
)
def test_a_bad_preference_is_a_422_problem_naming_it(client: TestClient, body: dict[str, Any], source: str) -> None:
    before = preferences(client)
    problem = assert_problem(client.put("/v1/customers/ada/preferences", json=body), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [source]
    assert preferences(client) == before
