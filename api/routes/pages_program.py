"""The marketer's programme pages: targets with a forecast, campaigns and outreach, kit previews, the fraud queue,
and one referral followed from link to reward.

Reading pages need the `read` scope the session was signed in with; each form needs its `csrf_token` and what the
API routes doing the same need, read from their rules in `api.auth.POLICY` (`campaigns:write` to create a campaign
or launch an outreach, `rewards:write` to decide a fraud case). A form that changes something answers a redirect
(303) to the page showing the change, so reloading never posts it twice.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, BackgroundTasks, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from api.auth import MarketerPage, MarketerPageDep
from api.deps import ClockDep, ContactHolderDep, OutreachServiceDep, ServiceDep, SettingsDep, StoreDep
from api.routes.conversions import page_conversions
from api.routes.outreach import launch_outreach
from api.routes.pages import (
    ApiRoute,
    CampaignQuery,
    CsrfField,
    campaign_or_none,
    check_form,
    may_call,
    render,
    see_other,
)
from api.schemas_program import FraudCase
from engine import views
from engine.kits import reward_words
from engine.referrals import ReferralService
from engine.webhooks import to_minor
from graph.errors import AdvocacyError, InvalidInput, NotFound
from graph.model import Segment
from graph.outreach import Audience, AudienceKind, Outreach, ShareChannel, Template, TemplatePurpose
from graph.program import (
    Campaign,
    Conversion,
    ConversionStatus,
    RewardKind,
    RewardRule,
    RewardSide,
)
from graph.program_store import Store

router = APIRouter(tags=["pages"], include_in_schema=False)

TextField = Annotated[str, Form(max_length=500)]
MAX_TARGETS: Final = 100
PAGE_SIZE: Final = 50

CREATE_CAMPAIGN: Final[ApiRoute] = ("POST", "/v1/campaigns")
CREATE_OUTREACH: Final[ApiRoute] = ("POST", "/v1/outreach")
LAUNCH_OUTREACH: Final[ApiRoute] = ("POST", "/v1/outreach/{outreach_id}/launch")
PREVIEW_TEMPLATE: Final[ApiRoute] = ("POST", "/v1/templates/preview")
DECIDE_FRAUD_CASE: Final[ApiRoute] = ("POST", "/v1/fraud/cases/{order_id}/decision")
"""The `/v1` routes whose work the forms do: a form needs what its routes need (`api.routes.pages.check_form`)."""


def _errors(exc: ValidationError) -> str:
    """A pydantic error as one sentence a marketer can act on (no internals, no URLs)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'form'}: {err['msg'].removeprefix('Value error, ')}"
        for err in exc.errors()
    )


def _campaign(service: ReferralService, campaign_id: str | None, campaigns: Sequence[Campaign]) -> Campaign | None:
    """The campaign asked for (404 when unknown), else the one of `campaigns` a marketer most likely means."""
    if campaign_id is not None:
        return service.get_campaign(campaign_id)
    return views.default_campaign(campaigns)


def _budget(raw: str | None, currency: str) -> tuple[int | None, str | None]:
    """A budget typed in major units (`250` or `250.50`), in minor units, or the reason it cannot be read."""
    if raw is None or not raw.strip():
        return None, None
    try:
        return to_minor(raw.strip(), currency), None
    except ValueError as exc:
        return None, f"budget: {exc}"


def _rate(raw: str | None) -> tuple[float | None, str | None]:
    """A conversion rate typed as a percentage (`4.5`), as a probability, or the reason it cannot be read."""
    if raw is None or not raw.strip():
        return None, None
    try:
        value = float(raw.strip().rstrip("%"))
    except ValueError:
        return None, f"conversion rate: {raw.strip()!r} is not a number"
    if not 0 <= value <= 100:
        return None, "conversion rate: a percentage between 0 and 100"
    return value / 100, None


