"""Outreach from the command line: `advocacy templates add|list|preview` and `advocacy outreach create|list|plan|
pause|resume|status|held|variants|dispatch-due`.

`register(app)` adds both groups to the `advocacy` Typer app. Commands that send build the contact limiter and
channels from the settings (`ADVOCACY_CONTACT__*`) for the one command, and close them afterwards. Sending follows
`contact.dispatch`: `inline` sends from this process with a progress bar, `celery` queues the work for the
workers. Engine errors are printed by `api.cli_common.fail` as one line with a non-zero exit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli_common import err_console, fail, settings_from_context, store_from_context
from api.deps import DISPATCH_DUE_TASK, PLAN_TASK, ContactHolder, send_due
from api.schemas_outreach import HeldMessage, OutreachCreate, PlanResult, TemplateCreate
from engine.ab import VariantResult, summary
from engine.outreach import OutreachService
from engine.settings import Settings
from graph.errors import AdvocacyError, InvalidInput, LedgerConflict, NotFound, RowError
from graph.model import utcnow
from graph.outreach import (
    HoldReason,
    MessageStatus,
    OutboxCounts,
    OutreachStatus,
    Template,
    TemplatePurpose,
)
from graph.program_store import Store

out = Console(highlight=False, soft_wrap=True)

templates_app = typer.Typer(help="Write, list and preview kit and message templates.", no_args_is_help=True)
outreach_app = typer.Typer(
    help="Plan outreach to customers, send it within the contact policy, and see what was held back and why.",
    no_args_is_help=True,
)

M = TypeVar("M", bound=BaseModel)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except AdvocacyError as exc:
        raise fail(exc) from None


@contextmanager
def _store(ctx: typer.Context) -> Iterator[Store]:
    """The configured store alone, for commands that only read."""
    with _errors(), store_from_context(ctx) as store:
        yield store


@contextmanager
def _service(ctx: typer.Context) -> Iterator[tuple[OutreachService, ContactHolder]]:
    """The outreach service over the configured store, limiter and channels, all closed afterwards."""
    settings = settings_from_context(ctx)
    holder = ContactHolder(settings)
    try:
        with _errors(), store_from_context(ctx) as store:
            contact = holder.get()
            service = OutreachService(
                store, settings, limiter=contact.limiter, adapters=contact.adapters, renderer=contact.renderer
            )
            yield service, holder
    finally:
        holder.close()


def _read(path: Path, model: type[M], what: str) -> M:
    """A JSON file as `model`; every problem names the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        problems = [
            RowError(
                source=f"{path}:{'.'.join(str(p) for p in error['loc']) or what}",
                line=None,
                reason=str(error["msg"]).removeprefix("Value error, "),
            )
            for error in exc.errors()
        ]
        raise InvalidInput(f"{path} is not a valid {what}", problems) from None


def _sending_bar(total: int) -> Progress:
    """A progress bar on stderr while messages go out (silent when stderr is not a terminal)."""
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
    progress.add_task("sending", total=total or None)
    return progress


def _send_inline(service: OutreachService, outreach_id: str | None, expected: int) -> int:
    with _sending_bar(expected) as progress:
        task = progress.task_ids[0]
        tried = send_due(service, outreach_id=outreach_id, progress=lambda n: progress.advance(task, n))
        progress.update(task, total=tried, completed=tried)
    return tried


def _queued(service: OutreachService, outreach_id: str) -> int:
    return service.counts(outreach_id).by_status.get(MessageStatus.QUEUED, 0)


def _outcome(counts: OutboxCounts) -> str:
    """`3 sent, 2 held (no_consent 1, cap 1), 1 waiting`: what became of an outreach's messages."""
    by_status = counts.by_status
    reasons = ", ".join(f"{reason.value} {n:,}" for reason, n in counts.held_by_reason.items() if n)
    held = by_status.get(MessageStatus.HELD, 0)
    parts = [f"{by_status.get(MessageStatus.SENT, 0):,} sent", f"{held:,} held" + (f" ({reasons})" if reasons else "")]
    waiting = by_status.get(MessageStatus.QUEUED, 0) + by_status.get(MessageStatus.SENDING, 0)
    if waiting:
        parts.append(f"{waiting:,} waiting")
    failed = by_status.get(MessageStatus.FAILED, 0)
    if failed:
        parts.append(f"{failed:,} failed")
    return ", ".join(parts)


