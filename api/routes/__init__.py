"""The app's routers, each with the guard it is included behind (see `api.app.create_app`).

- `v1`: every `/v1` route answers to `api.auth.authorise` and its `POLICY` table (marketer keys with scopes,
  customer tokens for a customer's own routes); their routers make `V1Route`s, which run it (the app checks);
- `public`: friends' and customers' browsers following signed or public links; limited per client IP;
- `webhook`: authenticated by the sender's signature, not by a key;
- `open`: probes and pages, which check their own sessions.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from api.routes import (
    access,
    analysis,
    campaign_lifecycle,
    contact,
    conversions,
    customers,
    events,
    graph,
    health,
    kit_material,
    outreach,
    pages,
    pages_customer,
    pages_program,
    preferences,
    program_metrics,
    referrals,
    relationships,
    rewards,
    segments,
    targets,
    widget,
)

Guard = Literal["v1", "public", "webhook", "open"]

ROUTERS: tuple[tuple[APIRouter, Guard], ...] = (
    (health.router, "open"),
    (referrals.public_router, "public"),  # the busiest routes first: Starlette tries routes in order
    (contact.router, "v1"),  # a customer's kit, asked for on every page view of a widget
    (access.router, "v1"),
    (customers.router, "v1"),
    (graph.router, "v1"),
    (analysis.router, "v1"),
    (targets.router, "v1"),
    (referrals.router, "v1"),
    (conversions.router, "v1"),
    (rewards.router, "v1"),
    (program_metrics.router, "v1"),
    (outreach.router, "v1"),
    (relationships.router, "v1"),
    (events.router, "v1"),
    (events.customer_router, "v1"),
    (segments.router, "v1"),
    (preferences.customer_router, "v1"),
    (campaign_lifecycle.router, "v1"),
    (kit_material.customer_router, "v1"),
    (conversions.webhook_router, "webhook"),
    (contact.public_router, "public"),
    (access.public_router, "public"),
    (pages.router, "open"),
    (pages_program.router, "open"),
    (pages_customer.router, "open"),
    (widget.router, "open"),
)
