"""Campaigns and codes for marketers (`/v1/campaigns`, `/v1/codes`), and the public referral link `/r/{code}`.

`router` holds the marketer operations and `public_router` what a friend's browser opens, so that a later issue
can guard the first without touching the second.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Final

from fastapi import APIRouter, Body, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from api.auth import PublicRoute, V1Route
from api.deps import ClockDep, ServiceDep, SettingsDep, StoreDep, get_service
from api.params import CampaignIdPath, CodePath, CustomerIdPath
from api.schemas_program import (
    CAMPAIGN_EXAMPLE,
    CampaignCreate,
    CampaignList,
    CodeList,
    CodeRequest,
    program_problems,
)
from engine.kits import qr_svg, referral_link
from graph.errors import LedgerConflict, NotFound
from graph.program import Campaign, CampaignStatus, CodeStatus, ReferralCode

router = APIRouter(prefix="/v1", route_class=V1Route)
public_router = APIRouter(tags=["public"], route_class=PublicRoute)

PRIVATE_LINK_HEADERS: Final[dict[str, str]] = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
"""A referral link is personal: no cache may replay one visitor's cookie to another, and the code in the URL
is not passed on to the sites the landing page links to."""


# --- campaigns ---------------------------------------------------------------------------------------------
@router.post(
    "/campaigns",
    tags=["campaigns"],
    status_code=201,
    summary="Create a campaign",
    description="The friend's offer, how conversions are attributed, the reward rules and the fraud thresholds. "
    "The server sets `created_at`; `Location` is the new campaign's URL. An id already in use answers 409.",
    responses=program_problems(409, 422, 503),
)
def create_campaign(
    request: Request,
    response: Response,
    body: Annotated[
        CampaignCreate,
        Body(openapi_examples={"double-sided": {"summary": "Credit, discount, badge", "value": CAMPAIGN_EXAMPLE}}),
    ],
    service: ServiceDep,
    clock: ClockDep,
) -> Campaign:
    try:
        service.get_campaign(body.id)
    except NotFound:
        pass
    else:
        raise LedgerConflict(f"campaign {body.id!r} already exists")
    campaign = service.create_campaign(body.campaign(created_at=clock()))
    response.headers["Location"] = request.app.url_path_for("get_campaign", campaign_id=campaign.id)
    return campaign


@router.get("/campaigns", summary="List campaigns, oldest first", responses=program_problems(503), tags=["campaigns"])
def list_campaigns(service: ServiceDep) -> CampaignList:
    return CampaignList(items=service.list_campaigns())


@router.get(
    "/campaigns/{campaign_id}", summary="Read a campaign", responses=program_problems(404, 503), tags=["campaigns"]
)
def get_campaign(campaign_id: CampaignIdPath, service: ServiceDep) -> Campaign:
    return service.get_campaign(campaign_id)


# --- codes -------------------------------------------------------------------------------------------------
@router.post(
    "/customers/{customer_id}/codes",
    status_code=201,
    tags=["codes"],
    summary="Issue a referral code to an advocate",
    description="A friendly generated code (from the advocate's name), or the `vanity` code asked for. A vanity "
    "code already taken answers 409; an unknown customer or campaign 404; an ended campaign 422.",
    responses=program_problems(404, 409, 422, 503),
)
def issue_code(
    request: Request,
    response: Response,
    customer_id: CustomerIdPath,
    body: Annotated[
        CodeRequest,
        Body(
            openapi_examples={
                "generated": {"summary": "A generated code", "value": {"campaign_id": "spring-2024"}},
                "vanity": {"summary": "A vanity code", "value": {"campaign_id": "spring-2024", "vanity": "ADA10"}},
            }
        ),
    ],
    service: ServiceDep,
) -> ReferralCode:
    code = service.issue_code(customer_id, body.campaign_id, vanity=body.vanity)
    response.headers["Location"] = request.app.url_path_for("get_code", code=code.code)
    return code


@router.get(
    "/customers/{customer_id}/codes",
    tags=["codes"],
    summary="List an advocate's codes, oldest first",
    responses=program_problems(404, 503),
)
def list_customer_codes(customer_id: CustomerIdPath, store: StoreDep) -> CodeList:
    store.get_customer(customer_id)
    return CodeList(items=store.list_codes(customer_id=customer_id))


@router.get("/codes/{code}", tags=["codes"], summary="Read a code", responses=program_problems(404, 503))
def get_code(code: CodePath, service: ServiceDep) -> ReferralCode:
    return service.get_code(code)


_STATUS_HELP = (
    "Friends who touched the code before keep their attribution; new visitors are not attributed while it is "
    "paused or revoked (they still reach the landing page). Repeating the call changes nothing."
)


@router.post(
    "/codes/{code}/pause",
    tags=["codes"],
    summary="Pause a code",
    description=_STATUS_HELP,
    responses=program_problems(404, 503),
)
def pause_code(code: CodePath, service: ServiceDep) -> ReferralCode:
    return service.change_code_status(code, CodeStatus.PAUSED)


@router.post(
    "/codes/{code}/resume",
    tags=["codes"],
    summary="Resume a paused code",
    description=_STATUS_HELP,
    responses=program_problems(404, 503),
)
def resume_code(code: CodePath, service: ServiceDep) -> ReferralCode:
    return service.change_code_status(code, CodeStatus.ACTIVE)


@router.post(
    "/codes/{code}/revoke",
    tags=["codes"],
    summary="Revoke a code",
    description=_STATUS_HELP,
    responses=program_problems(404, 503),
)
def revoke_code(code: CodePath, service: ServiceDep) -> ReferralCode:
    return service.change_code_status(code, CodeStatus.REVOKED)


@router.post(
    "/codes/{code}/rotate",
    tags=["codes"],
    summary="Replace a leaked code with a new one",
    description="The advocate gets a new code (the answer); the old one is revoked with `replaced_by` and its "
    "link keeps working, showing the new code. Friends who clicked before keep their attribution. Rotating the "
    "old code again answers the same new code.",
    responses=program_problems(404, 503),
)
def rotate_code(code: CodePath, service: ServiceDep) -> ReferralCode:
    return service.rotate_code(code)


# --- the public link and landing page ----------------------------------------------------------------------
@public_router.get(
    "/r/{code}",
    status_code=302,
    response_class=RedirectResponse,
    summary="Follow a referral link",
    description="Records the click (the IP address is hashed with a key, never stored) and redirects to the "
    "campaign's landing URL. The click id travels in an HttpOnly cookie; pass it as `click_id` with the friend's "
    "signup or order. A paused or revoked code still redirects but sets no cookie, so an earlier click stays. "
    "An unknown code answers 404 (an HTML page for browsers).",
    responses={302: {"description": "To the landing page"}, **program_problems(404, 503)},
)
async def follow_link(code: CodePath, request: Request) -> RedirectResponse:
    # Built here rather than declared as a dependency: solving it was 77 of a redirect's 974 Python calls.
    service = await get_service(request)
    config = service.settings
    known_visitor = request.cookies.get(config.visitor_cookie)
    visitor = known_visitor if known_visitor and len(known_visitor) <= 64 else secrets.token_urlsafe(16)
    visit = {
        "ip": request.client.host if request.client else None,
        "user_agent": request.headers.get("user-agent"),
        "referer": request.headers.get("referer"),
        "cookie": visitor,
    }
    outcome = service.click_from_memory(code, **visit)
    if outcome is None:  # the store must be read (or written): that may wait, so not on the event loop
        outcome = await run_in_threadpool(service.click, code, **visit)
    response = RedirectResponse(outcome.redirect_url, status_code=302, headers=PRIVATE_LINK_HEADERS)
    if visitor != known_visitor:
        response.set_cookie(
            config.visitor_cookie,
            visitor,
            max_age=400 * 86_400,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="lax",
        )
    if outcome.attributable:
        response.set_cookie(
            config.click_cookie,
            outcome.click.id,
            max_age=config.cookie_max_age_days * 86_400,
            path="/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="lax",
        )
    return response


QR_HEADERS: Final[dict[str, str]] = {
    "Cache-Control": "public, max-age=86400",
    "Content-Security-Policy": "default-src 'none'",
    "X-Content-Type-Options": "nosniff",
}
"""A code's QR code changes only with the public base URL: caches may keep it a day. An SVG opened on its own
is a document, so it may load and run nothing."""


@public_router.get(
    "/qr/{code}.svg",
    response_class=Response,
    summary="The QR code of a referral link",
    description="An SVG image of `<public base url>/r/{code}` (the kit's `qr_url`), cacheable for a day. An "
    "unknown code answers 404.",
    responses={200: {"content": {"image/svg+xml": {}}, "description": "The QR code"}, **program_problems(404, 503)},
)
async def qr_image(code: CodePath, service: ServiceDep, settings: SettingsDep) -> Response:
    def draw() -> str:
        referral, _ = service.follow(code)
        return qr_svg(referral_link(settings.api.public_base_url, referral.code))

    return Response(await run_in_threadpool(draw), media_type="image/svg+xml", headers=QR_HEADERS)


def first_name(name: str | None) -> str | None:
    """Only the first word of the referrer's name reaches a stranger's screen."""
    words = (name or "").split()
    return words[0] if words else None


@public_router.get("/landing/{code}", response_class=HTMLResponse, include_in_schema=False)
def landing(code: CodePath, request: Request, service: ServiceDep, store: StoreDep) -> HTMLResponse:
    referral, campaign = service.follow(code)
    referrer = store.get_customer(referral.customer_id)
    page: HTMLResponse = request.app.state.templates.TemplateResponse(
        request,
        "pages/landing.html",
        {
            "campaign": campaign,
            "code": referral.replaced_by or referral.code,
            "referrer": first_name(referrer.name),
            "live": campaign.status is CampaignStatus.ACTIVE,
        },
        headers=PRIVATE_LINK_HEADERS,
    )
    return page
