"""Getting data into the graph: import files, load public networks, seed synthetic ones.

Imports are all-or-nothing per command: every file is validated in full first (each row against the models, keys
against the rest of the file, customer references against the import's customer files and the store), and only
a clean set of files is written, unless the caller asks to skip bad rows. Files are streamed twice (validate,
then write) rather than held in memory, and written in chunks of `CHUNK_ROWS`; each chunk is one transaction and
the stores upsert, so rerunning an import that was interrupted completes it without duplicating anything.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from graph.datasets import read_edge_list
from graph.errors import InvalidInput, RowError
from graph.generator import generate_network
from graph.importer import (
    FileFormat,
    Record,
    RecordFile,
    RecordKind,
    describe_key,
    open_records,
    record_key,
    referenced_customers,
)
from graph.model import Customer, GraphBatch, InfluenceKind
from graph.store import GraphStore

CHUNK_ROWS = 20_000
MAX_KEPT_ERRORS = 100_000  # row errors kept for the report; more are counted, not kept
_KIND_ORDER = {RecordKind.CUSTOMERS: 0, RecordKind.INFLUENCES: 1, RecordKind.REFERRALS: 2, RecordKind.EVENTS: 3}


class Progress(Protocol):
    """Told how far a long task has got; `total` is None while it is unknown."""

    def __call__(self, task: str, done: int, total: int | None) -> None: ...


def _no_progress(task: str, done: int, total: int | None) -> None:
    return None


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What one file import did; `skipped` lists the rows left out (only when bad rows were skipped)."""

    path: str
    kind: RecordKind
    format: FileFormat
    rows: int
    imported: int
    skipped: tuple[RowError, ...]
    skipped_count: int
    seconds: float


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What loading an edge list did."""

    path: str
    directed: bool
    customers: int
    influences: int
    lines: int
    self_loops: int
    duplicates: int
    seconds: float


@dataclass(frozen=True, slots=True)
class GenerateReport:
    """What seeding a synthetic network wrote."""

    customers: int
    influences: int
    referrals: int
    events: int
    seed: int
    seconds: float


@dataclass
class _Check:
    """The first pass's findings for one file."""

    file: RecordFile
    rows: int = 0
    valid: int = 0
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0
    bad_lines: set[int] = field(default_factory=set)  # rows refused for cross-row reasons
    refs: set[str] = field(default_factory=set)  # referenced ids not among the import's customers
    customer_lines: dict[str, int] = field(default_factory=dict)  # customer files: id -> first line
    key_hashes: array[int] = field(default_factory=lambda: array("q"))
    key_lines: array[int] = field(default_factory=lambda: array("q"))
    seconds: float = 0.0

    def note(self, error: RowError) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(error)


