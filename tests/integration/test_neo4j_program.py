"""What only Neo4j can get wrong in the programme: locks taken before reads, races between workers, the graph model.

The shared behaviour is in `tests/contract/test_program_*.py`; these tests need the real server
(`bash scripts/neo4j-up.sh`, or `ADVOCACY_TEST_NEO4J_URL`). Each racing worker opens its own `Neo4jStore`, so
each has its own driver and connection pool, as separate Celery processes would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from neo4j import Driver

from graph import program_cypher
from graph.model import ReferralStatus
from graph.neo4j_store import Neo4jStore
from graph.program import (
    Attribution,
    CodeStatus,
    Conversion,
    ConversionStatus,
    Order,
    Reward,
    RewardHistory,
    RewardKind,
    RewardSide,
    RewardState,
    Settlement,
    Signal,
    SignalKind,
)
from graph.program_store import Plan
from tests.contract.conftest import (
    SETTLED_AT,
    RecordingPlan,
    add_friend,
    convert,
    make_grant,
    referred_edges,
    set_scene,
    settlement_for,
)
from tests.neo4j_support import fresh_neo4j, hold_while, neo4j_workers, open_neo4j, query, raw_driver
from tests.program_factories import make_attribution, make_click, make_order, make_refund, make_signup

pytestmark = pytest.mark.neo4j

LATER = SETTLED_AT + timedelta(days=2)
MILESTONE = 3


@pytest.fixture
def store() -> Iterator[Neo4jStore]:
    with fresh_neo4j() as opened:
        yield opened


@pytest.fixture
def driver() -> Iterator[Driver]:
    with raw_driver() as raw:
        yield raw


workers = neo4j_workers


@dataclass
class Race:
    """Runs callables in threads released together by a barrier; collects what each returned or raised."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)

    def run(self, jobs: dict[str, Callable[[], Any]], *, timeout_s: float = 120) -> None:
        barrier = threading.Barrier(len(jobs))

        def worker(name: str, job: Callable[[], Any]) -> None:
            barrier.wait()
            try:
                self.results[name] = job()
            except BaseException as exc:
                self.errors.append(exc)

        threads = [threading.Thread(target=worker, args=item) for item in jobs.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=timeout_s)
        assert not any(thread.is_alive() for thread in threads), "a worker is still running: a lock never came free"


def counting_plan(order: Order, attribution: Attribution, worker: str) -> Plan:
    """Like the reward rules: a credit naming which success this is, and a badge at the `MILESTONE`th.

    Pure, as Neo4j may call it again when it retries a transaction: the outcome depends on the history only.
    """

    def plan(history: RewardHistory) -> Settlement:
        success = history.successful_referrals + 1
        credit = make_grant(
            order,
            attribution.referrer_id,
            attribution.campaign_id,
            id=f"{order.id}:{worker}",
            description=f"success {success} after {len(history.referrer_rewards)} rewards",
        )
        grants = [credit]
        if success == MILESTONE:
            badge = make_grant(
                order, attribution.referrer_id, attribution.campaign_id, rule_id="third-badge", amount_minor=0
            )
            grants.append(badge.model_copy(update={"kind": RewardKind.BADGE}))
        return Settlement(status=ConversionStatus.ATTRIBUTED, attribution=attribution, grants=tuple(grants))

    return plan