# --- targets and the forecast -----------------------------------------------------------------------------------
@router.get("/targets", response_class=HTMLResponse)
def targets_page(
    request: Request,
    page: MarketerPageDep,
    store: StoreDep,
    service: ServiceDep,
    k: Annotated[int, Query(ge=1, le=MAX_TARGETS)] = 10,
    campaign: CampaignQuery = None,
    budget: Annotated[str | None, Query(max_length=30)] = None,
    rate: Annotated[str | None, Query(max_length=10)] = None,
    picking: Annotated[str | None, Query(max_length=1)] = None,
    pick: Annotated[list[str] | None, Query(max_length=MAX_TARGETS)] = None,
) -> HTMLResponse:
    """`picking` marks a submitted form, so unticking every target reads as "none", not as "all"."""
    campaigns = service.list_campaigns()
    chosen = _campaign(service, campaign_or_none(campaign), campaigns)
    budget_minor, budget_problem = _budget(budget, chosen.currency if chosen else "EUR")
    conversion_rate, rate_problem = _rate(rate)
    view = views.targets_view(
        store,
        k=k,
        campaign=chosen,
        picked=(pick or []) if picking else None,
        conversion_rate=conversion_rate,
        budget_minor=budget_minor,
    )
    return render(
        request,
        "pages/targets.html",
        {
            "active": "targets",
            "view": view,
            "campaign": chosen,
            "campaigns": campaigns,
            "form": {"k": k, "budget": budget or "", "rate": rate or ""},
            "input_problems": [p for p in (budget_problem, rate_problem) if p],
        },
        page=page,
    )


