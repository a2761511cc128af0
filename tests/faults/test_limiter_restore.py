"""The Redis contact limiter after Redis lost its counts: it refuses to decide until they are restored from the
outbox, restores them once for everyone, and never marks itself ready on a Redis that restarted mid-restore."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from engine.contact_policy import ContactPolicy
from engine.limits import LimiterStateLost, RedisContactLimiter, Reservation
from graph.errors import StoreUnavailable
from graph.model import ContactChannel
from graph.outreach import HoldReason, MessageKind
from tests.faults.conftest import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

NOW = datetime(2025, 3, 3, 12, tzinfo=UTC)
POLICY = ContactPolicy()  # 1 marketing message in 7 days, 3 in 30
EMAIL, MARKETING = ContactChannel.EMAIL, MessageKind.MARKETING


@pytest.fixture
def limiter(fresh_redis: RedisServer) -> Iterator[RedisContactLimiter]:
    opened = RedisContactLimiter(fresh_redis.url(1), detect_loss=True)
    try:
        yield opened
    finally:
        opened.close()


def reserve(limiter: RedisContactLimiter, person: str, token: str, at: datetime = NOW) -> HoldReason | None:
    return limiter.reserve(person, EMAIL, MARKETING, at=at, policy=POLICY, token=token).reason


def sent(person: str, token: str, days_ago: float) -> Reservation:
    return Reservation(person, EMAIL, MARKETING, NOW - timedelta(days=days_ago), token)


def test_an_empty_redis_decides_nothing_until_the_counts_are_restored(limiter: RedisContactLimiter) -> None:
    with pytest.raises(LimiterStateLost):
        reserve(limiter, "customer:a", "m1")
    limiter.restore(lambda since: [], at=NOW, policy=POLICY)
    assert reserve(limiter, "customer:a", "m1") is None


def test_restored_sends_count_against_the_caps_and_old_ones_do_not(limiter: RedisContactLimiter) -> None:
    asked: list[datetime] = []

    def outbox(since: datetime) -> Iterable[Reservation]:
        asked.append(since)
        return [sent("customer:a", "old", 40), sent("customer:b", "recent", 2), sent("customer:c", "month", 20)]

    limiter.restore(outbox, at=NOW, policy=POLICY)
    assert asked == [NOW - timedelta(days=30)], "only the longest window is read"
    assert reserve(limiter, "customer:a", "new-a") is None, "a send older than every window counts for nothing"
    assert reserve(limiter, "customer:b", "new-b") is HoldReason.CAP, "1 in 7 days"
    assert reserve(limiter, "customer:c", "new-c") is None
    assert reserve(limiter, "customer:b", "recent") is None, "the restored message itself is recognised by its key"


def test_a_redis_restarted_during_the_restore_is_not_marked_ready(
    limiter: RedisContactLimiter, fresh_redis: RedisServer
) -> None:
    def outbox_while_redis_restarts(since: datetime) -> Iterable[Reservation]:
        fresh_redis.restart()
        return [sent("customer:b", "recent", 2)]

    with pytest.raises((LimiterStateLost, StoreUnavailable)):
        limiter.restore(outbox_while_redis_restarts, at=NOW, policy=POLICY)
    with pytest.raises(LimiterStateLost):
        reserve(limiter, "customer:b", "new-b")


def test_only_one_caller_restores_while_the_others_wait_for_it(
    limiter: RedisContactLimiter, fresh_redis: RedisServer
) -> None:
    reads: list[str] = []
    release = threading.Event()

    def slow_outbox(since: datetime) -> Iterable[Reservation]:
        reads.append(threading.current_thread().name)
        release.wait(10)
        return [sent("customer:b", "recent", 2)]

    others = [RedisContactLimiter(fresh_redis.url(1), detect_loss=True) for _ in range(3)]
    threads = [
        threading.Thread(target=other.restore, args=(slow_outbox,), kwargs={"at": NOW, "policy": POLICY})
        for other in [limiter, *others]
    ]
    try:
        for thread in threads:
            thread.start()
        threading.Event().wait(0.5)
        release.set()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for other in others:
            other.close()
    assert len(reads) == 1, "the outbox is read once"
    assert reserve(limiter, "customer:b", "new-b") is HoldReason.CAP
    with redis.Redis.from_url(fresh_redis.url(1)) as client:
        assert client.exists("adv:contact:ready")
