"""The outbox: each key enqueued once, each message claimed by one worker at a time, each outcome recorded once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from graph.errors import InvalidInput, LedgerConflict, NotFound
from graph.model import ContactChannel
from graph.outreach import HoldReason, MessageKind, MessageStatus, OutboxCounts, OutboxMessage, Outreach
from graph.program_store import Store
from graph.sqlite_store import SCHEMA_VERSION, SqliteStore
from tests.contract.conftest import email_key, save_outreach_plan, sqlite_file_of_schema, sqlite_schema_of
from tests.factories import BASE_TIME
from tests.outreach_factories import make_message

NOW = BASE_TIME
"""`make_message`'s default `not_before`: a fresh message is due from now on."""
LEASE_S = 30.0


def invitation(outreach: Outreach, advocate: str, friend_address: str, **overrides: Any) -> OutboxMessage:
    """A message to a friend who is not a customer, sent on `advocate`'s behalf."""
    person = email_key(friend_address)
    fields: dict[str, Any] = {
        "key": f"{outreach.id}:invite:{person}",
        "person_key": person,
        "kind": MessageKind.INVITATION,
        "to_address": friend_address,
    }
    fields.update(overrides)
    return make_message(outreach, advocate, **fields)


def claimed(store: Store, message: OutboxMessage, *, at: Any = NOW) -> OutboxMessage:
    """Enqueue `message` and claim it; fails the test if the claim is refused."""
    store.enqueue_messages([message])
    got = store.claim_message(message.key, at=at, lease_s=LEASE_S)
    assert got is not None, f"{message.key} should have been claimable"
    return got


def finished(store: Store, message: OutboxMessage, status: MessageStatus, **kwargs: Any) -> OutboxMessage:
    """Enqueue, claim and finish `message` with `status` at `NOW + 1 s`."""
    claimed(store, message)
    return store.finish_message(message.key, status, at=NOW + timedelta(seconds=1), **kwargs)


def nonzero(counts: dict[Any, int]) -> dict[Any, int]:
    """The counts that are not zero: a store may list every status or only those it has seen."""
    return {key: n for key, n in counts.items() if n}


# --- enqueue and read --------------------------------------------------------------------------------------------
def test_enqueued_messages_read_back_equal_and_the_count_says_how_many_were_new(store: Store) -> None:
    outreach = save_outreach_plan(store)
    marketing = make_message(outreach, "c-ann", variant_id="b", detail="spring")
    invite = invitation(outreach, "c-ann", "friend@example.org", channel=ContactChannel.EMAIL)
    notice = make_message(outreach, "c-bob", kind=MessageKind.TRANSACTIONAL, channel=ContactChannel.SMS)

    assert store.enqueue_messages([marketing, invite, notice]) == 3

    for message in (marketing, invite, notice):
        assert store.get_message(message.key) == message


def test_enqueueing_a_known_key_again_leaves_the_stored_message_as_it_was(store: Store) -> None:
    outreach = save_outreach_plan(store)
    first = make_message(outreach, "c-ann")
    claimed(store, first)
    sent = store.finish_message(first.key, MessageStatus.SENT, at=NOW, provider_id="p-1")
    newcomer = make_message(outreach, "c-bob")
    retried = first.model_copy(update={"variant_id": "b", "not_before": NOW + timedelta(days=1)})

    assert store.enqueue_messages([retried, newcomer]) == 1

    assert store.get_message(first.key) == sent
    assert store.get_message(newcomer.key) == newcomer


def test_a_key_given_twice_in_one_batch_is_inserted_once(store: Store) -> None:
    outreach = save_outreach_plan(store)
    message = make_message(outreach, "c-ann")
    twin = message.model_copy(update={"variant_id": "b"})

    assert store.enqueue_messages([message, twin]) == 1

    assert store.get_message(message.key) in (message, twin)
    assert [m.key for m in store.list_messages(outreach.id)] == [message.key]


def test_an_empty_batch_inserts_nothing(store: Store) -> None:
    assert store.enqueue_messages([]) == 0


def test_an_unknown_message_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_message("no-such-outreach:invite:customer:nobody")


