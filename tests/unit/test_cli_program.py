"""`advocacy campaign|code|rewards|fraud|leaks`, `metrics` and `cascades` through Typer's CliRunner on SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from api import cli, cli_program
from engine.referrals import ReferralService
from engine.settings import ReferralSettings
from graph.model import utcnow
from graph.program import ConversionStatus, Order, Signal, SignalKind, Signup
from graph.sqlite_store import SqliteStore
from tests.factories import make_customer

CAMPAIGN: dict[str, Any] = {
    "id": "spring",
    "name": "Spring referral",
    "friend_offer": "5 EUR off",
    "rewards": [
        {"id": "referrer-credit", "side": "referrer", "kind": "credit", "amount_minor": 1000},
        {"id": "friend-discount", "side": "friend", "kind": "discount", "amount_minor": 500},
    ],
    "hold_days": 0,
}
"""No hold period, so that `rewards advance` approves at once on the real clock."""


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The real global options (`--store`) with just this module's commands."""
    fresh = typer.Typer()
    fresh.callback()(cli.main)
    cli_program.register(fresh)
    return fresh


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "programme.db"
    store = SqliteStore(path)
    store.upsert_customers(
        [make_customer(id="ada", name="Ada Lovelace", created_at=None), make_customer(id="bob", created_at=None)]
    )
    store.close()
    return path


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    path = tmp_path / "campaign.json"
    path.write_text(json.dumps(CAMPAIGN), encoding="utf-8")
    return path


@pytest.fixture
def service(db: Path) -> Iterator[ReferralService]:
    """The same store, for setting up what the CLI has no command for (orders, clicks)."""
    store = SqliteStore(db)
    try:
        yield ReferralService(store, ReferralSettings())
    finally:
        store.close()


