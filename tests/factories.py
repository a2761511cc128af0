"""Builders for graph.model values with sensible defaults; override any field by keyword.

Ids come from one process-wide counter, so two builders never collide unless a test asks for the same id.
"""

from __future__ import annotations

import itertools
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

from graph.model import (
    AnalysisRun,
    ContactChannel,
    Customer,
    CustomerScores,
    Event,
    EventKind,
    Influence,
    InfluenceKind,
    Referral,
    ReferralStatus,
    Segment,
)

BASE_TIME = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
_counter = itertools.count(1)


def next_id(prefix: str = "c") -> str:
    return f"{prefix}{next(_counter):06d}"


def make_customer(**overrides: Any) -> Customer:
    customer_id = overrides.pop("id", None) or next_id("c")
    fields: dict[str, Any] = {
        "id": customer_id,
        "name": f"Customer {customer_id}",
        "email": f"{customer_id}@example.com",
        "phone": f"+3361{zlib.crc32(customer_id.encode()) % 10**7:07d}",
        "locale": "en",
        "timezone": "Europe/Paris",
        "consent": {ContactChannel.EMAIL: True, ContactChannel.SMS: False},
        "attributes": {"tier": "gold", "orders": 3},
        "created_at": BASE_TIME,
    }
    fields.update(overrides)
    return Customer(**fields)


def make_influence(source: Customer | str, target: Customer | str, **overrides: Any) -> Influence:
    fields: dict[str, Any] = {
        "source_id": _id(source),
        "target_id": _id(target),
        "kind": InfluenceKind.FOLLOWS,
        "weight": 0.5,
        "at": BASE_TIME,
    }
    fields.update(overrides)
    return Influence(**fields)


def make_referral(referrer: Customer | str, friend: Customer | str, **overrides: Any) -> Referral:
    fields: dict[str, Any] = {
        "referrer_id": _id(referrer),
        "friend_id": _id(friend),
        "code": f"REF-{_id(referrer)}",
        "status": ReferralStatus.CLICKED,
        "at": BASE_TIME,
        "status_at": None,
    }
    fields.update(overrides)
    return Referral(**fields)


def make_event(customer: Customer | str, **overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "id": overrides.pop("id", None) or next_id("e"),
        "customer_id": _id(customer),
        "kind": EventKind.PURCHASE,
        "at": BASE_TIME + timedelta(days=1),
        "value": 42.0,
        "attributes": {"sku": "A-1"},
    }
    fields.update(overrides)
    return Event(**fields)


def make_scores(customer: Customer | str, **overrides: Any) -> CustomerScores:
    fields: dict[str, Any] = {
        "customer_id": _id(customer),
        "run_id": "run-1",
        "segment": Segment.ADVOCATE,
        "explanation": "Referred two friends who bought.",
        "scores": {"pagerank": 0.25, "advocacy": 0.8},
        "community": 1,
    }
    fields.update(overrides)
    return CustomerScores(**fields)


def make_run(**overrides: Any) -> AnalysisRun:
    fields: dict[str, Any] = {
        "id": overrides.pop("id", None) or next_id("run"),
        "started_at": BASE_TIME,
        "finished_at": BASE_TIME + timedelta(minutes=2),
        "status": "finished",
        "params": {"k": 10, "model": "independent_cascade"},
        "timings": {"load": 0.5, "score": 1.25},
        "summary": {"advocates": 10},
    }
    fields.update(overrides)
    return AnalysisRun(**fields)


def _id(customer: Customer | str) -> str:
    return customer if isinstance(customer, str) else customer.id


class Clock:
    """A clock the test moves by hand, so hold periods pass in microseconds."""

    def __init__(self, start: datetime = BASE_TIME) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    def iso(self, **delta: float) -> str:
        return (self.now + timedelta(**delta)).isoformat()