# --- claiming ----------------------------------------------------------------------------------------------------
def test_claiming_a_due_message_marks_it_sending_under_a_lease(store: Store) -> None:
    outreach = save_outreach_plan(store)
    message = invitation(outreach, "c-ann", "friend@example.org")
    store.enqueue_messages([message])
    at = NOW + timedelta(minutes=5)

    got = store.claim_message(message.key, at=at, lease_s=LEASE_S)

    expected = message.model_copy(
        update={
            "status": MessageStatus.SENDING,
            "attempts": 1,
            "lease_until": at + timedelta(seconds=LEASE_S),
            "updated_at": at,
        }
    )
    assert got == expected
    assert store.get_message(message.key) == expected


def test_a_message_is_claimable_from_its_not_before_time_and_not_a_moment_earlier(store: Store) -> None:
    outreach = save_outreach_plan(store)
    later = NOW + timedelta(hours=3)
    message = make_message(outreach, "c-ann", not_before=later)
    store.enqueue_messages([message])

    assert store.claim_message(message.key, at=later - timedelta(microseconds=1), lease_s=LEASE_S) is None
    assert store.get_message(message.key) == message

    got = store.claim_message(message.key, at=later, lease_s=LEASE_S)
    assert got is not None
    assert got.status is MessageStatus.SENDING


def test_a_message_leased_to_one_worker_is_not_handed_to_another(store: Store) -> None:
    outreach = save_outreach_plan(store)
    first = claimed(store, make_message(outreach, "c-ann"))

    assert store.claim_message(first.key, at=NOW + timedelta(seconds=LEASE_S / 2), lease_s=LEASE_S) is None
    assert store.get_message(first.key) == first


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (MessageStatus.SENT, {"provider_id": "p-1"}),
        (MessageStatus.HELD, {"reason": HoldReason.CAP}),
        (MessageStatus.FAILED, {"detail": "mailbox full"}),
    ],
)
def test_a_finished_message_is_never_claimed_again(
    store: Store, status: MessageStatus, outcome: dict[str, Any]
) -> None:
    outreach = save_outreach_plan(store)
    done = finished(store, make_message(outreach, "c-ann"), status, **outcome)

    assert store.claim_message(done.key, at=NOW + timedelta(days=30), lease_s=LEASE_S) is None
    assert store.get_message(done.key) == done


def test_an_unknown_key_cannot_be_claimed(store: Store) -> None:
    assert store.claim_message("no-such-outreach:invite:customer:nobody", at=NOW, lease_s=LEASE_S) is None


def test_once_a_lease_runs_out_a_second_worker_claims_the_message_and_the_attempts_go_up(store: Store) -> None:
    """The first worker was killed between claim and finish; the message is neither lost nor sent twice."""
    outreach = save_outreach_plan(store)
    first = claimed(store, make_message(outreach, "c-ann"))
    assert first.lease_until is not None
    later = first.lease_until + timedelta(seconds=1)

    second = store.claim_message(first.key, at=later, lease_s=LEASE_S)

    assert second is not None
    assert (second.status, second.attempts) == (MessageStatus.SENDING, 2)
    assert (second.lease_until, second.updated_at) == (later + timedelta(seconds=LEASE_S), later)
    assert store.claim_message(first.key, at=later + timedelta(seconds=1), lease_s=LEASE_S) is None


def test_two_threads_claiming_the_same_message_at_once_get_exactly_one_claim(store: Store) -> None:
    outreach = save_outreach_plan(store)
    message = make_message(outreach, "c-ann")
    store.enqueue_messages([message])
    barrier = threading.Barrier(2)

    def claim() -> OutboxMessage | None:
        barrier.wait(timeout=10)
        return store.claim_message(message.key, at=NOW, lease_s=LEASE_S)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [future.result(timeout=30) for future in [pool.submit(claim) for _ in range(2)]]

    winners = [result for result in results if result is not None]
    assert len(winners) == 1
    assert store.get_message(message.key).attempts == 1


def test_two_workers_racing_through_the_same_messages_claim_each_exactly_once(store: Store) -> None:
    outreach = save_outreach_plan(store)
    messages = [make_message(outreach, f"c-race-{i:02d}") for i in range(20)]
    store.enqueue_messages(messages)
    barrier = threading.Barrier(2)

    def work() -> list[str]:
        barrier.wait(timeout=10)
        won = []
        for message in messages:
            got = store.claim_message(message.key, at=NOW, lease_s=LEASE_S)
            if got is not None:
                won.append(got.key)
        return won

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = (future.result(timeout=60) for future in [pool.submit(work) for _ in range(2)])

    assert sorted(first + second) == sorted(m.key for m in messages)
    assert {store.get_message(m.key).attempts for m in messages} == {1}


