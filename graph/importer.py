"""Read customer, influence, referral and event files (CSV or JSON Lines) as validated model rows.

Parsing only: this module reads the file it is given and nothing else. Checks that need the whole file or the
store (duplicate keys, edges to unknown customers) are made by `engine.ingest`, which streams a file twice (once to
validate, once to write) so that files larger than memory can be imported.

One file holds one kind of row. The kind is given, or inferred from the CSV header / the first JSON object's keys
(`referrer_id` -> referrals, `source_id` -> influences, `customer_id` -> events, `id` -> customers).

Columns (CSV header names; the same names are the keys of a JSON Lines object)::

    customers   id*, name, email, phone, locale, timezone, created_at,
                consent_email, consent_sms, consent_whatsapp, consent_push, attr_<name>...
    influences  source_id*, target_id*, kind (follows|mentions|shares|co_purchase), weight (> 0), at
    referrals   referrer_id*, friend_id*, at*, code, status (clicked|signed_up|converted|reversed), status_at
    events      id*, customer_id*, kind*, at*, value, attr_<name>...

`*` marks required columns. An empty CSV cell (or a JSON `null`) means "not given", so the model's default
applies. Times are ISO 8601 (`2024-05-01T09:30:00Z`; no zone means UTC) or Unix seconds. Booleans accept
true/false, yes/no, 1/0. A CSV `attr_<name>` cell becomes an integer, a float or a boolean when it reads as one
(`42`, `4.5`, `true`; `007` stays text), otherwise text. JSON Lines may also give `consent` and `attributes` as
objects (`{"consent": {"email": true}, "attributes": {"plan": "pro"}}`). Files ending in `.gz` are decompressed.

Hostile files are reported, never crash the import: a line longer than `MAX_LINE_BYTES` is refused without being
held in memory, JSON keys may not repeat, numbers must be finite (no `NaN`, `Infinity` or `1e999`), nesting too
deep for the parser and date-times that fall outside years 1-9999 once converted to UTC are row errors, and a
corrupt or truncated `.gz` file is an `InvalidInput` naming the line it broke on.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import reprlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any, Final, NamedTuple, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from graph.errors import InvalidInput, RowError
from graph.model import ContactChannel, Customer, Event, Influence, Referral, UtcDatetime

Record = Customer | Influence | Referral | Event


class RecordKind(StrEnum):
    """What one import file holds."""

    CUSTOMERS = "customers"
    INFLUENCES = "influences"
    REFERRALS = "referrals"
    EVENTS = "events"


class FileFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


@dataclass(frozen=True, slots=True)
class Columns:
    """The columns one kind of file may have."""

    required: tuple[str, ...]
    optional: tuple[str, ...]
    attributes: bool  # whether `attr_<name>` columns (and a JSON `attributes` object) are allowed
    consent: bool  # whether a JSON `consent` object is allowed

    @property
    def known(self) -> tuple[str, ...]:
        return self.required + self.optional

    def describe(self) -> str:
        names = [*self.known, *(["attr_<name>"] if self.attributes else [])]
        return ", ".join(names)


_CONSENT_COLUMNS = tuple(f"consent_{channel.value}" for channel in ContactChannel)

COLUMNS: dict[RecordKind, Columns] = {
    RecordKind.CUSTOMERS: Columns(
        required=("id",),
        optional=("name", "email", "phone", "locale", "timezone", "created_at", *_CONSENT_COLUMNS),
        attributes=True,
        consent=True,
    ),
    RecordKind.INFLUENCES: Columns(
        required=("source_id", "target_id"), optional=("kind", "weight", "at"), attributes=False, consent=False
    ),
    RecordKind.REFERRALS: Columns(
        required=("referrer_id", "friend_id", "at"),
        optional=("code", "status", "status_at"),
        attributes=False,
        consent=False,
    ),
    RecordKind.EVENTS: Columns(
        required=("id", "customer_id", "kind", "at"), optional=("value",), attributes=True, consent=False
    ),
}

_MODELS: dict[RecordKind, type[BaseModel]] = {
    RecordKind.CUSTOMERS: Customer,
    RecordKind.INFLUENCES: Influence,
    RecordKind.REFERRALS: Referral,
    RecordKind.EVENTS: Event,
}

# Checked in this order: an events file has `id` too, so `customer_id` must win over `id`.
_KIND_MARKERS: tuple[tuple[str, RecordKind], ...] = (
    ("referrer_id", RecordKind.REFERRALS),
    ("source_id", RecordKind.INFLUENCES),
    ("customer_id", RecordKind.EVENTS),
    ("id", RecordKind.CUSTOMERS),
)

_KIND_ALIASES: dict[str, RecordKind] = {
    "customer": RecordKind.CUSTOMERS,
    "influence": RecordKind.INFLUENCES,
    "relationship": RecordKind.INFLUENCES,
    "relationships": RecordKind.INFLUENCES,
    "referral": RecordKind.REFERRALS,
    "event": RecordKind.EVENTS,
}

_ID_FIELDS = frozenset({"id", "customer_id", "source_id", "target_id", "referrer_id", "friend_id", "code"})
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_INT = re.compile(r"^-?(0|[1-9][0-9]{0,17})$")
_FLOAT = re.compile(r"^-?[0-9]+\.[0-9]*([eE][-+]?[0-9]+)?$|^-?[0-9]+[eE][-+]?[0-9]+$")
_TIME_FIELDS = ("created_at", "at", "status_at")
_TIME: TypeAdapter[Any] = TypeAdapter(UtcDatetime)
MAX_LINE_BYTES: Final = 1 << 20
"""A longer line is refused unread: no customer, edge or event needs a megabyte, and a file with no line breaks
would otherwise be held in memory whole."""
_MAX_REASON: Final = 300
_SUFFIXES: dict[str, FileFormat] = {
    ".csv": FileFormat.CSV,
    ".jsonl": FileFormat.JSONL,
    ".ndjson": FileFormat.JSONL,
    ".json": FileFormat.JSONL,
}


def parse_kind(text: str) -> RecordKind:
    """`customers`, `influences` (or `relationships`), `referrals`, `events`; singular forms too."""
    key = text.strip().lower()
    try:
        return RecordKind(key)
    except ValueError:
        if key in _KIND_ALIASES:
            return _KIND_ALIASES[key]
    raise InvalidInput(f"unknown kind {text!r}: use one of {', '.join(k.value for k in RecordKind)}")


class ParsedRow(NamedTuple):
    """One data row: its first line in the file, and either the validated record or what is wrong with it."""

    line: int
    record: Record | None
    error: RowError | None


def record_key(record: Record) -> tuple[str, ...]:
    """What makes a row unique within its kind (the key the stores upsert on)."""
    if isinstance(record, Customer):
        return (record.id,)
    if isinstance(record, Influence):
        return (record.source_id, record.target_id, record.kind.value)
    if isinstance(record, Referral):
        return (record.referrer_id, record.friend_id)
    return (record.id,)


def describe_key(kind: RecordKind, key: tuple[str, ...]) -> str:
    """The key in words, for a duplicate-row message."""
    if kind is RecordKind.CUSTOMERS:
        return f"customer id {key[0]!r}"
    if kind is RecordKind.INFLUENCES:
        return f"influence {key[0]!r} -> {key[1]!r} ({key[2]})"
    if kind is RecordKind.REFERRALS:
        return f"referral {key[0]!r} -> {key[1]!r}"
    return f"event id {key[0]!r}"


def referenced_customers(record: Record) -> tuple[str, ...]:
    """The customer ids a row points at, which must exist in the file set or the store."""
    if isinstance(record, Influence):
        return (record.source_id, record.target_id)
    if isinstance(record, Referral):
        return (record.referrer_id, record.friend_id)
    if isinstance(record, Event):
        return (record.customer_id,)
    return ()


def detect_format(path: Path) -> FileFormat:
    """By suffix (`.csv`, `.jsonl`, `.ndjson`, `.json`, each optionally `.gz`), else by the first character."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if suffixes and suffixes[-1] in _SUFFIXES:
        return _SUFFIXES[suffixes[-1]]
    with _open_binary(path) as handle:
        for raw, _ in _raw_lines(handle, str(path)):
            stripped = raw.strip()
            if stripped:
                return FileFormat.JSONL if stripped.startswith((b"{", b"\xef\xbb\xbf{")) else FileFormat.CSV
    return FileFormat.CSV


