"""Templates and outreach for marketers (`/v1/templates`, `/v1/outreach`): write and preview kit and message
templates, plan an outreach and send it within the contact policy, see what was held back and why, compare A/B
variants.

Sending follows `Settings.contact.dispatch`: `inline` plans during the request and sends right after the answer
(a background task in this process, the embedded mode); `celery` hands planning and sending to the workers.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Body, Path, Query, Request, Response

from api.auth import V1Route
from api.deps import (
    DISPATCH_DUE_TASK,
    PLAN_TASK,
    ClockDep,
    ContactHolderDep,
    OutreachServiceDep,
    SettingsDep,
    StoreDep,
    send_due,
)
from api.schemas_outreach import (
    OUTREACH_EXAMPLE,
    TEMPLATE_EXAMPLE,
    HeldMessage,
    HeldPage,
    Launch,
    OutreachCreate,
    OutreachList,
    PlanResult,
    Preview,
    PreviewRequest,
    TemplateChange,
    TemplateCreate,
    TemplateList,
    VariantReport,
)
from api.schemas_program import program_problems
from engine.ab import summary
from engine.outreach import OutreachService
from graph.errors import AdvocacyError, LedgerConflict, NotFound
from graph.outreach import (
    HoldReason,
    OutboxCounts,
    Outreach,
    OutreachStatus,
    Template,
    TemplatePurpose,
)
from graph.program_store import Store

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1", route_class=V1Route)

MAX_PAGE = 500

TemplateIdPath = Annotated[str, Path(description="A template's id.", examples=["whatsapp-prosumer"])]
OutreachIdPath = Annotated[str, Path(description="An outreach plan's id.", examples=["spring-prosumers"])]


# --- templates ---------------------------------------------------------------------------------------------
_VALIDATION_HELP = (
    "Validated before it is stored: Jinja2 syntax, only the kit's variables, no forbidden constructs, size, and "
    "a trial render for two sample customers in the sandbox. A template that fails answers 422 with each problem "
    "and its line in `errors`."
)


@router.post(
    "/templates",
    tags=["templates"],
    status_code=201,
    summary="Add a template",
    description=f"{_VALIDATION_HELP} The new template is version 1; an id already in use answers 409.",
    responses=program_problems(409, 422, 503),
)
def create_template(
    request: Request,
    response: Response,
    body: Annotated[
        TemplateCreate, Body(openapi_examples={"share": {"summary": "A share text", "value": TEMPLATE_EXAMPLE}})
    ],
    service: OutreachServiceDep,
    clock: ClockDep,
) -> Template:
    try:
        service.store.get_template(body.id)
    except NotFound:
        pass
    else:
        raise LedgerConflict(f"template {body.id!r} already exists; change it with PUT")
    saved = service.save_template(body.template(body.id, updated_at=clock()), by=body.updated_by)
    response.headers["Location"] = request.app.url_path_for("get_template", template_id=saved.id)
    return saved


@router.put(
    "/templates/{template_id}",
    tags=["templates"],
    summary="Change a template",
    description=f"{_VALIDATION_HELP} Each change bumps `version`. An unknown id answers 404 (add it with POST).",
    responses=program_problems(404, 422, 503),
)
def replace_template(
    template_id: TemplateIdPath, body: TemplateChange, service: OutreachServiceDep, clock: ClockDep
) -> Template:
    service.store.get_template(template_id)
    return service.save_template(body.template(template_id, updated_at=clock()), by=body.updated_by)


@router.get(
    "/templates",
    tags=["templates"],
    summary="List marketers' templates, by id",
    responses=program_problems(422, 503),
)
def list_templates(
    store: StoreDep,
    purpose: Annotated[TemplatePurpose | None, Query(description="Only templates for this purpose.")] = None,
) -> TemplateList:
    return TemplateList(items=store.list_templates(purpose))


@router.get(
    "/templates/{template_id}", tags=["templates"], summary="Read a template", responses=program_problems(404, 503)
)
def get_template(template_id: TemplateIdPath, store: StoreDep) -> Template:
    return store.get_template(template_id)


def _users_of(store: Store, template_id: str) -> list[str]:
    """Outreach plans still to send that name the template (a step's message or a variant's override)."""
    users = []
    for outreach in store.list_outreach():
        if outreach.status is OutreachStatus.DONE:
            continue
        named = {step.message_template_id for step in outreach.steps}
        for variant in outreach.variants:
            named.update(variant.template_ids.values())
            named.add(variant.message_template_id)
        if template_id in named:
            users.append(outreach.id)
    return users


@router.delete(
    "/templates/{template_id}",
    tags=["templates"],
    status_code=204,
    summary="Delete a template",
    description="Kits fall back to the next most specific template. A template that an outreach not yet done "
    "names answers 409, so its messages are not left without their text.",
    responses=program_problems(404, 409, 503),
)
def delete_template(template_id: TemplateIdPath, store: StoreDep) -> Response:
    store.get_template(template_id)
    users = _users_of(store, template_id)
    if users:
        raise LedgerConflict(f"template {template_id!r} is used by outreach {', '.join(users)}")
    store.delete_template(template_id)
    return Response(status_code=204)


@router.post(
    "/templates/preview",
    tags=["templates"],
    summary="Preview a template for one customer",
    description="Renders a template (saved or not; nothing is stored) for the customer's kit in the campaign, "
    "issuing their referral code if they have none yet. Validated first, as when saving.",
    responses=program_problems(404, 422, 503),
)
def preview_template(body: PreviewRequest, service: OutreachServiceDep, clock: ClockDep) -> Preview:
    template = body.template.template(body.template.id, updated_at=clock())
    return Preview(text=service.preview_template(template, body.customer_id, body.campaign_id))


# --- outreach plans ----------------------------------------------------------------------------------------
@router.post(
    "/outreach",
    tags=["outreach"],
    status_code=201,
    summary="Create an outreach plan (a draft)",
    description="Whom to ask (an analysis' targets, segments, or listed customers), the A/B variants and the "
    "cadence of steps. Nothing is sent until it is launched. An id in use answers 409; an unknown campaign or "
    "template 404.",
    responses=program_problems(404, 409, 422, 503),
)
def create_outreach(
    request: Request,
    response: Response,
    body: Annotated[
        OutreachCreate, Body(openapi_examples={"segments": {"summary": "Two segments, A/B", "value": OUTREACH_EXAMPLE}})
    ],
    service: OutreachServiceDep,
    clock: ClockDep,
) -> Outreach:
    outreach = service.create_outreach(body.outreach(created_at=clock()))
    response.headers["Location"] = request.app.url_path_for("get_outreach", outreach_id=outreach.id)
    return outreach


@router.get(
    "/outreach", tags=["outreach"], summary="List outreach plans, oldest first", responses=program_problems(503)
)
def list_outreach(store: StoreDep) -> OutreachList:
    return OutreachList(items=store.list_outreach())


@router.get(
    "/outreach/{outreach_id}", tags=["outreach"], summary="Read an outreach plan", responses=program_problems(404, 503)
)
def get_outreach(outreach_id: OutreachIdPath, store: StoreDep) -> Outreach:
    return store.get_outreach(outreach_id)


def _send_now(service: OutreachService, outreach_id: str | None) -> None:
    """After the answer: a message left `sending` by a failure here is claimed again once its lease runs out."""
    try:
        tried = send_due(service, outreach_id=outreach_id)
    except AdvocacyError as exc:
        log.warning("sending outreach %s stopped: %s", outreach_id or "(all)", exc)
        return
    log.info("outreach %s: %d messages tried", outreach_id or "(all)", tried)


@router.post(
    "/outreach/{outreach_id}/launch",
    tags=["outreach"],
    status_code=202,
    summary="Plan an outreach and start sending",
    description="Writes one outbox message per person and step (launching again adds only what is missing) and "
    "sends those due now; later steps go out when due. Each message is sent once, within the contact policy, "
    "or held with its reason (see `/counts` and `/held`). Inline, the plan comes back in the answer and sending "
    "starts right after it; through Celery, a worker does both and `plan` is null.",
    responses=program_problems(404, 409, 503),
)
def launch_outreach(
    outreach_id: OutreachIdPath,
    background: BackgroundTasks,
    service: OutreachServiceDep,
    settings: SettingsDep,
    holder: ContactHolderDep,
) -> Launch:
    if settings.contact.dispatch == "celery":
        service.store.get_outreach(outreach_id)
        task_id = holder.queue(PLAN_TASK, outreach_id)
        service.launch(outreach_id)  # after queuing: a broker that is down leaves the draft a draft
        return Launch(outreach_id=outreach_id, dispatch="celery", plan=None, task_id=task_id)
    report = service.plan(outreach_id)
    background.add_task(_send_now, service, outreach_id)
    return Launch(outreach_id=outreach_id, dispatch="inline", plan=PlanResult.of(report), task_id=None)


@router.post(
    "/outreach/{outreach_id}/pause",
    tags=["outreach"],
    summary="Pause an outreach",
    description="Nothing more is sent: messages due meanwhile wait in the outbox. A finished outreach answers 409.",
    responses=program_problems(404, 409, 503),
)
def pause_outreach(outreach_id: OutreachIdPath, service: OutreachServiceDep) -> Outreach:
    return service.set_status(outreach_id, OutreachStatus.PAUSED)


@router.post(
    "/outreach/{outreach_id}/resume",
    tags=["outreach"],
    summary="Resume a paused outreach",
    description="Messages that waited are sent as they come due again (within the hour), those due now at once.",
    responses=program_problems(404, 409, 503),
)
def resume_outreach(
    outreach_id: OutreachIdPath,
    background: BackgroundTasks,
    service: OutreachServiceDep,
    settings: SettingsDep,
    holder: ContactHolderDep,
) -> Outreach:
    outreach = service.set_status(outreach_id, OutreachStatus.RUNNING)
    if settings.contact.dispatch == "celery":
        holder.queue(DISPATCH_DUE_TASK)
    else:
        background.add_task(_send_now, service, outreach_id)
    return outreach


@router.get(
    "/outreach/{outreach_id}/counts",
    tags=["outreach"],
    summary="Messages by status, held ones by reason, per variant",
    responses=program_problems(404, 503),
)
def outreach_counts(outreach_id: OutreachIdPath, service: OutreachServiceDep) -> OutboxCounts:
    return service.counts(outreach_id)


@router.get(
    "/outreach/{outreach_id}/held",
    tags=["outreach"],
    summary="Messages held back, and why",
    description="In key order, one page at a time (pass `next` as `after`). Addresses are never shown; a friend "
    "invited by email appears as a keyed hash.",
    responses=program_problems(404, 422, 503),
)
def list_held(
    outreach_id: OutreachIdPath,
    service: OutreachServiceDep,
    reason: Annotated[HoldReason | None, Query(description="Only messages held for this reason.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Messages per page.")] = 100,
    after: Annotated[str | None, Query(max_length=400, description="`next` from the previous page.")] = None,
) -> HeldPage:
    rows = service.held(outreach_id, reason=reason, limit=limit + 1, after=after)
    page = rows[:limit]
    return HeldPage(items=[HeldMessage.of(m) for m in page], next=page[-1].key if len(rows) > limit else None)


@router.get(
    "/outreach/{outreach_id}/variants",
    tags=["outreach"],
    summary="Conversion per A/B variant",
    description="Per variant: customers planned, reached (sent) and converted (a successful referral after "
    "their message), the rate with its 95% Wilson interval, the probability of being best and the lift over "
    "the first variant; and one sentence saying whether a variant wins or to keep testing.",
    responses=program_problems(404, 503),
)
def outreach_variants(outreach_id: OutreachIdPath, service: OutreachServiceDep) -> VariantReport:
    results = service.variants(outreach_id)
    return VariantReport(outreach_id=outreach_id, results=results, summary=summary(results))
