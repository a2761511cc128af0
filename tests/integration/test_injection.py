"""Cypher- and SQL-like text through every free-text field into both stores: stored and read back as data, unchanged,
with the rest of the graph intact. Values travel as parameters; nothing a customer, a merchant or a marketer types
is ever query text. (Run Neo4j tests under `flock /tmp/neo4j.lock`: the shared server is wiped by other suites.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from engine.codes import validate_vanity
from graph.errors import InvalidInput
from graph.model import Customer, EdgeType, Event, EventKind, GraphBatch, Referral, ReferralStatus
from graph.outreach import Audience, AudienceKind, customer_key
from graph.program import (
    Campaign,
    Conversion,
    ConversionStatus,
    FraudAction,
    FraudSignal,
    FraudVerdict,
    ReferralCode,
    RewardGrant,
    RewardHistory,
    RewardKind,
    RewardRule,
    RewardSide,
    RewardState,
    Settlement,
    Signal,
    SignalKind,
)
from graph.program_store import Store
from graph.sqlite_store import SqliteStore
from tests.factories import BASE_TIME, make_customer, make_influence
from tests.neo4j_support import fresh_neo4j, query, raw_driver
from tests.outreach_factories import make_message, make_outreach, make_template
from tests.program_factories import (
    make_attribution,
    make_campaign,
    make_click,
    make_code,
    make_order,
    make_refund,
    make_signup,
)

HOSTILE = [
    "') DETACH DELETE n //",
    "x}) MATCH (n) DETACH DELETE n //",
    "'; DROP TABLE customers; --",
    '"; DROP TABLE customers; --',
    "Robert'); DROP TABLE Students;--",
    "1' OR '1'='1",
    "$param",
    "{id: $id}",
    "`Customer`) DETACH DELETE n //",
    "‘) DETACH DELETE n //’",
    "“x”}) MATCH (n) DELETE n //",
    "＇; DROP TABLE customers; --",
    "\\'; MATCH (n) DELETE n; //",
    "/* c */ CALL db.labels() //",
    "LOAD CSV FROM 'file:///etc/passwd' AS line RETURN line",
    "%s %d {0} {{x}}",
    "line one\nline two",
    "nul\x00byte",
]
"""Cypher and SQL breakouts, parameter names, backticks, typographic and full-width quotes, escapes and NUL."""

AT = BASE_TIME + timedelta(days=1)
SENTINELS = 3


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "injection.db")
        try:
            yield opened
        finally:
            opened.close()
    else:
        with fresh_neo4j() as neo4j:
            yield neo4j


def email_of(text: str, index: int) -> str:
    """An address carrying the hostile text in its local part (the model refuses spaces and a second @)."""
    local = re.sub(r"[\s@]", "", text) or "x"
    return f"{local}.{index}@evil.example"


def sentinel_graph(store: Store) -> list[Customer]:
    """A small graph the hostile rows must leave alone."""
    customers = [make_customer(id=f"sentinel-{i}") for i in range(SENTINELS)]
    store.write_batch(
        GraphBatch(
            customers=customers,
            influences=[make_influence(customers[0], customers[1]), make_influence(customers[1], customers[2])],
            referrals=[Referral(referrer_id="sentinel-0", friend_id="sentinel-2", at=BASE_TIME)],
        )
    )
    return customers


def labels(store: Store) -> dict[str, int]:
    """Nodes per label behind the store's back (Neo4j), or rows per table (SQLite)."""
    if isinstance(store, SqliteStore):
        return {}
    with raw_driver() as driver:
        rows = query(driver, "MATCH (n) UNWIND labels(n) AS label RETURN label, count(*) AS n")
    return {row["label"]: row["n"] for row in rows}


