"""The per-process cache behind `/r/{code}`: fresh for its time, forgetful on writes, never keeping a miss."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from graph.errors import NotFound
from graph.link_cache import LinkCache
from graph.program import Campaign, CodeStatus, ReferralCode
from tests.factories import make_customer
from tests.program_factories import make_campaign, make_code


class Ticks:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def codes(*states: CodeStatus) -> tuple[list[ReferralCode], list[str]]:
    """Loads answered in turn, one code per state, and the keys each load was asked for."""
    customer, campaign = make_customer(), make_campaign()
    answers = [make_code(customer, campaign, code="ADA7K2", status=state) for state in states]
    return answers, []


def loader(answers: list[ReferralCode], asked: list[str]) -> Callable[[str], ReferralCode]:
    def load(key: str) -> ReferralCode:
        asked.append(key)
        return answers[len(asked) - 1]

    return load


def test_an_entry_is_answered_from_memory_until_its_time_is_up() -> None:
    ticks = Ticks()
    cache = LinkCache(2.0, clock=ticks)
    answers, asked = codes(CodeStatus.ACTIVE, CodeStatus.PAUSED)
    load = loader(answers, asked)

    assert cache.code("ADA7K2", load).status is CodeStatus.ACTIVE
    ticks.now += 1.9
    assert cache.code("ADA7K2", load).status is CodeStatus.ACTIVE
    assert asked == ["ADA7K2"]
    ticks.now += 0.2
    assert cache.code("ADA7K2", load).status is CodeStatus.PAUSED
    assert asked == ["ADA7K2", "ADA7K2"]


def test_entries_whose_time_is_up_are_let_go_as_new_ones_come() -> None:
    ticks = Ticks()
    cache = LinkCache(2.0, clock=ticks)
    campaign = make_campaign()
    for n in range(5):
        cache.code(f"CODE{n}", lambda key: make_code(make_customer(), campaign, code=key))
        ticks.now += 1.0
    assert list(cache._codes.items) == ["CODE3", "CODE4"]


def test_forgetting_a_code_makes_the_next_read_go_to_the_store() -> None:
    cache = LinkCache(60.0, clock=Ticks())
    answers, asked = codes(CodeStatus.ACTIVE, CodeStatus.REVOKED)
    load = loader(answers, asked)

    cache.code("ADA7K2", load)
    cache.forget_code("ADA7K2")

    assert cache.code("ADA7K2", load).status is CodeStatus.REVOKED
    assert len(asked) == 2


def test_a_campaign_is_forgotten_by_id_and_clear_forgets_everything() -> None:
    cache = LinkCache(60.0, clock=Ticks())
    loads: list[str] = []
    spring = make_campaign(id="spring")

    def load(key: str) -> Campaign:
        loads.append(key)
        return spring

    cache.campaign("spring", load)
    cache.campaign("spring", load)
    cache.forget_campaign("spring")
    cache.campaign("spring", load)
    cache.clear()
    cache.campaign("spring", load)
    assert loads == ["spring"] * 3


def test_an_unknown_code_is_never_kept_so_a_code_issued_elsewhere_works_at_once() -> None:
    cache = LinkCache(60.0, clock=Ticks())
    answers, asked = codes(CodeStatus.ACTIVE)
    missing = True

    def load(key: str) -> ReferralCode:
        asked.append(key)
        if missing:
            raise NotFound(f"no referral code {key!r}")
        return answers[0]

    with pytest.raises(NotFound):
        cache.code("ADA7K2", load)
    missing = False
    assert cache.code("ADA7K2", load) == answers[0]


def test_a_read_that_raced_a_write_is_not_kept() -> None:
    """The load began before the store changed the code: what it read may be the old state."""
    cache = LinkCache(60.0, clock=Ticks())
    answers, asked = codes(CodeStatus.ACTIVE, CodeStatus.PAUSED)
    reading, written = threading.Event(), threading.Event()

    def slow_load(key: str) -> ReferralCode:
        asked.append(key)
        if len(asked) == 1:
            reading.set()
            written.wait(5)
        return answers[len(asked) - 1]

    reader = threading.Thread(target=lambda: cache.code("ADA7K2", slow_load))
    reader.start()
    assert reading.wait(5)
    cache.forget_code("ADA7K2")
    written.set()
    reader.join(5)

    assert cache.code("ADA7K2", slow_load).status is CodeStatus.PAUSED
    assert len(asked) == 2


def test_the_oldest_entries_make_room_when_the_cache_is_full() -> None:
    cache = LinkCache(60.0, max_entries=2, clock=Ticks())
    customer, campaign = make_customer(), make_campaign()
    asked: list[str] = []

    def load(key: str) -> ReferralCode:
        asked.append(key)
        return make_code(customer, campaign, code=key)

    for key in ("AAA111", "BBB222", "CCC333", "AAA111"):
        cache.code(key, load)
    assert asked == ["AAA111", "BBB222", "CCC333", "AAA111"]


def test_a_zero_lifetime_keeps_nothing() -> None:
    cache = LinkCache(0.0, clock=Ticks())
    answers, asked = codes(CodeStatus.ACTIVE, CodeStatus.ACTIVE)
    load = loader(answers, asked)
    cache.code("ADA7K2", load)
    cache.code("ADA7K2", load)
    assert len(asked) == 2


def test_peek_answers_only_when_both_the_code_and_its_campaign_are_fresh() -> None:
    ticks = Ticks()
    cache = LinkCache(2.0, clock=ticks)
    campaign = make_campaign(id="spring")
    code = make_code(make_customer(), campaign, code="ADA7K2")

    assert cache.peek("ADA7K2") is None
    cache.code("ADA7K2", lambda _: code)
    assert cache.peek("ADA7K2") is None, "the campaign was never read"
    cache.campaign("spring", lambda _: campaign)
    assert cache.peek("ADA7K2") == (code, campaign)
    ticks.now += 2.0
    assert cache.peek("ADA7K2") is None