def _outreach_id(name: str) -> str:
    """A readable, unique id for an outreach named by a marketer: `spring-vips-3fa2c1`."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:48].strip("-") or "outreach"
    return f"{slug}-{secrets.token_hex(3)}"


@router.post("/outreach")
def launch_outreach_page(
    request: Request,
    page: MarketerPageDep,
    background: BackgroundTasks,
    service: OutreachServiceDep,
    settings: SettingsDep,
    holder: ContactHolderDep,
    clock: ClockDep,
    csrf_token: CsrfField = None,
    campaign_id: Annotated[str, Form(max_length=64)] = "",
    name: TextField = "",
    customer_ids: Annotated[list[str] | None, Form(max_length=MAX_TARGETS)] = None,
) -> Response:
    """Ask the picked targets: a draft outreach to exactly them, launched as `POST /v1/outreach/{id}/launch` does."""
    check_form(page, request, csrf_token, CREATE_OUTREACH, LAUNCH_OUTREACH)
    try:
        outreach = Outreach(
            id=_outreach_id(name),
            name=name.strip() or "Outreach to chosen targets",
            campaign_id=campaign_id,
            audience=Audience(kind=AudienceKind.CUSTOMERS, customer_ids=tuple(customer_ids or ())),
            created_at=clock(),
        )
    except ValidationError as exc:
        raise InvalidInput(f"the outreach cannot be created: {_errors(exc)}") from None
    service.create_outreach(outreach)
    launch_outreach(outreach.id, background, service, settings, holder)
    return see_other("/campaigns", launched=outreach.id)


# --- campaigns and the campaign builder -------------------------------------------------------------------------
RewardChoice = Literal["none", "credit", "discount", "cash"]


def _rules(
    currency: str,
    referrer_kind: RewardChoice,
    referrer_amount: str,
    friend_kind: RewardChoice,
    friend_amount: str,
    milestone: str,
) -> tuple[RewardRule, ...]:
    """The builder's basic double-sided rules: a reward per friend who buys, the friend's first-order reward, and a
    badge at a milestone. Amounts are typed in major units; a wrong one raises `ValueError` naming its field."""
    rules: list[RewardRule] = []
    for side, kind, amount in (
        (RewardSide.REFERRER, referrer_kind, referrer_amount),
        (RewardSide.FRIEND, friend_kind, friend_amount),
    ):
        if kind == "none":
            continue
        try:
            minor = to_minor(amount.strip(), currency)
        except ValueError as exc:
            raise ValueError(f"{side.value} reward amount: {exc}") from None
        rules.append(RewardRule(id=f"{side.value}-{kind}", side=side, kind=RewardKind(kind), amount_minor=minor))
    if milestone.strip():
        if not milestone.strip().isdigit() or int(milestone) < 1:
            raise ValueError("milestone: a whole number of successful referrals, 1 or more")
        rules.append(
            RewardRule(
                id=f"badge-at-{int(milestone)}",
                side=RewardSide.REFERRER,
                kind=RewardKind.BADGE,
                milestone=int(milestone),
                description=f"Badge at {int(milestone)} friends",
            )
        )
    return tuple(rules)


def _campaign_rows(campaigns: list[Campaign]) -> list[dict[str, Any]]:
    return [
        {
            "campaign": c,
            "for_referrer": reward_words(c.rewards, RewardSide.REFERRER, currency=c.currency),
            "for_friend": reward_words(c.rewards, RewardSide.FRIEND, currency=c.currency),
        }
        for c in campaigns
    ]


BUILDER_DEFAULTS: Final[dict[str, str]] = {
    "id": "",
    "name": "",
    "currency": "EUR",
    "friend_offer": "",
    "referrer_kind": "credit",
    "referrer_amount": "10",
    "friend_kind": "discount",
    "friend_amount": "5",
    "milestone": "",
    "hold_days": "14",
}


def _campaigns_page(
    request: Request,
    page: MarketerPage,
    store: Store,
    service: ReferralService,
    *,
    k: int = 10,
    launch_campaign: str | None = None,
    launched: str | None = None,
    created: str | None = None,
    builder: dict[str, str] | None = None,
    builder_error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    campaigns = service.list_campaigns()
    chosen = _campaign(service, launch_campaign, campaigns)
    launch = views.targets_view(store, k=k, campaign=chosen, baselines=()) if chosen is not None else None
    return render(
        request,
        "pages/campaigns.html",
        {
            "active": "campaigns",
            "rows": _campaign_rows(campaigns),
            "campaign": chosen,
            "campaigns": campaigns,
            "outreach": views.outreach_rows(store),
            "launch": launch,
            "k": k,
            "launched": launched,
            "created": created,
            "builder": builder or BUILDER_DEFAULTS,
            "builder_error": builder_error,
        },
        page=page,
        status_code=status_code,
    )


@router.get("/campaigns", response_class=HTMLResponse)
def campaigns_page(
    request: Request,
    page: MarketerPageDep,
    store: StoreDep,
    service: ServiceDep,
    k: Annotated[int, Query(ge=1, le=MAX_TARGETS)] = 10,
    campaign: CampaignQuery = None,
    launched: Annotated[str | None, Query(max_length=64)] = None,
    created: Annotated[str | None, Query(max_length=64)] = None,
) -> HTMLResponse:
    return _campaigns_page(
        request,
        page,
        store,
        service,
        k=k,
        launch_campaign=campaign_or_none(campaign),
        launched=launched,
        created=created,
    )


@router.post("/campaigns", response_class=HTMLResponse)
def create_campaign_page(
    request: Request,
    page: MarketerPageDep,
    store: StoreDep,
    service: ServiceDep,
    clock: ClockDep,
    csrf_token: CsrfField = None,
    id: Annotated[str, Form(max_length=64)] = "",
    name: TextField = "",
    currency: Annotated[str, Form(max_length=3)] = "EUR",
    friend_offer: TextField = "",
    referrer_kind: Annotated[RewardChoice, Form()] = "none",
    referrer_amount: Annotated[str, Form(max_length=30)] = "",
    friend_kind: Annotated[RewardChoice, Form()] = "none",
    friend_amount: Annotated[str, Form(max_length=30)] = "",
    milestone: Annotated[str, Form(max_length=9)] = "",
    hold_days: Annotated[str, Form(max_length=4)] = "14",
) -> Response:
    """The campaign builder: the basic fields of `POST /v1/campaigns`; a mistake comes back on the form."""
    check_form(page, request, csrf_token, CREATE_CAMPAIGN)
    submitted = {
        "id": id,
        "name": name,
        "currency": currency,
        "friend_offer": friend_offer,
        "referrer_kind": referrer_kind,
        "referrer_amount": referrer_amount,
        "friend_kind": friend_kind,
        "friend_amount": friend_amount,
        "milestone": milestone,
        "hold_days": hold_days,
    }
    try:
        campaign = _build_campaign(submitted, clock())
        service.create_campaign(campaign)
    except ValidationError as exc:
        message, status = _errors(exc), 422
    except ValueError as exc:
        message, status = str(exc), 422
    except AdvocacyError as exc:
        message, status = exc.detail, exc.status
    else:
        return see_other("/campaigns", created=campaign.id)
    return _campaigns_page(request, page, store, service, builder=submitted, builder_error=message, status_code=status)


def _build_campaign(form: dict[str, str], now: datetime) -> Campaign:
    """`ValueError` (a pydantic `ValidationError` among them) names the field that is wrong."""
    currency = form["currency"].strip().upper() or "EUR"
    if not form["hold_days"].strip().isdigit():
        raise ValueError("hold days: a whole number of days")
    rules = _rules(
        currency,
        form["referrer_kind"],  # type: ignore[arg-type]
        form["referrer_amount"],
        form["friend_kind"],  # type: ignore[arg-type]
        form["friend_amount"],
        form["milestone"],
    )
    return Campaign(
        id=form["id"].strip(),
        name=form["name"].strip(),
        currency=currency,
        friend_offer=form["friend_offer"].strip(),
        rewards=rules,
        hold_days=int(form["hold_days"]),
        created_at=now,
    )


# --- kit previews -----------------------------------------------------------------------------------------------
def _kits_page(
    request: Request,
    page: MarketerPage,
    service: OutreachServiceDep,
    *,
    customer: str | None,
    campaign: str | None,
    draft: dict[str, str] | None = None,
    draft_text: str | None = None,
    draft_problems: list[str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    store = service.store
    campaigns = store.list_campaigns()
    chosen = _campaign(service.referrals, campaign, campaigns)
    preview: views.KitPreview | None = None
    problem: str | None = None
    if customer and chosen is not None:
        try:
            preview = views.kit_preview(service, customer, chosen.id)
        except (NotFound, InvalidInput) as exc:
            problem = exc.detail
    return render(
        request,
        "pages/kits.html",
        {
            "active": "kits",
            "customer_id": customer or "",
            "campaign": chosen,
            "campaigns": campaigns,
            "people": views.page_customers(store, limit=200).items,
            "preview": preview,
            "problem": problem,
            "purposes": list(TemplatePurpose),
            "channels": list(ShareChannel),
            "segments": list(Segment),
            "draft": draft or {"purpose": "share", "channel": "whatsapp", "subject": "", "body": ""},
            "draft_text": draft_text,
            "draft_problems": draft_problems or [],
        },
        page=page,
        status_code=status_code,
    )


@router.get("/kits", response_class=HTMLResponse)
def kits_page(
    request: Request,
    page: MarketerPageDep,
    service: OutreachServiceDep,
    customer: Annotated[str | None, Query(max_length=128)] = None,
    campaign: CampaignQuery = None,
) -> HTMLResponse:
    """A customer's kit in a campaign as they would see it, and every marketer template rendered for them."""
    return _kits_page(
        request, page, service, customer=(customer or "").strip() or None, campaign=campaign_or_none(campaign)
    )


