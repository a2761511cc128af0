"""The whole referral flow, code to click to signup to purchase to approved reward to clawback, on both stores.

This is the issue's "done when": the same steps against the real Neo4j and the embedded SQLite file, through the
service the API and the workers call.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from engine.referrals import ReferralService
from engine.settings import ReferralSettings
from graph.model import EdgeType, ReferralStatus
from graph.program import (
    CodeStatus,
    ConversionStatus,
    Order,
    Refund,
    RewardState,
    Signal,
    SignalKind,
    Signup,
    balances_from_entries,
)
from graph.program_store import Store
from graph.sqlite_store import SqliteStore
from tests.factories import BASE_TIME, Clock, make_customer
from tests.neo4j_support import open_neo4j
from tests.program_factories import make_campaign


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SqliteStore(tmp_path / "flow.db")
    else:
        opened = open_neo4j()
        opened.delete_all()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(BASE_TIME)


@pytest.fixture
def service(store: Store, clock: Clock) -> ReferralService:
    return ReferralService(store, ReferralSettings(), clock=clock)


def referred_status(store: Store, referrer: str, friend: str) -> str | None:
    for edge in store.iter_edges(EdgeType.REFERRED):
        if (edge.source, edge.target) == (referrer, friend):
            return edge.label
    return None


def test_code_click_signup_purchase_approval_and_clawback(store: Store, service: ReferralService, clock: Clock) -> None:
    jane = make_customer(id="jane", name="Jane Doe", email="jane@example.com")
    store.upsert_customers([jane])
    campaign = service.create_campaign(make_campaign(id="spring", hold_days=14))
    code = service.issue_code("jane", "spring")
    assert code.code.startswith("JANE")
    assert store.get_code(code.code).customer_id == "jane"

    clock.advance(hours=1)
    outcome = service.click(
        code.code.lower(), ip="203.0.113.9", user_agent="Firefox", referer="https://www.instagram.com/p/x", cookie=None
    )
    assert outcome.attributable
    assert outcome.redirect_url == f"/landing/{code.code}"
    assert outcome.click.source == "instagram.com"
    assert outcome.click.ip_hash != "203.0.113.9"

    clock.advance(hours=1)
    tom = make_customer(id="tom", name="Tom", email="tom@example.org", phone="+33611111111", created_at=clock.now)
    attribution = service.signup(
        Signup(
            customer_id="tom",
            at=clock.now,
            click_id=outcome.click.id,
            signals=(Signal(kind=SignalKind.DEVICE, value="tom-phone"),),
        ),
        customer=tom,
    )
    assert attribution is not None
    assert attribution.referrer_id == "jane"
    assert referred_status(store, "jane", "tom") == ReferralStatus.SIGNED_UP

    clock.advance(days=1)
    order = Order(
        id="o-1", customer_id="tom", amount_minor=6000, currency="EUR", at=clock.now, click_id=outcome.click.id
    )
    conversion = service.process_order(order)
    assert conversion.status is ConversionStatus.ATTRIBUTED, conversion.verdict
    assert conversion.attribution is not None
    assert conversion.attribution.code == code.code
    assert referred_status(store, "jane", "tom") == ReferralStatus.CONVERTED
    rewards = {r.rule_id: r for r in store.list_rewards(conversion_id="o-1")}
    assert set(rewards) == {"referrer-credit", "friend-discount"}
    assert rewards["referrer-credit"].customer_id == "jane"
    assert rewards["friend-discount"].customer_id == "tom"
    assert {r.state for r in rewards.values()} == {RewardState.PENDING}
    assert any(note.startswith("third-badge: does not pay: milestone not reached") for note in conversion.notes)

    assert service.process_order(order) == conversion, "a redelivered order changes nothing"
    assert len(store.list_rewards(conversion_id="o-1")) == 2

    clock.advance(days=13)
    assert service.advance() == [], "nothing is approved inside the hold period"
    clock.advance(days=1, seconds=1)
    approved = service.advance()
    assert {r.id for r in approved} == {r.id for r in rewards.values()}
    report = service.fulfil()
    assert sorted(report.fulfilled) == sorted(r.id for r in rewards.values())
    assert not report.failed
    assert store.get_reward("o-1:referrer-credit").state is RewardState.FULFILLED

    clock.advance(days=30)
    reversed_conversion = service.process_refund(Refund(id="rf-1", order_id="o-1", amount_minor=6000, at=clock.now))
    assert reversed_conversion.status is ConversionStatus.REVERSED
    assert {r.state for r in store.list_rewards(conversion_id="o-1")} == {RewardState.REVERSED}
    assert referred_status(store, "jane", "tom") == ReferralStatus.REVERSED
    entries = store.ledger_entries(reward_id="o-1:referrer-credit")
    assert [e.to_state for e in entries] == [
        RewardState.PENDING,
        RewardState.APPROVED,
        RewardState.FULFILLED,
        RewardState.REVERSED,
    ]
    assert entries[-1].from_state is RewardState.FULFILLED, "a late refund claws back a paid reward"
    jane_balance = store.balances("jane")
    assert jane_balance == balances_from_entries(store.ledger_entries(customer_id="jane"))
    assert jane_balance[0].by_state[RewardState.REVERSED] == 1000
    assert jane_balance[0].by_state[RewardState.FULFILLED] == 0
    assert campaign.id == "spring"


def test_checkout_code_attributes_without_a_click_and_self_referral_is_rejected_with_reasons(
    store: Store, service: ReferralService, clock: Clock
) -> None:
    store.upsert_customers([make_customer(id="ann", name="Ann", email="ann@example.com")])
    service.create_campaign(make_campaign(id="summer"))
    code = service.issue_code("ann", "summer", vanity="ann-rocks")
    assert code.code == "ANNROCKS"
    assert code.vanity

    clock.advance(hours=3)
    friend = make_customer(id="bob", email="bob@example.net", created_at=BASE_TIME - timedelta(days=400))
    conversion = service.process_order(
        Order(id="o-2", customer_id="bob", amount_minor=3000, currency="EUR", at=clock.now, code="annrocks"),
        customer=friend,
    )
    assert conversion.status is ConversionStatus.ATTRIBUTED
    assert conversion.attribution is not None
    assert conversion.attribution.method.value == "checkout_code"

    own = service.process_order(
        Order(id="o-3", customer_id="ann", amount_minor=3000, currency="EUR", at=clock.now, code="ANNROCKS")
    )
    assert own.status is ConversionStatus.REJECTED
    assert own.verdict is not None
    assert any("self_referral" in reason for reason in own.verdict.reasons)
    assert store.list_rewards(conversion_id="o-3") == []


def test_held_conversion_pays_nothing_until_a_marketer_approves_and_expires_unreviewed(
    store: Store, service: ReferralService, clock: Clock
) -> None:
    store.upsert_customers([make_customer(id="eve", name="Eve", email="eve.smith@gmail.com")])
    service.create_campaign(make_campaign(id="autumn", review_days=7))
    code = service.issue_code("eve", "autumn")
    # Eve's second account: the same Gmail address written differently.
    for n, email in enumerate(["e.v.e.smith+1@gmail.com", "evesmith+2@googlemail.com"], start=1):
        alt = make_customer(id=f"alt{n}", email=email, created_at=clock.now)
        conversion = service.process_order(
            Order(id=f"h-{n}", customer_id=alt.id, amount_minor=2500, currency="EUR", at=clock.now, code=code.code),
            customer=alt,
        )
        assert conversion.status is ConversionStatus.HELD, conversion.verdict
        assert {r.state for r in store.list_rewards(conversion_id=f"h-{n}")} == {RewardState.HELD}

    approved = service.review("h-1", approve=True, reviewer="marketer@shop", note="checked: her sister")
    assert approved.status is ConversionStatus.ATTRIBUTED
    assert approved.reviewed_by == "marketer@shop"
    assert {r.state for r in store.list_rewards(conversion_id="h-1")} == {RewardState.PENDING}

    clock.advance(days=8)
    moved = service.advance()
    assert {r.conversion_id for r in moved if r.state is RewardState.REJECTED} == {"h-2"}
    assert store.get_conversion("h-2").status is ConversionStatus.REJECTED
    assert store.get_conversion("h-2").reviewed_by == "deadline"


def test_rotating_a_leaked_code_keeps_the_friends_who_clicked_before(
    store: Store, service: ReferralService, clock: Clock
) -> None:
    store.upsert_customers([make_customer(id="lea", name="Lea")])
    service.create_campaign(make_campaign(id="winter"))
    old = service.issue_code("lea", "winter")
    early = service.click(old.code, ip="198.51.100.7", user_agent="UA", referer=None, cookie=None)

    clock.advance(hours=1)
    new = service.rotate_code(old.code)
    assert new.code != old.code
    assert new.customer_id == "lea"
    assert store.get_code(old.code).status is CodeStatus.REVOKED
    assert store.get_code(old.code).replaced_by == new.code

    late = service.click(old.code, ip="192.0.2.1", user_agent="UA", referer="https://coupons.example", cookie=None)
    assert not late.attributable
    assert late.redirect_url == f"/landing/{new.code}"

    clock.advance(hours=1)
    honest = make_customer(id="honest", created_at=BASE_TIME - timedelta(days=100))
    stranger = make_customer(id="stranger", created_at=BASE_TIME - timedelta(days=100))
    kept = service.process_order(
        Order(id="k-1", customer_id="honest", amount_minor=2000, currency="EUR", at=clock.now, click_id=early.click.id),
        customer=honest,
    )
    lost = service.process_order(
        Order(
            id="k-2", customer_id="stranger", amount_minor=2000, currency="EUR", at=clock.now, click_id=late.click.id
        ),
        customer=stranger,
    )
    assert kept.status is ConversionStatus.ATTRIBUTED
    assert lost.status is ConversionStatus.UNATTRIBUTED