def _open_binary(path: Path) -> IO[bytes]:
    if path.suffix.lower() == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _raw_lines(handle: IO[bytes], source: str) -> Iterator[tuple[bytes, bool]]:
    """(line, too long) per physical line; of a line over `MAX_LINE_BYTES` only its start is kept, the rest is
    read past. A corrupt or truncated gzip stream raises `InvalidInput` naming the line it broke on."""
    number = 0
    try:
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            if len(raw) <= MAX_LINE_BYTES:
                yield raw, False
                continue
            rest = raw
            while rest and not rest.endswith(b"\n"):
                rest = handle.readline(MAX_LINE_BYTES)
            yield raw[:64], True
    except (OSError, EOFError, zlib.error) as exc:
        reason = f"cannot be read past this line: {exc}"
        raise InvalidInput(f"{source} is corrupt or truncated", [RowError(source, number + 1, reason)]) from None


def _decoded_lines(handle: IO[bytes], source: str, problems: list[RowError]) -> Iterator[str]:
    """Lines as text with their line ends; undecodable or overlong lines are noted and passed on (with
    replacement chars, or as an empty line) so that line numbers stay right."""
    for number, (raw, too_long) in enumerate(_raw_lines(handle, source), start=1):
        if too_long:
            problems.append(RowError(source, number, f"line longer than {MAX_LINE_BYTES:,} bytes"))
            yield "\n"
            continue
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            problems.append(RowError(source, number, f"not valid UTF-8 text (byte {exc.start + 1} of the line)"))
            text = raw.decode("utf-8", errors="replace")
        yield text