def invoke(app: typer.Typer, db: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--store", f"sqlite:///{db}", *args])


def ok(app: typer.Typer, db: Path, *args: str) -> Result:
    result = invoke(app, db, *args)
    assert result.exit_code == 0, result.output
    return result


def created(app: typer.Typer, db: Path, campaign_file: Path) -> None:
    ok(app, db, "campaign", "create", "--file", str(campaign_file))


def code_of(result: Result) -> str:
    return result.stdout.split()[0]


# --- campaigns ---------------------------------------------------------------------------------------------
def test_a_campaign_created_from_a_file_is_listed(app: typer.Typer, db: Path, campaign_file: Path) -> None:
    result = ok(app, db, "campaign", "create", "--file", str(campaign_file))
    assert "campaign spring created: Spring referral (2 reward rules)" in result.stdout
    listed = json.loads(ok(app, db, "campaign", "list", "--json").stdout)
    (campaign,) = listed["items"]
    assert (campaign["id"], campaign["hold_days"], len(campaign["rewards"])) == ("spring", 0, 2)
    assert "spring" in ok(app, db, "campaign", "list").stdout


def test_creating_a_campaign_twice_fails_with_a_clear_message(app: typer.Typer, db: Path, campaign_file: Path) -> None:
    created(app, db, campaign_file)
    result = invoke(app, db, "campaign", "create", "--file", str(campaign_file))
    assert result.exit_code == 1
    assert "already exists" in result.stderr
    assert "Traceback" not in result.output


def test_an_invalid_campaign_file_names_the_file_and_each_field(app: typer.Typer, db: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**CAMPAIGN, "currency": "euro", "hold_days": -1}), encoding="utf-8")
    result = invoke(app, db, "campaign", "create", "--file", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:currency" in result.stderr
    assert f"{bad}:hold_days" in result.stderr
    assert json.loads(ok(app, db, "campaign", "list", "--json").stdout) == {"items": []}


def test_a_missing_campaign_file_fails_with_a_clear_message(app: typer.Typer, db: Path, tmp_path: Path) -> None:
    result = invoke(app, db, "campaign", "create", "--file", str(tmp_path / "nope.json"))
    assert result.exit_code == 1
    assert "cannot read" in result.stderr


def test_listing_campaigns_of_an_empty_store_says_how_to_create_one(app: typer.Typer, db: Path) -> None:
    assert "advocacy campaign create" in ok(app, db, "campaign", "list").stdout


# --- codes -------------------------------------------------------------------------------------------------
def test_codes_are_issued_paused_resumed_revoked_and_rotated(app: typer.Typer, db: Path, campaign_file: Path) -> None:
    created(app, db, campaign_file)
    issued = ok(app, db, "code", "issue", "ada", "--campaign", "spring")
    code = code_of(issued)
    assert code.startswith("ADA")
    assert "issued: active, owner ada, campaign spring" in issued.stdout
    assert "paused: paused" in ok(app, db, "code", "pause", code.lower()).stdout
    assert "resumed: active" in ok(app, db, "code", "resume", code).stdout
    rotated = ok(app, db, "code", "rotate", code).stdout
    fresh = rotated.split("the new code is ")[1].split()[0]
    assert fresh != code
    store = SqliteStore(db)
    try:
        old = store.get_code(code)
        assert (old.status.value, old.replaced_by) == ("revoked", fresh)
    finally:
        store.close()
    assert "revoked: revoked" in ok(app, db, "code", "revoke", fresh).stdout


def test_a_vanity_code_is_issued_as_asked_and_refused_when_taken(
    app: typer.Typer, db: Path, campaign_file: Path
) -> None:
    created(app, db, campaign_file)
    assert code_of(ok(app, db, "code", "issue", "ada", "--campaign", "spring", "--vanity", "ada-10")) == "ADA10"
    taken = invoke(app, db, "code", "issue", "bob", "--campaign", "spring", "--vanity", "ADA10")
    assert taken.exit_code == 1
    assert "error:" in taken.stderr


def test_changing_an_unknown_code_fails_with_a_clear_message(app: typer.Typer, db: Path) -> None:
    result = invoke(app, db, "code", "pause", "NOSUCHCODE")
    assert result.exit_code == 1
    assert "error:" in result.stderr
    assert "Traceback" not in result.output


# --- rewards -----------------------------------------------------------------------------------------------
def test_rewards_are_advanced_then_fulfilled(
    app: typer.Typer, db: Path, campaign_file: Path, service: ReferralService
) -> None:
    created(app, db, campaign_file)
    code = code_of(ok(app, db, "code", "issue", "ada", "--campaign", "spring"))
    order = Order(id="order-1", customer_id="bob", amount_minor=4200, currency="EUR", at=utcnow(), code=code)
    assert service.process_order(order).status is ConversionStatus.ATTRIBUTED
    assert "2 rewards moved (2 approved)" in ok(app, db, "rewards", "advance").stdout
    assert "0 rewards moved" in ok(app, db, "rewards", "advance").stdout
    assert "2 rewards fulfilled, 0 failed" in ok(app, db, "rewards", "fulfil").stdout
    assert {r.state.value for r in service.store.list_rewards()} == {"fulfilled"}


# --- fraud review and leaks --------------------------------------------------------------------------------
@pytest.fixture
def held(app: typer.Typer, db: Path, campaign_file: Path, service: ReferralService) -> str:
    """Bob's order through Ada's code from the device Ada signed up on."""
    created(app, db, campaign_file)
    code = code_of(ok(app, db, "code", "issue", "ada", "--campaign", "spring"))
    device = (Signal(kind=SignalKind.DEVICE, value="device-of-ada"),)
    service.signup(Signup(customer_id="ada", at=utcnow(), signals=device))
    order = Order(
        id="order-9", customer_id="bob", amount_minor=4200, currency="EUR", at=utcnow(), code=code, signals=device
    )
    assert service.process_order(order).status is ConversionStatus.HELD
    return "order-9"


def test_the_fraud_queue_lists_held_orders_with_their_reasons(app: typer.Typer, db: Path, held: str) -> None:
    (case,) = json.loads(ok(app, db, "fraud", "queue", "--json").stdout)["items"]
    assert (case["order_id"], case["referrer_id"]) == (held, "ada")
    assert any(reason.startswith("self_referral_shared_identity") for reason in case["reasons"])
    table = ok(app, db, "fraud", "queue").stdout
    assert "Held conversions (1)" in table
    assert held in table


def test_rejecting_a_held_order_records_the_reviewer_and_cannot_be_repeated(
    app: typer.Typer, db: Path, held: str, service: ReferralService
) -> None:
    result = ok(app, db, "fraud", "reject", held, "--reviewer", "maria", "--note", "same device")
    assert f"order {held} rejected by maria" in result.stdout
    conversion = service.get_conversion(held)
    assert (conversion.reviewed_by, conversion.review_note) == ("maria", "same device")
    assert "no held conversions" in ok(app, db, "fraud", "queue").stdout
    again = invoke(app, db, "fraud", "approve", held, "--reviewer", "maria")
    assert again.exit_code == 1
    assert "error:" in again.stderr


def test_approving_a_held_order_makes_it_attributed(app: typer.Typer, db: Path, held: str) -> None:
    assert f"order {held} attributed by maria" in ok(app, db, "fraud", "approve", held, "--reviewer", "maria").stdout


def test_a_decision_needs_a_reviewer(app: typer.Typer, db: Path, held: str) -> None:
    result = invoke(app, db, "fraud", "approve", held)
    assert result.exit_code == 2
    assert "--reviewer" in result.output


def test_the_leak_scan_lists_a_code_posted_on_coupon_sites(
    app: typer.Typer, db: Path, tmp_path: Path, service: ReferralService
) -> None:
    leaky = tmp_path / "leaky.json"
    fraud = {"leak_min_clicks": 4, "leak_min_distinct_visitors": 4, "leak_min_sources": 2}
    leaky.write_text(json.dumps({**CAMPAIGN, "fraud": fraud}), encoding="utf-8")
    created(app, db, leaky)
    code = code_of(ok(app, db, "code", "issue", "ada", "--campaign", "spring"))
    assert "no code looks leaked" in ok(app, db, "leaks", "scan").stdout
    for n, site in enumerate(["https://www.retailmenot.com/", "https://slickdeals.net/", "https://reddit.com/"] * 2):
        service.click(code, ip=f"203.0.113.{n}", user_agent=f"browser-{n}", referer=site, cookie=None)
    scan = json.loads(ok(app, db, "leaks", "scan", "--days", "3", "--json").stdout)
    assert scan["days"] == 3
    assert [v["code"] for v in scan["items"]] == [code]
    assert code in ok(app, db, "leaks", "scan").stdout


# --- metrics -----------------------------------------------------------------------------------------------
def test_metrics_and_cascades_as_json_and_as_tables(
    app: typer.Typer, db: Path, campaign_file: Path, service: ReferralService
) -> None:
    created(app, db, campaign_file)
    code = code_of(ok(app, db, "code", "issue", "ada", "--campaign", "spring"))
    service.process_order(Order(id="o-1", customer_id="bob", amount_minor=4200, currency="EUR", at=utcnow(), code=code))
    metrics = json.loads(ok(app, db, "metrics", "--campaign", "spring", "--json").stdout)
    assert (metrics["campaign_id"], metrics["attributed_conversions"], metrics["acquired_customers"]) == (
        "spring",
        1,
        1,
    )
    assert metrics["reward_cost_minor"] == {"EUR": 1500}
    table = ok(app, db, "metrics").stdout
    assert "k-factor" in table
    assert "15.00 EUR" in table
    cascades = json.loads(ok(app, db, "cascades", "--json", "--top", "1").stdout)
    assert [g["customers"] for g in cascades["generations"]] == [1, 1]
    assert [s["seed_id"] for s in cascades["top_seeds"]] == ["ada"]
    assert "Largest cascades" in ok(app, db, "cascades").stdout


def test_metrics_of_an_unknown_campaign_fail_with_a_clear_message(app: typer.Typer, db: Path) -> None:
    for command in ("metrics", "cascades"):
        result = invoke(app, db, command, "--campaign", "nope")
        assert result.exit_code == 1, command
        assert "error:" in result.stderr
