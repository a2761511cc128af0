"""What only Neo4j can get wrong in the outbox: claims racing across processes, locks taken before reads, the graph.

The shared behaviour is in `tests/contract/test_outreach_*.py`; these tests need the real server
(`bash scripts/neo4j-up.sh`, or `ADVOCACY_TEST_NEO4J_URL`). Each racing worker opens its own `Neo4jStore`, so
each has its own driver and connection pool, as separate Celery processes would.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import pytest
from neo4j import Driver

from graph import outreach_cypher
from graph.model import ContactChannel
from graph.neo4j_store import Neo4jStore
from graph.outreach import HoldReason, MessageKind, MessageStatus, OutboxMessage, Outreach, customer_key
from tests.contract.conftest import email_key, save_outreach_plan
from tests.factories import BASE_TIME, make_customer
from tests.neo4j_support import fresh_neo4j, hold_while, neo4j_workers, open_neo4j, query, raw_driver
from tests.outreach_factories import make_message, make_suppression, make_template
from tests.program_factories import make_campaign

pytestmark = pytest.mark.neo4j

LEASE_S = 30.0
FRIEND_ADDRESS = "friend@example.org"


@pytest.fixture
def store() -> Iterator[Neo4jStore]:
    with fresh_neo4j() as opened:
        yield opened


@pytest.fixture
def driver() -> Iterator[Driver]:
    with raw_driver() as raw:
        yield raw


workers = neo4j_workers


def race(jobs: list[Callable[[], Any]], *, timeout_s: float = 120) -> list[Any]:
    """Run `jobs` in threads released together by a barrier; return what each returned, failing on any error."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(index: int, job: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=item) for item in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout_s)
    assert not any(thread.is_alive() for thread in threads), "a worker is still running: a lock never came free"
    assert errors == []
    return results


def people(outreach: Outreach, n: int) -> list[OutboxMessage]:
    return [make_message(outreach, f"c-{i:03d}") for i in range(n)]


def invitation_of(outreach: Outreach, advocate: str) -> OutboxMessage:
    friend = email_key(FRIEND_ADDRESS)
    return make_message(
        outreach,
        advocate,
        key=f"{outreach.id}:invite:{friend}",
        person_key=friend,
        kind=MessageKind.INVITATION,
        to_address=FRIEND_ADDRESS,
    )


# --- races -------------------------------------------------------------------------------------------------------
def test_four_workers_claiming_the_same_messages_side_by_side_claim_each_exactly_once(store: Neo4jStore) -> None:
    """All go through the messages in one order, so they reach each message at about the same moment."""
    outreach = save_outreach_plan(store)
    messages = people(outreach, 40)
    store.enqueue_messages(messages)

    def claim_all(worker: Neo4jStore) -> list[str]:
        return [m.key for m in messages if worker.claim_message(m.key, at=BASE_TIME, lease_s=LEASE_S) is not None]

    with workers(4) as stores:
        won = race([partial(claim_all, worker) for worker in stores])

    claims = Counter(key for keys in won for key in keys)
    assert claims == Counter({m.key: 1 for m in messages})
    assert {(m.status, m.attempts) for m in store.list_messages(outreach.id, limit=100)} == {(MessageStatus.SENDING, 1)}


def test_workers_draining_the_due_messages_together_send_each_once(store: Neo4jStore) -> None:
    """The dispatch loop: read what is due, claim each, send, finish; several workers at once."""
    outreach = save_outreach_plan(store)
    messages = people(outreach, 30)
    store.enqueue_messages(messages)
    now = BASE_TIME + timedelta(minutes=1)

    def drain(worker: Neo4jStore) -> list[str]:
        sent: list[str] = []
        while due := worker.due_messages(now=now, limit=7):
            for message in due:
                if worker.claim_message(message.key, at=now, lease_s=LEASE_S) is not None:
                    worker.finish_message(message.key, MessageStatus.SENT, at=now, provider_id=f"p-{message.key}")
                    sent.append(message.key)
        return sent

    with workers(3) as stores:
        sent = race([partial(drain, worker) for worker in stores])

    assert sorted(key for keys in sent for key in keys) == sorted(m.key for m in messages)
    counts = store.outbox_counts(outreach.id)
    assert counts.by_status[MessageStatus.SENT] == len(messages)
    assert {m.attempts for m in store.list_messages(outreach.id, limit=100)} == {1}