class _JsonProblem(Exception):
    """Why one line is not a JSON value this importer accepts."""


def _refuse_constant(name: str) -> Any:
    raise _JsonProblem(f"{name} is not a number JSON allows; write a finite number or null")


class RepeatedKey(ValueError):
    """A JSON object that names one key twice."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads`'s `object_pairs_hook` for hostile input: a JSON object whose keys repeat is ambiguous (parsers
    keep either copy), so it raises `RepeatedKey` naming the key."""
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RepeatedKey(f"the key {_short(key)} appears twice in one object")
            seen.add(key)
    return found


def _load_json(text: str) -> Any:
    """One JSON value, or `_JsonProblem` saying why not in words a person can act on."""
    try:
        return json.loads(text, object_pairs_hook=unique_keys, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise _JsonProblem(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RepeatedKey as exc:
        raise _JsonProblem(str(exc)) from None
    except RecursionError:
        raise _JsonProblem("not valid JSON here: nested too deeply") from None
    except ValueError:  # an integer of more digits than Python converts (4300)
        raise _JsonProblem("not valid JSON here: a number has too many digits") from None


def _infer_scalar(text: str) -> str | int | float | bool:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text) and math.isfinite(number := float(text)):
        return number
    return text


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 200
_REPR.maxlevel = 3


def _short(value: Any) -> str:
    """A bounded repr: reprlib stops at a depth and a length, so a huge or deeply nested value costs nothing."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _clip(reason: str) -> str:
    return reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 3] + "..."


def _non_finite(record: Record) -> str | None:
    """Why a record holds a number that is not finite (NaN or infinity poisons every sum), or None."""
    if isinstance(record, Event) and record.value is not None and not math.isfinite(record.value):
        return f"bad value for 'value' ({record.value}): must be a finite number"
    attributes = record.attributes if isinstance(record, Customer | Event) else {}
    for name, item in attributes.items():
        if isinstance(item, float) and not math.isfinite(item):
            return f"bad value for 'attr_{name}' ({item}): must be a finite number"
    return None


def _out_of_range(fields: dict[str, Any]) -> str:
    """The clause for a date-time that overflows once converted to UTC (`0001-01-01T00:00+01:00`)."""
    for name in _TIME_FIELDS:
        if name not in fields:
            continue
        try:
            _TIME.validate_python(fields[name])
        except OverflowError:
            return f"bad value for {name!r} ({_short(fields[name])}): out of range once converted to UTC"
        except ValidationError:
            continue
    return "a date-time is out of range once converted to UTC"


def _column_of(loc: tuple[int | str, ...]) -> str | None:
    if not loc:
        return None
    head = str(loc[0])
    if head == "consent" and len(loc) > 1:
        return f"consent_{loc[1]}"
    if head == "attributes" and len(loc) > 1:
        return f"attr_{loc[1]}"
    return head


def describe_validation_error(exc: ValidationError) -> str:
    """Pydantic's errors as one line a person can act on, one clause per bad column."""
    clauses: list[str] = []
    seen: set[str | None] = set()
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        column = _column_of(loc)
        if column in seen:
            continue  # a union reports one error per member; the first says enough
        seen.add(column)
        message = _clip(str(error["msg"]).removeprefix("Value error, "))
        if error["type"] == "missing":
            clauses.append(f"missing value for {_short(column)}")
        elif loc and loc[-1] == "[key]" and column and column.startswith("consent_"):
            clauses.append(f"unknown consent channel {_short(column.removeprefix('consent_'))} ({message})")
        elif column is None:
            clauses.append(message)
        else:
            clauses.append(f"bad value for {_short(column)} ({_short(error['input'])}): {message}")
    return "; ".join(clauses)


class _RowProblem(Exception):
    """A row that cannot even be handed to the model."""


class RecordFile:
    """One import file, opened to check its header; iterate `rows()` as often as needed (each pass rereads it).

    Problems that make the whole file unreadable (no header, unknown or missing columns, unknown kind) raise
    `InvalidInput` here, because no row of such a file can be trusted; everything else is reported per row.
    """

    def __init__(self, path: Path | str, *, kind: RecordKind | None = None, fmt: FileFormat | None = None) -> None:
        self.path = Path(path)
        self.source = str(path)
        self.format = fmt or detect_format(self.path)
        self._header: list[str] = []
        if self.format is FileFormat.CSV:
            self._header = self._read_header()
            self.kind = kind or self._infer_kind(self._header, "the header")
            self._check_header()
        else:
            self.kind = kind or self._infer_kind(self._first_object_keys(), "the first line's keys")
        self.columns = COLUMNS[self.kind]
        self._model = _MODELS[self.kind]

    # --- header ---------------------------------------------------------------------------------------------
    def _read_header(self) -> list[str]:
        problems: list[RowError] = []
        with _open_binary(self.path) as handle:
            lines = _decoded_lines(handle, self.source, problems)
            reader = csv.reader(lines, strict=True)
            try:
                header = next(reader, None)
            except csv.Error as exc:
                raise InvalidInput(
                    f"{self.source} has a malformed header", [RowError(self.source, 1, f"malformed CSV: {exc}")]
                ) from None
        if problems:
            raise InvalidInput(f"{self.source} has a malformed header", problems)
        if header is None:
            raise InvalidInput(
                f"{self.source} is empty", [RowError(self.source, 1, "no header line (the file is empty)")]
            )
        if not any(cell.strip() for cell in header):
            reason = "the first line names no columns: the header must be the first line"
            raise InvalidInput(f"{self.source} has no header", [RowError(self.source, 1, reason)])
        return [cell.strip() for cell in header]

    def _first_object_keys(self) -> list[str]:
        with _open_binary(self.path) as handle:
            for number, (raw, too_long) in enumerate(_raw_lines(handle, self.source), start=1):
                if too_long:
                    reason = f"line longer than {MAX_LINE_BYTES:,} bytes, so the kind of rows is unknown"
                    problem = RowError(self.source, number, reason)
                    raise InvalidInput(f"cannot tell what {self.source} holds", [problem])
                text = raw.decode("utf-8-sig", errors="replace").strip()
                if not text:
                    continue
                try:
                    value = _load_json(text)
                except _JsonProblem as exc:
                    problem = RowError(self.source, number, f"{exc}, so the kind of rows is unknown")
                    raise InvalidInput(f"cannot tell what {self.source} holds", [problem]) from None
                if not isinstance(value, dict):
                    hint = " (a JSON array is not JSON Lines: write one object per line)" if text[:1] == "[" else ""
                    raise InvalidInput(
                        f"cannot tell what {self.source} holds; pass the kind explicitly",
                        [RowError(self.source, number, f"the first line is not a JSON object{hint}")],
                    )
                return list(value)
        raise InvalidInput(f"{self.source} is empty", [RowError(self.source, None, "the file holds no rows")])

    def _infer_kind(self, keys: list[str], where: str) -> RecordKind:
        present = set(keys)
        for marker, kind in _KIND_MARKERS:
            if marker in present:
                return kind
        raise InvalidInput(
            f"cannot tell what {self.source} holds from {where}; pass the kind explicitly",
            [
                RowError(
                    self.source,
                    1,
                    "expected one of the columns referrer_id (referrals), source_id (influences), "
                    "customer_id (events) or id (customers)",
                )
            ],
        )

    def _check_header(self) -> None:
        columns = COLUMNS[self.kind]
        problems: list[RowError] = []
        seen: set[str] = set()
        for name in self._header:
            if name in seen:
                problems.append(RowError(self.source, 1, f"column {_short(name)} appears twice"))
            seen.add(name)
            unknown = name not in columns.known and not (columns.attributes and name.startswith("attr_"))
            if not name:
                problems.append(RowError(self.source, 1, "a column has no name"))
            elif columns.attributes and name.startswith("attr_") and not _ATTRIBUTE.match(name[5:]):
                reason = (
                    f"column {_short(name)}: an attribute name after attr_ is a letter or _ then letters, digits, _"
                )
                problems.append(RowError(self.source, 1, reason))
            elif unknown:
                problems.append(
                    RowError(
                        self.source,
                        1,
                        f"unknown column {_short(name)} for {self.kind.value} (expected {columns.describe()})",
                    )
                )
        problems.extend(
            RowError(self.source, 1, f"missing required column {name!r} for {self.kind.value}")
            for name in columns.required
            if name not in seen
        )
        if problems:
            raise InvalidInput(f"{self.source} has a bad header", problems)

    # --- rows -----------------------------------------------------------------------------------------------
    def rows(self) -> Iterator[ParsedRow]:
        """Every data row in file order, validated; blank lines are ignored."""
        if self.format is FileFormat.CSV:
            return self._csv_rows()
        return self._jsonl_rows()

    def _csv_rows(self) -> Iterator[ParsedRow]:
        width = len(self._header)
        decode_problems: list[RowError] = []
        with _open_binary(self.path) as handle:
            lines = _decoded_lines(handle, self.source, decode_problems)
            reader = csv.reader(lines, strict=True)
            next(reader, None)  # the header, checked already
            while True:
                start = reader.line_num + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    decode_problems.clear()
                    yield ParsedRow(start, None, RowError(self.source, start, f"malformed CSV: {exc}"))
                    continue
                if decode_problems:
                    yield ParsedRow(start, None, decode_problems[0])
                    decode_problems.clear()
                    continue
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue
                if len(cells) != width:
                    reason = f"malformed CSV: {len(cells)} values but the header has {width} columns"
                    yield ParsedRow(start, None, RowError(self.source, start, reason))
                    continue
                row = {name: cell for name, cell in zip(self._header, cells, strict=True) if cell.strip() != ""}
                yield self._validate(start, row, from_csv=True)

    def _jsonl_rows(self) -> Iterator[ParsedRow]:
        decode_problems: list[RowError] = []
        with _open_binary(self.path) as handle:
            for number, text in enumerate(_decoded_lines(handle, self.source, decode_problems), start=1):
                if decode_problems:
                    yield ParsedRow(number, None, decode_problems.pop())
                    continue
                stripped = text.strip()
                if not stripped:
                    continue
                try:
                    value = _load_json(stripped)
                except _JsonProblem as exc:
                    yield ParsedRow(number, None, RowError(self.source, number, str(exc)))
                    continue
                if not isinstance(value, dict):
                    reason = f"expected a JSON object, got {type(value).__name__}"
                    yield ParsedRow(number, None, RowError(self.source, number, reason))
                    continue
                yield self._validate(number, value, from_csv=False)

    def _validate(self, line: int, row: dict[str, Any], *, from_csv: bool) -> ParsedRow:
        fields: dict[str, Any] = {}
        try:
            fields = self._fields(row, from_csv=from_csv)
            record = self._model.model_validate(fields)
        except _RowProblem as exc:
            return ParsedRow(line, None, RowError(self.source, line, str(exc)))
        except ValidationError as exc:
            return ParsedRow(line, None, RowError(self.source, line, describe_validation_error(exc)))
        except OverflowError:
            return ParsedRow(line, None, RowError(self.source, line, _out_of_range(fields)))
        assert isinstance(record, Customer | Influence | Referral | Event)
        problem = _non_finite(record)
        if problem is not None:
            return ParsedRow(line, None, RowError(self.source, line, problem))
        return ParsedRow(line, record, None)

    def _fields(self, row: dict[str, Any], *, from_csv: bool) -> dict[str, Any]:
        """Map columns to model fields: `consent_*` into `consent`, `attr_*` into `attributes`."""
        columns = self.columns
        fields: dict[str, Any] = {}
        consent: dict[str, Any] = {}
        attributes: dict[str, Any] = {}
        for key, value in row.items():
            if value is None:
                continue
            if key in columns.known:
                if key in _ID_FIELDS and isinstance(value, int) and not isinstance(value, bool):
                    value = str(value)  # JSON ids are often numbers; the model keeps ids as text
                if key.startswith("consent_"):
                    consent[key.removeprefix("consent_")] = value
                else:
                    fields[key] = value
            elif columns.attributes and key.startswith("attr_"):
                if not from_csv and not isinstance(value, str | int | float | bool):
                    raise _RowProblem(f"{_short(key)} must be a string, number or boolean, not {type(value).__name__}")
                attributes[key.removeprefix("attr_")] = _infer_scalar(value) if from_csv else value
            elif not from_csv and key == "consent" and columns.consent:
                if not isinstance(value, dict):
                    raise _RowProblem("'consent' must be an object such as {\"email\": true}")
                consent.update(value)
            elif not from_csv and key == "attributes" and columns.attributes:
                if not isinstance(value, dict):
                    raise _RowProblem('\'attributes\' must be an object such as {"plan": "pro"}')
                for name, item in value.items():
                    if item is not None and not isinstance(item, str | int | float | bool):
                        raise _RowProblem(
                            f"attribute {_short(name)} must be a string, number or boolean, not {type(item).__name__}"
                        )
                attributes.update(value)
            else:
                raise _RowProblem(f"unknown field {_short(key)} for {self.kind.value} (expected {columns.describe()})")
        missing = [name for name in columns.required if name not in fields]
        if missing:
            raise _RowProblem("missing value for " + ", ".join(repr(name) for name in missing))
        if consent:
            fields["consent"] = consent
        if attributes:
            fields["attributes"] = attributes
        return fields


def open_records(path: Path | str, *, kind: RecordKind | None = None) -> RecordFile:
    """Open an import file and check its header; raises `InvalidInput` for a file no row of which can be read."""
    return RecordFile(path, kind=kind)
