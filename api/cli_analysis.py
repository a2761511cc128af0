"""`advocacy analyse` and `advocacy targets`: score and segment every customer, then choose whom to ask.

`register(app)` adds both commands to the `advocacy` Typer app. Progress goes to stderr (shown when stderr is a
terminal), results to stdout: a rich table, or with `--json` exactly one JSON object. Engine errors are printed by
`api.cli_common.fail` as one line with a non-zero exit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.cli_common import err_console, fail, settings_from_context, store_from_context
from engine.analysis import SEGMENT_ORDER, AnalysisParams, RunComparison, compare_runs, run_analysis
from engine.celery_app import make_celery
from engine.sampling import WorkerSampling
from engine.targeting import TargetChoice, choose_targets
from graph.errors import AdvocacyError
from graph.model import AnalysisRun, Segment

out = Console(highlight=False, soft_wrap=True)

ANALYSIS_STEPS: tuple[str, ...] = (
    "export",
    "pagerank",
    "communities",
    "reach",
    "bridging",
    "referrals",
    "prosumer, advocacy and risk",
    "write scores",
)


class CascadeModel(StrEnum):
    IC = "ic"
    WC = "wc"


class Selector(StrEnum):
    IMM = "imm"
    DEGREE = "degree"
    PAGERANK = "pagerank"
    DEGREE_DISCOUNT = "degree_discount"


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except AdvocacyError as exc:
        raise fail(exc) from None


class _StepBar:
    """One bar over the analysis steps; writing scores advances it within its step."""

    def __init__(self, progress: Progress, steps: tuple[str, ...]) -> None:
        self._progress = progress
        self._steps = steps
        self._task: TaskID = progress.add_task("starting", total=len(steps) or None)

    def __call__(self, step: str, done: int, total: int) -> None:
        if step in self._steps:
            position = float(self._steps.index(step))
            if total:
                position += done / total
            self._progress.update(self._task, completed=position, description=step)
        else:  # a sub-step such as "export influence edges" with a running count
            label = f"{step}: {done:,}" if done else step
            self._progress.update(self._task, description=label)


@contextmanager
def _bar(steps: tuple[str, ...]) -> Iterator[_StepBar]:
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as progress:
        yield _StepBar(progress, steps)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _print_run(run: AnalysisRun, comparison: RunComparison | None) -> None:
    s = run.summary
    customers = int(s.get("customers", 0))
    table = Table(title=f"Analysis {run.id}", show_header=True)
    table.add_column("segment")
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    if comparison is not None:
        table.add_column("previous run", justify="right")
    for segment in SEGMENT_ORDER:
        count = int(s.get("segments", {}).get(segment.value, 0))
        row = [segment.value, f"{count:,}", _pct(count, customers)]
        if comparison is not None:
            row.append(f"{comparison.segment_counts[segment.value][0]:,}")
        table.add_row(*row)
    out.print(table)

    top = Table(title="Top influencers", show_header=True)
    top.add_column("customer")
    top.add_column("PageRank", justify="right")
    top.add_column("converted referrals", justify="right")
    top.add_column("referral reach", justify="right")
    for row in s.get("top_influencers", []):
        top.add_row(
            str(row["customer_id"]),
            f"{row['pagerank']:.3g}",
            f"{row['converted_referrals']:,}",
            f"{row['referral_descendants']:,}",
        )
    if s.get("top_influencers"):
        out.print(top)

    total = run.timings.get("total", 0.0)
    out.print(
        f"{customers:,} customers, {s.get('influence_edges', 0):,} influence edges, "
        f"{s.get('referral_edges', 0):,} referrals; {s.get('communities', 0):,} communities, "
        f"{s.get('isolated_customers', 0):,} isolated; {total:.1f}s, peak memory {s.get('peak_rss_mb', 0):,.0f} MB"
    )
    if comparison is not None:
        moved = ", ".join(f"{n:,} {t}" for t, n in list(comparison.transitions.items())[:5])
        out.print(
            f"since {comparison.run_a}: {comparison.changed_segments:,} customers changed segment"
            + (f" ({moved})" if moved else "")
        )
    for warning in s.get("warnings", []):
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def _previous_done(runs: list[AnalysisRun], current: str) -> AnalysisRun | None:
    return next((r for r in runs if r.id != current and r.status == "done"), None)


def analyse_command(
    ctx: typer.Context,
    seed: Annotated[
        int, typer.Option(min=0, help="Seed of community detection: same graph and seed, same result.")
    ] = 0,
    resolution: Annotated[
        float, typer.Option(min=0.01, help="Louvain resolution: above 1 gives smaller communities.")
    ] = 1.0,
    backend: Annotated[
        str | None,
        typer.Option(
            help="NetworkX backend for community detection (default ADVOCACY_ANALYSIS__NX_BACKEND, else NetworkX).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run record as one JSON object.")] = False,
) -> None:
    """Score every customer, put each in a segment with the reason in words, and record the run.

    Influence (PageRank), referral power (converted referrals, multi-hop reach), reach (k-core, out-degree),
    communities and bridging, prosumer and advocacy scores, and risk flags; segments influencer, prosumer,
    advocate, passive and do_not_ask.
    """
    settings = settings_from_context(ctx)
    params = AnalysisParams(seed=seed, resolution=resolution, nx_backend=backend or settings.analysis.nx_backend)
    with _errors(), store_from_context(ctx) as store:
        with _bar(ANALYSIS_STEPS) as bar:
            run = run_analysis(store, params=params, progress=bar)
        previous = _previous_done(store.list_runs(limit=5), run.id)
    if as_json:
        record: dict[str, Any] = run.model_dump(mode="json")
        record["summary"].pop("membership", None)
        typer.echo(json.dumps(record))
        return
    _print_run(run, compare_runs(previous, run) if previous is not None else None)


def _choice_json(choice: TargetChoice) -> dict[str, Any]:
    return {
        "seeds": choice.seeds,
        "marginal_gains": [t.marginal_gain for t in choice.targets],
        "explanations": [t.explanation for t in choice.targets],
        "segments": [t.segment.value for t in choice.targets],
        "communities": [t.community for t in choice.targets],
        "expected_spread": choice.expected_spread,
        "ci95": list(choice.ci95),
        "estimated_spread": choice.estimated_spread,
        "k": choice.k,
        "model": choice.model,
        "p": choice.p,
        "method": choice.method,
        "winner": choice.winner,
        "seed": choice.seed,
        "mc_runs": choice.mc_runs,
        "seconds": choice.seconds,
        "candidates": choice.candidates,
        "excluded": choice.excluded,
        "run_id": choice.run_id,
        "baselines": [
            {
                "method": b.method,
                "seeds": b.seeds,
                "expected_spread": b.expected_spread,
                "ci95": list(b.ci95),
                "seconds": b.seconds,
            }
            for b in choice.baselines
        ],
        "warnings": choice.warnings,
    }


def _print_choice(choice: TargetChoice) -> None:
    table = Table(title=f"{len(choice.targets)} customers to ask ({choice.method}, {choice.model}, p={choice.p:g})")
    table.add_column("#", justify="right")
    table.add_column("customer")
    table.add_column("segment")
    table.add_column("community", justify="right")
    table.add_column("adds", justify="right")
    table.add_column("why", overflow="fold")
    for t in choice.targets:
        table.add_row(
            str(t.rank),
            t.customer_id,
            t.segment.value,
            "-" if t.community is None else str(t.community),
            f"{t.marginal_gain:.1f}",
            t.explanation,
        )
    out.print(table)
    low, high = choice.ci95
    out.print(
        f"expected reach {choice.expected_spread:,.1f} customers (95% CI {low:,.1f} to {high:,.1f}, "
        f"{choice.mc_runs:,} simulations); {choice.candidates:,} customers could be chosen"
        + (f", left out: {', '.join(f'{n:,} {why}' for why, n in choice.excluded.items())}" if choice.excluded else "")
    )
    for b in choice.baselines:
        lift = (choice.expected_spread / b.expected_spread - 1) * 100 if b.expected_spread else 0.0
        out.print(f"  vs {b.method}: {b.expected_spread:,.1f} ({lift:+.1f}%)")
    for warning in choice.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def targets_command(
    ctx: typer.Context,
    k: Annotated[int, typer.Option("--k", min=1, help="How many customers to ask.")],
    model: Annotated[
        CascadeModel, typer.Option(help="Diffusion model: independent cascade or weighted cascade.")
    ] = CascadeModel.IC,
    p: Annotated[float, typer.Option("--p", min=0.0, max=1.0, help="Independent cascade edge probability.")] = 0.01,
    exclude_segment: Annotated[
        list[Segment] | None,
        typer.Option("--exclude-segment", help="Never choose this segment (repeatable); do_not_ask always is."),
    ] = None,
    max_per_community: Annotated[
        int | None, typer.Option(min=1, help="At most this many targets per community.")
    ] = None,
    method: Annotated[Selector, typer.Option(help="How to choose; the others are shown as baselines.")] = Selector.IMM,
    seed: Annotated[int | None, typer.Option(min=0, help="Seed for a reproducible choice.")] = None,
    mc_runs: Annotated[int, typer.Option(min=1, help="Monte Carlo simulations per spread estimate.")] = 10_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="Threads for sampling and simulation (default: every core).")
    ] = os.cpu_count() or 1,
    celery: Annotated[
        bool | None,
        typer.Option(
            "--celery/--no-celery",
            help="Sample on Celery workers (default: ADVOCACY_CELERY__DISTRIBUTE_SAMPLING).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Choose K customers to ask that maximise the expected referral cascade, with why and what to expect.

    Uses the latest analysis (run `advocacy analyse` first): do_not_ask customers and customers without consent
    are never chosen. Shows the expected reach with a 95% confidence interval and the degree, PageRank and
    degree-discount baselines under the same constraints.
    """
    settings = settings_from_context(ctx)
    distribute = settings.celery.distribute_sampling if celery is None else celery
    sampling = (
        WorkerSampling(
            make_celery(settings),
            settings.store,
            database=settings.neo4j.database,
            chunks=settings.celery.sampling_chunks,
            timeout_s=settings.celery.task_timeout_s,
        )
        if distribute
        else None
    )
    with _errors(), store_from_context(ctx) as store, _bar(()) as bar:
        choice = choose_targets(
            store,
            k=k,
            model=model.value,
            p=p,
            exclude_segments=tuple(exclude_segment or ()),
            max_per_community=max_per_community,
            method=method.value,
            seed=seed,
            mc_runs=mc_runs,
            workers=workers,
            worker_sampling=sampling,
            progress=bar,
        )
    if as_json:
        typer.echo(json.dumps(_choice_json(choice)))
        return
    _print_choice(choice)


def register(app: typer.Typer) -> None:
    """Add `analyse` and `targets` to the `advocacy` app."""
    app.command("analyse", short_help="Score, segment and explain every customer; record the run.")(analyse_command)
    app.command("targets", short_help="Choose K customers to ask, with expected reach and baselines.")(targets_command)