# --- races -------------------------------------------------------------------------------------------------------
def test_workers_racing_on_one_referrers_conversions_settle_each_once_and_count_milestones_in_order(
    store: Neo4jStore,
) -> None:
    scene = set_scene(store)
    friends = [add_friend(store) for _ in range(5)]
    orders = [make_order(friend) for friend in friends]
    for order in orders:
        store.record_order(order)
    attribution = make_attribution(scene.code)
    jobs = [(order, copy) for order in orders for copy in ("one", "two")]
    race = Race()
    with workers(len(jobs)) as stores:
        race.run(
            {
                f"{order.id}:{copy}": partial(
                    worker.settle_conversion,
                    order.id,
                    attribution,
                    counting_plan(order, attribution, copy),
                    at=SETTLED_AT,
                )
                for worker, (order, copy) in zip(stores, jobs, strict=True)
            }
        )

    assert race.errors == []
    credits: dict[str, Reward] = {}
    for order in orders:
        stored = store.get_conversion(order.id)
        assert race.results[f"{order.id}:one"] == race.results[f"{order.id}:two"] == stored
        rewards = store.list_rewards(conversion_id=order.id)
        assert sorted(stored.reward_ids) == sorted(reward.id for reward in rewards)
        [credit] = [reward for reward in rewards if reward.kind is RewardKind.CREDIT]
        credits[order.id] = credit
        for reward in rewards:
            assert [entry.to_state for entry in store.ledger_entries(reward_id=reward.id)] == [RewardState.PENDING]
    assert sorted(credit.description for credit in credits.values()) == [
        f"success {n} after {n - 1 + (1 if n > MILESTONE else 0)} rewards" for n in range(1, len(orders) + 1)
    ]
    [badge] = [
        reward for reward in store.list_rewards(customer_id=scene.referrer.id) if reward.kind is RewardKind.BADGE
    ]
    assert credits[badge.conversion_id].description.startswith(f"success {MILESTONE} ")
    assert referred_edges(store) == {(scene.referrer.id, f.id): ReferralStatus.CONVERTED.value for f in friends}


def test_a_refund_racing_the_settlement_leaves_no_live_reward_whichever_wins(store: Neo4jStore) -> None:
    scene = set_scene(store)
    for _ in range(3):
        order = make_order(add_friend(store))
        store.record_order(order)
        attribution = make_attribution(scene.code)
        plan = RecordingPlan(settlement_for(order, attribution))
        race = Race()
        with workers(2) as (settler, refunder):
            race.run(
                {
                    "settle": partial(settler.settle_conversion, order.id, attribution, plan, at=SETTLED_AT),
                    "refund": partial(refunder.record_refund, make_refund(order), at=LATER),
                }
            )

        assert race.errors == []
        stored = store.get_conversion(order.id)
        assert (stored.status, stored.refunded_minor) == (ConversionStatus.REVERSED, order.amount_minor)
        assert {reward.state for reward in store.list_rewards(conversion_id=order.id)} <= {RewardState.REVERSED}
        for balance in store.balances(scene.referrer.id):
            assert sum(n for state, n in balance.by_state.items() if state is not RewardState.REVERSED) == 0


def test_concurrent_deliveries_of_one_order_make_one_conversion_and_one_set_of_signal_edges(
    store: Neo4jStore, driver: Driver
) -> None:
    scene = set_scene(store)
    order = make_order(scene.friend, signals=(Signal(kind=SignalKind.DEVICE, value="dev-shared"),))
    race = Race()
    with workers(4) as deliverers:
        race.run({str(n): partial(deliverer.record_order, order) for n, deliverer in enumerate(deliverers)})

    assert race.errors == []
    assert len({conversion.model_dump_json() for conversion in race.results.values()}) == 1
    rows = query(
        driver,
        "MATCH (b:Customer)-[p:PLACED]->(c:Conversion {order_id: $id}) "
        "RETURN b.id AS buyer, count(p) AS placed, COUNT { (b)-[:HAS_SIGNAL]->() } AS signals",
        id=order.id,
    )
    assert rows == [{"buyer": scene.friend.id, "placed": 1, "signals": 1}]


def test_concurrent_moves_of_one_reward_write_one_entry_per_state(store: Neo4jStore) -> None:
    scene = set_scene(store)
    reward_id = convert(store, scene).reward_ids[0]
    race = Race()
    with workers(4) as movers:
        race.run(
            {
                str(n): partial(mover.transition_reward, reward_id, RewardState.APPROVED, at=LATER, reason="checked")
                for n, mover in enumerate(movers)
            }
        )

    assert race.errors == []
    assert {reward.state for reward in race.results.values()} == {RewardState.APPROVED}
    assert [(e.from_state, e.to_state) for e in store.ledger_entries(reward_id=reward_id)] == [
        (None, RewardState.PENDING),
        (RewardState.PENDING, RewardState.APPROVED),
    ]