# --- finishing ---------------------------------------------------------------------------------------------------
def test_a_sent_message_records_when_and_the_provider_id_and_forgets_lease_and_address(store: Store) -> None:
    outreach = save_outreach_plan(store)
    sending = claimed(store, invitation(outreach, "c-ann", "friend@example.org"))
    at = NOW + timedelta(seconds=3)

    sent = store.finish_message(sending.key, MessageStatus.SENT, at=at, provider_id="smtp-4711")

    assert sent == sending.model_copy(
        update={
            "status": MessageStatus.SENT,
            "sent_at": at,
            "provider_id": "smtp-4711",
            "updated_at": at,
            "lease_until": None,
            "to_address": None,
        }
    )
    assert store.get_message(sending.key) == sent


def test_a_held_message_records_its_reason_and_detail(store: Store) -> None:
    outreach = save_outreach_plan(store)
    sending = claimed(store, invitation(outreach, "c-ann", "friend@example.org"))

    held = store.finish_message(
        sending.key, MessageStatus.HELD, at=NOW, reason=HoldReason.CAP, detail="1 message in 7 days"
    )

    assert (held.status, held.reason, held.detail) == (MessageStatus.HELD, HoldReason.CAP, "1 message in 7 days")
    assert (held.lease_until, held.to_address, held.sent_at) == (None, None, None)
    assert store.get_message(sending.key) == held


def test_a_failed_message_records_the_providers_error(store: Store) -> None:
    outreach = save_outreach_plan(store)
    sending = claimed(store, invitation(outreach, "c-ann", "friend@example.org"))

    failed = store.finish_message(sending.key, MessageStatus.FAILED, at=NOW, detail="550 no such mailbox")

    assert (failed.status, failed.detail, failed.attempts) == (MessageStatus.FAILED, "550 no such mailbox", 1)
    assert (failed.lease_until, failed.to_address, failed.sent_at) == (None, None, None)
    assert store.get_message(sending.key) == failed


def test_a_message_put_back_in_the_queue_keeps_its_note_and_address_and_waits_for_its_time(store: Store) -> None:
    outreach = save_outreach_plan(store)
    sending = claimed(store, invitation(outreach, "c-ann", "friend@example.org"))
    morning = NOW + timedelta(hours=9)

    queued = store.finish_message(
        sending.key,
        MessageStatus.QUEUED,
        at=NOW,
        reason=HoldReason.QUIET_HOURS,
        detail="after 08:00 Europe/Paris",
        not_before=morning,
    )

    assert (queued.status, queued.not_before) == (MessageStatus.QUEUED, morning)
    assert (queued.reason, queued.detail) == (HoldReason.QUIET_HOURS, "after 08:00 Europe/Paris")
    assert (queued.to_address, queued.attempts, queued.updated_at) == ("friend@example.org", 1, NOW)
    assert store.get_message(sending.key) == queued
    assert store.claim_message(sending.key, at=morning - timedelta(seconds=1), lease_s=LEASE_S) is None
    again = store.claim_message(sending.key, at=morning, lease_s=LEASE_S)
    assert again is not None
    assert (again.status, again.attempts) == (MessageStatus.SENDING, 2)


def test_holding_without_a_reason_or_requeueing_without_a_time_is_refused(store: Store) -> None:
    outreach = save_outreach_plan(store)
    sending = claimed(store, make_message(outreach, "c-ann"))

    with pytest.raises(InvalidInput):
        store.finish_message(sending.key, MessageStatus.HELD, at=NOW)
    with pytest.raises(InvalidInput):
        store.finish_message(sending.key, MessageStatus.QUEUED, at=NOW, reason=HoldReason.QUIET_HOURS)

    assert store.get_message(sending.key) == sending


def test_only_a_claimed_message_can_be_finished(store: Store) -> None:
    outreach = save_outreach_plan(store)
    queued = make_message(outreach, "c-ann")
    store.enqueue_messages([queued])

    with pytest.raises(LedgerConflict):
        store.finish_message(queued.key, MessageStatus.SENT, at=NOW)
    assert store.get_message(queued.key) == queued


