"""The customer's own page, `/me`: their link, QR code and kit, their rewards, and their preferences and ideas.

A customer arrives through `/me/enter?token=…` (`api.routes.access`), which sets the customer session; every route
here depends on `CustomerPageDep` and reads or changes that customer only: no route takes a customer id. Forms post
the session's `csrf_token` and answer a redirect back to the page (303), so reloading never posts twice.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from api.auth import CustomerPage, CustomerPageDep, require_page_csrf
from api.deps import ClockDep, OutreachServiceDep, StoreDep
from api.routes.pages import CsrfField, campaign_or_none, render, see_other
from engine import views
from engine.outreach import OutreachService
from engine.preferences import PreferenceChange, change_preferences
from graph.errors import AdvocacyError, Forbidden, InvalidInput, PolicyViolation
from graph.model import ContactChannel, EventKind
from graph.outreach import ShareChannel
from graph.program import RewardState

router = APIRouter(tags=["pages"], include_in_schema=False)

CampaignField = Annotated[str, Form(max_length=64)]

DONE: Final[dict[str, str]] = {
    "preferences": "Your preferences are saved.",
    "unsubscribed": "You are unsubscribed: we will not contact you again. Your rewards stay yours.",
    "idea": "Thank you! Your idea reached the team.",
}
"""What a redirect's `done` key says on the page; fixed sentences, so nothing from the URL is shown."""

SHOWN_STATES: Final[tuple[RewardState, ...]] = (
    RewardState.FULFILLED,
    RewardState.APPROVED,
    RewardState.PENDING,
    RewardState.HELD,
)
"""Balances a customer sees, most certain first; reversed and rejected amounts are not theirs to spend."""


def _me_page(
    request: Request,
    page: CustomerPage,
    service: OutreachService,
    *,
    campaign: str | None,
    done: str | None = None,
    refused: AdvocacyError | None = None,
    refused_at: str | None = None,
    idea: str = "",
) -> HTMLResponse:
    """`refused`: why the form `refused_at` was refused, shown beside it with what was typed (`idea`) kept."""
    home = views.customer_home(service, page.customer_id, campaign)
    response = render(
        request,
        "pages/me.html",
        {
            "home": home,
            "done": DONE.get(done or ""),
            "error": refused.detail if refused else None,
            "error_at": refused_at,
            "idea": idea,
            "channels": list(ContactChannel),
            "shown_states": SHOWN_STATES,
            "copy_link": ShareChannel.COPY_LINK,
        },
        page=page,
        status_code=refused.status if refused else 200,
    )
    response.headers["Referrer-Policy"] = "no-referrer"  # the page's links must not carry its address elsewhere
    return response


@router.get("/me", response_class=HTMLResponse)
def me_page(
    request: Request,
    page: CustomerPageDep,
    service: OutreachServiceDep,
    campaign: Annotated[str | None, Query(max_length=64)] = None,
    done: Annotated[str | None, Query(max_length=20)] = None,
) -> HTMLResponse:
    """The first running campaign unless `campaign` names another running one."""
    return _me_page(request, page, service, campaign=campaign_or_none(campaign), done=done)


@router.post("/me/preferences")
def save_preferences(
    request: Request,
    page: CustomerPageDep,
    store: StoreDep,
    service: OutreachServiceDep,
    clock: ClockDep,
    csrf_token: CsrfField = None,
    campaign: CampaignField = "",
    action: Annotated[Literal["save", "unsubscribe"], Form()] = "save",
    consent: Annotated[list[ContactChannel] | None, Form()] = None,
    shown: Annotated[list[ContactChannel] | None, Form()] = None,
) -> Response:
    """Consent per channel (`shown` lists the boxes the form had, so an unticked box reads as "no"), or leaving
    every channel at once; what `PUT /v1/customers/{id}/preferences` does."""
    require_page_csrf(page, csrf_token)
    if action == "unsubscribe":
        change = PreferenceChange(unsubscribed=True)
    else:
        ticked = set(consent or ())
        change = PreferenceChange(consent={channel: channel in ticked for channel in shown or ()})
    try:
        change_preferences(store, page.customer_id, change, clock=clock, by_customer=True)
    except (PolicyViolation, InvalidInput, Forbidden) as exc:
        return _me_page(
            request, page, service, campaign=campaign_or_none(campaign), refused=exc, refused_at="preferences"
        )
    done = "unsubscribed" if action == "unsubscribe" else "preferences"
    return see_other("/me", anchor="preferences", campaign=campaign, done=done)


@router.post("/me/ideas")
def send_idea(
    request: Request,
    page: CustomerPageDep,
    service: OutreachServiceDep,
    csrf_token: CsrfField = None,
    campaign: CampaignField = "",
    kind: Annotated[Literal["idea", "feedback"], Form()] = "idea",
    text: Annotated[str, Form(max_length=5000)] = "",
) -> Response:
    """An idea or feedback, recorded as the customer's event (a prosumer signal), as `POST …/responses` does."""
    require_page_csrf(page, csrf_token)
    try:
        service.respond(page.customer_id, EventKind(kind), text, campaign_id=campaign_or_none(campaign))
    except InvalidInput as exc:
        return _me_page(
            request, page, service, campaign=campaign_or_none(campaign), refused=exc, refused_at="ideas", idea=text
        )
    return see_other("/me", anchor="ideas", campaign=campaign, done="idea")
