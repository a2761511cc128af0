"""`advocacy backup create|restore`: copy the store to one file and put it back (see docs/operations-backup.md).

The route follows the store URL: `sqlite:///...` uses SQLite's online backup API (a consistent copy while the app
runs), `bolt://` / `neo4j://` a logical dump through the driver (`graph.backup`). Both print the counts they
wrote or restored as a table; errors are one line and a non-zero exit, as in every other command.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api.cli_common import clear_errors, err_console, os_error_text, progress_bars, settings_from_context
from graph.backup import BackupInfo, backup_sqlite, dump_neo4j, load_neo4j, restore_sqlite, store_route
from graph.errors import InvalidInput, StoreUnavailable
from graph.factory import open_store, redact
from graph.neo4j_store import Neo4jStore

out = Console(highlight=False, soft_wrap=True)

backup_app = typer.Typer(
    help="Back up the store to one file, and restore it from one (SQLite file copy or Neo4j dump).",
    no_args_is_help=True,
)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help="Store URL (default: the global --store, ADVOCACY_STORE, or sqlite:///advocacy.db).",
        show_default=False,
    ),
]


def _clear_errors() -> AbstractContextManager[None]:
    """One line and a non-zero exit; a file the backup cannot read or write is unavailable storage (exit 2)."""
    return clear_errors(lambda exc: StoreUnavailable(os_error_text(exc)))


def _store_url(ctx: typer.Context, store: str | None) -> tuple[str, str]:
    settings = settings_from_context(ctx)
    return store or settings.store, settings.neo4j.database


@contextmanager
def _neo4j(url: str, database: str) -> Iterator[Neo4jStore]:
    """The Neo4j store, opened through the factory so its constraints exist before anything is loaded."""
    opened = open_store(url, database=database)
    try:
        if not isinstance(opened, Neo4jStore):
            raise InvalidInput(f"store URL {redact(url)!r} does not name a Neo4j store")
        yield opened
    finally:
        opened.close()


def _print(info: BackupInfo, title: str) -> None:
    table = Table(title=title, show_header=True)
    table.add_column("kind")
    table.add_column("name")
    table.add_column("count", justify="right")
    for kind, counts in info.counts.items():
        for name, count in counts.items():
            table.add_row(kind, name, f"{count:,}")
    out.print(table)
    out.print(f"{escape(str(info.path))}: {info.bytes:,} bytes, {info.seconds:.2f} s")
    if info.kept is not None:
        out.print(f"the replaced store is kept as {escape(str(info.kept))}")
    for note in info.notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)


@backup_app.command("create")
def create_command(
    ctx: typer.Context,
    dest: Annotated[
        Path,
        typer.Argument(
            metavar="DEST",
            help="Backup file to write (.db for SQLite, .jsonl.gz for Neo4j), or a directory for a time-stamped name.",
        ),
    ],
    store: StoreOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace DEST if it already exists.")] = False,
) -> None:
    """Back up the store into one file: a consistent copy of an SQLite store while it runs, or a Neo4j dump.

    SQLite: the online backup API takes a snapshot without stopping the API or the workers; the copy passes
    SQLite's integrity check before it is renamed into place. Neo4j: every node and relationship through the
    driver (works on embedded, server and Aura); pause writers while it runs.
    """
    url, database = _store_url(ctx, store)
    with _clear_errors():
        route, where = store_route(url)
        if route == "sqlite":
            info = backup_sqlite(where, dest, overwrite=force)
        else:
            with _neo4j(url, database) as opened, progress_bars() as bars:
                info = dump_neo4j(opened, dest, overwrite=force, progress=bars)
    _print(info, f"Backup of {escape(info.store)}")


@backup_app.command("restore")
def restore_command(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(metavar="SRC", help="A backup written by `advocacy backup create`.")],
    store: StoreOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="SQLite: replace the store even though a process has it open. Neo4j: delete everything in the "
            "database before loading.",
        ),
    ] = False,
) -> None:
    """Restore the store from a backup, then check that it holds the counts the backup holds.

    SQLite: the backup is checked (integrity, schema version), the store file is swapped atomically and the old
    one kept beside it (advocacy.db -> advocacy.db.before-restore); a store in use is refused unless --force.
    Neo4j: the database must be empty unless --force.
    """
    url, database = _store_url(ctx, store)
    with _clear_errors():
        route, where = store_route(url)
        if route == "sqlite":
            info = restore_sqlite(src, where, force=force)
        else:
            with _neo4j(url, database) as opened, progress_bars() as bars:
                info = load_neo4j(src, opened, wipe=force, progress=bars)
    _print(info, f"Restored into {escape(info.store)}")
