"""`/v1/analysis/runs`: start an analysis, read the record of each run, compare two runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response

from api.auth import V1Route
from api.deps import ClockDep, StoreDep
from api.schemas import ANALYSIS_PARAMS_EXAMPLE, RunList, problem_responses
from engine.analysis import ABANDONED_AFTER_S, AnalysisParams, RunComparison, as_seen, compare_runs, run_analysis
from graph.model import AnalysisRun

router = APIRouter(prefix="/v1/analysis", tags=["analysis"], route_class=V1Route)

RunIdPath = Annotated[str, Path(description="An analysis run's id.", examples=["run-20240601-0900"])]


_STATUS_HELP = (
    "`status` is `running`, `done`, `failed`, or `abandoned`: a run whose process stopped without a word (killed, "
    f"out of memory) and has not said it was alive for {ABANDONED_AFTER_S:.0f} s. While running, `summary` names "
    "the step under way and the last `heartbeat_at`."
)


@router.get(
    "/runs",
    summary="List analysis runs, most recent first",
    description=_STATUS_HELP,
    responses=problem_responses(422, 503),
)
def list_runs(
    store: StoreDep,
    clock: ClockDep,
    limit: Annotated[int, Query(ge=1, le=200, description="How many runs to return.")] = 50,
) -> RunList:
    now = clock()
    return RunList(items=[as_seen(run, now=now) for run in store.list_runs(limit=limit)])


@router.post(
    "/runs",
    status_code=201,
    summary="Run an analysis now",
    description="Scores, segments and explains every customer, writes the results back and records the run, "
    "like `advocacy analyse`. Runs synchronously: the response is the finished run, and `Location` is its URL. "
    "The body is optional (defaults otherwise); unknown fields are refused with 422.",
    responses=problem_responses(422, 503),
)
def start_run(
    request: Request,
    response: Response,
    store: StoreDep,
    params: Annotated[
        AnalysisParams | None,
        Body(
            openapi_examples={
                "defaults": {"summary": "Default parameters", "value": {}},
                "seeded": {"summary": "A seed and a finer resolution", "value": ANALYSIS_PARAMS_EXAMPLE},
            }
        ),
    ] = None,
) -> AnalysisRun:
    run = run_analysis(store, params=params)
    response.headers["Location"] = request.app.url_path_for("get_run", run_id=run.id)
    return run


@router.get(
    "/runs/{run_id}", summary="Read one analysis run", description=_STATUS_HELP, responses=problem_responses(404, 503)
)
def get_run(run_id: RunIdPath, store: StoreDep, clock: ClockDep) -> AnalysisRun:
    return as_seen(store.get_run(run_id), now=clock())


@router.get(
    "/runs/{run_a}/compare/{run_b}",
    summary="Compare two analysis runs",
    description="What changed from run `run_a` to run `run_b`: segment counts, customers who changed segment "
    "and how, communities, top influencers kept, parameters changed.",
    responses=problem_responses(404, 503),
)
def compare(run_a: RunIdPath, run_b: RunIdPath, store: StoreDep) -> RunComparison:
    return compare_runs(store.get_run(run_a), store.get_run(run_b))
