"""Celery tasks. Each takes ids and plain values and calls one service step, so a retry repeats one pure step.

Referral tasks are idempotent by construction: an order is settled once in the store's transaction however many
workers receive it, and rewards are keyed by conversion and rule. That is what lets them run with late acks: a
worker killed mid-task leaves its message to be redelivered, and the redelivery changes nothing already done.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Any

from engine.celery_app import app
from engine.fulfilment import make_fulfiller
from engine.referrals import ReferralService
from engine.sampling import sample_chunk
from engine.settings import get_settings
from graph.errors import StoreUnavailable
from graph.factory import open_store
from graph.model import Customer
from graph.program import Order, Refund
from graph.program_store import Store

_RETRY: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": (StoreUnavailable,),
    "retry_backoff": True,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 20,
}
"""A store that is down is waited for; bad input is not retried (it would fail the same way)."""


@app.task(name="advocacy.sample_rr_chunk", acks_late=True)  # type: ignore[untyped-decorator]
def sample_rr_chunk(
    store_url: str, database: str, model: str, p: float, weight: str | None, count: int, seed: int
) -> dict[str, Any]:
    """Draw `count` RR sets of the store's influence graph; pure in its inputs, so safe to run twice."""
    return sample_chunk(store_url, database, model=model, p=p, weight=weight, count=count, seed=seed)


@lru_cache(maxsize=4)
def _store(url: str, database: str) -> Store:
    """One store per worker process and URL, opened on first use inside the (forked) worker."""
    return open_store(url, database=database)


def _service(store_url: str | None, database: str | None) -> ReferralService:
    settings = get_settings()
    store = _store(store_url or settings.store, database or settings.neo4j.database)
    return ReferralService(store, settings.referral, fulfiller=make_fulfiller(settings.referral))


@app.task(name="advocacy.process_order", **_RETRY)  # type: ignore[untyped-decorator]
def process_order(
    order: dict[str, Any],
    customer: dict[str, Any] | None = None,
    store_url: str | None = None,
    database: str | None = None,
) -> dict[str, Any]:
    """Attribute, check and reward one order; the returned conversion is the same for every delivery."""
    service = _service(store_url, database)
    buyer = Customer.model_validate(customer) if customer is not None else None
    conversion = service.process_order(Order.model_validate(order), customer=buyer)
    return conversion.model_dump(mode="json")


@app.task(name="advocacy.process_refund", **_RETRY)  # type: ignore[untyped-decorator]
def process_refund(refund: dict[str, Any], store_url: str | None = None, database: str | None = None) -> dict[str, Any]:
    conversion = _service(store_url, database).process_refund(Refund.model_validate(refund))
    return conversion.model_dump(mode="json")


@app.task(name="advocacy.advance_rewards", **_RETRY)  # type: ignore[untyped-decorator]
def advance_rewards(store_url: str | None = None, database: str | None = None, limit: int = 1000) -> list[str]:
    """Approve rewards past their hold, reject held ones past their review deadline (Celery beat runs it)."""
    return [reward.id for reward in _service(store_url, database).advance(limit=limit)]


@app.task(name="advocacy.fulfil_rewards", **_RETRY)  # type: ignore[untyped-decorator]
def fulfil_rewards(store_url: str | None = None, database: str | None = None, limit: int = 100) -> dict[str, Any]:
    report = _service(store_url, database).fulfil(limit=limit)
    return {"fulfilled": report.fulfilled, "failed": report.failed}


app.conf.beat_schedule = {
    "advance-rewards": {"task": "advocacy.advance_rewards", "schedule": timedelta(minutes=5)},
    "fulfil-rewards": {"task": "advocacy.fulfil_rewards", "schedule": timedelta(minutes=5)},
}