def import_file(
    store: GraphStore,
    path: Path | str,
    *,
    kind: RecordKind | None = None,
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Import one file of customers, influences, referrals or events; see `import_files`."""
    return import_files(store, [path], kind=kind, skip_bad_rows=skip_bad_rows, progress=progress)[0]


def import_files(
    store: GraphStore,
    paths: Sequence[Path | str],
    *,
    kind: RecordKind | None = None,
    skip_bad_rows: bool = False,
    progress: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> list[ImportReport]:
    """Validate every file, then write them (customers first, so edges and events find their customers).

    Raises `InvalidInput` listing every problem, having written nothing, when any row is bad and
    `skip_bad_rows` is false; a file whose header cannot be read fails the import even when skipping rows.
    Edges and events may point at customers stored already or at valid customers in any file of this import.
    """
    report = progress or _no_progress
    files: list[RecordFile] = []
    problems: list[RowError] = []
    for path in paths:
        try:
            files.append(open_records(path, kind=kind))
        except InvalidInput as exc:
            problems.extend(exc.problems or [RowError(str(path), None, exc.detail)])
    if problems:
        raise InvalidInput(_summary(problems), problems)
    files.sort(key=lambda f: _KIND_ORDER[f.kind])

    known: set[str] = set()
    checks = [_first_pass(f, known, report) for f in files]
    _check_references(store, checks, known, report)
    problems = [error for check in checks for error in check.errors]
    if problems and not skip_bad_rows:
        count = sum(check.error_count for check in checks)
        raise InvalidInput(_summary(problems, count), problems)

    reports: list[ImportReport] = []
    for check in checks:
        imported = _write_file(store, check, chunk_rows, report)
        reports.append(
            ImportReport(
                path=check.file.source,
                kind=check.file.kind,
                format=check.file.format,
                rows=check.rows,
                imported=imported,
                skipped=tuple(check.errors),
                skipped_count=check.error_count,
                seconds=check.seconds,
            )
        )
    return reports


def _summary(problems: list[RowError], count: int | None = None) -> str:
    sources = ", ".join(dict.fromkeys(p.source for p in problems))
    total = count if count is not None else len(problems)
    return f"nothing imported: {total} problem{'s' if total != 1 else ''} in {sources}"


def _first_pass(file: RecordFile, known: set[str], report: Progress) -> _Check:
    """Validate every row; note keys (for duplicates) and customer references (for the store check)."""
    started = time.perf_counter()
    check = _Check(file)
    task = f"checking {file.path.name}"
    for line, record, error in file.rows():
        check.rows += 1
        if check.rows % 5_000 == 0:
            report(task, check.rows, None)
        if error is not None:
            check.note(error)
            continue
        assert record is not None
        if isinstance(record, Customer):
            first = check.customer_lines.setdefault(record.id, line)
            if first != line:
                reason = f"duplicate {describe_key(file.kind, (record.id,))} (first on line {first})"
                check.note(RowError(file.source, line, reason))
                check.bad_lines.add(line)
                continue
        else:
            check.key_hashes.append(hash(record_key(record)))
            check.key_lines.append(line)
            check.refs.update(ref for ref in referenced_customers(record) if ref not in known)
        check.valid += 1
    known.update(check.customer_lines)
    check.customer_lines.clear()
    report(task, check.rows, check.rows)
    check.seconds += time.perf_counter() - started
    return check


def _check_references(store: GraphStore, checks: list[_Check], known: set[str], report: Progress) -> None:
    """Find duplicate keys and references to customers that exist nowhere; note each offending row."""
    refs: set[str] = set()
    for check in checks:
        refs |= check.refs - known
    stored: set[str] = set()
    ordered = sorted(refs)
    for start in range(0, len(ordered), CHUNK_ROWS):
        stored |= store.existing_customer_ids(ordered[start : start + CHUNK_ROWS])
        report("looking up customers in the store", min(start + CHUNK_ROWS, len(ordered)), len(ordered))
    missing = refs - stored
    for check in checks:
        candidates = _duplicate_candidates(check)
        if candidates or (missing & check.refs):
            _detail_pass(check, candidates, missing)
        check.refs.clear()
        check.key_hashes, check.key_lines = array("q"), array("q")


def _duplicate_candidates(check: _Check) -> set[int]:
    """Lines whose key hash repeats: every such group is checked with the real keys in `_detail_pass`."""
    if len(check.key_hashes) < 2:
        return set()
    hashes = np.frombuffer(check.key_hashes, dtype=np.int64)
    lines = np.frombuffer(check.key_lines, dtype=np.int64)
    order = np.argsort(hashes, kind="stable")
    ordered = hashes[order]
    repeated = np.zeros(len(ordered), dtype=bool)
    same = ordered[1:] == ordered[:-1]
    repeated[1:] |= same
    repeated[:-1] |= same
    return set(lines[order[repeated]].tolist())


def _detail_pass(check: _Check, candidates: set[int], missing: set[str]) -> None:
    """Reread a file to name each duplicate row and each row pointing at a customer that exists nowhere."""
    started = time.perf_counter()
    file = check.file
    first_line: dict[tuple[str, ...], int] = {}
    for line, record, _ in file.rows():
        if record is None:
            continue
        if line in candidates:
            key = record_key(record)
            first = first_line.setdefault(key, line)
            if first != line:
                reason = f"duplicate {describe_key(file.kind, key)} (first on line {first})"
                check.note(RowError(file.source, line, reason))
                check.bad_lines.add(line)
                check.valid -= 1
                continue
        unknown = [ref for ref in referenced_customers(record) if ref in missing]
        if unknown:
            names = list(dict.fromkeys(unknown))
            who = f"customer {names[0]!r} is" if len(names) == 1 else f"customers {names[0]!r} and {names[1]!r} are"
            reason = f"{who} neither among the valid rows of the imported customer files nor in the store"
            check.note(RowError(file.source, line, reason))
            check.bad_lines.add(line)
            check.valid -= 1
    check.errors.sort(key=lambda e: e.line or 0)
    check.seconds += time.perf_counter() - started


def _write_file(store: GraphStore, check: _Check, chunk_rows: int, report: Progress) -> int:
    """Second pass: write the file's good rows in chunks, each chunk one transaction."""
    started = time.perf_counter()
    file = check.file
    task = f"importing {file.path.name}"
    written = 0
    report(task, 0, check.valid)
    chunk: list[Record] = []
    for line, record, _ in file.rows():
        if record is None or line in check.bad_lines:
            continue
        chunk.append(record)
        if len(chunk) >= chunk_rows:
            store.write_batch(_batch(file.kind, chunk))
            written += len(chunk)
            report(task, written, check.valid)
            chunk = []
    if chunk:
        store.write_batch(_batch(file.kind, chunk))
        written += len(chunk)
    report(task, written, check.valid)
    check.seconds += time.perf_counter() - started
    return written


def _batch(kind: RecordKind, rows: list[Any]) -> GraphBatch:
    """A batch of already-validated rows (no second validation)."""
    return GraphBatch.model_construct(
        customers=rows if kind is RecordKind.CUSTOMERS else [],
        influences=rows if kind is RecordKind.INFLUENCES else [],
        referrals=rows if kind is RecordKind.REFERRALS else [],
        events=rows if kind is RecordKind.EVENTS else [],
    )


def _write_batches(
    store: GraphStore, batches: Iterable[GraphBatch], task: str, total: int | None, report: Progress
) -> dict[str, int]:
    counts = {"customers": 0, "influences": 0, "referrals": 0, "events": 0}
    done = 0
    report(task, 0, total)
    for batch in batches:
        store.write_batch(batch)
        counts["customers"] += len(batch.customers)
        counts["influences"] += len(batch.influences)
        counts["referrals"] += len(batch.referrals)
        counts["events"] += len(batch.events)
        done += len(batch)
        report(task, done, max(total, done) if total is not None else None)
    report(task, done, done)
    return counts


def load_network(
    store: GraphStore,
    path: Path | str,
    *,
    directed: bool,
    kind: InfluenceKind = InfluenceKind.FOLLOWS,
    progress: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> LoadReport:
    """Load a public edge list (SNAP, NetHEPT) as customers and `INFLUENCES` edges of one kind."""
    report = progress or _no_progress
    started = time.perf_counter()
    report(f"reading {Path(path).name}", 0, None)
    network = read_edge_list(path, directed=directed)
    total = len(network.nodes) + network.arcs
    counts = _write_batches(
        store, network.batches(kind=kind, chunk_size=chunk_rows), f"loading {Path(path).name}", total, report
    )
    return LoadReport(
        path=str(path),
        directed=directed,
        customers=counts["customers"],
        influences=counts["influences"],
        lines=network.lines,
        self_loops=network.self_loops,
        duplicates=network.duplicates,
        seconds=time.perf_counter() - started,
    )


def load_synthetic(
    store: GraphStore,
    customers: int,
    *,
    seed: int,
    progress: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
    **params: Any,
) -> GenerateReport:
    """Generate a synthetic network (see `graph.generator`) and write it chunk by chunk."""
    report = progress or _no_progress
    started = time.perf_counter()
    try:
        network = generate_network(customers, seed=seed, chunk_size=chunk_rows, **params)
    except ValueError as exc:
        raise InvalidInput(f"cannot generate that network: {exc}") from None
    counts = _write_batches(store, network, f"generating {customers:,} customers", network.expected_rows, report)
    return GenerateReport(seed=seed, seconds=time.perf_counter() - started, **counts)