def test_a_message_is_finished_once_and_a_second_outcome_is_a_conflict(store: Store) -> None:
    outreach = save_outreach_plan(store)
    sent = finished(store, make_message(outreach, "c-ann"), MessageStatus.SENT, provider_id="p-1")

    with pytest.raises(LedgerConflict):
        store.finish_message(sent.key, MessageStatus.FAILED, at=NOW + timedelta(minutes=1), detail="late")
    assert store.get_message(sent.key) == sent


def test_finishing_an_unknown_message_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.finish_message("no-such-outreach:invite:customer:nobody", MessageStatus.SENT, at=NOW)


# --- due messages ------------------------------------------------------------------------------------------------
def test_due_messages_are_those_a_worker_could_claim_by_not_before_then_key(store: Store) -> None:
    outreach = save_outreach_plan(store)
    early_b = make_message(outreach, "c-b", not_before=NOW - timedelta(hours=2))
    early_a = make_message(outreach, "c-a", not_before=NOW - timedelta(hours=2))
    on_time = make_message(outreach, "c-0", not_before=NOW)
    future = make_message(outreach, "c-future", not_before=NOW + timedelta(seconds=1))
    store.enqueue_messages([on_time, early_b, future, early_a])
    abandoned = claimed(store, make_message(outreach, "c-dead", not_before=NOW - timedelta(hours=1)), at=NOW)
    claimed(
        store, make_message(outreach, "c-busy", not_before=NOW - timedelta(hours=3)), at=NOW + timedelta(seconds=90)
    )
    finished(store, make_message(outreach, "c-done", not_before=NOW - timedelta(hours=4)), MessageStatus.SENT)
    assert abandoned.lease_until is not None
    now = abandoned.lease_until + timedelta(seconds=1)

    due = store.due_messages(now=now)

    assert [m.key for m in due] == [early_a.key, early_b.key, abandoned.key, on_time.key, future.key]
    assert due[2] == abandoned
    assert [m.key for m in store.due_messages(now=now, limit=2)] == [early_a.key, early_b.key]
    assert [m.key for m in store.due_messages(now=NOW)] == [early_a.key, early_b.key, on_time.key]


def test_due_messages_can_be_limited_to_one_outreach(store: Store) -> None:
    spring, autumn = save_outreach_plan(store), save_outreach_plan(store)
    store.enqueue_messages(
        [make_message(spring, "c-ann"), make_message(autumn, "c-ann"), make_message(autumn, "c-bob")]
    )

    assert {m.outreach_id for m in store.due_messages(now=NOW)} == {spring.id, autumn.id}
    assert [m.person_key for m in store.due_messages(now=NOW, outreach_id=autumn.id)] == [
        "customer:c-ann",
        "customer:c-bob",
    ]
    assert store.due_messages(now=NOW, outreach_id="no-such-outreach") == []


def test_nothing_is_due_in_an_empty_outbox(store: Store) -> None:
    assert store.due_messages(now=NOW) == []


# --- listing and counting ----------------------------------------------------------------------------------------
def test_messages_are_listed_by_key_in_pages(store: Store) -> None:
    outreach, other = save_outreach_plan(store), save_outreach_plan(store)
    messages = [make_message(outreach, f"c-{i:02d}") for i in (4, 0, 3, 1, 2)]
    store.enqueue_messages([*messages, make_message(other, "c-00")])
    keys = sorted(m.key for m in messages)

    first = store.list_messages(outreach.id, limit=2)
    second = store.list_messages(outreach.id, limit=2, after=first[-1].key)
    third = store.list_messages(outreach.id, limit=2, after=second[-1].key)

    assert [m.key for m in first + second + third] == keys
    assert len(third) == 1
    assert store.list_messages(outreach.id, after=keys[-1]) == []
    assert store.list_messages(outreach.id) == sorted(messages, key=lambda m: m.key)
    assert store.list_messages("no-such-outreach") == []


