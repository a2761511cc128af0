"""The referral programme from the command line: `advocacy campaign|code|rewards|fraud|leaks ...`, `metrics`,
`cascades`.

`register(app)` adds the groups and commands to the `advocacy` Typer app. Each command opens the configured store,
calls one `engine.referrals.ReferralService` method and prints the result: a line or a rich table, or with `--json`
exactly one JSON object. Engine errors are printed by `api.cli_common.fail` as one line with a non-zero exit.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api.cli_common import err_console, fail, settings_from_context, store_from_context
from api.schemas_program import CampaignCreate, FraudCase
from engine.metrics import CascadeReport, ProgramMetrics
from engine.referrals import ReferralService
from engine.webhooks import currency_exponent
from graph.errors import AdvocacyError, InvalidInput, LedgerConflict, NotFound, RowError
from graph.model import utcnow
from graph.program import Campaign, CodeStatus, ConversionStatus, ReferralCode

out = Console(highlight=False, soft_wrap=True)

campaign_app = typer.Typer(help="Create and list referral campaigns.", no_args_is_help=True)
code_app = typer.Typer(help="Issue, pause, resume, revoke and rotate advocates' referral codes.", no_args_is_help=True)
rewards_app = typer.Typer(help="Move rewards on after their hold, and pay out approved ones.", no_args_is_help=True)
fraud_app = typer.Typer(help="Review conversions the fraud rules held.", no_args_is_help=True)
leaks_app = typer.Typer(help="Find codes that look posted publicly.", no_args_is_help=True)


@contextmanager
def _service(ctx: typer.Context) -> Iterator[ReferralService]:
    """The service over the configured store, closed afterwards; engine errors become one line and exit 1 (2 on 503)."""
    settings = settings_from_context(ctx)
    try:
        with store_from_context(ctx) as store:
            yield ReferralService(store, settings.referral)
    except AdvocacyError as exc:
        raise fail(exc) from None


def _money(amount_minor: int, currency: str) -> str:
    digits = currency_exponent(currency)
    return f"{amount_minor / 10**digits:,.{digits}f} {currency}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# --- campaigns ---------------------------------------------------------------------------------------------
def _read_campaign(path: Path) -> CampaignCreate:
    """A campaign file as `CampaignCreate`; every problem names the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return CampaignCreate.model_validate_json(text)
    except ValidationError as exc:
        problems = [
            RowError(
                source=f"{path}:{'.'.join(str(p) for p in error['loc']) or 'campaign'}",
                line=None,
                reason=str(error["msg"]).removeprefix("Value error, "),
            )
            for error in exc.errors()
        ]
        raise InvalidInput(f"{path} is not a valid campaign", problems) from None


@campaign_app.command("create")
def campaign_create(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Option("--file", "-f", metavar="PATH", help="The campaign as JSON (see POST /v1/campaigns).")
    ],
) -> None:
    """Create a campaign from a JSON file; an id already in use is refused."""
    with _service(ctx) as service:
        body = _read_campaign(file)
        try:
            service.get_campaign(body.id)
        except NotFound:
            pass
        else:
            raise LedgerConflict(f"campaign {body.id!r} already exists")
        campaign = service.create_campaign(body.campaign(created_at=utcnow()))
    out.print(f"campaign {campaign.id} created: {escape(campaign.name)} ({len(campaign.rewards)} reward rules)")


def _campaign_row(campaign: Campaign) -> list[str]:
    return [
        campaign.id,
        escape(campaign.name),
        campaign.status.value,
        campaign.currency,
        ", ".join(rule.id for rule in campaign.rewards) or "-",
        f"{campaign.hold_days} d",
        campaign.created_at.strftime("%Y-%m-%d"),
    ]


@campaign_app.command("list")
def campaign_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """List campaigns, oldest first."""
    with _service(ctx) as service:
        campaigns = service.list_campaigns()
    if as_json:
        typer.echo(json.dumps({"items": [c.model_dump(mode="json") for c in campaigns]}))
        return
    if not campaigns:
        out.print("no campaigns yet: create one with `advocacy campaign create --file campaign.json`")
        return
    table = Table(title="Campaigns")
    for column in ("id", "name", "status", "currency", "reward rules", "hold", "created"):
        table.add_column(column)
    for campaign in campaigns:
        table.add_row(*_campaign_row(campaign))
    out.print(table)


# --- codes -------------------------------------------------------------------------------------------------
def _print_code(code: ReferralCode, verb: str) -> None:
    extra = f", replaced by {code.replaced_by}" if code.replaced_by else ""
    out.print(f"{code.code} {verb}: {code.status.value}, owner {code.customer_id}, campaign {code.campaign_id}{extra}")


