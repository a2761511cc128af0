"""`/v1/targets` and `/v1/forecasts`: whom to ask, and what asking them would bring (`engine.targeting`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query

from api.auth import V1Route
from api.deps import StoreDep
from api.schemas import FORECAST_EXAMPLE, ForecastRequest, TargetQuery, problem_responses
from engine.targeting import Forecast, TargetChoice, forecast_campaign
from engine.views import reproducible_targets

router = APIRouter(prefix="/v1", tags=["targets"], route_class=V1Route)


@router.get(
    "/targets",
    summary="Choose K customers to ask",
    description="The `k` customers that maximise the expected referral cascade, in order, each with why, like "
    "`advocacy targets`. Uses the latest analysis: `do_not_ask` customers (and, by default, customers without "
    "consent) are never chosen. The expected reach comes with a 95% confidence interval and the degree, PageRank "
    "and degree-discount baselines under the same constraints. Before any analysis, or when nobody can be "
    "chosen, the answer is a 422 problem. A choice with a `seed` is reproducible, so the same question is answered "
    "from memory for up to a minute while the store's counts and latest analysis are unchanged.",
    responses=problem_responses(422, 503),
)
def get_targets(query: Annotated[TargetQuery, Query()], store: StoreDep) -> TargetChoice:
    return reproducible_targets(
        store,
        k=query.k,
        model=query.model,
        p=query.p,
        exclude_segments=query.exclude_segment,
        max_per_community=query.max_per_community,
        only_consenting=query.only_consenting,
        method=query.method,
        seed=query.seed,
        mc_runs=query.mc_runs,
    )


@router.post(
    "/forecasts",
    summary="Forecast a campaign asking these customers",
    description="Expected customers reached, referrals at a conversion rate (by default the store's history) "
    "and reward cost, each with an approximate 95% range. Unknown customers answer 404.",
    responses=problem_responses(404, 422, 503),
)
def post_forecast(
    body: Annotated[
        ForecastRequest,
        Body(openapi_examples={"campaign": {"summary": "Three customers, 10 + 5 rewards", "value": FORECAST_EXAMPLE}}),
    ],
    store: StoreDep,
) -> Forecast:
    return forecast_campaign(
        store,
        body.seeds,
        conversion_rate=body.conversion_rate,
        reward_per_referral=body.reward_per_referral,
        friend_reward=body.friend_reward,
        model=body.model,
        p=body.p,
        runs=body.runs,
        seed=body.seed,
    )
