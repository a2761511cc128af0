"""`/v1/metrics`: the programme's funnel and economics, and the multi-hop referral cascades (also as an SVG)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.auth import V1Route
from api.deps import ServiceDep
from api.schemas_program import program_problems
from engine.metrics import CascadeReport, ProgramMetrics, draw_cascades_svg
from engine.referrals import ReferralService

router = APIRouter(prefix="/v1/metrics", tags=["metrics"], route_class=V1Route)

SVG_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": "default-src 'none'"}
"""Opened on its own, the chart runs nothing and loads nothing, whatever a label might contain."""

CampaignQuery = Annotated[str | None, Query(description="One campaign; the whole programme when absent.")]
TopQuery = Annotated[int, Query(ge=0, le=1000, description="How many of the largest seed cascades to list.")]


def _known_campaign(service: ReferralService, campaign_id: str | None) -> None:
    """A typo in `campaign_id` is a 404, not a page of zeros."""
    if campaign_id is not None:
        service.get_campaign(campaign_id)


@router.get(
    "",
    summary="Programme metrics",
    description="Participation, shares, visitors, signups and conversions, the k-factor (acquired customers per "
    "advocate who shared), cycle time, reward cost per acquired customer and referral depth. A rate is null when "
    "its denominator is 0.",
    responses=program_problems(404, 503),
)
def get_metrics(service: ServiceDep, campaign_id: CampaignQuery = None) -> ProgramMetrics:
    _known_campaign(service, campaign_id)
    return service.metrics(campaign_id)


@router.get(
    "/cascades",
    summary="Referral cascades by generation",
    description="Who joined through whom, generation by generation from the seeds (referrers nobody brought in): "
    "customers, k-factor and reward cost per generation, and the largest seed cascades.",
    responses=program_problems(404, 422, 503),
)
def get_cascades(service: ServiceDep, campaign_id: CampaignQuery = None, top: TopQuery = 20) -> CascadeReport:
    _known_campaign(service, campaign_id)
    return service.cascades(campaign_id, top=top)


@router.get(
    "/cascades.svg",
    summary="Referral cascades as a chart",
    description="Customers per generation (bars) and each generation's k-factor (line), as a standalone, "
    "accessible SVG with no external resources.",
    response_class=Response,
    responses=program_problems(404, 422, 503) | {200: {"content": {"image/svg+xml": {}}, "description": "The chart"}},
)
def get_cascades_svg(
    service: ServiceDep,
    campaign_id: CampaignQuery = None,
    width: Annotated[int, Query(ge=200, le=4000, description="Width in pixels.")] = 640,
    height: Annotated[int, Query(ge=120, le=4000, description="Height in pixels.")] = 320,
) -> Response:
    _known_campaign(service, campaign_id)
    svg = draw_cascades_svg(service.cascades(campaign_id, top=0), width=width, height=height)
    return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)