@code_app.command("issue")
def code_issue(
    ctx: typer.Context,
    customer: Annotated[str, typer.Argument(metavar="CUSTOMER", help="The advocate's customer id.")],
    campaign: Annotated[str, typer.Option("--campaign", metavar="ID", help="The campaign the code belongs to.")],
    vanity: Annotated[
        str | None, typer.Option("--vanity", metavar="CODE", help="A code chosen by the advocate (refused if taken).")
    ] = None,
) -> None:
    """Issue a referral code to an advocate: a generated one, or the vanity code asked for."""
    with _service(ctx) as service:
        code = service.issue_code(customer, campaign, vanity=vanity)
    _print_code(code, "issued")


def _set_status(ctx: typer.Context, code: str, status: CodeStatus, verb: str) -> None:
    with _service(ctx) as service:
        changed = service.change_code_status(code, status)
    _print_code(changed, verb)


CodeArgument = Annotated[str, typer.Argument(metavar="CODE", help="The code (case and - _ separators do not matter).")]


@code_app.command("pause")
def code_pause(ctx: typer.Context, code: CodeArgument) -> None:
    """Stop a code attributing new visitors; friends who used it before keep their attribution."""
    _set_status(ctx, code, CodeStatus.PAUSED, "paused")


@code_app.command("resume")
def code_resume(ctx: typer.Context, code: CodeArgument) -> None:
    """Let a paused code attribute new visitors again."""
    _set_status(ctx, code, CodeStatus.ACTIVE, "resumed")


@code_app.command("revoke")
def code_revoke(ctx: typer.Context, code: CodeArgument) -> None:
    """Revoke a code for good; friends who used it before keep their attribution."""
    _set_status(ctx, code, CodeStatus.REVOKED, "revoked")


@code_app.command("rotate")
def code_rotate(ctx: typer.Context, code: CodeArgument) -> None:
    """Replace a leaked code: the advocate gets a new code and the old one is revoked, pointing to it."""
    with _service(ctx) as service:
        fresh = service.rotate_code(code)
    out.print(f"{code} rotated: the new code is {fresh.code} (owner {fresh.customer_id}, campaign {fresh.campaign_id})")


# --- rewards -----------------------------------------------------------------------------------------------
@rewards_app.command("advance")
def rewards_advance(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rewards move.")] = 1000,
) -> None:
    """Approve rewards past their hold period; reject held ones nobody reviewed in time."""
    with _service(ctx) as service:
        moved = service.advance(limit=limit)
    by_state: dict[str, int] = {}
    for reward in moved:
        by_state[reward.state.value] = by_state.get(reward.state.value, 0) + 1
    summary = ", ".join(f"{count:,} {state}" for state, count in sorted(by_state.items()))
    out.print(f"{len(moved):,} rewards moved" + (f" ({summary})" if summary else ""))


@rewards_app.command("fulfil")
def rewards_fulfil(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="At most this many rewards are paid.")] = 100,
) -> None:
    """Pay approved rewards out through the configured fulfiller and mark them fulfilled."""
    with _service(ctx) as service:
        report = service.fulfil(limit=limit)
    out.print(f"{len(report.fulfilled):,} rewards fulfilled, {len(report.failed):,} failed")
    for reward_id, reason in sorted(report.failed.items()):
        err_console.print(f"[yellow]not fulfilled[/] {escape(reward_id)}: {escape(reason)}", highlight=False)
    if report.failed and not report.fulfilled:
        raise typer.Exit(code=1)