def test_after_a_worker_dies_exactly_one_of_the_racing_workers_takes_its_message_over(store: Neo4jStore) -> None:
    outreach = save_outreach_plan(store)
    message = make_message(outreach, "c-ann")
    store.enqueue_messages([message])
    dead = store.claim_message(message.key, at=BASE_TIME, lease_s=LEASE_S)
    assert dead is not None
    assert dead.lease_until is not None
    still_leased, expired = dead.lease_until - timedelta(microseconds=1), dead.lease_until + timedelta(seconds=1)

    with workers(4) as stores:
        early = race([partial(w.claim_message, message.key, at=still_leased, lease_s=LEASE_S) for w in stores])
        late = race([partial(w.claim_message, message.key, at=expired, lease_s=LEASE_S) for w in stores])

    assert early == [None] * 4
    [taken] = [claim for claim in late if claim is not None]
    assert (taken.status, taken.attempts, taken.lease_until) == (
        MessageStatus.SENDING,
        2,
        expired + timedelta(seconds=LEASE_S),
    )
    assert store.get_message(message.key) == taken


def test_concurrent_enqueues_of_one_plan_insert_each_key_once(store: Neo4jStore, driver: Driver) -> None:
    outreach = save_outreach_plan(store)
    store.upsert_customers([make_customer(id=f"c-{i:03d}") for i in range(25)])
    messages = people(outreach, 25)

    with workers(3) as stores:
        batches = [random.Random(seed).sample(messages, len(messages)) for seed in range(len(stores))]
        created = race([partial(w.enqueue_messages, batch) for w, batch in zip(stores, batches, strict=True)])

    assert sum(created) == len(messages)
    rows = query(
        driver,
        "MATCH (m:OutboxMessage) RETURN count(m) AS messages, "
        "sum(COUNT { (m)-[:OF]->() }) AS of, sum(COUNT { (m)-[:TO]->() }) AS to",
    )
    assert rows == [{"messages": 25, "of": 25, "to": 25}]


# --- locks are taken before the state they guard is read ----------------------------------------------------------
def test_a_claim_waits_for_a_writer_holding_the_message_and_then_sees_its_outcome(
    store: Neo4jStore, driver: Driver
) -> None:
    outreach = save_outreach_plan(store)
    message = make_message(outreach, "c-ann")
    store.enqueue_messages([message])

    waited, claimed = hold_while(
        driver,
        lambda tx: tx.run(
            "MATCH (m:OutboxMessage {key: $key}) SET m.status = 'held', m.reason = 'cap'", key=message.key
        ).consume(),
        lambda: store.claim_message(message.key, at=BASE_TIME, lease_s=LEASE_S),
    )

    assert waited, "claim_message did not wait for the message's lock"
    assert claimed is None
    assert store.get_message(message.key).status is MessageStatus.HELD


def test_finishing_waits_for_a_claim_in_flight(store: Neo4jStore, driver: Driver) -> None:
    outreach = save_outreach_plan(store)
    message = make_message(outreach, "c-ann")
    store.enqueue_messages([message])
    assert store.claim_message(message.key, at=BASE_TIME, lease_s=LEASE_S) is not None

    waited, finished = hold_while(
        driver,
        lambda tx: tx.run(outreach_cypher.LOCK_MESSAGE, key=message.key).consume(),
        lambda: store.finish_message(message.key, MessageStatus.SENT, at=BASE_TIME, provider_id="p-1"),
    )

    assert waited, "finish_message did not wait for the message's lock"
    assert isinstance(finished, OutboxMessage)
    assert finished.status is MessageStatus.SENT


# --- the graph as marketers query it ------------------------------------------------------------------------------
def test_the_outbox_is_a_graph_around_the_plan_its_campaign_and_the_customers(
    store: Neo4jStore, driver: Driver
) -> None:
    advocate = make_customer(id="c-ann")
    store.upsert_customers([advocate])
    outreach = save_outreach_plan(store)
    store.enqueue_messages([make_message(outreach, advocate), invitation_of(outreach, advocate.id)])

    rows = query(
        driver,
        "MATCH (camp:Campaign)<-[:FOR]-(o:Outreach)<-[:OF]-(m:OutboxMessage)-[:TO]->(c:Customer), "
        "(o)<-[:OF]-(i:OutboxMessage {kind: 'invitation'})-[:ON_BEHALF_OF]->(c) "
        "RETURN camp.id AS campaign, o.id AS outreach, c.id AS customer, m.key AS message, "
        "i.person_key AS friend, COUNT { (i)-[:TO]->() } AS invitation_to_a_node, "
        "COUNT { (m)-[:ON_BEHALF_OF]->() } AS on_own_behalf",
    )

    assert rows == [
        {
            "campaign": outreach.campaign_id,
            "outreach": outreach.id,
            "customer": advocate.id,
            "message": f"{outreach.id}:invite:{customer_key(advocate.id)}",
            "friend": email_key(FRIEND_ADDRESS),
            "invitation_to_a_node": 0,
            "on_own_behalf": 0,
        }
    ]