# --- locks are taken before the state they guard is read ----------------------------------------------------------
def test_settling_waits_for_a_writer_holding_the_conversion_and_then_sees_its_outcome(
    store: Neo4jStore, driver: Driver
) -> None:
    scene = set_scene(store)
    order = make_order(scene.friend)
    store.record_order(order)
    plan = RecordingPlan(settlement_for(order, make_attribution(scene.code)))

    waited, settled = hold_while(
        driver,
        lambda tx: tx.run(
            "MATCH (c:Conversion {order_id: $id}) SET c.status = 'unattributed', c.settled_at = datetime()", id=order.id
        ).consume(),
        lambda: store.settle_conversion(order.id, make_attribution(scene.code), plan, at=SETTLED_AT),
    )

    assert waited, "settle_conversion did not wait for the conversion's lock"
    assert isinstance(settled, Conversion)
    assert settled.status is ConversionStatus.UNATTRIBUTED
    assert plan.histories == []
    assert store.list_rewards() == []


def test_the_plan_reads_the_referrers_history_after_taking_the_referrers_lock(
    store: Neo4jStore, driver: Driver
) -> None:
    scene = set_scene(store)
    other = add_friend(store)
    elsewhere = make_order(other)
    store.record_order(elsewhere)
    order = make_order(scene.friend)
    store.record_order(order)
    plan = RecordingPlan(settlement_for(order, make_attribution(scene.code)))

    def attribute_elsewhere_under_the_referrers_lock(tx: Any) -> None:
        tx.run(program_cypher.LOCK_CUSTOMERS, ids=[scene.referrer.id]).consume()
        tx.run(
            "MATCH (c:Conversion {order_id: $id}) SET c.status = 'attributed', c.referrer_id = $referrer, "
            "c.campaign_id = $campaign, c.attributed_code = $code, c.method = 'click', c.touched_at = datetime()",
            id=elsewhere.id,
            referrer=scene.referrer.id,
            campaign=scene.campaign.id,
            code=scene.code.code,
        ).consume()

    waited, _ = hold_while(
        driver,
        attribute_elsewhere_under_the_referrers_lock,
        lambda: store.settle_conversion(order.id, make_attribution(scene.code), plan, at=SETTLED_AT),
    )

    assert waited, "settle_conversion did not wait for the referrer's lock"
    assert [history.successful_referrals for history in plan.histories] == [1]


def test_a_refund_waits_for_a_settlement_in_flight_and_reverses_its_rewards(store: Neo4jStore, driver: Driver) -> None:
    scene = set_scene(store)
    order = make_order(scene.friend)
    store.record_order(order)

    waited, refunded = hold_while(
        driver,
        lambda tx: tx.run(program_cypher.LOCK_CONVERSION, order_id=order.id).consume(),
        lambda: store.record_refund(make_refund(order), at=LATER),
    )

    assert waited, "record_refund did not wait for the conversion's lock"
    assert refunded.status is ConversionStatus.REVERSED


# --- the graph as marketers and fraud analysts query it -----------------------------------------------------------
def test_the_programme_is_a_graph_around_the_customers(store: Neo4jStore, driver: Driver) -> None:
    scene = set_scene(store)
    click = make_click(scene.code, customer_id=scene.friend.id)
    store.record_click(click)
    store.record_signup(make_signup(scene.friend, click_id=click.id), make_attribution(scene.code))
    converted = convert(store, scene)
    reward_id = f"{converted.id}:referrer-credit"
    store.record_refund(make_refund(converted.order, amount_minor=100), at=LATER)

    rows = query(
        driver,
        "MATCH (r:Customer)-[:OWNS]->(k:Code)-[:FOR]->(camp:Campaign), "
        "(f:Customer)-[:CLICKED]->(:Click)-[:VIA]->(k), (f)-[:SIGNED_UP]->(:Signup), "
        "(f)-[:PLACED]->(c:Conversion)-[:ATTRIBUTED_TO]->(r), (:Refund)-[:OF]->(c), "
        "(e:LedgerEntry)-[:MOVES]->(w:Reward {id: $reward})-[:EARNED_BY]->(r), (w)-[:FOR]->(c), "
        "(r)-[ref:REFERRED]->(f) "
        "RETURN r.id AS referrer, f.id AS friend, camp.id AS campaign, ref.status AS status, count(e) AS entries",
        reward=reward_id,
    )

    assert rows == [
        {
            "referrer": scene.referrer.id,
            "friend": scene.friend.id,
            "campaign": scene.campaign.id,
            "status": "converted",
            "entries": 1,
        }
    ]


