"""Erasing a customer forgets their contact counts too (`engine.erasure`), over a real SQLite store and limiter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest

from engine.contact_policy import Cap, ContactPolicy
from engine.erasure import erase_customer
from engine.limits import ContactLimiter, LimitDecision, SqliteContactLimiter
from graph.errors import NotFound, StoreUnavailable
from graph.model import ContactChannel
from graph.outreach import HoldReason, MessageKind, customer_key
from graph.sqlite_store import SqliteStore
from tests.contract.test_program_sqlite import file_bytes
from tests.factories import BASE_TIME, make_customer

ONE_A_WEEK = ContactPolicy(caps=(Cap(limit=1, window_days=7),), backoff_after_ignored=100)
FRIEND = "email:" + "ab" * 32


def reserve(limiter: ContactLimiter, person_key: str, token: str) -> LimitDecision:
    return limiter.reserve(
        person_key, ContactChannel.EMAIL, MessageKind.MARKETING, at=BASE_TIME, policy=ONE_A_WEEK, token=token
    )


def contacted_once(limiter: ContactLimiter, *person_keys: str) -> None:
    for person_key in person_keys:
        assert reserve(limiter, person_key, "first").allowed


def capped(limiter: ContactLimiter, person_key: str) -> bool:
    """Whether the weekly cap refuses a second message now, i.e. the limiter still counts the first."""
    decision = reserve(limiter, person_key, "second")
    if decision.allowed:
        limiter.release(person_key, ContactChannel.EMAIL, MessageKind.MARKETING, token="second")
    return decision.reason is HoldReason.CAP


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "advocacy.db")
    opened.upsert_customers([make_customer(id="zoe-4711"), make_customer(id="bob")])
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def limiter(tmp_path: Path) -> Iterator[SqliteContactLimiter]:
    opened = SqliteContactLimiter(tmp_path / "contacts.db")
    try:
        yield opened
    finally:
        opened.close()


def test_erasure_forgets_the_customers_contact_counts_and_nobody_elses(
    store: SqliteStore, limiter: SqliteContactLimiter
) -> None:
    zoe, bob = customer_key("zoe-4711"), customer_key("bob")
    contacted_once(limiter, zoe, bob, FRIEND)
    assert capped(limiter, zoe), "the limiter must count the first message before the erasure"

    report = erase_customer(store, limiter, "zoe-4711")

    assert report.customer_id == "zoe-4711"
    assert not capped(limiter, zoe)
    assert capped(limiter, bob)
    assert capped(limiter, FRIEND), "a friend's counts under their email key are not the customer's data"
    with pytest.raises(NotFound):
        store.get_customer("zoe-4711")


@dataclass
class ForgetFailsOnce:
    """The real limiter, but its first `forget` fails as an unreachable Redis would."""

    limiter: SqliteContactLimiter
    calls: list[str] = field(default_factory=list)

    def forget(self, person_key: str) -> None:
        self.calls.append(person_key)
        if len(self.calls) == 1:
            raise StoreUnavailable("the contact limiter's Redis failed (ConnectionError)")
        self.limiter.forget(person_key)


def test_a_retry_after_the_forgetting_failed_completes_the_erasure_and_answers_not_found(
    store: SqliteStore, limiter: SqliteContactLimiter
) -> None:
    zoe = customer_key("zoe-4711")
    contacted_once(limiter, zoe)
    failing = ForgetFailsOnce(limiter)

    with pytest.raises(StoreUnavailable):
        erase_customer(store, failing, "zoe-4711")  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        store.get_customer("zoe-4711")
    assert capped(limiter, zoe)

    with pytest.raises(NotFound):
        erase_customer(store, failing, "zoe-4711")  # type: ignore[arg-type]
    assert not capped(limiter, zoe)
    assert failing.calls == [zoe, zoe]


def test_an_unknown_customer_is_not_found_and_other_counts_stay(
    store: SqliteStore, limiter: SqliteContactLimiter
) -> None:
    contacted_once(limiter, customer_key("bob"))
    with pytest.raises(NotFound):
        erase_customer(store, limiter, "nobody")
    assert capped(limiter, customer_key("bob"))


def test_the_limiters_files_no_longer_hold_the_erased_id_while_it_stays_open(
    store: SqliteStore, limiter: SqliteContactLimiter, tmp_path: Path
) -> None:
    for day in range(3):
        limiter.reserve(
            customer_key("zoe-4711"),
            ContactChannel.SMS,
            MessageKind.TRANSACTIONAL,
            at=BASE_TIME + timedelta(days=day),
            policy=ContactPolicy(),
            token=f"notice-{day}",
        )
    assert b"zoe-4711" in file_bytes(tmp_path / "contacts.db"), "the search must see the counts first"

    erase_customer(store, limiter, "zoe-4711")

    assert b"zoe-4711" not in file_bytes(tmp_path / "contacts.db")
