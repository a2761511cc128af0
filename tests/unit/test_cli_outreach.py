"""`advocacy templates` and `advocacy outreach` through Typer's CliRunner on SQLite, with the SQLite contact
limiter and a Maildir in tmp_path. The CLI runs on the real clock, so the customers live in a time zone where it
is daytime now (outside quiet hours)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import typer
from typer.testing import CliRunner, Result

from api import cli, cli_outreach
from engine.settings import get_settings
from graph.model import utcnow
from graph.sqlite_store import SqliteStore
from tests.factories import make_customer
from tests.outreach_factories import make_message
from tests.program_factories import make_campaign
from tests.unit.test_api_outreach import MEMORY_CELERY, memory_broker, queued_tasks

TEMPLATE: dict[str, Any] = {
    "id": "whatsapp-warm",
    "purpose": "share",
    "channel": "whatsapp",
    "body": "Hi! {{ advocate.first_name }} thinks you'll like this: {{ link }}",
}

OUTREACH: dict[str, Any] = {
    "id": "spring-ask",
    "name": "Spring: ask everyone",
    "campaign_id": "spring",
    "audience": {"kind": "customers", "customer_ids": ["ada", "bob", "cy"]},
    "variants": [{"id": "a"}, {"id": "b"}],
}


def awake_zone() -> str:
    """A time zone where it is between 09:00 and 19:00 right now."""
    now = utcnow()
    for name in ("Europe/Paris", "America/New_York", "Asia/Tokyo", "America/Los_Angeles", "Asia/Kolkata"):
        if 9 <= now.astimezone(ZoneInfo(name)).hour < 19:
            return name
    raise AssertionError("some zone is always awake")


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The real global options (`--store`) with just this module's commands."""
    fresh = typer.Typer()
    fresh.callback()(cli.main)
    cli_outreach.register(fresh)
    return fresh


@pytest.fixture
def contact_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The limiter's file and the Maildir in tmp_path, through the environment as an operator would set them."""
    monkeypatch.setenv("ADVOCACY_CONTACT__SQLITE_PATH", str(tmp_path / "contacts.db"))
    monkeypatch.setenv("ADVOCACY_CONTACT__MAILDIR", str(tmp_path / "mail"))
    get_settings.cache_clear()
    yield tmp_path / "mail"
    get_settings.cache_clear()


@pytest.fixture
def db(tmp_path: Path, contact_env: Path) -> Path:
    path = tmp_path / "outreach.db"
    zone = awake_zone()
    store = SqliteStore(path)
    store.upsert_customers(
        [
            make_customer(id="ada", name="Ada Lovelace", timezone=zone, created_at=None),
            make_customer(id="bob", name="Bob Stone", timezone=zone, consent={}, created_at=None),
            make_customer(id="cy", name="Cy Young", timezone=zone, created_at=None),
        ]
    )
    store.save_campaign(make_campaign(id="spring"))
    store.close()
    return path


def write(path: Path, body: dict[str, Any]) -> Path:
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


@pytest.fixture
def template_file(tmp_path: Path) -> Path:
    return write(tmp_path / "template.json", TEMPLATE)


@pytest.fixture
def outreach_file(tmp_path: Path) -> Path:
    return write(tmp_path / "outreach.json", OUTREACH)


