"""The `advocacy` command: get customers and their ties into the graph, look at it, and serve the API.

Global options pick the store (`--store`, or `ADVOCACY_STORE`; default `sqlite:///advocacy.db`). Every engine
error is printed as one clear message (file and line, or which store failed and why) with a non-zero exit; long
work shows a progress bar on stderr when stderr is a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api.cli_common import clear_errors, err_console, progress_bars, settings_from_context, store_from_context
from engine.ingest import import_files, load_network, load_synthetic
from engine.settings import get_settings
from graph.errors import RowError
from graph.importer import RecordKind
from graph.model import InfluenceKind

app = typer.Typer(
    name="advocacy",
    help="Referral and advocacy network engine: load customers and their ties, analyse them, serve the API.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)
out = Console(highlight=False, soft_wrap=True)


@app.callback()
def main(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="ADVOCACY_STORE",
            metavar="URL",
            help="Store URL: sqlite:///path.db (default sqlite:///advocacy.db), neo4j://host:7687 or "
            "bolt://user:password@host:7687.",
            show_default=False,
        ),
    ] = None,
    neo4j_database: Annotated[
        str | None,
        typer.Option("--neo4j-database", help="Neo4j database name (default neo4j).", metavar="NAME"),
    ] = None,
) -> None:
    """Referral and advocacy network engine: load customers and their ties, analyse them, serve the API."""
    if not sys.warnoptions:
        warnings.simplefilter("ignore")  # library warnings are noise for a CLI user; `python -W` brings them back
    # The Neo4j driver logs each retry of a failed write; the command ends with one clear line of its own instead.
    logging.getLogger("neo4j").addHandler(logging.NullHandler())
    logging.getLogger("neo4j").propagate = False
    ctx.obj = {"store": store, "neo4j_database": neo4j_database}


def _warn_skipped(skipped: tuple[RowError, ...], count: int) -> None:
    for problem in skipped[:20]:
        err_console.print(f"[yellow]skipped[/] {problem}", highlight=False, soft_wrap=True, markup=True)
    if count > 20:
        err_console.print(f"[yellow]skipped[/] ... and {count - 20} more rows", highlight=False)


@app.command("import", short_help="Import customers, influences, referrals or events from CSV / JSON Lines files.")
def import_command(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH", help="CSV or JSON Lines files (.csv, .jsonl, optionally .gz); customer files go first."
        ),
    ],
    kind: Annotated[
        RecordKind | None,
        typer.Option(help="What the files hold; by default inferred from each file's columns.", show_default=False),
    ] = None,
    skip_bad_rows: Annotated[
        bool,
        typer.Option(
            "--skip-bad-rows", help="Import the good rows and list the bad ones, instead of importing nothing."
        ),
    ] = False,
) -> None:
    """Import customers, influences, referrals or events from CSV / JSON Lines files.

    Every file is checked in full first. If any row is bad (unknown column, bad value, duplicate id, edge to a
    customer that exists nowhere, malformed line), nothing is imported and each problem is listed with its file and
    line, unless --skip-bad-rows is given. Columns (required ones marked *):

    * customers: id*, name, email, phone, locale, timezone, created_at, consent_email, consent_sms,
      consent_whatsapp, consent_push, attr_NAME
    * influences: source_id*, target_id*, kind, weight, at
    * referrals: referrer_id*, friend_id*, at*, code, status, status_at
    * events: id*, customer_id*, kind*, at*, value, attr_NAME
    """
    with clear_errors(), store_from_context(ctx) as store, progress_bars() as progress:
        reports = import_files(store, paths, kind=kind, skip_bad_rows=skip_bad_rows, progress=progress)
    for report in reports:
        _warn_skipped(report.skipped, report.skipped_count)
        skipped = f", {report.skipped_count} bad rows skipped" if report.skipped_count else ""
        out.print(
            f"{report.path}: {report.imported:,} {report.kind.value} imported "
            f"({report.rows:,} rows read{skipped}, {report.seconds:.1f}s)"
        )


@app.command("load-network", short_help="Load a public network edge list (SNAP, NetHEPT) as customers and ties.")
def load_network_command(
    ctx: typer.Context,
    path: Annotated[
        Path, typer.Argument(metavar="PATH", help="Edge list: 'u v' or 'u v w' per line; '#' comments allowed.")
    ],
    directed: Annotated[
        bool,
        typer.Option("--directed", help="Read 'u v' as one arc u -> v (default: undirected, both arcs)."),
    ] = False,
    kind: Annotated[InfluenceKind, typer.Option(help="Influence kind given to every edge.")] = InfluenceKind.FOLLOWS,
) -> None:
    """Load a public network edge list (SNAP, NetHEPT) as customers and INFLUENCES edges.

    Node labels become customer ids as they are; self-loops are dropped and repeated arcs collapsed (weights
    summed). A NetHEPT-style 'N M' first line is recognised and skipped.
    """
    with clear_errors(), store_from_context(ctx) as store, progress_bars() as progress:
        report = load_network(store, path, directed=directed, kind=kind, progress=progress)
    out.print(
        f"{report.path}: {report.customers:,} customers and {report.influences:,} influence arcs loaded "
        f"({report.lines:,} lines, {report.self_loops:,} self-loops dropped, {report.duplicates:,} repeated arcs "
        f"collapsed, {report.seconds:.1f}s)"
    )


@app.command("generate", short_help="Generate a synthetic customer network (reproducible by seed) into the store.")
def generate_command(
    ctx: typer.Context,
    customers: Annotated[int, typer.Option(min=2, help="Number of customers.")] = 2_000,
    seed: Annotated[int, typer.Option(min=0, help="Random seed: the same seed gives the same network.")] = 7,
    avg_degree: Annotated[float, typer.Option(min=0, help="Influence edges per customer, on average.")] = 10.0,
    communities: Annotated[
        int | None, typer.Option(min=1, help="Number of communities (default about sqrt(customers)/2).")
    ] = None,
) -> None:
    """Generate a synthetic customer network (reproducible by seed) into the store.

    Communities, heavy-tailed influence, referral trees, influencers, prosumers, unhappy customers, purchases
    and other events over two years; see graph/generator.py for the model.
    """
    with clear_errors(), store_from_context(ctx) as store, progress_bars() as progress:
        report = load_synthetic(
            store, customers, seed=seed, avg_degree=avg_degree, communities=communities, progress=progress
        )
    out.print(
        f"generated (seed {report.seed}): {report.customers:,} customers, {report.influences:,} influences, "
        f"{report.referrals:,} referrals, {report.events:,} events in {report.seconds:.1f}s"
    )


@app.command("stats", short_help="Count customers, edges by type and events by kind in the store.")
def stats_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
) -> None:
    """Count customers, edges by type and events by kind in the store."""
    with clear_errors(), store_from_context(ctx) as store:
        stats = store.stats()
        where = store.describe()
    if as_json:
        typer.echo(stats.model_dump_json())
        return
    table = Table(title=f"Graph in {where}", show_header=True)
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("customers", f"{stats.customers:,}")
    for edge_type, count in sorted(stats.edges.items()):
        table.add_row(f"{edge_type} edges", f"{count:,}")
    for event_kind, count in sorted(stats.events.items()):
        table.add_row(f"{event_kind} events", f"{count:,}")
    for erased, count in sorted(stats.erased.items()):
        table.add_row(f"erased {erased}", f"{count:,}")
    out.print(table)


@app.command("serve", short_help="Serve the HTTP API and pages (uvicorn) on the configured store.")
def serve_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default from settings: 127.0.0.1).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port to listen on (default from settings: 8000).")
    ] = None,
) -> None:
    """Serve the HTTP API and pages (uvicorn) on the configured store.

    The global --store and --neo4j-database options are passed to the app through ADVOCACY_STORE and
    ADVOCACY_NEO4J__DATABASE.
    """
    import uvicorn

    settings = settings_from_context(ctx)
    os.environ["ADVOCACY_STORE"] = settings.store
    os.environ["ADVOCACY_NEO4J__DATABASE"] = settings.neo4j.database
    get_settings.cache_clear()
    with clear_errors():
        uvicorn.run(
            "api.app:create_app",
            factory=True,
            host=host or settings.api.host,
            port=port or settings.api.port,
        )


# --- Commands from other modules --------------------------------------------------------------------------------
from api import cli_access, cli_analysis, cli_outreach, cli_program  # noqa: E402 - registered after the core commands so `--help` lists them last

cli_analysis.register(app)
cli_program.register(app)
cli_outreach.register(app)
cli_access.register(app)
from api.cli_backup import backup_app  # noqa: E402 - registered with the other groups

app.add_typer(backup_app, name="backup", short_help="Back up the store to one file, or restore it from one.")
