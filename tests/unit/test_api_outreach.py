"""Templates and outreach over HTTP on a real SQLite store, the SQLite contact limiter and a Maildir in tmp_path.

The helpers at the top (an app whose limiter and mail live in the test's directory, six seeded customers with
segments, the mail that left) are shared by `test_api_contact.py`.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from engine.celery_app import make_celery
from engine.settings import Settings
from graph.model import ContactChannel, Segment
from graph.outreach import OutreachStatus
from tests.api_support import opened
from tests.factories import Clock, make_customer, make_run, make_scores
from tests.unit.test_api_referrals import (
    START,
    assert_problem,
    opened_program,
    post_campaign,
    program_client,
)

# --- shared helpers ------------------------------------------------------------------------------------------
PEOPLE: dict[str, dict[str, Any]] = {
    "ada": {"name": "Ada Lovelace", "segment": Segment.INFLUENCER},
    "bob": {"name": "Bob Stone", "segment": Segment.PROSUMER},
    "cy": {"name": "Cy Young", "segment": Segment.ADVOCATE, "consent": {}},
    "dee": {"name": "Dee Ramone", "segment": Segment.ADVOCATE, "email": None},
    "eve": {"name": "Eve Adams", "segment": Segment.DO_NOT_ASK},
    "fay": {"name": "Fay Wray", "segment": Segment.ADVOCATE},
}
"""ada and bob may be emailed; cy gave no consent; dee has no address; eve is never asked; fay is a quiet advocate."""
REACHABLE = ("ada", "bob", "fay")


def contact_settings(directory: Path, **overrides: Any) -> dict[str, Any]:
    """The embedded limiter's file and the Maildir, both in the test's directory."""
    return {"sqlite_path": str(directory / "contacts.db"), "maildir": str(directory / "mail"), **overrides}


@contextmanager
def outreach_client(url: str, clock: Clock, directory: Path, **settings: Any) -> Iterator[TestClient]:
    contact = contact_settings(directory, **settings.pop("contact", {}))
    with program_client(url, clock, contact=contact, **settings) as c:
        yield c


def seed_outreach_people(url: str) -> None:
    """The six customers of `PEOPLE`, scored by one analysis run that gave each their segment."""
    with opened(url) as store:
        customers = []
        for cid, person in PEOPLE.items():
            fields = {k: v for k, v in person.items() if k != "segment"}
            customers.append(make_customer(id=cid, **fields))
        store.upsert_customers(customers)
        run = make_run(id="run-outreach")
        store.save_run(run)
        store.write_scores([make_scores(cid, run_id=run.id, segment=p["segment"]) for cid, p in PEOPLE.items()])


def mail(directory: Path) -> list[EmailMessage]:
    """Every email that left, as parsed messages."""
    folder = directory / "mail"
    if not folder.exists():
        return []
    return [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in sorted(folder.glob("*.eml"))
    ]


def recipients(directory: Path) -> list[str]:
    return sorted(str(message["To"]) for message in mail(directory))


def outreach_body(outreach_id: str, customer_ids: tuple[str, ...] = tuple(PEOPLE), **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": outreach_id,
        "name": f"Outreach {outreach_id}",
        "campaign_id": "spring",
        "audience": {"kind": "customers", "customer_ids": list(customer_ids)},
    }
    body.update(overrides)
    return body


def post_outreach(
    client: TestClient, outreach_id: str, customer_ids: tuple[str, ...] = tuple(PEOPLE), **overrides: Any
) -> dict[str, Any]:
    response = client.post("/v1/outreach", json=outreach_body(outreach_id, customer_ids, **overrides))
    assert response.status_code == 201, response.text
    outreach: dict[str, Any] = response.json()
    return outreach


def launch(client: TestClient, outreach_id: str) -> dict[str, Any]:
    response = client.post(f"/v1/outreach/{outreach_id}/launch")
    assert response.status_code == 202, response.text
    result: dict[str, Any] = response.json()
    return result


def counts(client: TestClient, outreach_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/outreach/{outreach_id}/counts")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def held_reasons(client: TestClient, outreach_id: str) -> dict[str, str]:
    """Who was held back and why, by customer id."""
    response = client.get(f"/v1/outreach/{outreach_id}/held")
    assert response.status_code == 200, response.text
    return {item["customer_id"]: item["reason"] for item in response.json()["items"]}


def template_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "whatsapp-warm",
        "purpose": "share",
        "channel": "whatsapp",
        "body": "Hi! {{ advocate.first_name }} thinks you'll like this: {{ link }}",
        "updated_by": "maria",
    }
    body.update(overrides)
    return body


# --- fixtures ------------------------------------------------------------------------------------------------
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


# --- templates -------------------------------------------------------------------------------------------------
def test_a_posted_template_is_version_1_by_its_author_and_can_be_read_and_listed(
    client: TestClient, clock: Clock
) -> None:
    response = client.post("/v1/templates", json=template_body())
    assert response.status_code == 201, response.text
    template = response.json()
    assert (template["version"], template["updated_by"], template["segment"], template["locale"]) == (
        1,
        "maria",
        None,
        "en",
    )
    assert template["updated_at"] == clock.now.isoformat().replace("+00:00", "Z")
    assert response.headers["location"] == "/v1/templates/whatsapp-warm"
    assert client.get("/v1/templates/whatsapp-warm").json() == template
    assert client.get("/v1/templates").json() == {"items": [template]}


def test_templates_can_be_listed_by_purpose(client: TestClient) -> None:
    client.post("/v1/templates", json=template_body())
    message = template_body(id="ask-email", purpose="message", channel="email", subject="{{ advocate.first_name }}")
    assert client.post("/v1/templates", json=message).status_code == 201
    assert [t["id"] for t in client.get("/v1/templates", params={"purpose": "message"}).json()["items"]] == [
        "ask-email"
    ]
    assert [t["id"] for t in client.get("/v1/templates", params={"purpose": "share"}).json()["items"]] == [
        "whatsapp-warm"
    ]
    assert_problem(client.get("/v1/templates", params={"purpose": "poster"}), 422, ":validation")


def test_putting_a_template_changes_it_and_bumps_its_version(client: TestClient, clock: Clock) -> None:
    client.post("/v1/templates", json=template_body())
    clock.advance(hours=1)
    change = template_body(body="{{ link }} from {{ advocate.name }}", updated_by="li")
    del change["id"]
    response = client.put("/v1/templates/whatsapp-warm", json=change)
    assert response.status_code == 200, response.text
    template = response.json()
    assert (template["version"], template["updated_by"], template["body"]) == (
        2,
        "li",
        "{{ link }} from {{ advocate.name }}",
    )
    assert client.get("/v1/templates/whatsapp-warm").json() == template


def test_posting_a_template_id_already_in_use_is_a_409_problem_and_keeps_the_first(client: TestClient) -> None:
    client.post("/v1/templates", json=template_body())
    assert_problem(client.post("/v1/templates", json=template_body(body="{{ link }}")), 409, ":ledger-conflict")
    assert client.get("/v1/templates/whatsapp-warm").json()["version"] == 1


def test_a_template_with_problems_is_a_422_problem_listing_each_with_its_line(client: TestClient) -> None:
    body = template_body(
        body="Hi {{ advocate.first_name }}\n{{ nope }}\nSee {{ link }}\n{{ password }}", subject="{{ x }}"
    )
    problem = assert_problem(client.post("/v1/templates", json=body), 422, ":invalid-input")
    found = [(e["source"], e["line"]) for e in problem["errors"]]
    assert found == [("whatsapp-warm.body", 2), ("whatsapp-warm.body", 4), ("whatsapp-warm.subject", 1)]
    assert "'nope'" in problem["errors"][0]["reason"]
    assert client.get("/v1/templates").json() == {"items": []}


def test_a_template_with_a_syntax_error_names_its_line(client: TestClient) -> None:
    body = template_body(body="Hello\n{% for friend in advocate.purchases %}\n{{ friend }}")
    problem = assert_problem(client.post("/v1/templates", json=body), 422, ":invalid-input")
    (error,) = problem["errors"]
    assert error["source"] == "whatsapp-warm.body"
    assert error["line"] is not None
    assert "endfor" in error["reason"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"id": "Not A Slug"}, "body.id"),
        ({"channel": "fax"}, "body.channel"),
        ({"body": ""}, "body.body"),
        ({"version": 7}, "body.version"),
    ],
)
def test_a_template_with_a_bad_field_is_a_422_problem_naming_it(
    client: TestClient, overrides: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post("/v1/templates", json=template_body(**overrides)), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]


def test_an_unknown_template_is_a_404_to_read_change_or_delete(client: TestClient) -> None:
    change = {k: v for k, v in template_body().items() if k != "id"}
    assert_problem(client.get("/v1/templates/nope"), 404, ":not-found")
    assert_problem(client.put("/v1/templates/nope", json=change), 404, ":not-found")
    assert_problem(client.delete("/v1/templates/nope"), 404, ":not-found")


def test_a_deleted_template_is_gone(client: TestClient) -> None:
    client.post("/v1/templates", json=template_body())
    response = client.delete("/v1/templates/whatsapp-warm")
    assert response.status_code == 204
    assert_problem(client.get("/v1/templates/whatsapp-warm"), 404, ":not-found")


def test_a_template_an_outreach_still_names_cannot_be_deleted(client: TestClient) -> None:
    client.post("/v1/templates", json=template_body(id="ask", purpose="message", channel="email"))
    post_outreach(client, "spring-ask", ("ada",), steps=[{"id": "invite", "message_template_id": "ask"}])
    problem = assert_problem(client.delete("/v1/templates/ask"), 409, ":ledger-conflict")
    assert "spring-ask" in problem["detail"]
    assert client.get("/v1/templates/ask").status_code == 200


def test_a_preview_renders_an_unsaved_template_for_one_customer(client: TestClient) -> None:
    body = {"template": template_body(), "customer_id": "ada", "campaign_id": "spring"}
    response = client.post("/v1/templates/preview", json=body)
    assert response.status_code == 200, response.text
    text = response.json()["text"]
    code = client.get("/v1/customers/ada/codes").json()["items"][0]["code"]
    assert text == f"Hi! Ada thinks you'll like this: http://127.0.0.1:8000/r/{code}"
    assert client.get("/v1/templates").json() == {"items": []}


def test_a_preview_shows_the_subject_first(client: TestClient) -> None:
    template = template_body(channel="email", subject="{{ advocate.first_name }}, a gift", body="{{ friend_offer }}")
    response = client.post(
        "/v1/templates/preview", json={"template": template, "customer_id": "bob", "campaign_id": "spring"}
    )
    assert response.json() == {"text": "Bob, a gift\n\n5 EUR off your first order"}


def test_previewing_a_bad_template_or_for_an_unknown_customer_or_campaign_is_a_problem(client: TestClient) -> None:
    bad = {"template": template_body(body="{{ nope }}"), "customer_id": "ada", "campaign_id": "spring"}
    problem = assert_problem(client.post("/v1/templates/preview", json=bad), 422, ":invalid-input")
    assert problem["errors"][0]["line"] == 1
    good = template_body()
    nobody = {"template": good, "customer_id": "nobody", "campaign_id": "spring"}
    assert_problem(client.post("/v1/templates/preview", json=nobody), 404, ":not-found")
    nowhere = {"template": good, "customer_id": "ada", "campaign_id": "autumn"}
    assert_problem(client.post("/v1/templates/preview", json=nowhere), 404, ":not-found")


# --- outreach plans ----------------------------------------------------------------------------------------
def test_a_posted_outreach_is_a_draft_that_can_be_read_and_listed(client: TestClient, clock: Clock) -> None:
    response = client.post("/v1/outreach", json=outreach_body("spring-ask"))
    assert response.status_code == 201, response.text
    outreach = response.json()
    assert (outreach["status"], outreach["started_at"]) == ("draft", None)
    assert outreach["created_at"] == clock.now.isoformat().replace("+00:00", "Z")
    assert response.headers["location"] == "/v1/outreach/spring-ask"
    assert client.get("/v1/outreach/spring-ask").json() == outreach
    assert client.get("/v1/outreach").json() == {"items": [outreach]}


def test_posting_an_outreach_id_already_in_use_is_a_409_problem(client: TestClient) -> None:
    post_outreach(client, "spring-ask")
    response = client.post("/v1/outreach", json=outreach_body("spring-ask", ("ada",), name="Other"))
    assert_problem(response, 409, ":ledger-conflict")
    assert client.get("/v1/outreach/spring-ask").json()["name"] == "Outreach spring-ask"


def test_an_outreach_for_an_unknown_campaign_or_template_is_a_404_problem(client: TestClient) -> None:
    assert_problem(client.post("/v1/outreach", json=outreach_body("o1", campaign_id="autumn")), 404, ":not-found")
    variants = [{"id": "a"}, {"id": "b", "message_template_id": "missing"}]
    assert_problem(client.post("/v1/outreach", json=outreach_body("o2", variants=variants)), 404, ":not-found")
    assert client.get("/v1/outreach").json() == {"items": []}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"audience": {"kind": "segments", "segments": []}}, "body.audience"),
        ({"audience": {"kind": "segments", "segments": ["do_not_ask"]}}, "body.audience"),
        ({"variants": [{"id": "a"}, {"id": "a"}]}, "body"),
        ({"status": "running"}, "body.status"),
    ],
)
def test_an_outreach_with_a_bad_field_is_a_422_problem_naming_it(
    client: TestClient, overrides: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post("/v1/outreach", json=outreach_body("o1", **overrides)), 422, ":validation")
    assert [e["source"] for e in problem["errors"]] == [field]


def test_an_unknown_outreach_is_a_404_everywhere(client: TestClient) -> None:
    assert_problem(client.get("/v1/outreach/nope"), 404, ":not-found")
    for action in ("launch", "pause", "resume"):
        assert_problem(client.post(f"/v1/outreach/nope/{action}"), 404, ":not-found")
    for view in ("counts", "held", "variants"):
        assert_problem(client.get(f"/v1/outreach/nope/{view}"), 404, ":not-found")


# --- launching and sending -------------------------------------------------------------------------------------
def test_a_launch_sends_to_consenting_customers_and_holds_the_others_with_reasons(
    client: TestClient, tmp_path: Path
) -> None:
    post_outreach(client, "spring-ask")
    result = launch(client, "spring-ask")
    assert result["dispatch"] == "inline"
    assert result["task_id"] is None
    assert result["plan"] == {
        "outreach_id": "spring-ask",
        "audience": 5,
        "enqueued": 5,
        "already_planned": 0,
        "excluded": {"do_not_ask": 1},
    }
    assert recipients(tmp_path) == sorted(f"{cid}@example.com" for cid in REACHABLE)
    tally = counts(client, "spring-ask")
    assert tally["by_status"] == {"queued": 0, "sending": 0, "sent": 3, "held": 2, "failed": 0}
    assert {reason: n for reason, n in tally["held_by_reason"].items() if n} == {"no_consent": 1, "no_address": 1}
    assert held_reasons(client, "spring-ask") == {"cy": "no_consent", "dee": "no_address"}
    assert client.get("/v1/outreach/spring-ask").json()["status"] == "running"


def test_launching_again_adds_nothing_and_sends_nothing_twice(client: TestClient, tmp_path: Path) -> None:
    post_outreach(client, "spring-ask")
    launch(client, "spring-ask")
    again = launch(client, "spring-ask")
    assert (again["plan"]["enqueued"], again["plan"]["already_planned"]) == (0, 5)
    assert len(mail(tmp_path)) == 3
    assert counts(client, "spring-ask")["by_status"]["sent"] == 3


def test_held_messages_never_show_an_address(client: TestClient) -> None:
    post_outreach(client, "spring-ask")
    launch(client, "spring-ask")
    client.post("/v1/customers/ada/invitations", json={"campaign_id": "spring", "email": "grace@example.org"})
    client.post("/v1/customers/bob/invitations", json={"campaign_id": "spring", "email": "grace@example.org"})
    for outreach_id in ("spring-ask", "spring-invitations"):
        response = client.get(f"/v1/outreach/{outreach_id}/held")
        assert response.json()["items"], outreach_id
        assert "@" not in response.text
        assert all("to_address" not in item for item in response.json()["items"])


def test_held_messages_page_by_cursor_and_filter_by_reason(client: TestClient) -> None:
    post_outreach(client, "spring-ask")
    launch(client, "spring-ask")
    first = client.get("/v1/outreach/spring-ask/held", params={"limit": 1}).json()
    assert [item["customer_id"] for item in first["items"]] == ["cy"]
    assert first["next"] == first["items"][0]["key"]
    second = client.get("/v1/outreach/spring-ask/held", params={"limit": 1, "after": first["next"]}).json()
    assert ([item["customer_id"] for item in second["items"]], second["next"]) == (["dee"], None)
    only = client.get("/v1/outreach/spring-ask/held", params={"reason": "no_address"}).json()
    assert [item["customer_id"] for item in only["items"]] == ["dee"]
    assert only["items"][0]["detail"] == "no email address"
    assert_problem(client.get("/v1/outreach/spring-ask/held", params={"reason": "bored"}), 422, ":validation")
    assert_problem(client.get("/v1/outreach/spring-ask/held", params={"limit": 0}), 422, ":validation")


def test_a_second_outreach_in_the_same_week_is_held_by_the_cap(
    client: TestClient, clock: Clock, tmp_path: Path
) -> None:
    post_outreach(client, "spring-ask", ("ada", "bob"))
    launch(client, "spring-ask")
    clock.advance(days=3)
    post_outreach(client, "spring-again", ("ada", "bob"))
    launch(client, "spring-again")
    assert len(mail(tmp_path)) == 2
    assert held_reasons(client, "spring-again") == {"ada": "cap", "bob": "cap"}
    detail = client.get("/v1/outreach/spring-again/held").json()["items"][0]["detail"]
    assert "7 days" in detail
    clock.advance(days=5)
    post_outreach(client, "spring-third", ("ada",))
    launch(client, "spring-third")
    assert counts(client, "spring-third")["by_status"]["sent"] == 1


def test_a_paused_outreach_sends_nothing_until_resumed(client: TestClient, clock: Clock, tmp_path: Path) -> None:
    post_outreach(client, "spring-ask", ("ada", "bob"))
    paused = client.post("/v1/outreach/spring-ask/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    launch(client, "spring-ask")
    assert mail(tmp_path) == []
    assert counts(client, "spring-ask")["by_status"]["queued"] == 2
    clock.advance(hours=2)
    resumed = client.post("/v1/outreach/spring-ask/resume")
    assert resumed.json()["status"] == "running"
    assert recipients(tmp_path) == ["ada@example.com", "bob@example.com"]
    assert counts(client, "spring-ask")["by_status"]["sent"] == 2


def test_a_later_step_goes_out_when_due_and_not_before(client: TestClient, clock: Clock, tmp_path: Path) -> None:
    steps = [{"id": "invite"}, {"id": "reminder", "delay_days": 10}]
    post_outreach(client, "spring-ask", ("ada",), steps=steps)
    launch(client, "spring-ask")
    assert counts(client, "spring-ask")["by_status"] == {"queued": 1, "sending": 0, "sent": 1, "held": 0, "failed": 0}
    clock.advance(days=11)
    client.post("/v1/outreach/spring-ask/resume")
    assert counts(client, "spring-ask")["by_status"]["sent"] == 2
    assert len(mail(tmp_path)) == 2


def test_variants_report_each_arm_with_its_interval_and_a_summary(client: TestClient, clock: Clock) -> None:
    variants = [{"id": "a"}, {"id": "b"}]
    post_outreach(client, "spring-ask", REACHABLE, variants=variants)
    launch(client, "spring-ask")
    report = client.get("/v1/outreach/spring-ask/variants").json()
    assert report["outreach_id"] == "spring-ask"
    assert [r["variant_id"] for r in report["results"]] == ["a", "b"]
    assert sum(r["audience"] for r in report["results"]) == 3
    assert sum(r["reached"] for r in report["results"]) == 3
    assert all(r["converted"] == 0 for r in report["results"])
    assert report["summary"]
    # a friend of ada's buys with her code after her message: her arm converts
    clock.advance(days=1)
    code = client.get("/v1/customers/ada/codes").json()["items"][0]["code"]
    order = {
        "id": "order-1",
        "customer_id": "zed",
        "amount_minor": 4200,
        "currency": "EUR",
        "at": clock.iso(),
        "code": code,
        "customer": {"id": "zed", "name": "Zed", "email": "zed@example.net"},
    }
    assert client.post("/v1/orders", json=order).json()["status"] == "attributed"
    after = client.get("/v1/outreach/spring-ask/variants").json()
    converted = {r["variant_id"]: r["converted"] for r in after["results"]}
    held = client.get("/v1/outreach/spring-ask/held").json()["items"]
    assert held == []
    assert sum(converted.values()) == 1
    ada_arm = next(r for r in after["results"] if r["converted"] == 1)
    assert 0 < ada_arm["ci_low"] < ada_arm["rate"] <= ada_arm["ci_high"]
    assert ada_arm["variant_id"] in after["summary"]


def test_a_done_outreach_cannot_be_launched_again(client: TestClient, url: str) -> None:
    post_outreach(client, "spring-ask", ("ada",))
    with opened_program(url) as store:
        store.save_outreach(store.get_outreach("spring-ask").model_copy(update={"status": OutreachStatus.DONE}))
    assert_problem(client.post("/v1/outreach/spring-ask/launch"), 409, ":policy-violation")
    assert_problem(client.post("/v1/outreach/spring-ask/resume"), 409, ":policy-violation")


# --- celery dispatch -----------------------------------------------------------------------------------------
MEMORY_CELERY: dict[str, str] = {"broker_url": "memory://", "result_backend": "cache+memory://"}
"""Kombu's in-memory broker: what is sent to the workers stays in this process, where the test reads it."""


