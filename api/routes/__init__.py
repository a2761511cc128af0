"""The app's routers. Each is included separately so a later issue can guard one with its own dependency,
e.g. `app.include_router(customers.router, dependencies=[Depends(require_marketer_key)])`."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import (
    analysis,
    conversions,
    customers,
    graph,
    health,
    pages,
    program_metrics,
    referrals,
    rewards,
    targets,
)

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    customers.router,
    graph.router,
    analysis.router,
    targets.router,
    referrals.router,
    conversions.router,
    rewards.router,
    program_metrics.router,
    conversions.webhook_router,
    referrals.public_router,
    pages.router,
)
"""Marketer routers first; `conversions.webhook_router` authenticates by signature and `referrals.public_router`
serves friends' browsers, so neither takes the marketer guard a later issue adds."""