# --- fraud review and leaks --------------------------------------------------------------------------------
@fraud_app.command("queue")
def fraud_queue(
    ctx: typer.Context,
    campaign: Annotated[str | None, typer.Option("--campaign", metavar="ID", help="Only this campaign.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many cases.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Held conversions waiting for a decision, with the rules that held them."""
    with _service(ctx) as service:
        held = service.store.list_conversions(status=ConversionStatus.HELD, campaign_id=campaign, limit=limit)
    cases = [FraudCase.of(conversion) for conversion in held]
    if as_json:
        typer.echo(json.dumps({"items": [case.model_dump(mode="json") for case in cases]}))
        return
    if not cases:
        out.print("no held conversions")
        return
    table = Table(title=f"Held conversions ({len(cases)})")
    for column in ("order", "buyer", "referrer", "code", "amount", "score", "why"):
        table.add_column(column, justify="right" if column in ("amount", "score") else "left")
    for case in cases:
        table.add_row(
            case.order_id,
            case.buyer_id,
            case.referrer_id or "-",
            case.code or "-",
            _money(case.amount_minor, case.currency),
            "-" if case.score is None else f"{case.score:.2f}",
            escape("; ".join(case.reasons)) or "-",
        )
    out.print(table)


def _decide(ctx: typer.Context, order: str, *, approve: bool, reviewer: str, note: str) -> None:
    with _service(ctx) as service:
        conversion = service.review(order, approve=approve, reviewer=reviewer, note=note)
    out.print(f"order {conversion.id} {conversion.status.value} by {escape(reviewer)}")


OrderArgument = Annotated[str, typer.Argument(metavar="ORDER", help="The held order's id.")]
ReviewerOption = Annotated[str, typer.Option("--reviewer", metavar="NAME", help="Who decides (kept on record).")]
NoteOption = Annotated[str, typer.Option("--note", help="Why, for the record.")]


@fraud_app.command("approve")
def fraud_approve(ctx: typer.Context, order: OrderArgument, reviewer: ReviewerOption, note: NoteOption = "") -> None:
    """Approve a held conversion: its rewards become pending for the campaign's hold period."""
    _decide(ctx, order, approve=True, reviewer=reviewer, note=note)


@fraud_app.command("reject")
def fraud_reject(ctx: typer.Context, order: OrderArgument, reviewer: ReviewerOption, note: NoteOption = "") -> None:
    """Reject a held conversion: its rewards never pay."""
    _decide(ctx, order, approve=False, reviewer=reviewer, note=note)


@leaks_app.command("scan")
def leaks_scan(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(min=1, max=365, help="How far back to look.")] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Codes whose recent traffic looks posted publicly, most suspicious first."""
    with _service(ctx) as service:
        verdicts = service.scan_leaks(days=days)
    if as_json:
        typer.echo(json.dumps({"days": days, "items": [v.model_dump(mode="json") for v in verdicts]}))
        return
    if not verdicts:
        out.print(f"no code looks leaked in the last {days} days")
        return
    table = Table(title=f"Codes that look leaked (last {days} days)")
    table.add_column("code")
    table.add_column("score", justify="right")
    table.add_column("why", overflow="fold")
    for verdict in verdicts:
        table.add_row(verdict.code, f"{verdict.score:.2f}", escape("; ".join(verdict.reasons)))
    out.print(table)
    out.print("pause or rotate a code with `advocacy code pause CODE` or `advocacy code rotate CODE`")


# --- metrics -----------------------------------------------------------------------------------------------
def _print_metrics(m: ProgramMetrics) -> None:
    table = Table(title=f"Programme metrics ({m.campaign_id or 'all campaigns'})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("customers", f"{m.customers:,}"),
        ("advocates with a code", f"{m.advocates_with_code:,}"),
        ("advocates sharing", f"{m.advocates_sharing:,}"),
        ("participation rate", _rate(m.participation_rate)),
        ("shares", f"{m.shares:,}"),
        ("clicks", f"{m.clicks:,}"),
        ("distinct visitors", f"{m.distinct_visitors:,}"),
        ("signups", f"{m.signups:,}"),
        ("signup rate", _rate(m.signup_rate)),
        ("attributed conversions", f"{m.attributed_conversions:,}"),
        ("conversion rate", _rate(m.conversion_rate)),
        ("acquired customers", f"{m.acquired_customers:,}"),
        ("k-factor", _ratio(m.k_factor)),
        ("cycle time, median (days)", _ratio(m.cycle_time_median_days)),
        ("cycle time, p90 (days)", _ratio(m.cycle_time_p90_days)),
        ("referral depth", f"{m.referral_depth:,}"),
    ]
    for currency, cost in m.reward_cost_minor.items():
        rows.append((f"reward cost ({currency})", _money(cost, currency)))
        per = m.reward_cost_per_acquired_minor.get(currency)
        rows.append((f"cost per acquired customer ({currency})", "-" if per is None else _money(round(per), currency)))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


def metrics_command(
    ctx: typer.Context,
    campaign: Annotated[
        str | None, typer.Option("--campaign", metavar="ID", help="One campaign (default all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """The programme's funnel and economics: participation, conversion, k-factor, cycle time, reward cost."""
    with _service(ctx) as service:
        if campaign is not None:
            service.get_campaign(campaign)
        metrics = service.metrics(campaign)
    if as_json:
        typer.echo(metrics.model_dump_json())
        return
    _print_metrics(metrics)


def _print_cascades(report: CascadeReport) -> None:
    table = Table(title=f"Referral cascades: {report.seeds:,} seeds, {report.customers:,} customers")
    for column in ("generation", "customers", "referrers", "next", "k-factor", "reward cost"):
        table.add_column(column, justify="right")
    for g in report.generations:
        cost = ", ".join(_money(amount, currency) for currency, amount in g.reward_cost_minor.items()) or "-"
        table.add_row(
            str(g.generation),
            f"{g.customers:,}",
            f"{g.referrers:,}",
            f"{g.new_customers_next:,}",
            _ratio(g.k_factor),
            cost,
        )
    out.print(table)
    if report.top_seeds:
        seeds = Table(title="Largest cascades")
        for column in ("seed", "size", "depth", "by generation"):
            seeds.add_column(column, justify="left" if column in ("seed", "by generation") else "right")
        for seed in report.top_seeds:
            seeds.add_row(seed.seed_id, f"{seed.size:,}", str(seed.depth), " / ".join(map(str, seed.by_generation)))
        out.print(seeds)
    if report.unrooted_customers:
        err_console.print(
            f"[yellow]warning:[/] {report.unrooted_customers:,} customers joined only through referral cycles "
            "(worth a fraud review)",
            highlight=False,
        )


def cascades_command(
    ctx: typer.Context,
    campaign: Annotated[
        str | None, typer.Option("--campaign", metavar="ID", help="One campaign (default all).")
    ] = None,
    top: Annotated[int, typer.Option(min=0, help="How many of the largest seed cascades to list.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Referral cascades generation by generation: customers, k-factor, reward cost, the largest seeds."""
    with _service(ctx) as service:
        if campaign is not None:
            service.get_campaign(campaign)
        report = service.cascades(campaign, top=top)
    if as_json:
        typer.echo(report.model_dump_json())
        return
    _print_cascades(report)


def register(app: typer.Typer) -> None:
    """Add the programme's command groups and the `metrics` and `cascades` commands to the `advocacy` app."""
    app.add_typer(campaign_app, name="campaign", short_help="Create and list referral campaigns.")
    app.add_typer(code_app, name="code", short_help="Issue, pause, resume, revoke and rotate referral codes.")
    app.add_typer(rewards_app, name="rewards", short_help="Move rewards on and pay approved ones out.")
    app.add_typer(fraud_app, name="fraud", short_help="Review conversions the fraud rules held.")
    app.add_typer(leaks_app, name="leaks", short_help="Find codes that look posted publicly.")
    app.command("metrics", short_help="Programme metrics: participation, conversion, k-factor, cost.")(metrics_command)
    app.command("cascades", short_help="Referral cascades by generation, with k-factor and cost.")(cascades_command)
    app.command("simulate", short_help="Play a referral programme forward (demo data through the real rules).")(
        simulate_command
    )


def simulate_command(
    ctx: typer.Context,
    campaign: Annotated[str, typer.Option("--campaign", help="The referral campaign to play forward.")],
    advocates: Annotated[int, typer.Option(help="How many advocates start sharing.", min=1)] = 40,
    generations: Annotated[int, typer.Option(help="How many generations friends may go on referring.", min=1)] = 3,
    days: Annotated[int, typer.Option(help="Days of activity, ending now.", min=1)] = 60,
    seed: Annotated[int, typer.Option(help="The same seed replays the same programme.")] = 7,
) -> None:
    """Play a referral programme forward for a demo: shares, clicks, signups, orders, refunds, cascades."""
    from rich.progress import Progress

    from engine.simulation import simulate_programme
    from graph.model import Segment

    with _service(ctx) as service:
        service.get_campaign(campaign)
        wanted = {Segment.INFLUENCER, Segment.ADVOCATE, Segment.PROSUMER}
        pool = sorted(s.customer_id for s in service.store.iter_scores() if s.segment in wanted)
        if not pool:
            pool = sorted(c.id for c in service.store.iter_customers())[: advocates * 5]
        starters = random.Random(seed).sample(pool, min(advocates, len(pool)))
        with Progress(transient=True) as bar:
            task = bar.add_task("simulating orders", total=None)
            report = simulate_programme(
                service.store,
                campaign,
                starters,
                generations=generations,
                days=days,
                seed=seed,
                progress=lambda n: bar.advance(task, n),
            )
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(report.by_status.items()))
    typer.echo(
        f"simulated {report.generations} generation(s) from {len(starters)} advocates: {report.clicks} clicks, "
        f"{report.signups} signups, {report.orders} orders ({statuses}), {report.refunds} refunds, "
        f"{report.rewards_moved} rewards moved on"
    )