# --- the customer graph --------------------------------------------------------------------------------------------
def test_hostile_text_in_customers_edges_and_events_is_stored_as_data(store: Store) -> None:
    sentinels = sentinel_graph(store)
    before = labels(store)
    customers, events = [], []
    for i, text in enumerate(HOSTILE):
        customers.append(
            make_customer(
                id=f"inj-{i}",
                name=text,
                email=email_of(text, i),
                phone=text[:32],
                attributes={"note": text, "plan": text},
            )
        )
        events.append(
            Event(id=text, customer_id=f"inj-{i}", kind=EventKind.PURCHASE, at=AT, attributes={"product": text})
        )
    referrals = [
        Referral(referrer_id=f"inj-{i}", friend_id="sentinel-1", code=text[:64], at=AT)
        for i, text in enumerate(HOSTILE)
    ]
    store.write_batch(GraphBatch(customers=customers, referrals=referrals, events=events))

    for customer in customers:
        assert store.get_customer(customer.id) == customer
    for event in events:
        assert store.events_of(event.customer_id) == [event]
    assert [store.get_customer(c.id) for c in sentinels] == sentinels
    stats = store.stats()
    assert stats.customers == SENTINELS + len(HOSTILE)
    assert stats.edges == {EdgeType.INFLUENCES.value: 2, EdgeType.REFERRED.value: 1 + len(HOSTILE)}
    after = labels(store)
    assert set(after) <= set(before) | {"Event"}
    assert all(after[label] >= count for label, count in before.items())


# --- the referral programme --------------------------------------------------------------------------------------
class Plan:
    """Holds every conversion for review, with hostile text in the grants, the verdict and the notes."""

    def __init__(self, text: str, order_id: str, referrer: str, friend: str, campaign: str) -> None:
        self.text, self.order_id, self.referrer, self.friend, self.campaign = text, order_id, referrer, friend, campaign

    def grant(self, side: RewardSide, customer: str) -> RewardGrant:
        rule = "referrer-credit" if side is RewardSide.REFERRER else "friend-discount"
        return RewardGrant(
            id=f"{self.order_id}:{rule}",
            customer_id=customer,
            campaign_id=self.campaign,
            rule_id=rule,
            side=side,
            kind=RewardKind.CREDIT,
            amount_minor=1000,
            currency="EUR",
            description=self.text,
            conversion_id=self.order_id,
            state=RewardState.HELD,
            approve_after=AT + timedelta(days=14),
            review_deadline=AT + timedelta(days=7),
        )

    def __call__(self, history: RewardHistory) -> Settlement:
        verdict = FraudVerdict(
            action=FraudAction.HOLD,
            score=1.5,
            signals=(FraudSignal(rule="shared_device", weight=1.5, detail=self.text),),
        )
        return Settlement(
            status=ConversionStatus.HELD,
            attribution=None,
            verdict=verdict,
            grants=(self.grant(RewardSide.REFERRER, self.referrer), self.grant(RewardSide.FRIEND, self.friend)),
            notes=(self.text,),
        )


