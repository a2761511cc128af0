"""`/v1/campaigns/{id}/pause|resume|end`: a referral campaign's lifecycle (`ReferralService.change_campaign_status`)."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

from api.auth import V1Route
from api.deps import ServiceDep
from api.params import CampaignIdPath
from api.schemas import problem_responses
from graph.program import Campaign, CampaignStatus

router = APIRouter(prefix="/v1", tags=["campaigns"], route_class=V1Route)


_WHILE_STOPPED: Final = (
    "While a campaign is not active, `/r/{code}` still records the click and shows the landing page but attributes "
    "no new visitor (no click cookie), and its orders are attributed without earning rewards. Friends who clicked "
    "before keep their attribution. Repeating the call changes nothing; an ended campaign answers 409."
)


@router.post(
    "/campaigns/{campaign_id}/pause",
    summary="Pause a campaign",
    description=_WHILE_STOPPED,
    responses=problem_responses(404, 409, 422, 503),
)
def pause_campaign(campaign_id: CampaignIdPath, service: ServiceDep) -> Campaign:
    return service.change_campaign_status(campaign_id, CampaignStatus.PAUSED)


@router.post(
    "/campaigns/{campaign_id}/resume",
    summary="Resume a paused campaign",
    description="Links attribute new visitors and orders earn rewards again, from now on; nothing that happened "
    "while it was paused is rewarded after the fact. Repeating the call changes nothing; an ended campaign "
    "answers 409.",
    responses=problem_responses(404, 409, 422, 503),
)
def resume_campaign(campaign_id: CampaignIdPath, service: ServiceDep) -> Campaign:
    return service.change_campaign_status(campaign_id, CampaignStatus.ACTIVE)


@router.post(
    "/campaigns/{campaign_id}/end",
    summary="End a campaign for good",
    description=f"Ending is final: no new codes are issued for it, and it cannot be resumed. {_WHILE_STOPPED}",
    responses=problem_responses(404, 422, 503),
)
def end_campaign(campaign_id: CampaignIdPath, service: ServiceDep) -> Campaign:
    return service.change_campaign_status(campaign_id, CampaignStatus.ENDED)
