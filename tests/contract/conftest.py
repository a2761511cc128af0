"""The one `store` fixture every contract test runs against: the SQLite file and the real Neo4j.

Neo4j is never skipped silently: when it is down, its half of the suite fails and says how to start it or
deselect it. The programme helpers below set up a referrer, a friend, a campaign and a code, and settle
conversions through a recording `plan`, so each programme test states only what it is about.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from graph.model import Customer, EdgeType
from graph.outreach import Outreach
from graph.program import (
    Attribution,
    Campaign,
    Conversion,
    ConversionStatus,
    FraudAction,
    FraudSignal,
    FraudVerdict,
    Order,
    ReferralCode,
    RewardGrant,
    RewardHistory,
    RewardKind,
    RewardSide,
    RewardState,
    Settlement,
)
from graph.program_store import Store
from graph.sqlite_store import _MIGRATIONS, SqliteStore
from graph.store import GraphStore
from tests.factories import BASE_TIME, make_customer
from tests.neo4j_support import NEO4J_URL, open_neo4j
from tests.outreach_factories import make_outreach
from tests.program_factories import make_attribution, make_campaign, make_code, make_order


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened: Store = SqliteStore(tmp_path / "contract.db")
    else:
        opened = open_neo4j()
        opened.delete_all()
    try:
        yield opened
    finally:
        opened.close()


def find_stored(store: GraphStore, needles: list[str]) -> list[str]:
    """Where any of `needles` still occurs in anything the store holds, read behind the store's back."""
    if isinstance(store, SqliteStore):
        return _find_in_sqlite(Path(store.describe().removeprefix("sqlite:///")), needles)
    return _find_in_neo4j(needles)


def _find_in_sqlite(path: Path, needles: list[str]) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")]
        assert tables, f"no tables found in {path}"
        found: list[str] = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                found.extend(f"{table}: {value}" for value in row if any(n in str(value) for n in needles))
        return found
    finally:
        conn.close()


# Filtered by the server: the test database may hold other people's nodes, and shipping them all is slow.
_NEO4J_FIND = """
MATCH {pattern}
UNWIND keys(x) AS key
WITH x, key, x[key] AS value
UNWIND CASE WHEN value IS :: LIST<ANY> THEN value ELSE [value] END AS item
WITH x, key, toStringOrNull(item) AS text
WHERE any(needle IN $needles WHERE key CONTAINS needle OR text CONTAINS needle
          OR any(name IN {names} WHERE name CONTAINS needle))
RETURN {names} AS names, key, text LIMIT 200
"""


def _find_in_neo4j(needles: list[str]) -> list[str]:
    from neo4j import GraphDatabase

    parts = urlsplit(NEO4J_URL)
    auth: tuple[str, str] | None = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    found: list[str] = []
    with GraphDatabase.driver(parts.geturl(), auth=auth) as driver:
        for pattern, names in (("(x)", "labels(x)"), ("()-[x]->()", "[type(x)]")):
            query = _NEO4J_FIND.format(pattern=pattern, names=names)
            records, _, _ = driver.execute_query(query, needles=needles, database_="neo4j")
            found.extend(f"{record['names']}.{record['key']}: {record['text']}" for record in records)
    return found


# --- the referral programme ------------------------------------------------------------------------------------
SETTLED_AT = BASE_TIME + timedelta(days=1, hours=1)
"""When the helpers settle a conversion: an hour after `make_order`'s default order time."""
APPROVE_AFTER = SETTLED_AT + timedelta(days=14)
REVIEW_DEADLINE = SETTLED_AT + timedelta(days=7)


@dataclass(frozen=True)
class Scene:
    """A campaign, a referrer with one code in it, and a friend, all stored."""

    campaign: Campaign
    referrer: Customer
    friend: Customer
    code: ReferralCode


def set_scene(store: Store, **campaign_overrides: Any) -> Scene:
    referrer, friend = make_customer(), make_customer()
    store.upsert_customers([referrer, friend])
    campaign = make_campaign(**campaign_overrides)
    store.save_campaign(campaign)
    code = store.create_code(make_code(referrer, campaign))
    return Scene(campaign=campaign, referrer=referrer, friend=friend, code=code)


def add_friend(store: Store, **overrides: Any) -> Customer:
    friend = make_customer(**overrides)
    store.upsert_customers([friend])
    return friend


class RecordingPlan:
    """A pure plan returning a fixed settlement and remembering each history it was given."""

    def __init__(self, settlement: Settlement) -> None:
        self.settlement = settlement
        self.histories: list[RewardHistory] = []

    def __call__(self, history: RewardHistory) -> Settlement:
        self.histories.append(history)
        return self.settlement


