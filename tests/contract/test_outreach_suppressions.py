"""Suppressions, and what erasure and wiping do to everything outreach stores."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from graph.errors import NotFound
from graph.model import ContactChannel
from graph.outreach import Audience, AudienceKind, HoldReason, MessageKind, Suppression, customer_key
from graph.program_store import ERASED, Store
from graph.sqlite_store import SqliteStore
from tests.contract.conftest import email_key, find_stored, save_outreach_plan
from tests.contract.test_program_sqlite import file_bytes
from tests.factories import BASE_TIME, make_customer
from tests.outreach_factories import make_message, make_suppression, make_template

FRIEND = email_key("friend@example.org")


def by_channel(suppressions: list[Suppression]) -> list[Suppression]:
    """A stable order for comparing: the protocol does not fix one."""
    return sorted(suppressions, key=lambda s: (s.channel or "", s.at))


# --- suppressions ------------------------------------------------------------------------------------------------
def test_a_suppression_reads_back_equal_under_its_person_key(store: Store) -> None:
    unsubscribed = make_suppression(customer_key("c-ann"))
    declined = make_suppression(FRIEND, reason=HoldReason.DECLINED, channel=ContactChannel.EMAIL)

    store.suppress(unsubscribed)
    store.suppress(declined)

    assert store.suppressions([customer_key("c-ann"), FRIEND]) == {
        customer_key("c-ann"): [unsubscribed],
        FRIEND: [declined],
    }


def test_only_person_keys_that_have_suppressions_are_returned(store: Store) -> None:
    store.suppress(make_suppression(customer_key("c-ann")))

    found = store.suppressions([customer_key("c-bob"), customer_key("c-ann"), email_key("nobody@example.org")])

    assert list(found) == [customer_key("c-ann")]
    assert store.suppressions([customer_key("c-bob")]) == {}
    assert store.suppressions([]) == {}


def test_a_person_may_be_suppressed_on_several_channels_and_on_all_at_once(store: Store) -> None:
    person = customer_key("c-ann")
    everywhere = make_suppression(person, at=BASE_TIME + timedelta(days=2))
    by_email = make_suppression(person, channel=ContactChannel.EMAIL)
    by_sms = make_suppression(person, channel=ContactChannel.SMS, at=BASE_TIME + timedelta(days=1))
    for suppression in (everywhere, by_email, by_sms):
        store.suppress(suppression)

    assert by_channel(store.suppressions([person])[person]) == by_channel([everywhere, by_email, by_sms])


def test_suppressing_again_on_the_same_channel_keeps_the_earliest_record(store: Store) -> None:
    person = customer_key("c-ann")
    first = make_suppression(person, channel=ContactChannel.EMAIL, at=BASE_TIME)
    store.suppress(first)

    store.suppress(
        make_suppression(
            person, channel=ContactChannel.EMAIL, reason=HoldReason.DECLINED, at=BASE_TIME + timedelta(days=3)
        )
    )
    store.suppress(first)

    assert store.suppressions([person]) == {person: [first]}


def test_an_earlier_record_arriving_late_replaces_the_later_one(store: Store) -> None:
    person = customer_key("c-ann")
    later = make_suppression(person, at=BASE_TIME + timedelta(days=3))
    earlier = make_suppression(person, reason=HoldReason.DECLINED, at=BASE_TIME)

    store.suppress(later)
    store.suppress(earlier)

    assert store.suppressions([person]) == {person: [earlier]}


def test_the_same_person_key_asked_twice_is_answered_once(store: Store) -> None:
    suppression = make_suppression(FRIEND)
    store.suppress(suppression)

    assert store.suppressions([FRIEND, FRIEND]) == {FRIEND: [suppression]}


# --- lifting -----------------------------------------------------------------------------------------------------
def suppress_everywhere_and_by_email_and_sms(store: Store, person: str) -> list[Suppression]:
    """A global unsubscribe and two channels left through their own links, all before `BASE_TIME + 3 days`."""
    suppressions = [
        make_suppression(person, at=BASE_TIME + timedelta(days=2)),
        make_suppression(person, channel=ContactChannel.EMAIL),
        make_suppression(person, channel=ContactChannel.SMS, at=BASE_TIME + timedelta(days=1)),
    ]
    for suppression in suppressions:
        store.suppress(suppression)
    return suppressions


LATER = BASE_TIME + timedelta(days=3)


def test_lifting_every_suppression_of_a_person_leaves_others_alone(store: Store) -> None:
    ann, bob = customer_key("c-ann"), customer_key("c-bob")
    suppress_everywhere_and_by_email_and_sms(store, ann)
    bobs = make_suppression(bob)
    friends = make_suppression(FRIEND, reason=HoldReason.DECLINED)
    store.suppress(bobs)
    store.suppress(friends)

    assert store.lift_suppressions(ann, None, at=LATER) == 3

    assert store.suppressions([ann, bob, FRIEND]) == {bob: [bobs], FRIEND: [friends]}


def test_lifting_named_channels_keeps_the_other_channels_and_the_suppression_of_all(store: Store) -> None:
    person = customer_key("c-ann")
    everywhere, _, by_sms = suppress_everywhere_and_by_email_and_sms(store, person)

    assert store.lift_suppressions(person, [ContactChannel.EMAIL, ContactChannel.WHATSAPP], at=LATER) == 1

    assert by_channel(store.suppressions([person])[person]) == by_channel([everywhere, by_sms])


def test_lifting_nothing_named_or_nothing_there_lifts_nothing(store: Store) -> None:
    person = customer_key("c-ann")
    kept = suppress_everywhere_and_by_email_and_sms(store, person)

    assert store.lift_suppressions(person, [], at=LATER) == 0
    assert store.lift_suppressions(person, [ContactChannel.PUSH], at=LATER) == 0
    assert store.lift_suppressions(customer_key("c-bob"), None, at=LATER) == 0

    assert by_channel(store.suppressions([person])[person]) == by_channel(kept)


def test_a_suppression_recorded_after_the_lift_time_stands(store: Store) -> None:
    person = customer_key("c-ann")
    everywhere, by_email, by_sms = suppress_everywhere_and_by_email_and_sms(store, person)

    assert store.lift_suppressions(person, None, at=BASE_TIME + timedelta(days=1)) == 2

    assert store.suppressions([person]) == {person: [everywhere]}
    assert by_email.at <= by_sms.at == BASE_TIME + timedelta(days=1) < everywhere.at


def test_lifting_twice_lifts_once_and_a_lifted_person_can_be_suppressed_again(store: Store) -> None:
    person = customer_key("c-ann")
    suppress_everywhere_and_by_email_and_sms(store, person)
    assert store.lift_suppressions(person, None, at=LATER) == 3
    assert store.lift_suppressions(person, None, at=LATER) == 0

    again = make_suppression(person, at=LATER + timedelta(days=1))
    store.suppress(again)

    assert store.suppressions([person]) == {person: [again]}, "the new record, not the lifted earlier one"


def test_a_friends_refusal_under_an_email_key_is_lifted_only_under_that_key(store: Store) -> None:
    refusal = make_suppression(FRIEND, reason=HoldReason.DECLINED, channel=ContactChannel.EMAIL)
    store.suppress(refusal)

    assert store.lift_suppressions(customer_key("c-ann"), None, at=LATER) == 0
    assert store.suppressions([FRIEND]) == {FRIEND: [refusal]}
    assert store.lift_suppressions(FRIEND, [ContactChannel.EMAIL], at=LATER) == 1
    assert store.suppressions([FRIEND]) == {}


# --- erasure -----------------------------------------------------------------------------------------------------
def test_erasure_removes_the_persons_messages_and_suppressions_but_keeps_a_friends_refusal(store: Store) -> None:
    victim, other = make_customer(id="zoe-4711"), make_customer(id="bob")
    store.upsert_customers([victim, other])
    spring, autumn = save_outreach_plan(store), save_outreach_plan(store)
    to_victim = [make_message(spring, victim), make_message(autumn, victim, step_id="remind")]
    to_other = make_message(spring, other)
    on_victims_behalf = make_message(
        spring,
        victim,
        key=f"{spring.id}:invite:{FRIEND}",
        person_key=FRIEND,
        kind=MessageKind.INVITATION,
        to_address="friend@example.org",
    )
    store.enqueue_messages([*to_victim, to_other, on_victims_behalf])
    sending = store.claim_message(to_victim[0].key, at=BASE_TIME, lease_s=30)
    assert sending is not None
    store.suppress(make_suppression(customer_key(victim.id)))
    store.suppress(make_suppression(customer_key(victim.id), channel=ContactChannel.SMS))
    friend_refusal = make_suppression(FRIEND, reason=HoldReason.DECLINED)
    other_refusal = make_suppression(customer_key(other.id))
    store.suppress(friend_refusal)
    store.suppress(other_refusal)
    assert find_stored(store, [victim.id]), "the search must see the data first"

    store.erase_customer(victim.id)

    for message in to_victim:
        with pytest.raises(NotFound):
            store.get_message(message.key)
    assert store.get_message(to_other.key) == to_other
    assert store.get_message(on_victims_behalf.key) == on_victims_behalf.model_copy(update={"customer_id": None})
    assert store.suppressions([customer_key(victim.id), customer_key(other.id), FRIEND]) == {
        customer_key(other.id): [other_refusal],
        FRIEND: [friend_refusal],
    }
    assert [m.key for m in store.list_messages(spring.id)] == sorted([to_other.key, on_victims_behalf.key])
    assert store.list_messages(autumn.id) == []
    assert find_stored(store, [victim.id]) == []


# --- wiping ------------------------------------------------------------------------------------------------------
def test_erasure_takes_the_person_out_of_explicit_audiences(store: Store) -> None:
    ada, bob = make_customer(id="ada-7"), make_customer(id="bob-7")
    store.upsert_customers([ada, bob])
    audience = Audience(kind=AudienceKind.CUSTOMERS, customer_ids=("ada-7", "bob-7"))
    only_ada = Audience(kind=AudienceKind.CUSTOMERS, customer_ids=("ada-7",))
    both = save_outreach_plan(store, audience=audience)
    alone = save_outreach_plan(store, audience=only_ada)

    store.erase_customer("ada-7")

    assert store.get_outreach(both.id).audience.customer_ids == (ERASED, "bob-7")
    assert store.get_outreach(alone.id).audience.customer_ids == (ERASED,)
    assert find_stored(store, ["ada-7"]) == []


def test_delete_all_empties_templates_plans_the_outbox_and_suppressions(store: Store) -> None:
    store.save_template(make_template())
    outreach = save_outreach_plan(store)
    message = make_message(outreach, "c-ann")
    store.enqueue_messages([message])
    store.suppress(make_suppression(FRIEND))

    store.delete_all()

    assert store.list_templates() == []
    assert store.list_outreach() == []
    with pytest.raises(NotFound):
        store.get_message(message.key)
    assert store.list_messages(outreach.id) == []
    assert store.due_messages(now=BASE_TIME + timedelta(days=1)) == []
    assert store.suppressions([FRIEND]) == {}
    assert store.enqueue_messages([message]) == 1, "a wiped key is new again"


def test_erasure_leaves_no_outreach_data_of_the_person_in_the_sqlite_files_bytes(tmp_path: Path) -> None:
    path = tmp_path / "erase.db"
    store = SqliteStore(path)
    try:
        victim = make_customer(id="zoe-4711")
        store.upsert_customers([victim])
        outreach = save_outreach_plan(store)
        own = make_message(outreach, victim, detail="zoe-4711 asked for a kit")
        on_behalf = make_message(
            outreach, victim, key=f"{outreach.id}:invite:{FRIEND}", person_key=FRIEND, kind=MessageKind.INVITATION
        )
        store.enqueue_messages([own, on_behalf])
        store.suppress(make_suppression(customer_key(victim.id)))
        assert b"zoe-4711" in file_bytes(path), "the search must see the data first"

        store.erase_customer(victim.id)
    finally:
        store.close()

    assert b"zoe-4711" not in file_bytes(path)
