"""Server-rendered pages for marketers: the dashboard here, the programme pages in `pages_program`, the customer's
own page in `pages_customer`. Each route loads one read model (`engine.views`) and renders one template.

Every marketer page depends on `MarketerPageDep` (no session: a redirect to `/login`); every form on a page posts
the session's `csrf_token`, which its handler checks before anything else. Pages are personal and carry that
token, so no cache keeps them and no other site may frame them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from api.auth import POLICY, CustomerPage, MarketerPage, MarketerPageDep, check_rule, require_page_csrf
from api.deps import ServiceDep, StoreDep, app_clock
from engine import views
from engine.kits import format_money
from graph.model import Segment

router = APIRouter(tags=["pages"], include_in_schema=False)

PAGE_HEADERS: Final[dict[str, str]] = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "Referrer-Policy": "same-origin",
}
"""A page holds its session's CSRF token and someone's data: never cached, never framed by another site."""

SEGMENT_LABELS: Final[dict[str, str]] = {
    "influencer": "Influencer",
    "prosumer": "Prosumer",
    "advocate": "Advocate",
    "passive": "Passive",
    "do_not_ask": "Do not ask",
}

CHANNEL_LABELS: Final[dict[str, str]] = {
    "email": "Email",
    "sms": "SMS",
    "whatsapp": "WhatsApp",
    "push": "Notifications in the app",
    "x": "X",
    "linkedin": "LinkedIn",
    "facebook": "Facebook",
    "copy_link": "Anywhere else",
}
"""Contact and share channels as people name them."""

CampaignQuery = Annotated[str | None, Query(max_length=64, description="One campaign; all when absent or empty.")]
CsrfField = Annotated[str | None, Form(max_length=200)]

ApiRoute = tuple[str, str]
"""An entry of `api.auth.POLICY`: the method and path template of a `/v1` route."""


def money(amount_minor: float | int | None, currency: str) -> str:
    """Minor units as people write them (`10.50 EUR`); forecasts' fractional amounts are rounded to a unit."""
    if amount_minor is None:
        return "–"
    return format_money(round(amount_minor), currency)


def percent(rate: float | None, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage; a dash when it has no denominator yet (`engine.metrics`)."""
    if rate is None:
        return "–"
    return f"{100 * rate:.{digits}f} %"


def render(
    request: Request,
    name: str,
    context: Mapping[str, Any],
    *,
    page: MarketerPage | CustomerPage | None,
    status_code: int = 200,
) -> HTMLResponse:
    """One template with what every page shares: the session (for its CSRF token) and the formatters."""
    shared: dict[str, Any] = {
        "page": page,
        "marketer": page.marketer if isinstance(page, MarketerPage) else None,
        "money": money,
        "percent": percent,
        "seg_label": SEGMENT_LABELS,
        "channel_labels": CHANNEL_LABELS,
    }
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request, name, {**shared, **context}, status_code=status_code, headers=PAGE_HEADERS
    )
    return response


def may_call(page: MarketerPage, route: ApiRoute) -> bool:
    """Whether the session's key may do what the `/v1` route does (to show or hide the form doing it)."""
    return page.marketer.allows(POLICY[route].scope)


def check_form(page: MarketerPage, request: Request, csrf_token: str | None, *routes: ApiRoute) -> None:
    """Before a form changes anything: the session's CSRF token, then the access rules of the `/v1` routes that do
    the same (`api.auth.POLICY`), so a page never needs less, or more, than the API."""
    require_page_csrf(page, csrf_token)
    for route in routes:
        check_rule(page.marketer, POLICY[route], request)


def see_other(path: str, *, anchor: str = "", **query: str) -> RedirectResponse:
    """The answer to a form that changed something: the page showing the change, so reloading never posts twice.
    Empty query values are left out."""
    shown = urlencode({k: v for k, v in query.items() if v})
    target = f"{path}?{shown}" if shown else path
    return RedirectResponse(f"{target}#{anchor}" if anchor else target, status_code=303)


def campaign_or_none(value: str | None) -> str | None:
    """A select's "all campaigns" option sends an empty value."""
    return value.strip() or None if value is not None else None


@router.get("/", response_class=HTMLResponse)
def dashboard(
    request: Request, page: MarketerPageDep, store: StoreDep, service: ServiceDep, campaign: CampaignQuery = None
) -> HTMLResponse:
    campaign_id = campaign_or_none(campaign)
    if campaign_id is not None:
        service.get_campaign(campaign_id)  # a typo is a 404, not a page of zeros
    summary = views.dashboard_summary(store, top=10, now=app_clock(request)())
    return render(
        request,
        "pages/dashboard.html",
        {
            "active": "dashboard",
            "summary": summary,
            "segments": list(Segment),
            "metrics": service.metrics(campaign_id),
            "campaigns": service.list_campaigns(),
            "campaign_id": campaign_id,
        },
        page=page,
    )