def make_grant(
    order: Order,
    customer_id: str,
    campaign_id: str,
    *,
    rule_id: str = "referrer-credit",
    side: RewardSide = RewardSide.REFERRER,
    amount_minor: int = 1000,
    state: RewardState = RewardState.PENDING,
    **overrides: Any,
) -> RewardGrant:
    fields: dict[str, Any] = {
        "id": f"{order.id}:{rule_id}",
        "customer_id": customer_id,
        "campaign_id": campaign_id,
        "rule_id": rule_id,
        "side": side,
        "kind": RewardKind.CREDIT if side is RewardSide.REFERRER else RewardKind.DISCOUNT,
        "amount_minor": amount_minor,
        "currency": order.currency,
        "description": f"{rule_id} for {order.id}",
        "conversion_id": order.id,
        "state": state,
        "approve_after": APPROVE_AFTER,
        "review_deadline": REVIEW_DEADLINE if state is RewardState.HELD else None,
    }
    fields.update(overrides)
    return RewardGrant(**fields)


def double_sided_grants(
    order: Order, attribution: Attribution, *, state: RewardState = RewardState.PENDING
) -> tuple[RewardGrant, RewardGrant]:
    """A 1000 credit for the referrer and a 500 discount for the friend."""
    return (
        make_grant(order, attribution.referrer_id, attribution.campaign_id, state=state),
        make_grant(
            order,
            order.customer_id,
            attribution.campaign_id,
            rule_id="friend-discount",
            side=RewardSide.FRIEND,
            amount_minor=500,
            state=state,
        ),
    )


HOLD_VERDICT = FraudVerdict(
    action=FraudAction.HOLD,
    score=1.5,
    signals=(FraudSignal(rule="shared_device", weight=1.5, detail="the friend's device is the referrer's"),),
)
REJECT_VERDICT = HOLD_VERDICT.model_copy(update={"action": FraudAction.REJECT})


def settlement_for(
    order: Order, attribution: Attribution | None, status: ConversionStatus = ConversionStatus.ATTRIBUTED
) -> Settlement:
    """What the rules would decide: rewards on both sides, held while the conversion is held."""
    if status is ConversionStatus.REJECTED:
        return Settlement(status=status, attribution=attribution, verdict=REJECT_VERDICT)
    if attribution is None or status is ConversionStatus.UNATTRIBUTED:
        return Settlement(status=status, attribution=attribution)
    held = status is ConversionStatus.HELD
    state = RewardState.HELD if held else RewardState.PENDING
    verdict = HOLD_VERDICT if held else FraudVerdict(action=FraudAction.ALLOW, score=0.0)
    grants = double_sided_grants(order, attribution, state=state)
    return Settlement(status=status, attribution=attribution, verdict=verdict, grants=grants)


def convert(
    store: Store,
    scene: Scene,
    *,
    friend: Customer | None = None,
    code: ReferralCode | None = None,
    status: ConversionStatus = ConversionStatus.ATTRIBUTED,
    settled_at: datetime = SETTLED_AT,
    **order_overrides: Any,
) -> Conversion:
    """Record an order of `friend` (the scene's by default) and settle it through `code` with `status`."""
    order = make_order(friend or scene.friend, **order_overrides)
    store.record_order(order)
    attribution = None if status is ConversionStatus.UNATTRIBUTED else make_attribution(code or scene.code)
    plan = RecordingPlan(settlement_for(order, attribution, status))
    return store.settle_conversion(order.id, attribution, plan, at=settled_at)


def referred_edges(store: Store) -> dict[tuple[str, str], str]:
    """(referrer, friend) -> status of every `REFERRED` edge."""
    return {(e.source, e.target): e.label for e in store.iter_edges(EdgeType.REFERRED)}


# --- outreach ----------------------------------------------------------------------------------------------------
def save_outreach_plan(store: Store, **overrides: Any) -> Outreach:
    """A stored referral campaign and an outreach plan on its behalf."""
    campaign = make_campaign()
    store.save_campaign(campaign)
    outreach = make_outreach(campaign.id, **overrides)
    store.save_outreach(outreach)
    return outreach


def email_key(address: str) -> str:
    """An `email:<hash>` person key; the contract needs only its shape, not the engine's keyed hash."""
    return f"email:{hashlib.sha256(address.encode()).hexdigest()}"


# --- SQLite files an older release left ------------------------------------------------------------------------
def sqlite_file_of_schema(path: Path, version: int) -> Path:
    """A SQLite file as a release of schema `version` left it, with one customer, `ada`."""
    conn = sqlite3.connect(path)
    try:
        for step in range(1, version + 1):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement)
        conn.execute(
            "INSERT INTO customers (id, locale, timezone, consent, attributes) VALUES ('ada', 'en', 'UTC', '{}', '{}')"
        )
        conn.execute(f"PRAGMA user_version = {version}")
        conn.commit()
    finally:
        conn.close()
    return path


def sqlite_schema_of(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()