@router.post("/kits/preview", response_class=HTMLResponse)
def preview_draft_template(
    request: Request,
    page: MarketerPageDep,
    service: OutreachServiceDep,
    clock: ClockDep,
    csrf_token: CsrfField = None,
    customer: Annotated[str, Form(max_length=128)] = "",
    campaign: Annotated[str, Form(max_length=64)] = "",
    purpose: Annotated[TemplatePurpose, Form()] = TemplatePurpose.SHARE,
    channel: Annotated[ShareChannel, Form()] = ShareChannel.WHATSAPP,
    subject: Annotated[str, Form(max_length=500)] = "",
    body: Annotated[str, Form(max_length=20_000)] = "",
) -> HTMLResponse:
    """Try a template before saving it (`POST /v1/templates/preview`): nothing is stored."""
    check_form(page, request, csrf_token, PREVIEW_TEMPLATE)
    draft = {"purpose": purpose.value, "channel": channel.value, "subject": subject, "body": body}
    text: str | None = None
    problems: list[str] = []
    try:
        template = Template(
            id="draft",
            purpose=purpose,
            channel=channel,
            subject=subject.strip() or None,
            body=body,
            updated_at=clock(),
        )
        if not customer.strip() or not campaign.strip():
            raise InvalidInput("choose a customer and a campaign to preview the template for")
        text = service.preview_template(template, customer.strip(), campaign.strip())
    except ValidationError as exc:
        problems = [_errors(exc)]
    except InvalidInput as exc:
        problems = [str(p) for p in exc.problems] or [exc.detail]
    except NotFound as exc:
        problems = [exc.detail]
    return _kits_page(
        request,
        page,
        service,
        customer=customer.strip() or None,
        campaign=campaign_or_none(campaign),
        draft=draft,
        draft_text=text,
        draft_problems=problems,
        status_code=422 if problems else 200,
    )


