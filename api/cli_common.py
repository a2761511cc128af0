"""What every CLI command shares: the store named by `--store` / `ADVOCACY_STORE`, and one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from engine.settings import Settings, get_settings
from graph.errors import AdvocacyError
from graph.factory import open_store
from graph.program_store import Store

err_console = Console(stderr=True)


def settings_from_context(ctx: typer.Context) -> Settings:
    """Settings with the global `--store` / `--neo4j-database` options applied over the environment."""
    base = get_settings()
    obj = ctx.find_root().obj or {}
    overrides: dict[str, object] = {}
    if obj.get("store"):
        overrides["store"] = obj["store"]
    if obj.get("neo4j_database"):
        overrides["neo4j"] = base.neo4j.model_copy(update={"database": obj["neo4j_database"]})
    return base.model_copy(update=overrides)


@contextmanager
def store_from_context(ctx: typer.Context) -> Iterator[Store]:
    """Open the configured store for one command and close it afterwards, whatever happens."""
    settings = settings_from_context(ctx)
    store = open_store(settings.store, database=settings.neo4j.database)
    try:
        yield store
    finally:
        store.close()


def fail(error: AdvocacyError) -> typer.Exit:
    """Print an engine error as a clear message (no traceback) and return the exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2 if error.status == 503 else 1)