def test_hostile_text_in_campaigns_codes_clicks_orders_reviews_refunds_and_the_ledger_is_stored_as_data(
    store: Store,
) -> None:
    sentinels = sentinel_graph(store)
    before = labels(store)
    for i, text in enumerate(HOSTILE):
        referrer, friend = make_customer(id=f"ref-{i}", name=text), make_customer(id=f"fri-{i}", name=text)
        store.upsert_customers([referrer, friend])
        campaign = make_campaign(
            id=f"camp-{i}",
            name=text,
            friend_offer=text,
            landing_url=f"/landing/{{code}}?from={text}",
            rewards=(
                RewardRule(
                    id="referrer-credit",
                    side=RewardSide.REFERRER,
                    kind=RewardKind.CREDIT,
                    amount_minor=1000,
                    description=text,
                ),
            ),
        )
        store.save_campaign(campaign)
        assert store.get_campaign(campaign.id) == campaign
        code = store.create_code(make_code(referrer, campaign, code=f"INJ{i:04d}", vanity=True))
        assert store.get_code(code.code) == code
        click = make_click(code, id=f"click{i:06d}", visitor=text, source=text, ip_hash=text)
        store.record_click(click)
        assert store.get_click(click.id) == click
        attribution = make_attribution(code)
        signup_signals = (Signal(kind=SignalKind.DEVICE, value=text),)
        store.record_signup(make_signup(friend, code=code.code, click_id=click.id, signals=signup_signals), attribution)
        order = make_order(friend, id=text, code=code.code, signals=(Signal(kind=SignalKind.PAYMENT, value=text),))
        store.record_order(order)
        plan = Plan(text, order.id, referrer.id, friend.id, campaign.id)
        held = store.settle_conversion(order.id, attribution, plan.__call__, at=AT)
        assert held.status is ConversionStatus.HELD
        assert held.verdict is not None
        assert held.verdict.signals[0].detail == text
        assert held.notes == (text,)
        reviewed = store.review_conversion(
            order.id, approve=True, reviewer=text, note=text, at=AT, approve_after=AT + timedelta(days=14)
        )
        assert (reviewed.reviewed_by, reviewed.review_note) == (text, text)
        (reward_id, _) = sorted(reviewed.reward_ids)
        reward = store.transition_reward(reward_id, RewardState.APPROVED, at=AT + timedelta(days=15), reason=text)
        assert reward.description == text
        assert store.ledger_entries(reward_id=reward_id)[-1].reason == text
        refunded = store.record_refund(make_refund(order, id=text, reason=text[:200]), at=AT + timedelta(days=20))
        stored: Conversion = store.get_conversion(order.id)
        assert stored == refunded
        assert stored.order == order
        assert stored.status is ConversionStatus.REVERSED

    assert [store.get_customer(c.id) for c in sentinels] == sentinels
    stats = store.stats()
    assert stats.customers == SENTINELS + 2 * len(HOSTILE)
    assert stats.edges[EdgeType.INFLUENCES.value] == 2
    referred = {(e.source, e.target): e.label for e in store.iter_edges(EdgeType.REFERRED)}
    assert referred.pop(("sentinel-0", "sentinel-2")) == ReferralStatus.CLICKED.value
    assert set(referred) == {(f"ref-{i}", f"fri-{i}") for i in range(len(HOSTILE))}
    counts = store.program_counts()
    assert (counts.advocates_with_code, counts.clicks, counts.signups) == (len(HOSTILE),) * 3
    assert {status: n for status, n in counts.conversions.items() if n} == {ConversionStatus.REVERSED: len(HOSTILE)}
    after = labels(store)
    assert all(after[label] >= count for label, count in before.items())


def test_a_vanity_code_cannot_carry_query_text() -> None:
    """Codes are 4-32 letters or digits: a request is refused or loses every quote, brace, `$` and space."""
    for text in HOSTILE:
        try:
            code = validate_vanity(text)
        except InvalidInput:
            continue
        assert re.fullmatch(r"[A-Z0-9]{4,32}", code), code
        assert ReferralCode(code=text, customer_id="c1", campaign_id="camp", created_at=BASE_TIME).code == code
    with pytest.raises(ValidationError):
        ReferralCode(code="') DETACH DELETE n //", customer_id="c1", campaign_id="camp", created_at=BASE_TIME)


# --- templates and outreach ----------------------------------------------------------------------------------------
def test_hostile_text_in_templates_outreach_plans_and_outbox_messages_is_stored_as_data(store: Store) -> None:
    sentinels = sentinel_graph(store)
    before = labels(store)
    campaign: Campaign = make_campaign(id="camp-outreach")
    store.save_campaign(campaign)
    for i, text in enumerate(HOSTILE):
        template = make_template(id=f"tpl-{i}", body=text, subject=text[:500], updated_by=text[:200])
        store.save_template(template)
        assert store.get_template(template.id) == template
        outreach = make_outreach(
            campaign.id,
            id=f"out-{i}",
            name=text,
            audience=Audience(kind=AudienceKind.CUSTOMERS, customer_ids=("sentinel-0",)),
        )
        store.save_outreach(outreach)
        assert store.get_outreach(outreach.id) == outreach
        message = make_message(outreach, "sentinel-0", detail=text, to_address=email_of(text, i))
        assert store.enqueue_messages([message]) == 1
        assert store.get_message(message.key) == message
        assert message.person_key == customer_key("sentinel-0")

    assert {t.id for t in store.list_templates()} >= {f"tpl-{i}" for i in range(len(HOSTILE))}
    assert [store.get_customer(c.id) for c in sentinels] == sentinels
    assert store.stats().customers == SENTINELS
    after = labels(store)
    assert all(after[label] >= count for label, count in before.items())