@contextmanager
def memory_broker() -> Iterator[Any]:
    """A connection to the in-memory broker, its default queue emptied first."""
    with make_celery(Settings(celery=MEMORY_CELERY)).connection_for_write() as connection:
        connection.SimpleQueue("celery").clear()
        yield connection


@pytest.fixture
def broker() -> Iterator[Any]:
    with memory_broker() as connection:
        yield connection


def queued_tasks(broker: Any) -> list[tuple[str, list[Any], dict[str, Any]]]:
    """The tasks waiting in the default queue, as (name, args, kwargs), taken off the queue."""
    queue = broker.SimpleQueue("celery")
    tasks = []
    while queue.qsize():
        message = queue.get(timeout=1)
        args, kwargs, _ = message.payload
        tasks.append((message.headers["task"], args, kwargs))
        message.ack()
    return tasks


def test_in_celery_mode_a_launch_hands_planning_to_the_workers(
    url: str, clock: Clock, tmp_path: Path, broker: Any
) -> None:
    seed_outreach_people(url)
    with outreach_client(
        url,
        clock,
        tmp_path,
        contact={"dispatch": "celery"},
        celery=MEMORY_CELERY,
    ) as c:
        post_campaign(c)
        post_outreach(c, "spring-ask")
        response = c.post("/v1/outreach/spring-ask/launch")
        assert response.status_code == 202, response.text
        result = response.json()
        assert (result["dispatch"], result["plan"]) == ("celery", None)
        assert result["task_id"]
        c.post("/v1/outreach/spring-ask/pause")
        c.post("/v1/outreach/spring-ask/resume")
        assert_problem(c.post("/v1/outreach/nope/launch"), 404, ":not-found")
        assert counts(c, "spring-ask")["by_status"]["queued"] == 0
    kwargs = {"store_url": url, "database": "neo4j"}
    assert queued_tasks(broker) == [
        ("advocacy.plan_outreach", ["spring-ask"], kwargs),
        ("advocacy.dispatch_due", [], kwargs),
    ]
    assert mail(tmp_path) == []


