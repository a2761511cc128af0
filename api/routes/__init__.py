"""The app's routers. Each is included separately so a later issue can guard one with its own dependency,
e.g. `app.include_router(customers.router, dependencies=[Depends(require_marketer_key)])`."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import analysis, customers, graph, health, pages, targets

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    customers.router,
    graph.router,
    analysis.router,
    targets.router,
    pages.router,
)
