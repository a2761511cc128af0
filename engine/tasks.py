"""Celery tasks. Each takes ids and plain values and calls one service step, so a retry repeats one pure step."""

from __future__ import annotations

from typing import Any

from engine.celery_app import app
from engine.sampling import sample_chunk


@app.task(name="advocacy.sample_rr_chunk", acks_late=True)  # type: ignore[untyped-decorator]
def sample_rr_chunk(
    store_url: str, database: str, model: str, p: float, weight: str | None, count: int, seed: int
) -> dict[str, Any]:
    """Draw `count` RR sets of the store's influence graph; pure in its inputs, so safe to run twice."""
    return sample_chunk(store_url, database, model=model, p=p, weight=weight, count=count, seed=seed)
