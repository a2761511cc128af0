"""The app's routers. Each is included separately so a later issue can guard one with its own dependency,
e.g. `app.include_router(customers.router, dependencies=[Depends(require_marketer_key)])`."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import (
    analysis,
    contact,
    conversions,
    customers,
    graph,
    health,
    outreach,
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
    outreach.router,
    contact.router,
    conversions.webhook_router,
    referrals.public_router,
    contact.public_router,
    pages.router,
)
"""Marketer routers first; `contact.router` serves customers asking for their own kit (a customer guard, not the
marketer's); `conversions.webhook_router` authenticates by signature, and `referrals.public_router` and
`contact.public_router` serve friends' and customers' browsers from signed links, so none of these takes the
marketer guard a later issue adds."""
