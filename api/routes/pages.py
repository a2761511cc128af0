"""Server-rendered pages for marketers: the dashboard here, the programme pages in `pages_program`, the customer's
own page in `pages_customer`. Each route loads one read model (`engine.views`) and renders one template.

Every marketer page depends on `MarketerPageDep` (no session: a redirect to `/login`); every form on a page posts
the session's `csrf_token`, which its handler checks before anything else. Pages are personal and carry that
token, so no cache keeps them and no other site may frame them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from api.auth import CustomerPage, MarketerPage, MarketerPageDep
from api.deps import ServiceDep, StoreDep
from engine import views
from engine.access import Scope
from engine.kits import format_money
from graph.errors import Forbidden
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


def require_scope(page: MarketerPage, scope: Scope) -> None:
    """A form that changes something needs the scope its API route needs; reading pages need only `read`."""
    if not page.marketer.allows(scope):
        raise Forbidden(f"the key this session signed in with lacks the scope '{scope.value}'")


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
    summary = views.dashboard_summary(store, top=10)
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