def test_a_shared_device_is_one_signal_node_between_two_customers(store: Neo4jStore, driver: Driver) -> None:
    scene = set_scene(store)
    device = Signal(kind=SignalKind.DEVICE, value="dev-42")
    store.record_signup(make_signup(scene.referrer, signals=(device,)), None)
    store.record_order(make_order(scene.friend, signals=(device,)))

    rows = query(
        driver,
        "MATCH (a:Customer)-[:HAS_SIGNAL]->(s:Signal {kind: 'device'})<-[:HAS_SIGNAL]-(b:Customer) "
        "WHERE a.id < b.id RETURN a.id AS a, b.id AS b, s.value AS value",
    )

    first, second = sorted([scene.referrer.id, scene.friend.id])
    assert rows == [{"a": first, "b": second, "value": "dev-42"}]


def test_erasure_keeps_a_signal_another_customer_shares_and_drops_one_only_the_person_had(
    store: Neo4jStore, driver: Driver
) -> None:
    scene = set_scene(store)
    shared, own = Signal(kind=SignalKind.DEVICE, value="dev-both"), Signal(kind=SignalKind.DEVICE, value="dev-own")
    store.record_signup(make_signup(scene.referrer, signals=(shared,)), None)
    store.record_signup(make_signup(scene.friend, signals=(shared, own)), None)

    store.erase_customer(scene.friend.id)

    rows = query(driver, "MATCH (s:Signal) RETURN s.value AS value, COUNT { (s)<-[:HAS_SIGNAL]-() } AS holders")
    assert rows == [{"value": "dev-both", "holders": 1}]


def test_no_lock_or_bookkeeping_property_is_left_on_any_node(store: Neo4jStore, driver: Driver) -> None:
    scene = set_scene(store)
    store.record_click(make_click(scene.code))
    store.record_signup(make_signup(scene.friend), make_attribution(scene.code))
    converted = convert(store, scene, status=ConversionStatus.HELD)
    store.review_conversion(converted.id, approve=True, reviewer="mia", note="", at=LATER, approve_after=LATER)
    store.advance_rewards(LATER + timedelta(days=1))
    store.set_code_status(scene.code.code, CodeStatus.PAUSED, at=LATER)

    leftovers = query(driver, "MATCH (n) UNWIND keys(n) AS key WITH key WHERE key STARTS WITH '_' RETURN DISTINCT key")

    assert leftovers == []
    assert {r.state for r in store.list_rewards()} == {RewardState.APPROVED}


def test_programme_constraints_and_indexes_exist_after_open(driver: Driver) -> None:
    open_neo4j().close()

    online = query(
        driver,
        "SHOW INDEXES YIELD name, state WHERE name IN $names AND state = 'ONLINE' RETURN name",
        names=list(program_cypher.PROGRAM_SCHEMA_NAMES),
    )

    assert sorted(row["name"] for row in online) == sorted(program_cypher.PROGRAM_SCHEMA_NAMES)
    unique = {
        (tuple(row["labelsOrTypes"]), tuple(row["properties"]))
        for row in query(driver, "SHOW CONSTRAINTS YIELD labelsOrTypes, properties RETURN labelsOrTypes, properties")
    }
    for label, prop in [("Code", "code"), ("Conversion", "order_id"), ("Reward", "id"), ("LedgerEntry", "id")]:
        assert ((label,), (prop,)) in unique


def test_an_order_id_that_looks_like_cypher_is_stored_verbatim(store: Neo4jStore) -> None:
    scene = set_scene(store)
    order = make_order(scene.friend, id="x'}) DETACH DELETE n //")

    store.record_order(order)

    assert store.get_conversion(order.id).order == order
    assert store.stats().customers == 2


def test_a_grant_for_the_friend_side_is_earned_by_the_friend_node(store: Neo4jStore, driver: Driver) -> None:
    scene = set_scene(store)
    converted = convert(store, scene)

    rows = query(
        driver,
        "MATCH (w:Reward {side: $side})-[:EARNED_BY]->(c:Customer) RETURN w.id AS reward, c.id AS customer",
        side=RewardSide.FRIEND.value,
    )

    assert rows == [{"reward": f"{converted.id}:friend-discount", "customer": scene.friend.id}]
