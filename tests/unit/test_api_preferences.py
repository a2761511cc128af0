"""`GET` and `PUT /v1/customers/{id}/preferences` over a real SQLite store, and what the contact policy makes of
the preferences a customer set."""

from __future__ import annotations

import hashlib
import logging
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
from tests.api_support import api_client, as_customer, customer_token, opened, seed_network, sqlite_url
from tests.factories import BASE_TIME, make_customer
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


def put(
    client: TestClient, body: dict[str, Any], customer_id: str = "ada", *, as_themself: bool = False
) -> dict[str, Any]:
    """PUT with the marketer's admin key, or `as_themself` with the customer's own token."""
    headers = as_customer(customer_token(client, customer_id)) if as_themself else None
    response = client.put(f"/v1/customers/{customer_id}/preferences", json=body, headers=headers)
    assert response.status_code == 200, response.text
    changed: dict[str, Any] = response.json()
    assert changed == preferences(client, customer_id)
    return changed


def suppress(url: str, customer_id: str, channel: ContactChannel | None = None) -> None:
    with opened(url) as store:
        cast(Store, store).suppress(make_suppression(customer_key(customer_id), channel=channel))


def stored_suppressions(url: str, person_key: str) -> list[tuple[ContactChannel | None, HoldReason]]:
    with opened(url) as store:
        found = cast(Store, store).suppressions([person_key]).get(person_key, [])
    return sorted(((s.channel, s.reason) for s in found), key=lambda pair: pair[0] or "")


def friend_key(address: str) -> str:
    """An `email:<hash>` person key, as a friend's refusal is stored (the hash itself does not matter here)."""
    return f"email:{hashlib.sha256(address.encode()).hexdigest()}"


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
def test_a_marketer_cannot_resubscribe_a_customer_who_unsubscribed(
    client: TestClient, url: str, body: dict[str, Any]
) -> None:
    unsubscribed = put(client, {"unsubscribed": True}, as_themself=True)
    problem = assert_problem(client.put("/v1/customers/ada/preferences", json=body), 403, ":forbidden")
    assert "only the customer themself" in problem["detail"]
    assert preferences(client) == unsubscribed
    assert stored_suppressions(url, customer_key("ada")) == [(None, HoldReason.UNSUBSCRIBED)]


def test_another_customers_token_cannot_resubscribe_them(client: TestClient, url: str) -> None:
    put(client, {"unsubscribed": True})
    bobs = as_customer(customer_token(client, "bob"))
    response = client.put("/v1/customers/ada/preferences", json={"unsubscribed": False}, headers=bobs)
    assert_problem(response, 403, ":forbidden")
    assert preferences(client)["unsubscribed"] is True


def test_a_customer_who_unsubscribed_subscribes_again_with_their_own_token(client: TestClient, url: str) -> None:
    put(client, {"unsubscribed": True})
    suppress(url, "ada", ContactChannel.SMS)

    again = put(client, {"unsubscribed": False}, as_themself=True)

    assert (again["unsubscribed"], again["unsubscribed_at"], again["channel_unsubscribed"]) == (False, None, {})
    assert stored_suppressions(url, customer_key("ada")) == []
    assert hold_on(url, "ada", ContactChannel.EMAIL, MessageKind.TRANSACTIONAL) is None
    assert hold_on(url, "ada", ContactChannel.EMAIL, MessageKind.MARKETING) is HoldReason.NO_CONSENT, (
        "back to receiving reward notices, but no marketing until they consent"
    )


def test_consenting_after_an_unsubscribe_resubscribes_to_exactly_the_channels_named(
    client: TestClient, url: str
) -> None:
    put(client, {"unsubscribed": True})
    with opened(url) as store:  # the merchant's nightly import says sms: yes, after the customer left
        store.upsert_customers([make_customer(id="ada", consent={"email": False, "sms": True})])

    again = put(client, {"consent": {"email": True}}, as_themself=True)

    assert again["unsubscribed"] is False
    assert again["consent"] == {"email": True, "sms": False, "whatsapp": False, "push": False}
    assert hold_on(url, "ada", ContactChannel.EMAIL, MessageKind.MARKETING) is None
    assert hold_on(url, "ada", ContactChannel.SMS, MessageKind.MARKETING) is HoldReason.NO_CONSENT


def test_a_lift_is_logged_with_the_customer_and_the_channels(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    put(client, {"unsubscribed": True})
    with caplog.at_level(logging.INFO, logger="engine.preferences"):
        put(client, {"unsubscribed": False}, as_themself=True)
    (record,) = [r for r in caplog.records if r.name == "engine.preferences"]
    assert "customer ada opted in again" in record.getMessage()
    assert "1 suppression(s) of every channel lifted at their own request" in record.getMessage()


def test_a_channel_left_through_its_own_link_is_shown_and_only_the_customer_can_consent_to_it_again(
    client: TestClient, url: str
) -> None:
    suppress(url, "ada", ContactChannel.SMS)
    suppress(url, "ada", ContactChannel.PUSH)
    assert preferences(client)["channel_unsubscribed"] == {
        "sms": "2024-03-01T12:00:00Z",
        "push": "2024-03-01T12:00:00Z",
    }
    assert_problem(client.put("/v1/customers/ada/preferences", json={"consent": {"sms": True}}), 403, ":forbidden")
    assert put(client, {"consent": {"whatsapp": True}})["consent"]["whatsapp"] is True

    again = put(client, {"consent": {"sms": True}}, as_themself=True)

    assert again["consent"] == {"email": True, "sms": True, "whatsapp": True, "push": False}
    assert again["channel_unsubscribed"] == {"push": "2024-03-01T12:00:00Z"}
    assert hold_on(url, "ada", ContactChannel.SMS, MessageKind.MARKETING) is None
    assert stored_suppressions(url, customer_key("ada")) == [(ContactChannel.PUSH, HoldReason.UNSUBSCRIBED)]


def test_resubscribing_never_lifts_a_friends_refusal_under_an_email_key(client: TestClient, url: str) -> None:
    refusal = friend_key("ada@example.org")
    with opened(url) as store:
        cast(Store, store).suppress(make_suppression(refusal, reason=HoldReason.DECLINED))
        store.upsert_customers([make_customer(id=refusal)])  # ids may hold ':', so one can even look like the key
    put(client, {"unsubscribed": True})
    put(client, {"unsubscribed": True}, customer_id=refusal)

    put(client, {"unsubscribed": False, "consent": {"email": True}}, as_themself=True)
    put(client, {"unsubscribed": False, "consent": {"email": True}}, customer_id=refusal, as_themself=True)

    assert stored_suppressions(url, refusal) == [(None, HoldReason.DECLINED)]
    assert stored_suppressions(url, customer_key("ada")) == []
    assert stored_suppressions(url, customer_key(refusal)) == []


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
