"""Hypothesis drives the referral service through any sequence of orders, redeliveries, refunds, reviews and time.

Whatever the sequence, no conversion is rewarded twice, no rule pays beyond its caps or milestones, every reward
moved only along `REWARD_TRANSITIONS`, and balances equal the sum of ledger entries and the rewards' amounts by
state. It runs against the real embedded store (a fresh SQLite file per example), not a fake.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from engine.referrals import ReferralService
from engine.settings import ReferralSettings
from graph.program import (
    LIVE_REWARD_STATES,
    REWARD_TRANSITIONS,
    ConversionStatus,
    Order,
    Refund,
    RewardKind,
    RewardRule,
    RewardSide,
    RewardState,
    balances_from_entries,
)
from graph.sqlite_store import SqliteStore
from tests.factories import BASE_TIME, Clock, make_customer
from tests.program_factories import make_campaign

REFERRERS = ("r0", "r1")
FRIENDS = tuple(f"f{n}" for n in range(6))
RULES = (
    RewardRule(
        id="credit",
        side=RewardSide.REFERRER,
        kind=RewardKind.CREDIT,
        amount_minor=1000,
        max_per_customer=3,
        max_per_period=2,
        period_days=10,
    ),
    RewardRule(id="welcome", side=RewardSide.FRIEND, kind=RewardKind.DISCOUNT, amount_minor=500),
    RewardRule(id="second", side=RewardSide.REFERRER, kind=RewardKind.BADGE, milestone=2),
    RewardRule(id="share", side=RewardSide.REFERRER, kind=RewardKind.CASH, percent=5, min_order_minor=2000),
)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-"))
        self.store = SqliteStore(self.dir / "ledger.db")
        self.clock = Clock()
        self.service = ReferralService(self.store, ReferralSettings(), clock=self.clock)
        old = BASE_TIME - timedelta(days=1000)
        self.store.upsert_customers(
            [make_customer(id=c, email=f"{c}@example.com", phone=None, created_at=old) for c in REFERRERS + FRIENDS]
        )
        self.service.create_campaign(make_campaign(id="prop", rewards=RULES, hold_days=3, review_days=2))
        self.codes = [self.service.issue_code(r, "prop").code for r in REFERRERS]
        self.orders: list[Order] = []
        self.refunds: list[Refund] = []

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        referrer=st.integers(0, len(REFERRERS) - 1),
        friend=st.integers(0, len(FRIENDS) - 1),
        amount=st.integers(0, 9000),
    )
    def order(self, referrer: int, friend: int, amount: int) -> None:
        order = Order(
            id=f"o{len(self.orders)}",
            customer_id=FRIENDS[friend],
            amount_minor=amount,
            currency="EUR",
            at=self.clock.now,
            code=self.codes[referrer],
        )
        self.orders.append(order)
        self.service.process_order(order)

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def redeliver_order(self, data: st.DataObject) -> None:
        order = data.draw(st.sampled_from(self.orders))
        before = self.store.get_conversion(order.id)
        assert self.service.process_order(order) == before

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), share=st.sampled_from([0.5, 1.0]))
    def refund(self, data: st.DataObject, share: float) -> None:
        order = data.draw(st.sampled_from(self.orders))
        refund = Refund(
            id=f"rf{len(self.refunds)}",
            order_id=order.id,
            amount_minor=int(order.amount_minor * share),
            at=self.clock.now,
        )
        self.refunds.append(refund)
        self.service.process_refund(refund)

    @precondition(lambda self: self.refunds)
    @rule(data=st.data())
    def redeliver_refund(self, data: st.DataObject) -> None:
        refund = data.draw(st.sampled_from(self.refunds))
        before = self.store.get_conversion(refund.order_id)
        assert self.service.process_refund(refund) == before

    @rule(days=st.integers(0, 6))
    def time_passes(self, days: int) -> None:
        self.clock.now += timedelta(days=days, seconds=1)
        self.service.advance()

    @rule()
    def fulfil(self) -> None:
        self.service.fulfil()

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), approve=st.booleans())
    def review(self, data: st.DataObject, approve: bool) -> None:
        held = self.store.list_conversions(status=ConversionStatus.HELD)
        if held:
            order_id = data.draw(st.sampled_from([c.id for c in held]))
            self.service.review(order_id, approve=approve, reviewer="prop")

    @invariant()
    def no_conversion_is_rewarded_twice(self) -> None:
        rewards = self.store.list_rewards(limit=100_000)
        per_rule = Counter((r.conversion_id, r.rule_id) for r in rewards)
        assert max(per_rule.values(), default=0) <= 1
        live = [r for r in rewards if r.state in LIVE_REWARD_STATES]
        friend_live = Counter((r.customer_id, r.rule_id) for r in live if r.side is RewardSide.FRIEND)
        assert max(friend_live.values(), default=0) <= 1, "a friend-side reward pays on the first order only"
        milestone_live = Counter(r.customer_id for r in live if r.rule_id == "second")
        assert max(milestone_live.values(), default=0) <= 1
        credit_live = Counter(r.customer_id for r in live if r.rule_id == "credit")
        assert max(credit_live.values(), default=0) <= 3, "max_per_customer"
        for reward in rewards:
            conversion = self.store.get_conversion(reward.conversion_id)
            if conversion.status in (ConversionStatus.REVERSED, ConversionStatus.REJECTED):
                assert reward.state not in LIVE_REWARD_STATES, (reward, conversion.status)

    @invariant()
    def every_reward_moved_along_the_allowed_path(self) -> None:
        entries = defaultdict(list)
        for entry in self.store.ledger_entries():
            entries[entry.reward_id].append(entry)
        for reward in self.store.list_rewards(limit=100_000):
            path = entries[reward.id]
            assert path, reward.id
            state = None
            for entry in path:
                assert entry.from_state == state
                assert entry.to_state in REWARD_TRANSITIONS[state]
                assert entry.amount_minor == reward.amount_minor
                state = entry.to_state
            assert state == reward.state

    @invariant()
    def balances_equal_the_sum_of_entries_and_of_rewards(self) -> None:
        for customer in REFERRERS + FRIENDS:
            balances = self.store.balances(customer)
            assert balances == balances_from_entries(self.store.ledger_entries(customer_id=customer))
            by_state: dict[RewardState, int] = Counter()
            for reward in self.store.list_rewards(customer_id=customer, limit=100_000):
                by_state[reward.state] += reward.amount_minor
            got = {s: v for b in balances for s, v in b.by_state.items() if v}
            assert got == {s: v for s, v in by_state.items() if v}
            assert all(v >= 0 for b in balances for v in b.by_state.values())


LedgerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLedgerProperties = LedgerMachine.TestCase
