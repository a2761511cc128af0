"""What every CLI command shares: the store named by `--store` / `ADVOCACY_STORE`, one-line errors, progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from engine.settings import Settings, get_settings
from graph.errors import AdvocacyError, InvalidInput
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


def os_error_text(exc: OSError) -> str:
    """`path: reason` of a file-system error, for a one-line message."""
    where = exc.filename if exc.filename is not None else "file"
    return f"{where}: {exc.strerror or exc}"


def _unreadable(exc: OSError) -> AdvocacyError:
    return InvalidInput(f"cannot read {os_error_text(exc)}")


@contextmanager
def clear_errors(file_error: Callable[[OSError], AdvocacyError] = _unreadable) -> Iterator[None]:
    """Engine and file errors as one line and a non-zero exit, never a traceback.

    `file_error` says what a file-system error means to the command: by default a file it could not read (exit 1).
    """
    try:
        yield
    except AdvocacyError as exc:
        raise fail(exc) from None
    except OSError as exc:
        raise fail(file_error(exc)) from None


class ProgressBars:
    """Progress callbacks `(task name, done, total or None)`, as `engine.ingest` and `graph.backup` make them, shown
    as one rich bar per task."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, task: str, done: int, total: int | None) -> None:
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(task, total=total)
        self._progress.update(self._tasks[task], completed=done, total=total)


@contextmanager
def progress_bars() -> Iterator[ProgressBars]:
    """Progress on stderr when it is a terminal; silent in logs, cron mails and tests."""
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    ) as progress:
        yield ProgressBars(progress)
