"""What customers ask for and send back (`/v1/customers/{id}/kit|responses|invitations`), and the public one-click
unsubscribe page `/u/{token}`.

`router` serves a customer's own requests (a later issue guards it with the customer's session) and
`public_router` what anyone holding a signed link may open: the link is the proof, so no login, cookie or form
token stands between a person and "stop". The two are separate so each can get its own guard.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from api.auth import PublicRoute, V1Route
from api.deps import OutreachServiceDep, get_outreach_service
from api.params import CustomerIdPath
from api.schemas_outreach import InvitationRequest, InvitationResult, ResponseRequest
from api.schemas_program import program_problems
from engine.kits import Kit
from graph.errors import Unauthorized
from graph.model import ContactChannel, Event, EventKind

router = APIRouter(prefix="/v1", tags=["kits"], route_class=V1Route)
public_router = APIRouter(tags=["unsubscribe"], route_class=PublicRoute)

TokenPath = Annotated[str, Path(description="The signed token from the message's unsubscribe link.")]

PRIVATE_PAGE_HEADERS: Final[dict[str, str]] = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}
"""The token in the URL speaks for one person: no cache keeps the page, no site it links to learns the URL."""

ON_LOOP_RENDER_S: Final = 0.02
"""With the embedded store, a kit that only reads is made on the event loop (a thread hop and the threads' fight
for the GIL cost more than the kit); a template slower than this is rendered again in the threadpool instead."""


# --- the customer's own requests ---------------------------------------------------------------------------
@router.get(
    "/customers/{customer_id}/kit",
    summary="A customer's sharing kit",
    description="Their referral link (issued on first request) and its QR code as inline SVG, a ready message per "
    "share channel, the reward for them and for their friend, and assets. The templates follow their segment "
    "(an influencer, a prosumer invited to review or co-create, a quiet advocate) and locale; with `outreach_id`, "
    "the A/B variant they were assigned. Asking counts as engagement, which lifts the back-off on messages.",
    responses=program_problems(404, 422, 503),
)
async def get_kit(
    request: Request,
    customer_id: CustomerIdPath,
    campaign_id: Annotated[str, Query(description="The referral campaign the kit is for.")],
    outreach_id: Annotated[str | None, Query(description="The outreach that brought them, for its variant.")] = None,
) -> Kit:
    # Built here rather than declared as a dependency: solving it was a twentieth of a warm kit's Python calls.
    service = await get_outreach_service(request)
    if service.local_reads:
        kit = service.kit_from_reads(customer_id, campaign_id, outreach_id=outreach_id, within_s=ON_LOOP_RENDER_S)
        if kit is not None:
            return kit
    return await run_in_threadpool(service.kit, customer_id, campaign_id, outreach_id=outreach_id)


@router.post(
    "/customers/{customer_id}/responses",
    status_code=201,
    summary="Send an idea, feedback, a review or content back",
    description="Recorded as the customer's event in the graph, where the next analysis reads it as a prosumer "
    "signal; it also counts as engagement.",
    responses=program_problems(404, 422, 503),
)
def post_response(customer_id: CustomerIdPath, body: ResponseRequest, service: OutreachServiceDep) -> Event:
    return service.respond(customer_id, EventKind(body.kind.value), body.text, campaign_id=body.campaign_id)


@router.post(
    "/customers/{customer_id}/invitations",
    status_code=202,
    summary="Invite a friend by email",
    description="Sent on the customer's behalf within the friend's own limits, which count every advocate's "
    "invitations: a friend who had enough messages, declined or unsubscribed is held, which is a normal answer "
    "(`status` `held` and its `reason`), not an error. The address is never echoed back.",
    responses=program_problems(404, 409, 422, 503),
)
def post_invitation(
    customer_id: CustomerIdPath,
    body: Annotated[
        InvitationRequest,
        Body(
            openapi_examples={
                "invite": {
                    "summary": "A friend",
                    "value": {"campaign_id": "spring-2024", "email": "friend@example.org"},
                }
            }
        ),
    ],
    service: OutreachServiceDep,
) -> InvitationResult:
    message = service.invite_friend(customer_id, body.campaign_id, body.email)
    return InvitationResult.of(message, address=body.email)


# --- the public unsubscribe link ---------------------------------------------------------------------------
def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _page(request: Request, name: str, context: dict[str, object], *, status_code: int = 200) -> HTMLResponse:
    page: HTMLResponse = request.app.state.templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=PRIVATE_PAGE_HEADERS
    )
    return page


def _invalid(request: Request, error: Unauthorized) -> HTMLResponse:
    """A person with a broken link gets a page that says so; a program gets the 401 problem."""
    if not _wants_html(request):
        raise error
    return _page(request, "pages/unsubscribe.html", {"invalid": True, "reason": error.detail}, status_code=401)


def _scope(person_key: str, channel: ContactChannel | None) -> dict[str, object]:
    """What the page says the link does: a friend stops all invitations; a customer one channel or every one."""
    return {"friend": person_key.startswith("email:"), "channel": channel.value if channel is not None else None}


@public_router.get(
    "/u/{token}",
    response_class=HTMLResponse,
    summary="The unsubscribe page",
    description="Says what unsubscribing does and offers a one-click button; opening the page changes nothing "
    "(mail scanners open links). A forged or expired link answers 401: a page for browsers, a problem otherwise.",
    responses={200: {"description": "The page"}, **program_problems(401)},
)
def unsubscribe_page(token: TokenPath, request: Request, service: OutreachServiceDep) -> HTMLResponse:
    try:
        asked = service.read_unsubscribe(token)
    except Unauthorized as exc:
        return _invalid(request, exc)
    scope = _scope(asked.person_key, asked.channel)
    return _page(request, "pages/unsubscribe.html", {"invalid": False, "action": request.url.path, **scope})


@public_router.post(
    "/u/{token}",
    response_class=HTMLResponse,
    summary="Unsubscribe in one click (RFC 8058)",
    description="Works with an empty body or the `List-Unsubscribe=One-Click` form body mail providers send, "
    "with no cookie and no login: the signed link is the proof. Nobody contacts the person for marketing again "
    "(a friend: nobody invites them again). Repeating it changes nothing. Answers the confirmation page.",
    responses={200: {"description": "The confirmation page"}, **program_problems(401, 503)},
)
def unsubscribe(token: TokenPath, request: Request, service: OutreachServiceDep) -> HTMLResponse:
    try:
        suppression = service.unsubscribe(token)
    except Unauthorized as exc:
        return _invalid(request, exc)
    return _page(request, "pages/unsubscribed.html", _scope(suppression.person_key, suppression.channel))
