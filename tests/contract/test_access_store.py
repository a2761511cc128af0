"""Access control in the store: API keys never replaced, each token id accepted once, each idempotency key owned
by one request at a time, on both stores and under racing threads."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from graph import access_cypher, cypher
from graph.access import ApiKey, IdempotencyRecord, IdempotencyState
from graph.access_store import AccessStore
from graph.errors import InvalidInput, NotFound
from graph.program_store import Store
from graph.sqlite_store import SCHEMA_VERSION, SqliteStore
from tests.contract.conftest import find_stored, sqlite_file_of_schema, sqlite_schema_of
from tests.factories import BASE_TIME, next_id
from tests.neo4j_support import hold_while, open_neo4j, query, raw_driver

T = TypeVar("T")

NOW = BASE_TIME
TTL = timedelta(hours=24)
ROUNDS = 8
"""Races per race test: each round is a fresh token or key, so a lucky interleaving cannot hide a lost update."""


def make_key(**overrides: Any) -> ApiKey:
    key_id = overrides.pop("id", None) or f"key{next_id('')}"
    fields: dict[str, Any] = {
        "id": key_id,
        "name": f"backend {key_id}",
        "scopes": ("orders:write", "read"),
        "secret_hash": hashlib.sha256(key_id.encode()).hexdigest(),
        "created_at": BASE_TIME,
    }
    fields.update(overrides)
    return ApiKey(**fields)


def idem_key(client_key: str = "") -> str:
    return f"key:backend:POST /v1/orders:{client_key or next_id('idem')}"


@pytest.fixture
def other(store: Store) -> Iterator[Store]:
    """A second store object on the same data, as a second worker process would have."""
    opened: Store = (
        SqliteStore(store.describe().removeprefix("sqlite:///")) if isinstance(store, SqliteStore) else open_neo4j()
    )
    try:
        yield opened
    finally:
        opened.close()


def race(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released together by a barrier; their results in call order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], T]) -> T:
        barrier.wait(timeout=10)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run, call) for call in calls]
        return [future.result(timeout=60) for future in futures]


# --- the values ----------------------------------------------------------------------------------------------
def test_scopes_are_kept_sorted_and_unique_whatever_order_they_came_in() -> None:
    key = make_key(scopes=("read", "admin", "read", "orders:write"))

    assert key.scopes == ("admin", "orders:write", "read")
    assert key.active


@pytest.mark.parametrize(
    "overrides",
    [
        {"id": "short"},
        {"id": "UPPERCASE1"},
        {"scopes": ("orders:write:all",)},
        {"scopes": ("Read",)},
        {"secret_hash": "ab" * 31},
        {"secret_hash": "AB" * 32},
        {"name": ""},
    ],
)
def test_a_malformed_api_key_is_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make_key(**overrides)


def test_a_done_record_carries_a_status_and_one_in_progress_does_not() -> None:
    times = {"created_at": NOW, "expires_at": NOW + TTL}
    with pytest.raises(ValidationError, match="status"):
        IdempotencyRecord(key="k", fingerprint="f", state=IdempotencyState.DONE, **times)
    with pytest.raises(ValidationError, match="status"):
        IdempotencyRecord(key="k", fingerprint="f", state=IdempotencyState.IN_PROGRESS, status=200, **times)


# --- API keys ------------------------------------------------------------------------------------------------
def test_both_stores_are_access_stores(store: Store) -> None:
    assert isinstance(store, AccessStore)


def test_a_saved_api_key_reads_back_as_it_was(store: Store) -> None:
    live = make_key()
    revoked = make_key(scopes=(), created_at=NOW + timedelta(microseconds=1), revoked_at=NOW + timedelta(days=2))
    store.save_api_key(live)
    store.save_api_key(revoked)

    assert store.get_api_key(live.id) == live
    assert store.get_api_key(revoked.id) == revoked
    assert store.get_api_key("keyunknown") is None


def test_saving_a_key_whose_id_exists_is_refused_and_the_first_stays(store: Store) -> None:
    first = make_key()
    store.save_api_key(first)

    with pytest.raises(InvalidInput, match=first.id):
        store.save_api_key(make_key(id=first.id, name="impostor", scopes=("admin",)))

    assert store.get_api_key(first.id) == first
    assert store.list_api_keys() == [first]


def test_keys_are_listed_oldest_first_then_by_id(store: Store) -> None:
    newest = make_key(id="aaaaaaaa01", created_at=NOW + timedelta(days=1))
    second = make_key(id="zzzzzzzz01", created_at=NOW)
    first = make_key(id="mmmmmmmm01", created_at=NOW)
    for key in (newest, second, first):
        store.save_api_key(key)

    assert store.list_api_keys() == [first, second, newest]


def test_a_revoked_key_records_when_and_is_no_longer_active(store: Store) -> None:
    key = make_key()
    store.save_api_key(key)
    at = NOW + timedelta(hours=3, microseconds=7)

    revoked = store.revoke_api_key(key.id, at=at)

    assert revoked == key.model_copy(update={"revoked_at": at})
    assert not revoked.active
    assert store.get_api_key(key.id) == revoked


def test_revoking_a_key_again_keeps_the_first_revocation_time(store: Store) -> None:
    key = make_key()
    store.save_api_key(key)
    first = store.revoke_api_key(key.id, at=NOW + timedelta(hours=1))

    again = store.revoke_api_key(key.id, at=NOW + timedelta(hours=2))

    assert again == first
    assert store.get_api_key(key.id) == first


def test_revoking_an_unknown_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="keyunknown"):
        store.revoke_api_key("keyunknown", at=NOW)


# --- one-time tokens -----------------------------------------------------------------------------------------
def test_a_token_id_is_accepted_the_first_time_and_refused_ever_after(store: Store) -> None:
    expires = NOW + timedelta(minutes=5)

    assert store.use_token_once("jti-1", expires_at=expires, now=NOW) is True
    assert store.use_token_once("jti-1", expires_at=expires, now=NOW + timedelta(seconds=1)) is False
    assert store.use_token_once("jti-1", expires_at=expires, now=expires) is False
    assert store.use_token_once("jti-2", expires_at=expires, now=NOW) is True


def test_a_token_id_is_forgotten_once_its_token_has_expired(store: Store) -> None:
    expires = NOW + timedelta(minutes=5)
    store.use_token_once("jti-old", expires_at=expires, now=NOW)

    later = expires + timedelta(microseconds=1)
    assert store.use_token_once("jti-new", expires_at=later + timedelta(minutes=5), now=later) is True

    assert find_stored(store, ["jti-old"]) == []
    assert find_stored(store, ["jti-new"]) != []


def test_an_already_expired_token_is_refused_and_not_remembered(store: Store) -> None:
    assert store.use_token_once("jti-late", expires_at=NOW - timedelta(microseconds=1), now=NOW) is False

    assert find_stored(store, ["jti-late"]) == []


def test_two_workers_using_one_token_at_once_accept_it_exactly_once(store: Store, other: Store) -> None:
    expires = NOW + timedelta(minutes=5)
    for round_ in range(ROUNDS):
        jti = f"jti-race-{round_}"
        results = race(
            [
                partial(store.use_token_once, jti, expires_at=expires, now=NOW),
                partial(other.use_token_once, jti, expires_at=expires, now=NOW),
            ]
        )

        assert sorted(results) == [False, True], f"round {round_}"


# --- idempotency ---------------------------------------------------------------------------------------------
def test_the_first_request_with_a_key_owns_it_and_a_second_sees_it_in_progress(store: Store) -> None:
    key = idem_key()

    assert store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL) is None
    seen = store.begin_idempotent(key, "body-a", now=NOW + timedelta(seconds=1), ttl=TTL)

    assert seen == IdempotencyRecord(
        key=key,
        fingerprint="body-a",
        state=IdempotencyState.IN_PROGRESS,
        status=None,
        body="",
        content_type="application/json",
        created_at=NOW,
        expires_at=NOW + TTL,
    )


def test_a_finished_request_is_replayed_with_its_response_byte_for_byte(store: Store) -> None:
    key = idem_key()
    body = '  {"order": "o-1", "note": "Grüße — 🎉"}\n'
    store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL)

    store.finish_idempotent(key, status=201, body=body, content_type="application/problem+json")
    replay = store.begin_idempotent(key, "body-a", now=NOW + timedelta(hours=1), ttl=TTL)

    assert replay is not None
    assert (replay.state, replay.status, replay.body) == (IdempotencyState.DONE, 201, body)
    assert (replay.content_type, replay.created_at, replay.expires_at) == ("application/problem+json", NOW, NOW + TTL)


def test_an_empty_response_body_is_replayed_as_empty(store: Store) -> None:
    key = idem_key()
    store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL)
    store.finish_idempotent(key, status=204, body="", content_type="text/plain")

    replay = store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL)

    assert replay is not None
    assert (replay.state, replay.status, replay.body) == (IdempotencyState.DONE, 204, "")


def test_the_same_key_with_another_body_gets_the_first_record_to_compare(store: Store) -> None:
    key = idem_key()
    store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL)
    store.finish_idempotent(key, status=200, body="{}", content_type="application/json")

    seen = store.begin_idempotent(key, "body-b", now=NOW, ttl=TTL)

    assert seen is not None
    assert (seen.fingerprint, seen.state) == ("body-a", IdempotencyState.DONE)


def test_keys_differing_in_any_part_are_separate_records(store: Store) -> None:
    client = next_id("idem")
    store.begin_idempotent(f"key:a:POST /v1/orders:{client}", "body-a", now=NOW, ttl=TTL)

    assert store.begin_idempotent(f"key:b:POST /v1/orders:{client}", "body-a", now=NOW, ttl=TTL) is None
    assert store.begin_idempotent(f"key:a:POST /v1/refunds:{client}", "body-a", now=NOW, ttl=TTL) is None


def test_a_record_lives_until_its_expiry_and_is_then_replaced_as_if_absent(store: Store) -> None:
    key = idem_key()
    store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL)
    store.finish_idempotent(key, status=200, body='{"first": true}', content_type="application/json")
    expiry = NOW + TTL

    still = store.begin_idempotent(key, "body-b", now=expiry - timedelta(microseconds=1), ttl=TTL)
    assert still is not None
    assert still.fingerprint == "body-a"

    assert store.begin_idempotent(key, "body-b", now=expiry, ttl=timedelta(minutes=10)) is None
    fresh = store.begin_idempotent(key, "body-b", now=expiry, ttl=TTL)
    assert fresh == IdempotencyRecord(
        key=key,
        fingerprint="body-b",
        state=IdempotencyState.IN_PROGRESS,
        created_at=expiry,
        expires_at=expiry + timedelta(minutes=10),
    )


def test_an_in_progress_record_left_by_a_crashed_request_expires_like_any_other(store: Store) -> None:
    key = idem_key()
    store.begin_idempotent(key, "body-a", now=NOW, ttl=timedelta(minutes=1))

    assert store.begin_idempotent(key, "body-a", now=NOW + timedelta(minutes=1), ttl=TTL) is None


def test_expired_records_of_other_keys_are_swept_with_the_customer_ids_they_mention(store: Store) -> None:
    old = idem_key()
    store.begin_idempotent(old, "body-a", now=NOW, ttl=timedelta(minutes=1))
    store.finish_idempotent(old, status=201, body='{"customer_id": "cust-4711"}', content_type="application/json")
    live = idem_key()
    store.begin_idempotent(live, "body-a", now=NOW, ttl=TTL)
    assert find_stored(store, ["cust-4711"]) != [], "the search must see the body first"

    store.begin_idempotent(idem_key(), "body-a", now=NOW + timedelta(minutes=2), ttl=TTL)

    assert find_stored(store, ["cust-4711"]) == []
    assert store.begin_idempotent(live, "body-a", now=NOW + timedelta(minutes=2), ttl=TTL) is not None


def test_an_abandoned_request_frees_its_key_for_a_retry(store: Store) -> None:
    key = idem_key()
    store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL)

    store.abandon_idempotent(key)

    assert store.begin_idempotent(key, "body-a", now=NOW + timedelta(seconds=5), ttl=TTL) is None


def test_abandoning_a_finished_request_keeps_its_response(store: Store) -> None:
    key = idem_key()
    store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL)
    store.finish_idempotent(key, status=200, body='{"ok": 1}', content_type="application/json")

    store.abandon_idempotent(key)
    store.abandon_idempotent(idem_key())

    replay = store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL)
    assert replay is not None
    assert replay.body == '{"ok": 1}'


def test_finishing_a_key_no_one_holds_stores_nothing(store: Store) -> None:
    key = idem_key()

    store.finish_idempotent(key, status=200, body='{"ghost": 1}', content_type="application/json")

    assert store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL) is None


@pytest.mark.parametrize(
    ("key", "fingerprint", "ttl"),
    [
        ("k" * 401, "body-a", TTL),
        ("", "body-a", TTL),
        ("k", "f" * 129, TTL),
        ("k", "body-a", timedelta(0)),
        ("k", "body-a", timedelta(seconds=-1)),
    ],
)
def test_a_key_fingerprint_or_lifetime_out_of_bounds_is_refused(
    store: Store, key: str, fingerprint: str, ttl: timedelta
) -> None:
    with pytest.raises(InvalidInput):
        store.begin_idempotent(key, fingerprint, now=NOW, ttl=ttl)


@pytest.mark.parametrize(("status", "content_type"), [(99, "text/plain"), (600, "text/plain"), (200, "")])
def test_a_response_that_could_not_be_replayed_is_refused(store: Store, status: int, content_type: str) -> None:
    key = idem_key()
    store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL)

    with pytest.raises(InvalidInput):
        store.finish_idempotent(key, status=status, body="", content_type=content_type)

    seen = store.begin_idempotent(key, "body-a", now=NOW, ttl=TTL)
    assert seen is not None
    assert seen.state is IdempotencyState.IN_PROGRESS


def test_two_workers_beginning_one_key_at_once_give_it_to_exactly_one(store: Store, other: Store) -> None:
    for round_ in range(ROUNDS):
        key = idem_key()
        one, two = race(
            [
                partial(store.begin_idempotent, key, "from-one", now=NOW, ttl=TTL),
                partial(other.begin_idempotent, key, "from-two", now=NOW, ttl=TTL),
            ]
        )

        assert [one, two].count(None) == 1, f"round {round_}"
        loser = one or two
        assert loser is not None
        assert loser.state is IdempotencyState.IN_PROGRESS
        assert loser.fingerprint == ("from-one" if one is None else "from-two"), "the loser sees the winner's record"


def test_two_workers_replacing_one_expired_record_at_once_give_it_to_exactly_one(store: Store, other: Store) -> None:
    later = NOW + TTL + timedelta(seconds=1)
    for round_ in range(ROUNDS):
        key = idem_key()
        store.begin_idempotent(key, "stale", now=NOW, ttl=TTL)
        store.finish_idempotent(key, status=200, body="{}", content_type="application/json")

        one, two = race(
            [
                partial(store.begin_idempotent, key, "from-one", now=later, ttl=TTL),
                partial(other.begin_idempotent, key, "from-two", now=later, ttl=TTL),
            ]
        )

        assert [one, two].count(None) == 1, f"round {round_}"
        loser = one or two
        assert loser is not None
        assert loser.created_at == later
        assert loser.fingerprint == ("from-one" if one is None else "from-two"), "the loser sees the winner's record"


@pytest.mark.neo4j
def test_neo4j_a_claim_waiting_on_a_record_being_abandoned_owns_the_key_once_it_is_gone() -> None:
    store = open_neo4j()
    try:
        store.delete_all()
        key = idem_key()
        store.begin_idempotent(key, "first-try", now=NOW, ttl=TTL)

        with raw_driver() as driver:
            waited, result = hold_while(
                driver,
                lambda tx: tx.run("MATCH (r:IdempotencyRecord {key: $key}) DETACH DELETE r", key=key).consume(),
                lambda: store.begin_idempotent(key, "retry", now=NOW + timedelta(seconds=1), ttl=TTL),
            )

        assert waited, "the claim must have waited for the deleting transaction"
        assert result is None
        seen = store.begin_idempotent(key, "retry", now=NOW + timedelta(seconds=2), ttl=TTL)
        assert seen is not None
        assert (seen.fingerprint, seen.state) == ("retry", IdempotencyState.IN_PROGRESS)
    finally:
        store.close()


@pytest.mark.neo4j
def test_neo4j_has_the_uniqueness_constraints_the_deciding_writes_rely_on() -> None:
    open_neo4j().close()

    with raw_driver() as driver:
        online = query(driver, cypher.ONLINE_INDEXES, names=list(access_cypher.ACCESS_SCHEMA_NAMES))
        constraints = query(driver, cypher.SHOW_CONSTRAINTS)

    assert sorted(row["name"] for row in online) == sorted(access_cypher.ACCESS_SCHEMA_NAMES)
    unique = {(tuple(row["labelsOrTypes"]), tuple(row["properties"])) for row in constraints}
    assert {(("ApiKey",), ("id",)), (("UsedToken",), ("jti",)), (("IdempotencyRecord",), ("key",))} <= unique


# --- SQLite only ---------------------------------------------------------------------------------------------
def test_a_sqlite_file_of_schema_3_migrates_in_place_and_gains_the_access_tables(tmp_path: Path) -> None:
    path = sqlite_file_of_schema(tmp_path / "v3.db", 3)

    store = SqliteStore(path)
    try:
        assert store.get_customer("ada").id == "ada"
        key = make_key()
        store.save_api_key(key)
        assert store.get_api_key(key.id) == key
        assert store.use_token_once("jti-1", expires_at=NOW + TTL, now=NOW) is True
        assert store.begin_idempotent(idem_key(), "body-a", now=NOW, ttl=TTL) is None
    finally:
        store.close()
    assert sqlite_schema_of(path) == SCHEMA_VERSION