def test_the_channels_and_limiter_are_built_once_per_app(client: TestClient) -> None:
    holder = cast(Any, client.app).state.contact_holder
    first = holder.get()
    client.get("/v1/customers/ada/kit", params={"campaign_id": "spring"})
    assert holder.get() is first
    assert ContactChannel.EMAIL in first.adapters


def test_the_outreach_operations_are_documented_with_tags_problems_and_examples(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    tags = {
        "/v1/templates": "templates",
        "/v1/templates/preview": "templates",
        "/v1/outreach": "outreach",
        "/v1/outreach/{outreach_id}/launch": "outreach",
        "/v1/outreach/{outreach_id}/held": "outreach",
        "/v1/customers/{customer_id}/kit": "kits",
        "/v1/customers/{customer_id}/invitations": "kits",
        "/u/{token}": "unsubscribe",
    }
    for path, tag in tags.items():
        for method, op in paths[path].items():
            assert op["tags"] == [tag], (path, method)
            assert op["summary"], (path, method)
            if path.startswith("/v1/"):
                assert "503" in op["responses"], (path, method)
    for path in ("/v1/templates", "/v1/outreach", "/v1/customers/{customer_id}/invitations"):
        assert paths[path]["post"]["requestBody"]["content"]["application/json"]["examples"], path
    assert "401" in paths["/u/{token}"]["post"]["responses"]
    assert "202" in paths["/v1/outreach/{outreach_id}/launch"]["post"]["responses"]


def test_in_celery_mode_a_broker_that_is_down_is_a_503_problem(url: str, clock: Clock, tmp_path: Path) -> None:
    seed_outreach_people(url)
    down = {"broker_url": "redis://127.0.0.1:9/0", "result_backend": "cache+memory://"}
    with outreach_client(url, clock, tmp_path, contact={"dispatch": "celery"}, celery=down) as c:
        post_campaign(c)
        post_outreach(c, "spring-ask")
        problem = assert_problem(c.post("/v1/outreach/spring-ask/launch"), 503, ":store-unavailable")
        assert "broker" in problem["detail"]
        assert "127.0.0.1" not in problem["detail"]
        assert c.get("/v1/outreach/spring-ask").json()["status"] == "draft"