# --- the fraud review queue -------------------------------------------------------------------------------------
@router.get("/fraud", response_class=HTMLResponse)
def fraud_page(
    request: Request,
    page: MarketerPageDep,
    store: StoreDep,
    after: Annotated[str | None, Query(max_length=128)] = None,
    decided: Annotated[str | None, Query(max_length=128)] = None,
    decision: Annotated[Literal["approved", "rejected"] | None, Query()] = None,
) -> HTMLResponse:
    items, following = page_conversions(store, status=ConversionStatus.HELD, limit=PAGE_SIZE, after=after)
    return render(
        request,
        "pages/fraud.html",
        {
            "active": "fraud",
            "cases": [FraudCase.of(c) for c in items],
            "next": following,
            "decided": decided,
            "decision": decision,
            "may_decide": may_call(page, DECIDE_FRAUD_CASE),
        },
        page=page,
    )


@router.post("/fraud/{order_id}/decision")
def decide_fraud_case_page(
    request: Request,
    page: MarketerPageDep,
    service: ServiceDep,
    order_id: Annotated[str, Path(max_length=128)],
    csrf_token: CsrfField = None,
    decision: Annotated[Literal["approve", "reject"] | None, Form()] = None,
    note: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """What `POST /v1/fraud/cases/{order_id}/decision` does, signed by the key's name as the reviewer."""
    check_form(page, request, csrf_token, DECIDE_FRAUD_CASE)
    if decision is None:
        raise InvalidInput("choose approve or reject")
    service.review(order_id, approve=decision == "approve", reviewer=page.marketer.name, note=note.strip())
    return see_other("/fraud", decided=order_id, decision="approved" if decision == "approve" else "rejected")


# --- referrals from link to reward ------------------------------------------------------------------------------
@router.get("/referrals", response_class=HTMLResponse)
def referrals_page(
    request: Request,
    page: MarketerPageDep,
    store: StoreDep,
    status: Annotated[str | None, Query(max_length=20)] = None,
    after: Annotated[str | None, Query(max_length=128)] = None,
) -> HTMLResponse:
    """Conversions a page at a time, newest order ids last; each opens its trail."""
    chosen = ConversionStatus(status) if status in set(ConversionStatus) else None
    items, following = page_conversions(store, status=chosen, limit=PAGE_SIZE, after=after)
    return render(
        request,
        "pages/referrals.html",
        {
            "active": "referrals",
            "conversions": items,
            "next": following,
            "status": chosen,
            "statuses": list(ConversionStatus),
            "labels": views.labels_of(store, (cid for c in items for cid in _people(c))),
        },
        page=page,
    )


def _people(conversion: Conversion) -> list[str]:
    ids = [conversion.order.customer_id]
    if conversion.attribution is not None:
        ids.append(conversion.attribution.referrer_id)
    return ids


@router.get("/referrals/{order_id}", response_class=HTMLResponse)
def referral_page(
    request: Request, page: MarketerPageDep, store: StoreDep, order_id: Annotated[str, Path(max_length=128)]
) -> HTMLResponse:
    """One order from the link the friend followed to the rewards it paid and each ledger entry."""
    return render(
        request,
        "pages/referral.html",
        {"active": "referrals", "trail": views.referral_trail(store, order_id)},
        page=page,
    )