# --- templates ---------------------------------------------------------------------------------------------
@templates_app.command("add")
def templates_add(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Option("--file", "-f", metavar="PATH", help="The template as JSON (see POST /v1/templates).")
    ],
    by: Annotated[str, typer.Option("--by", metavar="NAME", help="Who wrote it, kept on record.")],
    replace: Annotated[bool, typer.Option("--replace", help="Replace a template with the same id.")] = False,
) -> None:
    """Validate a template and save it; every problem is listed with its line. An id in use needs --replace."""
    with _service(ctx) as (service, _):
        body = _read(file, TemplateCreate, "template")
        try:
            service.store.get_template(body.id)
        except NotFound:
            pass
        else:
            if not replace:
                raise LedgerConflict(f"template {body.id!r} already exists; pass --replace to change it")
        saved = service.save_template(body.template(body.id, updated_at=utcnow()), by=by)
    out.print(f"template {saved.id} saved: version {saved.version}, {saved.purpose.value} on {saved.channel.value}")


def _template_row(template: Template) -> list[str]:
    return [
        template.id,
        template.purpose.value,
        template.channel.value,
        template.segment.value if template.segment else "any",
        template.locale,
        str(template.version),
        escape(template.updated_by),
        template.updated_at.strftime("%Y-%m-%d %H:%M"),
    ]


