"""Liveness and readiness probes, for orchestrators and load balancers."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import HolderDep
from api.schemas import Health, Readiness, problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Is the process alive?", description="Answers 200 even when the store is down.")
def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    summary="Can the app serve requests?",
    description="200 when the store answers a trivial query; otherwise 503 naming the dependency, with `Retry-After`.",
    responses=problem_responses(503),
)
def readyz(holder: HolderDep) -> Readiness:
    holder.ping()
    return Readiness(store=holder.where)
