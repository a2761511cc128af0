"""Celery tasks. Each takes ids and plain values and calls one service step, so a retry repeats one pure step.

Referral tasks are idempotent by construction: an order is settled once in the store's transaction however many
workers receive it, and rewards are keyed by conversion and rule. That is what lets them run with late acks: a
worker killed mid-task leaves its message to be redelivered, and the redelivery changes nothing already done.
"""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from typing import Any

import redis

from engine.celery_app import app
from engine.channels import make_adapters
from engine.dispatch import CeleryDispatcher
from engine.fulfilment import make_fulfiller
from engine.limits import make_limiter
from engine.outreach import OutreachService
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

_RETRY_CONTACT: dict[str, Any] = {
    **_RETRY,
    "autoretry_for": (StoreUnavailable, redis.ConnectionError, redis.TimeoutError),
}
"""Sending also needs the limiter's Redis; while it is down the message waits (its lease then frees it)."""


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


@lru_cache(maxsize=4)
def _outreach(store_url: str | None, database: str | None) -> OutreachService:
    """One outreach service per worker process: its limiter and SMTP settings are read once."""
    settings = get_settings()
    store = _store(store_url or settings.store, database or settings.neo4j.database)
    return OutreachService(store, settings, limiter=make_limiter(settings), adapters=make_adapters(settings))


@app.task(name="advocacy.plan_outreach", **_RETRY)  # type: ignore[untyped-decorator]
def plan_outreach(outreach_id: str, store_url: str | None = None, database: str | None = None) -> dict[str, Any]:
    """Write the outreach's outbox, then fan out one send task per message due now."""
    service = _outreach(store_url, database)
    report = service.plan(outreach_id)
    dispatcher = CeleryDispatcher(app, store_url=store_url, database=database)
    while keys := service.due(limit=5000, outreach_id=outreach_id):
        dispatcher.dispatch(keys)
        if len(keys) < 5000:
            break
    return {"outreach_id": report.outreach_id, "audience": report.audience, "enqueued": report.enqueued}


@app.task(name="advocacy.send_message", **_RETRY_CONTACT)  # type: ignore[untyped-decorator]
def send_message(key: str, store_url: str | None = None, database: str | None = None) -> dict[str, Any]:
    """Send one outbox message within the policy; a duplicate or retried task finds it claimed or finished."""
    message = _outreach(store_url, database).send(key)
    return {"key": message.key, "status": message.status.value, "reason": message.reason}


@app.task(name="advocacy.dispatch_due", **_RETRY)  # type: ignore[untyped-decorator]
def dispatch_due(store_url: str | None = None, database: str | None = None, limit: int = 5000) -> int:
    """Celery beat's cadence: send what came due (later steps, quiet hours over, leases of dead workers)."""
    keys = _outreach(store_url, database).due(limit=limit)
    CeleryDispatcher(app, store_url=store_url, database=database).dispatch(keys)
    return len(keys)


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
    "dispatch-due": {"task": "advocacy.dispatch_due", "schedule": timedelta(minutes=1)},
}