@templates_app.command("list")
def templates_list(
    ctx: typer.Context,
    purpose: Annotated[TemplatePurpose | None, typer.Option("--purpose", help="Only this purpose.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Marketers' templates, by id (the built-in ones under templates/kits are not listed)."""
    with _store(ctx) as store:
        templates = store.list_templates(purpose)
    if as_json:
        typer.echo(json.dumps({"items": [t.model_dump(mode="json") for t in templates]}))
        return
    if not templates:
        out.print("no templates yet: add one with `advocacy templates add --file template.json --by NAME`")
        return
    table = Table(title="Templates")
    for column in ("id", "purpose", "channel", "segment", "locale", "version", "by", "updated"):
        table.add_column(column, no_wrap=column == "id")
    for template in templates:
        table.add_row(*_template_row(template))
    out.print(table)


@templates_app.command("preview")
def templates_preview(
    ctx: typer.Context,
    template_id: Annotated[str, typer.Argument(metavar="ID", help="A saved template, or a built-in one's id.")],
    customer: Annotated[str, typer.Option("--customer", metavar="ID", help="The customer to render it for.")],
    campaign: Annotated[str, typer.Option("--campaign", metavar="ID", help="The campaign of their link.")],
) -> None:
    """What the template says to one customer (their referral code is issued if they have none)."""
    with _service(ctx) as (service, _):
        try:
            template = service.store.get_template(template_id)
        except NotFound:
            builtin = [t for t in service.renderer.builtin_templates if t.id == template_id]
            if not builtin:
                raise
            template = builtin[0]
        text = service.preview_template(template, customer, campaign)
    out.print(escape(text))


# --- outreach ----------------------------------------------------------------------------------------------
OutreachArgument = Annotated[str, typer.Argument(metavar="ID", help="The outreach plan's id.")]


@outreach_app.command("create")
def outreach_create(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Option("--file", "-f", metavar="PATH", help="The outreach as JSON (see POST /v1/outreach).")
    ],
) -> None:
    """Create an outreach plan as a draft; nothing is sent until `advocacy outreach plan ID`."""
    with _service(ctx) as (service, _):
        body = _read(file, OutreachCreate, "outreach")
        outreach = service.create_outreach(body.outreach(created_at=utcnow()))
    variants = ", ".join(v.id for v in outreach.variants)
    out.print(
        f"outreach {outreach.id} created as a draft: {outreach.audience.kind.value} audience, "
        f"{len(outreach.steps)} step(s), variants {variants}"
    )


@outreach_app.command("list")
def outreach_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Outreach plans, oldest first."""
    with _store(ctx) as store:
        plans = store.list_outreach()
    if as_json:
        typer.echo(json.dumps({"items": [o.model_dump(mode="json") for o in plans]}))
        return
    if not plans:
        out.print("no outreach yet: create one with `advocacy outreach create --file outreach.json`")
        return
    table = Table(title="Outreach")
    for column in ("id", "name", "campaign", "audience", "status", "steps", "variants", "created"):
        table.add_column(column, no_wrap=column == "id")
    for o in plans:
        table.add_row(
            o.id,
            escape(o.name),
            o.campaign_id,
            o.audience.kind.value,
            o.status.value,
            str(len(o.steps)),
            ", ".join(v.id for v in o.variants),
            o.created_at.strftime("%Y-%m-%d"),
        )
    out.print(table)


def _print_plan(plan: PlanResult) -> None:
    excluded = ", ".join(f"{reason} {n:,}" for reason, n in sorted(plan.excluded.items()))
    out.print(
        f"outreach {plan.outreach_id} planned: {plan.audience:,} customers, {plan.enqueued:,} messages written, "
        f"{plan.already_planned:,} already planned" + (f"; left out: {excluded}" if excluded else "")
    )


def _through_celery(settings: Settings) -> bool:
    return settings.contact.dispatch == "celery"


@outreach_app.command("plan")
def outreach_plan(
    ctx: typer.Context,
    outreach_id: OutreachArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Plan an outreach and send what is due: from here (inline) or on the Celery workers (contact.dispatch)."""
    settings = settings_from_context(ctx)
    with _service(ctx) as (service, holder):
        if _through_celery(settings):
            service.store.get_outreach(outreach_id)
            task_id = holder.queue(PLAN_TASK, outreach_id)
            service.launch(outreach_id)  # after queuing: a broker that is down leaves the draft a draft
            if as_json:
                typer.echo(json.dumps({"outreach_id": outreach_id, "dispatch": "celery", "task_id": task_id}))
            else:
                out.print(f"outreach {outreach_id} handed to the workers (task {task_id})")
            return
        plan = PlanResult.of(service.plan(outreach_id))
        if not as_json:
            _print_plan(plan)
        _send_inline(service, outreach_id, _queued(service, outreach_id))
        counts = service.counts(outreach_id)
    if as_json:
        typer.echo(
            json.dumps(
                {"dispatch": "inline", "plan": plan.model_dump(mode="json"), "counts": counts.model_dump(mode="json")}
            )
        )
        return
    out.print(_outcome(counts))


def _set_status(ctx: typer.Context, outreach_id: str, status: OutreachStatus) -> None:
    settings = settings_from_context(ctx)
    with _service(ctx) as (service, holder):
        outreach = service.set_status(outreach_id, status)
        if status is OutreachStatus.RUNNING:
            if _through_celery(settings):
                holder.queue(DISPATCH_DUE_TASK)
            else:
                _send_inline(service, outreach_id, _queued(service, outreach_id))
    out.print(f"outreach {outreach.id} {outreach.status.value}")


@outreach_app.command("pause")
def outreach_pause(ctx: typer.Context, outreach_id: OutreachArgument) -> None:
    """Stop sending: messages due meanwhile wait in the outbox."""
    _set_status(ctx, outreach_id, OutreachStatus.PAUSED)


@outreach_app.command("resume")
def outreach_resume(ctx: typer.Context, outreach_id: OutreachArgument) -> None:
    """Send again: what is due now goes out, what waited goes out as it comes due."""
    _set_status(ctx, outreach_id, OutreachStatus.RUNNING)


@outreach_app.command("status")
def outreach_status(
    ctx: typer.Context,
    outreach_id: OutreachArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Messages by status and variant, and held ones by reason."""
    with _store(ctx) as store:
        outreach = store.get_outreach(outreach_id)
        counts = store.outbox_counts(outreach_id)
    if as_json:
        typer.echo(counts.model_dump_json())
        return
    table = Table(title=f"Outreach {outreach.id} ({outreach.status.value})")
    table.add_column("variant")
    statuses = list(MessageStatus)
    for status in statuses:
        table.add_column(status.value, justify="right")
    for variant, by_status in counts.by_variant.items():
        table.add_row(variant, *(f"{by_status.get(s, 0):,}" for s in statuses))
    table.add_row("all", *(f"{counts.by_status.get(s, 0):,}" for s in statuses), style="bold")
    out.print(table)
    reasons = {reason: n for reason, n in counts.held_by_reason.items() if n}
    if not reasons:
        out.print("nothing held")
        return
    held = Table(title="Held, by reason")
    held.add_column("reason")
    held.add_column("messages", justify="right")
    for reason, n in sorted(reasons.items(), key=lambda item: -item[1]):
        held.add_row(reason.value, f"{n:,}")
    out.print(held)


@outreach_app.command("held")
def outreach_held(
    ctx: typer.Context,
    outreach_id: OutreachArgument,
    reason: Annotated[HoldReason | None, typer.Option("--reason", help="Only messages held for this reason.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many messages.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Messages held back and why (addresses are never shown; an invited friend is a keyed hash)."""
    with _store(ctx) as store:
        store.get_outreach(outreach_id)
        messages = store.list_messages(outreach_id, status=MessageStatus.HELD, reason=reason, limit=limit)
    held = [HeldMessage.of(m) for m in messages]
    if as_json:
        typer.echo(json.dumps({"items": [h.model_dump(mode="json") for h in held]}))
        return
    if not held:
        out.print("nothing held" + (f" for {reason.value}" if reason else ""))
        return
    table = Table(title=f"Held messages of {outreach_id} ({len(held)})")
    for column in ("customer", "step", "channel", "kind", "variant", "reason", "why"):
        table.add_column(column, overflow="fold" if column == "why" else "ellipsis")
    for h in held:
        table.add_row(
            h.customer_id or "-",
            h.step_id,
            h.channel.value,
            h.kind.value,
            h.variant_id,
            h.reason.value if h.reason else "-",
            escape(h.detail) or "-",
        )
    out.print(table)


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _print_variants(outreach_id: str, results: list[VariantResult]) -> None:
    table = Table(title=f"A/B variants of {outreach_id}")
    for column in ("variant", "audience", "reached", "converted", "rate", "95% interval", "P(best)", "lift vs first"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for r in results:
        interval = "-" if r.ci_low is None or r.ci_high is None else f"{_rate(r.ci_low)}–{_rate(r.ci_high)}"
        table.add_row(
            r.variant_id,
            f"{r.audience:,}",
            f"{r.reached:,}",
            f"{r.converted:,}",
            _rate(r.rate),
            interval,
            "-" if r.prob_best is None else f"{r.prob_best:.2f}",
            "-" if r.lift_vs_first is None else f"{100 * r.lift_vs_first:+.1f}%",
        )
    out.print(table)


@outreach_app.command("variants")
def outreach_variants(
    ctx: typer.Context,
    outreach_id: OutreachArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Conversion per A/B variant with its uncertainty, and one sentence on what to make of it."""
    with _service(ctx) as (service, _):
        results = service.variants(outreach_id)
    sentence = summary(results)
    if as_json:
        items = [r.model_dump(mode="json") for r in results]
        typer.echo(json.dumps({"outreach_id": outreach_id, "results": items, "summary": sentence}))
        return
    _print_variants(outreach_id, results)
    out.print(sentence)


@outreach_app.command("dispatch-due")
def outreach_dispatch_due(
    ctx: typer.Context,
    outreach_id: Annotated[
        str | None, typer.Option("--outreach", metavar="ID", help="Only this outreach (default all).")
    ] = None,
) -> None:
    """Send what came due: later cadence steps, messages that waited for quiet hours or a pause, lapsed leases.

    Celery beat runs this every minute in production; in embedded mode run it from cron.
    """
    settings = settings_from_context(ctx)
    with _service(ctx) as (service, holder):
        if _through_celery(settings):
            task_id = holder.queue(DISPATCH_DUE_TASK)
            out.print(f"due messages handed to the workers (task {task_id})")
            return
        if outreach_id is not None:
            service.store.get_outreach(outreach_id)
        tried = _send_inline(service, outreach_id, 0)
    out.print(f"{tried:,} due messages tried")


def register(app: typer.Typer) -> None:
    """Add the `templates` and `outreach` command groups to the `advocacy` app."""
    app.add_typer(templates_app, name="templates", short_help="Write, list and preview kit and message templates.")
    app.add_typer(outreach_app, name="outreach", short_help="Plan, send and follow outreach within the contact policy.")