def invoke(app: typer.Typer, db: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--store", f"sqlite:///{db}", *args])


def ok(app: typer.Typer, db: Path, *args: str) -> Result:
    result = invoke(app, db, *args)
    assert result.exit_code == 0, result.output
    return result


def sent_to(maildir: Path) -> list[str]:
    return sorted(
        line.split(":", 1)[1].strip()
        for path in maildir.glob("*.eml")
        for line in path.read_text().splitlines()
        if line.startswith("To:")
    )


# --- templates -------------------------------------------------------------------------------------------------
def test_a_template_added_from_a_file_is_listed_with_its_author(
    app: typer.Typer, db: Path, template_file: Path
) -> None:
    result = ok(app, db, "templates", "add", "--file", str(template_file), "--by", "maria")
    assert "template whatsapp-warm saved: version 1, share on whatsapp" in result.stdout
    (template,) = json.loads(ok(app, db, "templates", "list", "--json").stdout)["items"]
    assert (template["id"], template["version"], template["updated_by"]) == ("whatsapp-warm", 1, "maria")
    assert "whatsapp-warm" in ok(app, db, "templates", "list").stdout
    assert json.loads(ok(app, db, "templates", "list", "--purpose", "message", "--json").stdout) == {"items": []}


def test_adding_a_template_again_needs_replace_and_bumps_the_version(
    app: typer.Typer, db: Path, template_file: Path
) -> None:
    ok(app, db, "templates", "add", "--file", str(template_file), "--by", "maria")
    refused = invoke(app, db, "templates", "add", "--file", str(template_file), "--by", "li")
    assert refused.exit_code == 1
    assert "already exists" in refused.stderr
    replaced = ok(app, db, "templates", "add", "--file", str(template_file), "--by", "li", "--replace")
    assert "version 2" in replaced.stdout


def test_a_template_with_problems_is_refused_listing_each_with_its_line(
    app: typer.Typer, db: Path, tmp_path: Path
) -> None:
    bad = write(tmp_path / "bad.json", {**TEMPLATE, "body": "Hi {{ advocate.first_name }}\n{{ nope }}\n{{ also }}"})
    result = invoke(app, db, "templates", "add", "--file", str(bad), "--by", "maria")
    assert result.exit_code == 1
    assert "whatsapp-warm.body:2: unknown variable 'nope'" in result.stderr
    assert "whatsapp-warm.body:3: unknown variable 'also'" in result.stderr
    assert "Traceback" not in result.output
    assert json.loads(ok(app, db, "templates", "list", "--json").stdout) == {"items": []}


def test_a_template_file_with_a_bad_field_names_the_file_and_the_field(
    app: typer.Typer, db: Path, tmp_path: Path
) -> None:
    bad = write(tmp_path / "bad.json", {**TEMPLATE, "channel": "fax"})
    result = invoke(app, db, "templates", "add", "--file", str(bad), "--by", "maria")
    assert result.exit_code == 1
    assert f"{bad}:channel" in result.stderr


def test_a_preview_renders_a_saved_or_built_in_template_for_a_customer(
    app: typer.Typer, db: Path, template_file: Path
) -> None:
    ok(app, db, "templates", "add", "--file", str(template_file), "--by", "maria")
    text = ok(app, db, "templates", "preview", "whatsapp-warm", "--customer", "ada", "--campaign", "spring").stdout
    assert text.startswith("Hi! Ada thinks you'll like this: http://127.0.0.1:8000/r/ADA")
    builtin = ok(
        app, db, "templates", "preview", "builtin-share-whatsapp-en", "--customer", "ada", "--campaign", "spring"
    )
    assert "http://127.0.0.1:8000/r/ADA" in builtin.stdout
    missing = invoke(app, db, "templates", "preview", "nope", "--customer", "ada", "--campaign", "spring")
    assert missing.exit_code == 1
    assert "nope" in missing.stderr


# --- outreach ----------------------------------------------------------------------------------------------
def test_an_outreach_planned_inline_sends_to_consenting_customers_and_reports_the_rest(
    app: typer.Typer, db: Path, outreach_file: Path, contact_env: Path
) -> None:
    created = ok(app, db, "outreach", "create", "--file", str(outreach_file))
    assert "outreach spring-ask created as a draft: customers audience, 1 step(s), variants a, b" in created.stdout
    planned = ok(app, db, "outreach", "plan", "spring-ask")
    assert "3 customers, 3 messages written, 0 already planned" in planned.stdout
    assert "2 sent, 1 held (no_consent 1)" in planned.stdout
    assert sent_to(contact_env) == ["ada@example.com", "cy@example.com"]
    again = ok(app, db, "outreach", "plan", "spring-ask")
    assert "0 messages written, 3 already planned" in again.stdout
    assert len(sent_to(contact_env)) == 2


def test_status_shows_counts_by_variant_and_held_by_reason(app: typer.Typer, db: Path, outreach_file: Path) -> None:
    ok(app, db, "outreach", "create", "--file", str(outreach_file))
    ok(app, db, "outreach", "plan", "spring-ask")
    counts = json.loads(ok(app, db, "outreach", "status", "spring-ask", "--json").stdout)
    assert (counts["by_status"]["sent"], counts["by_status"]["held"]) == (2, 1)
    assert counts["held_by_reason"]["no_consent"] == 1
    table = ok(app, db, "outreach", "status", "spring-ask").stdout
    assert "Held, by reason" in table
    assert "no_consent" in table


def test_held_lists_who_was_held_and_why_without_addresses(app: typer.Typer, db: Path, outreach_file: Path) -> None:
    ok(app, db, "outreach", "create", "--file", str(outreach_file))
    ok(app, db, "outreach", "plan", "spring-ask")
    listed = ok(app, db, "outreach", "held", "spring-ask", "--reason", "no_consent", "--json").stdout
    (item,) = json.loads(listed)["items"]
    assert (item["customer_id"], item["reason"], item["detail"]) == ("bob", "no_consent", "no consent for email")
    assert "@" not in listed
    table = ok(app, db, "outreach", "held", "spring-ask").stdout
    assert "bob" in table
    assert "@" not in table
    assert "nothing held for cap" in ok(app, db, "outreach", "held", "spring-ask", "--reason", "cap").stdout


def test_variants_show_a_table_and_the_summary_sentence(app: typer.Typer, db: Path, outreach_file: Path) -> None:
    ok(app, db, "outreach", "create", "--file", str(outreach_file))
    ok(app, db, "outreach", "plan", "spring-ask")
    report = json.loads(ok(app, db, "outreach", "variants", "spring-ask", "--json").stdout)
    assert [r["variant_id"] for r in report["results"]] == ["a", "b"]
    assert sum(r["audience"] for r in report["results"]) == 3
    assert sum(r["reached"] for r in report["results"]) == 2
    shown = ok(app, db, "outreach", "variants", "spring-ask").stdout
    assert "A/B variants of spring-ask" in shown
    assert report["summary"] in shown


def test_a_paused_outreach_sends_nothing(app: typer.Typer, db: Path, outreach_file: Path, contact_env: Path) -> None:
    ok(app, db, "outreach", "create", "--file", str(outreach_file))
    assert "outreach spring-ask paused" in ok(app, db, "outreach", "pause", "spring-ask").stdout
    planned = ok(app, db, "outreach", "plan", "spring-ask")
    assert "0 sent, 0 held, 3 waiting" in planned.stdout
    assert "0 due messages tried" in ok(app, db, "outreach", "dispatch-due").stdout
    assert sent_to(contact_env) == []
    assert "outreach spring-ask running" in ok(app, db, "outreach", "resume", "spring-ask").stdout
    assert json.loads(ok(app, db, "outreach", "status", "spring-ask", "--json").stdout)["by_status"]["queued"] == 3


def test_dispatch_due_sends_messages_that_came_due(
    app: typer.Typer, db: Path, outreach_file: Path, contact_env: Path
) -> None:
    ok(app, db, "outreach", "create", "--file", str(outreach_file))
    store = SqliteStore(db)
    now = utcnow()
    store.enqueue_messages(
        [make_message("spring-ask", "ada", not_before=now - timedelta(minutes=1), created_at=now, updated_at=now)]
    )
    store.close()
    assert "1 due messages tried" in ok(app, db, "outreach", "dispatch-due", "--outreach", "spring-ask").stdout
    assert sent_to(contact_env) == ["ada@example.com"]
    assert "0 due messages tried" in ok(app, db, "outreach", "dispatch-due").stdout


def test_an_unknown_outreach_fails_with_a_clear_message(app: typer.Typer, db: Path) -> None:
    for command in ("plan", "pause", "resume", "status", "held", "variants"):
        result = invoke(app, db, "outreach", command, "nope")
        assert result.exit_code == 1, command
        assert "nope" in result.stderr
        assert "Traceback" not in result.output


def test_an_outreach_for_an_unknown_campaign_is_refused(app: typer.Typer, db: Path, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.json", {**OUTREACH, "campaign_id": "autumn"})
    result = invoke(app, db, "outreach", "create", "--file", str(bad))
    assert result.exit_code == 1
    assert "autumn" in result.stderr
    assert json.loads(ok(app, db, "outreach", "list", "--json").stdout) == {"items": []}


def test_in_celery_mode_plan_hands_the_outreach_to_the_workers(
    app: typer.Typer, db: Path, outreach_file: Path, contact_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ADVOCACY_CONTACT__DISPATCH", "celery")
    monkeypatch.setenv("ADVOCACY_CELERY__BROKER_URL", MEMORY_CELERY["broker_url"])
    monkeypatch.setenv("ADVOCACY_CELERY__RESULT_BACKEND", MEMORY_CELERY["result_backend"])
    get_settings.cache_clear()
    ok(app, db, "outreach", "create", "--file", str(outreach_file))
    with memory_broker() as broker:
        result = ok(app, db, "outreach", "plan", "spring-ask")
        assert "outreach spring-ask handed to the workers" in result.stdout
        resumed = ok(app, db, "outreach", "resume", "spring-ask")
        assert "outreach spring-ask running" in resumed.stdout
        tasks = queued_tasks(broker)
    kwargs = {"store_url": f"sqlite:///{db}", "database": "neo4j"}
    assert tasks == [("advocacy.plan_outreach", ["spring-ask"], kwargs), ("advocacy.dispatch_due", [], kwargs)]
    assert sent_to(contact_env) == []