def test_an_outreach_moved_to_another_campaign_is_drawn_to_that_one_alone(store: Neo4jStore, driver: Driver) -> None:
    outreach = save_outreach_plan(store)
    other = make_campaign()
    store.save_campaign(other)

    store.save_outreach(outreach.model_copy(update={"campaign_id": other.id}))
    store.save_outreach(outreach.model_copy(update={"campaign_id": other.id}))

    rows = query(driver, "MATCH (:Outreach {id: $id})-[:FOR]->(c:Campaign) RETURN c.id AS campaign", id=outreach.id)
    assert rows == [{"campaign": other.id}]


def test_a_suppression_is_one_node_per_person_and_channel_with_a_star_for_every_channel(
    store: Neo4jStore, driver: Driver
) -> None:
    person = customer_key("c-ann")
    store.suppress(make_suppression(person))
    store.suppress(make_suppression(person, at=BASE_TIME + timedelta(days=1)))
    store.suppress(make_suppression(person, channel=ContactChannel.SMS, reason=HoldReason.DECLINED))

    rows = query(
        driver,
        "MATCH (s:Suppression {person_key: $person}) RETURN s.channel_key AS channel_key, s.reason AS reason "
        "ORDER BY channel_key",
        person=person,
    )

    assert rows == [
        {"channel_key": outreach_cypher.ALL_CHANNELS, "reason": "unsubscribed"},
        {"channel_key": "sms", "reason": "declined"},
    ]


def test_erasing_an_advocate_keeps_the_invitation_but_no_edge_or_id_that_leads_back_to_them(
    store: Neo4jStore, driver: Driver
) -> None:
    advocate = make_customer(id="c-ann")
    store.upsert_customers([advocate])
    outreach = save_outreach_plan(store)
    invitation = invitation_of(outreach, advocate.id)
    store.enqueue_messages([invitation])

    store.erase_customer(advocate.id)

    rows = query(
        driver,
        "MATCH (m:OutboxMessage {key: $key}) "
        "RETURN m.customer_id AS customer_id, COUNT { (m)--(:Customer) } AS customers, COUNT { (m)-[:OF]->() } AS of",
        key=invitation.key,
    )
    assert rows == [{"customer_id": None, "customers": 0, "of": 1}]


def test_no_lock_or_bookkeeping_property_is_left_on_any_outreach_node(store: Neo4jStore, driver: Driver) -> None:
    store.save_template(make_template())
    outreach = save_outreach_plan(store)
    messages = people(outreach, 3)
    store.enqueue_messages(messages)
    at: datetime = BASE_TIME
    for message, status, extra in (
        (messages[0], MessageStatus.SENT, {}),
        (messages[1], MessageStatus.HELD, {"reason": HoldReason.CAP}),
        (messages[2], MessageStatus.QUEUED, {"not_before": at + timedelta(hours=1)}),
    ):
        assert store.claim_message(message.key, at=at, lease_s=LEASE_S) is not None
        store.finish_message(message.key, status, at=at, **extra)
    store.suppress(make_suppression(email_key(FRIEND_ADDRESS)))

    leftovers = query(driver, "MATCH (n) UNWIND keys(n) AS key WITH key WHERE key STARTS WITH '_' RETURN DISTINCT key")

    assert leftovers == []


def test_outreach_constraints_and_indexes_exist_after_open(driver: Driver) -> None:
    open_neo4j().close()

    online = query(
        driver,
        "SHOW INDEXES YIELD name, state WHERE name IN $names AND state = 'ONLINE' RETURN name",
        names=list(outreach_cypher.OUTREACH_SCHEMA_NAMES),
    )

    assert sorted(row["name"] for row in online) == sorted(outreach_cypher.OUTREACH_SCHEMA_NAMES)
    unique = {
        (tuple(row["labelsOrTypes"]), tuple(row["properties"]))
        for row in query(driver, "SHOW CONSTRAINTS YIELD labelsOrTypes, properties RETURN labelsOrTypes, properties")
    }
    for label, props in [
        ("Template", ("id",)),
        ("Outreach", ("id",)),
        ("OutboxMessage", ("key",)),
        ("Suppression", ("person_key", "channel_key")),
    ]:
        assert ((label,), props) in unique