def test_messages_are_listed_by_status_and_by_hold_reason(store: Store) -> None:
    outreach = save_outreach_plan(store)
    queued = make_message(outreach, "c-queued")
    store.enqueue_messages([queued])
    sent = finished(store, make_message(outreach, "c-sent"), MessageStatus.SENT)
    capped = finished(store, make_message(outreach, "c-capped"), MessageStatus.HELD, reason=HoldReason.CAP)
    quiet = finished(
        store,
        make_message(outreach, "c-quiet"),
        MessageStatus.QUEUED,
        reason=HoldReason.QUIET_HOURS,
        not_before=NOW + timedelta(hours=8),
    )
    declined = finished(store, make_message(outreach, "c-declined"), MessageStatus.HELD, reason=HoldReason.DECLINED)

    assert store.list_messages(outreach.id, status=MessageStatus.SENT) == [sent]
    assert store.list_messages(outreach.id, status=MessageStatus.HELD) == sorted(
        [capped, declined], key=lambda m: m.key
    )
    assert store.list_messages(outreach.id, status=MessageStatus.QUEUED) == sorted([queued, quiet], key=lambda m: m.key)
    assert store.list_messages(outreach.id, reason=HoldReason.CAP) == [capped]
    assert store.list_messages(outreach.id, status=MessageStatus.HELD, reason=HoldReason.QUIET_HOURS) == []
    assert store.list_messages(outreach.id, status=MessageStatus.FAILED) == []


def test_outbox_counts_give_messages_by_status_held_ones_by_reason_and_status_per_variant(store: Store) -> None:
    outreach, other = save_outreach_plan(store), save_outreach_plan(store)
    store.enqueue_messages(
        [make_message(outreach, "c-q1"), make_message(outreach, "c-q2", variant_id="b"), make_message(other, "c-x")]
    )
    finished(store, make_message(outreach, "c-s1"), MessageStatus.SENT)
    finished(store, make_message(outreach, "c-s2", variant_id="b"), MessageStatus.SENT)
    finished(store, make_message(outreach, "c-s3", variant_id="b"), MessageStatus.SENT)
    finished(store, make_message(outreach, "c-h1"), MessageStatus.HELD, reason=HoldReason.CAP)
    finished(store, make_message(outreach, "c-h2", variant_id="b"), MessageStatus.HELD, reason=HoldReason.CAP)
    finished(store, make_message(outreach, "c-h3"), MessageStatus.HELD, reason=HoldReason.NO_CONSENT)
    finished(store, make_message(outreach, "c-f1"), MessageStatus.FAILED, detail="bounced")
    claimed(store, make_message(outreach, "c-busy", variant_id="b"))

    counts = store.outbox_counts(outreach.id)

    assert isinstance(counts, OutboxCounts)
    assert counts.outreach_id == outreach.id
    assert nonzero(counts.by_status) == {
        MessageStatus.QUEUED: 2,
        MessageStatus.SENDING: 1,
        MessageStatus.SENT: 3,
        MessageStatus.HELD: 3,
        MessageStatus.FAILED: 1,
    }
    assert nonzero(counts.held_by_reason) == {HoldReason.CAP: 2, HoldReason.NO_CONSENT: 1}
    assert {variant: nonzero(by_status) for variant, by_status in counts.by_variant.items()} == {
        "a": {MessageStatus.QUEUED: 1, MessageStatus.SENT: 1, MessageStatus.HELD: 2, MessageStatus.FAILED: 1},
        "b": {MessageStatus.QUEUED: 1, MessageStatus.SENDING: 1, MessageStatus.SENT: 2, MessageStatus.HELD: 1},
    }


def test_an_outreach_without_messages_counts_nothing(store: Store) -> None:
    outreach = save_outreach_plan(store)

    counts = store.outbox_counts(outreach.id)

    assert counts.outreach_id == outreach.id
    assert nonzero(counts.by_status) == {}
    assert nonzero(counts.held_by_reason) == {}
    assert all(nonzero(by_status) == {} for by_status in counts.by_variant.values())


# --- SQLite only -------------------------------------------------------------------------------------------------
def test_a_sqlite_file_of_schema_2_migrates_in_place_and_gains_the_outbox(tmp_path: Path) -> None:
    path = sqlite_file_of_schema(tmp_path / "v2.db", 2)

    store = SqliteStore(path)
    try:
        assert store.get_customer("ada").id == "ada"
        outreach = save_outreach_plan(store)
        message = make_message(outreach, "ada")
        assert store.enqueue_messages([message]) == 1
        assert store.get_message(message.key) == message
    finally:
        store.close()
    assert sqlite_schema_of(path) == SCHEMA_VERSION
