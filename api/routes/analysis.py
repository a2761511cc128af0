"""`/v1/analysis/runs`: the record of each analysis (starting one comes with the analysis service)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from api.deps import StoreDep
from api.schemas import RunList, problem_responses
from graph.model import AnalysisRun

router = APIRouter(prefix="/v1/analysis", tags=["analysis"])


@router.get("/runs", summary="List analysis runs, most recent first", responses=problem_responses(422, 503))
def list_runs(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=200, description="How many runs to return.")] = 50,
) -> RunList:
    return RunList(items=store.list_runs(limit=limit))


@router.get("/runs/{run_id}", summary="Read one analysis run", responses=problem_responses(404, 503))
def get_run(run_id: Annotated[str, Path(examples=["run-20240601-0900"])], store: StoreDep) -> AnalysisRun:
    return store.get_run(run_id)
