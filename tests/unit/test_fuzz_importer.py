"""Import files as hostile input: whatever a CSV or JSON Lines file holds (mutated rows, wrong types, huge fields,
NUL bytes, BOMs, bad UTF-8, deep nesting, repeated headers and keys, formula-like cells, broken gzip), reading it
raises only `InvalidInput` or yields one record or one row error per row, quickly; and valid rows read back, and
import into the store, as they were written."""

from __future__ import annotations

import csv
import gzip
import io
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.ingest import import_files
from graph.datasets import read_edge_list
from graph.errors import InvalidInput
from graph.importer import COLUMNS, MAX_LINE_BYTES, RecordKind, _infer_scalar, open_records
from graph.model import Customer, Event
from graph.sqlite_store import SqliteStore

pytestmark = pytest.mark.timeout(180)  # a hang fails its test; how fast parsing is belongs in bench/, not here

MAX_REASON = 400


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path


def write(folder: Path, name: str, data: bytes | str) -> Path:
    path = folder / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read_all(path: Path, kind: RecordKind | None = None) -> list[tuple[int, Any, str | None]] | InvalidInput:
    """Every row as (line, record, error text), or the file's refusal; anything else fails the test."""
    refused: InvalidInput | None = None
    rows = []
    try:
        rows = list(open_records(path, kind=kind).rows())
    except InvalidInput as exc:
        refused = exc
    if refused is not None:
        assert refused.problems, "a refusal names at least one problem"
        assert all(problem.source == str(path) for problem in refused.problems)
        assert all(len(problem.reason) <= MAX_REASON for problem in refused.problems)
        return refused
    lines = [row.line for row in rows]
    assert lines == sorted(set(lines)), "one row per line, in file order"
    for row in rows:
        assert (row.record is None) != (row.error is None), "a row is a record or an error, never both"
        if row.error is not None:
            assert (row.error.source, row.error.line) == (str(path), row.line)
            assert 0 < len(row.error.reason) <= MAX_REASON
    return [(row.line, row.record, str(row.error) if row.error else None) for row in rows]


# --- strategies ------------------------------------------------------------------------------------------------
IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,15}", fullmatch=True)
SAFE_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\ufeff"), max_size=30
)
"""Text a person might type, formula-like starts and quotes included; no control characters (the model and Python
do not agree on which of those are whitespace to strip)."""
NAMES = st.one_of(
    SAFE_TEXT,
    st.sampled_from(['=HYPERLINK("http://evil.example","x")', "+1 555", "-2+3", "@SUM(A1)", 'He said "hi", twice']),
    st.sampled_from(["') DETACH DELETE n //", "'; DROP TABLE customers; --", "Zoë Ñandú 李雷", "a,b;c\td"]),
)
TIMES = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@st.composite
def customer_rows(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "id": draw(IDS),
        "name": draw(NAMES),
        "email": draw(st.sampled_from(["", "ann@example.com", "x+y@shop.example"])),
        "locale": draw(st.sampled_from(["en", "fr-CA", "pt_BR"])),
        "timezone": draw(st.sampled_from(["UTC", "Europe/Paris", "America/New_York"])),
        "created_at": draw(TIMES).isoformat(),
        "consent_email": draw(st.sampled_from(["yes", "no", "true", "0", ""])),
        "attr_plan": draw(st.one_of(NAMES, st.integers(-(10**6), 10**6).map(str))),
    }


@st.composite
def influence_rows(draw: st.DrawFn) -> dict[str, Any]:
    source, target = draw(st.lists(IDS, min_size=2, max_size=2, unique=True))
    return {
        "source_id": source,
        "target_id": target,
        "kind": draw(st.sampled_from(["follows", "mentions", "shares", "co_purchase"])),
        "weight": str(draw(st.floats(min_value=0.01, max_value=1e6))),
        "at": draw(TIMES).isoformat(),
    }


@st.composite
def referral_rows(draw: st.DrawFn) -> dict[str, Any]:
    referrer, friend = draw(st.lists(IDS, min_size=2, max_size=2, unique=True))
    return {
        "referrer_id": referrer,
        "friend_id": friend,
        "at": draw(TIMES).isoformat(),
        "code": draw(st.sampled_from(["", "JANE10"])),
        "status": draw(st.sampled_from(["clicked", "signed_up", "converted", "reversed"])),
    }


@st.composite
def event_rows(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "id": draw(IDS),
        "customer_id": draw(IDS),
        "kind": draw(st.sampled_from(["purchase", "review", "rating"])),
        "at": draw(TIMES).isoformat(),
        "value": str(draw(st.floats(min_value=-1e9, max_value=1e9))),
        "attr_product": draw(NAMES),
    }


ROWS = {
    RecordKind.CUSTOMERS: customer_rows(),
    RecordKind.INFLUENCES: influence_rows(),
    RecordKind.REFERRALS: referral_rows(),
    RecordKind.EVENTS: event_rows(),
}

HOSTILE_CELLS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b",
            "\ufeff",
            '"',
            '""',
            "\t",
            "\r",
            "=1+1",
            "@cmd",
            "x" * 200_000,
            "1e999",
            "-1e999",
            "nan",
            "inf",
            "-0",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "2024-02-30",
            "1" * 40,
            "²",
            "١٢٣",
            "maybe",
            "-5",
            "0",
            "Europe/Atlantis",
            "../../etc/passwd",
            "a" * 129,
        ]
    ),
    st.text(max_size=20),
)
HOSTILE_JSON: st.SearchStrategy[Any] = st.one_of(
    HOSTILE_CELLS,
    st.sampled_from([None, True, False, 0, -1, 10**30, 1.5, 1e308, [], {}, [1, "x"], {"a": {"b": 1}}]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.recursive(
        st.none() | st.integers() | st.text(max_size=4), lambda inner: st.lists(inner, max_size=3), max_leaves=6
    ),
)
KINDS = st.sampled_from(list(RecordKind))


def csv_text(header: list[str], rows: list[list[str]], *, line_end: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=line_end)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, str]:
    """A CSV file of one kind, with cells, the header, lines and bytes mutated; and its suffix."""
    kind = draw(KINDS)
    rows = draw(st.lists(ROWS[kind], min_size=1, max_size=5))
    header = list(rows[0])
    table = [[row[name] for name in header] for row in rows]
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        row = draw(st.integers(min_value=0, max_value=len(table) - 1))
        column = draw(st.integers(min_value=0, max_value=len(header) - 1))
        table[row][column] = draw(HOSTILE_CELLS)
    header_change = draw(st.sampled_from(["none"] * 4 + ["duplicate", "drop", "unknown", "bad-attr", "space", "empty"]))
    if header_change == "duplicate":
        header.append(header[0])
        table = [[*row, row[0]] for row in table]
    elif header_change == "drop":
        header, table = header[1:], [row[1:] for row in table]
    elif header_change == "unknown":
        header.append(draw(st.sampled_from(["password", "attr_", "attr_9x", "consent_fax", "x" * 500])))
        table = [[*row, "1"] for row in table]
    elif header_change == "bad-attr":
        header[-1] = "attr_bad name"
    elif header_change == "space":
        header[0] = f" {header[0]} "
    elif header_change == "empty":
        header[0] = ""
    if draw(st.booleans()):
        row = draw(st.integers(min_value=0, max_value=len(table) - 1))
        table[row] = table[row] + ["extra"] if draw(st.booleans()) else table[row][:-1]
    text = csv_text(header, table, line_end=draw(st.sampled_from(["\n", "\r\n", "\n\n"])))
    return mangle(draw, text.encode("utf-8")), draw(st.sampled_from([".csv", ".csv.gz", ".txt"]))


@st.composite
def jsonl_files(draw: st.DrawFn) -> tuple[bytes, str]:
    """A JSON Lines file of one kind, with values, keys, lines and bytes mutated; and its suffix."""
    kind = draw(KINDS)
    objects: list[Any] = [
        {key: value for key, value in row.items() if value != ""}
        for row in draw(st.lists(ROWS[kind], min_size=1, max_size=5))
    ]
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        index = draw(st.integers(min_value=0, max_value=len(objects) - 1))
        keys = [*objects[index], "consent", "attributes", "unknown"]
        objects[index] = {**objects[index], draw(st.sampled_from(keys)): draw(HOSTILE_JSON)}
    lines = [json.dumps(obj, ensure_ascii=draw(st.booleans())) for obj in objects]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        lines[index] = draw(
            st.sampled_from(
                [
                    lines[index].replace("{", '{"id": "dup", ', 1),
                    lines[index].replace("{", "{" + '"n": ' + "[" * 20_000 + "]" * 20_000 + ", ", 1),
                    lines[index].replace("{", '{"n": 1' + "0" * 5000 + ", ", 1),
                    lines[index].replace("{", '{"value": NaN, "attr_x": Infinity, ', 1),
                    lines[index][: len(lines[index]) // 2],
                    "[" + lines[index] + "]",
                    '"just text"',
                    "",
                    "   ",
                ]
            )
        )
    text = "\n".join(lines) + draw(st.sampled_from(["", "\n", "\r\n"]))
    return mangle(draw, text.encode("utf-8")), draw(st.sampled_from([".jsonl", ".ndjson", ".json.gz", ".txt"]))


def mangle(draw: st.DrawFn, data: bytes) -> bytes:
    """Byte-level damage: a BOM, bad UTF-8, a NUL, a truncation, classic Mac line ends."""
    change = draw(st.sampled_from(["none"] * 4 + ["bom", "bad-utf8", "nul", "truncate", "cr", "bom-inside"]))
    at = draw(st.integers(min_value=0, max_value=len(data)))
    if change == "bom":
        return b"\xef\xbb\xbf" + data
    if change == "bad-utf8":
        return (
            data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])) + data[at:]
        )
    if change == "nul":
        return data[:at] + b"\x00" + data[at:]
    if change == "truncate":
        return data[:at]
    if change == "cr":
        return data.replace(b"\n", b"\r")
    if change == "bom-inside":
        return data[:at] + b"\xef\xbb\xbf" + data[at:]
    return data


def stored(data: bytes, suffix: str, folder: Path, *, gzip_damage: str = "none") -> Path:
    if suffix.endswith(".gz"):
        data = gzip.compress(data)
        if gzip_damage == "truncate":
            data = data[: len(data) // 2]
        elif gzip_damage == "corrupt" and len(data) > 12:
            data = data[:10] + bytes(b ^ 0x5A for b in data[10:20]) + data[20:]
    return write(folder, f"input{suffix}", data)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-import-") as name:
        yield Path(name)


GZIP_DAMAGE = st.sampled_from(["none", "none", "truncate", "corrupt"])


# --- properties --------------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(file=csv_files(), kind=st.one_of(st.none(), KINDS), damage=GZIP_DAMAGE)
def test_any_mutated_csv_file_reads_as_records_and_row_errors_or_is_refused(
    scratch: Path, file: tuple[bytes, str], kind: RecordKind | None, damage: str
) -> None:
    read_all(stored(*file, scratch, gzip_damage=damage), kind)


@settings(max_examples=100, deadline=None)
@given(file=jsonl_files(), kind=st.one_of(st.none(), KINDS), damage=GZIP_DAMAGE)
def test_any_mutated_json_lines_file_reads_as_records_and_row_errors_or_is_refused(
    scratch: Path, file: tuple[bytes, str], kind: RecordKind | None, damage: str
) -> None:
    read_all(stored(*file, scratch, gzip_damage=damage), kind)


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=400), suffix=st.sampled_from([".csv", ".jsonl", ".txt"]), kind=st.one_of(st.none(), KINDS)
)
def test_any_bytes_at_all_read_as_records_and_row_errors_or_are_refused(
    scratch: Path, data: bytes, suffix: str, kind: RecordKind | None
) -> None:
    read_all(stored(data, suffix, scratch), kind)


def expected_customer(row: dict[str, str]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"].strip() or None, "locale": row["locale"], "timezone": row["timezone"]}


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(customer_rows(), min_size=1, max_size=6, unique_by=lambda row: row["id"]),
    as_json=st.booleans(),
    compressed=st.booleans(),
)
def test_valid_customer_rows_read_back_and_import_as_written(
    scratch: Path, rows: list[dict[str, str]], as_json: bool, compressed: bool
) -> None:
    if as_json:
        text = "".join(json.dumps({k: v for k, v in row.items() if v != ""}) + "\n" for row in rows)
    else:
        text = csv_text(list(rows[0]), [list(row.values()) for row in rows], line_end="\r\n")
    path = stored(text.encode("utf-8"), (".jsonl" if as_json else ".csv") + (".gz" if compressed else ""), scratch)
    parsed = read_all(path)
    assert not isinstance(parsed, InvalidInput), parsed
    assert [error for _, _, error in parsed if error] == []
    customers = [record for _, record, _ in parsed]
    for customer, row in zip(customers, rows, strict=True):
        assert isinstance(customer, Customer)
        assert {k: getattr(customer, k) for k in ("id", "name", "locale", "timezone")} == expected_customer(row)
        assert customer.created_at == datetime.fromisoformat(row["created_at"])
        plan = row["attr_plan"].strip()
        assert str(customer.attributes.get("plan", "")) == (plan if not as_json or plan else "")
    store = SqliteStore(scratch / "roundtrip.db")
    try:
        store.delete_all()
        (report,) = import_files(store, [path])
        assert report.imported == len(rows)
        assert [store.get_customer(customer.id) for customer in customers] == customers
    finally:
        store.close()


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.one_of(influence_rows(), referral_rows(), event_rows()), min_size=1, max_size=1))
def test_a_valid_edge_or_event_row_reads_back_as_written(scratch: Path, rows: list[dict[str, str]]) -> None:
    (row,) = rows
    path = stored(csv_text(list(row), [list(row.values())], line_end="\n").encode(), ".csv", scratch)
    parsed = read_all(path)
    assert not isinstance(parsed, InvalidInput), parsed
    ((_, record, error),) = parsed
    assert error is None
    fields = record.model_dump(mode="json")
    for column in COLUMNS[open_records(path).kind].known:
        if column in row and row[column] != "" and column not in ("at", "weight", "value"):
            assert fields[column] == row[column].strip()
    if isinstance(record, Event):
        assert record.value == float(row["value"])
        product = row["attr_product"].strip()
        assert record.attributes.get("product") == (_infer_scalar(product) if product else None)  # "0" reads as 0


# --- the bugs the fuzzing found, one example each ---------------------------------------------------------------------
def only_error(folder: Path, name: str, data: bytes | str) -> str:
    parsed = read_all(write(folder, name, data))
    assert not isinstance(parsed, InvalidInput), parsed
    errors = [error for _, _, error in parsed if error]
    assert len(errors) == 1, parsed
    return errors[0].split(": ", 1)[1]


def refusal(folder: Path, name: str, data: bytes | str) -> str:
    parsed = read_all(write(folder, name, data))
    assert isinstance(parsed, InvalidInput), parsed
    return str(parsed)


@pytest.mark.parametrize(
    ("name", "data", "column"),
    [
        ("a.csv", "id,created_at\nx,0001-01-01T00:00:00+01:00\n", "created_at"),
        ("b.csv", "id,customer_id,kind,at\ne,x,purchase,9999-12-31T23:59:59-01:00\n", "at"),
        ("c.jsonl", '{"id": "x", "created_at": "9999-12-31T23:59:59-01:00"}\n', "created_at"),
    ],
)
def test_a_time_that_overflows_once_converted_to_utc_is_a_row_error_naming_its_column(
    folder: Path, name: str, data: str, column: str
) -> None:
    assert only_error(folder, name, data).startswith(f"bad value for {column!r}")


def test_json_nested_too_deeply_is_a_row_error_and_the_next_rows_still_read(folder: Path) -> None:
    data = '{"id": "a"}\n' + "[" * 100_000 + "]" * 100_000 + '\n{"id": "b"}\n'
    parsed = read_all(write(folder, "deep.jsonl", data))
    assert not isinstance(parsed, InvalidInput)
    assert [(line, error is None) for line, _, error in parsed] == [(1, True), (2, False), (3, True)]
    assert "nested too deeply" in (parsed[1][2] or "")


def test_json_nested_too_deeply_on_the_first_line_refuses_the_file_clearly(folder: Path) -> None:
    assert "nested too deeply" in refusal(folder, "deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n")


def test_a_json_number_of_thousands_of_digits_is_a_row_error(folder: Path) -> None:
    data = '{"id": "a"}\n{"id": 1' + "0" * 5000 + "}\n"
    assert only_error(folder, "digits.jsonl", data) == "not valid JSON here: a number has too many digits"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("nan.jsonl", '{"id": "e", "customer_id": "c", "kind": "purchase", "at": "2024-01-01", "value": 1e400}\n'),
        ("nan.csv", "id,customer_id,kind,at,value\ne,c,purchase,2024-01-01,nan\n"),
        ("inf.csv", "id,customer_id,kind,at,value\ne,c,purchase,2024-01-01,-inf\n"),
    ],
)
def test_a_number_that_is_not_finite_is_a_row_error(folder: Path, name: str, data: str) -> None:
    error = only_error(folder, name, data)
    assert "'value'" in error
    assert error.endswith(("must be a finite number", "should be a finite number"))


def test_nan_and_infinity_are_not_json_numbers(folder: Path) -> None:
    data = '{"id": "a"}\n{"id": "b", "attributes": {"score": NaN}}\n'
    assert only_error(folder, "nan.jsonl", data).startswith("NaN is not a number JSON allows")


def test_a_csv_attribute_too_large_for_a_float_stays_text(folder: Path) -> None:
    parsed = read_all(write(folder, "big.csv", "id,attr_score\na,1e999\n"))
    assert not isinstance(parsed, InvalidInput)
    ((_, customer, _),) = parsed
    assert isinstance(customer, Customer)
    assert customer.attributes == {"score": "1e999"}


def test_a_json_key_given_twice_is_a_row_error_not_a_silent_choice(folder: Path) -> None:
    data = '{"id": "a"}\n{"id": "b", "name": "Ann", "name": "Bob"}\n'
    assert only_error(folder, "dup.jsonl", data) == "the key 'name' appears twice in one object"


def test_a_line_longer_than_the_limit_is_a_row_error_without_losing_line_numbers(folder: Path) -> None:
    data = "id,name\na,Ann\nb," + "x" * (MAX_LINE_BYTES + 10) + "\nc,Cy\n"
    parsed = read_all(write(folder, "long.csv", data))
    assert not isinstance(parsed, InvalidInput)
    assert [(line, error is None) for line, _, error in parsed] == [(2, True), (3, False), (4, True)]
    assert f"line longer than {MAX_LINE_BYTES:,} bytes" in (parsed[1][2] or "")


@pytest.mark.parametrize("damage", ["truncate", "corrupt", "not-gzip"])
def test_a_broken_gzip_file_is_refused_as_invalid_input(folder: Path, damage: str) -> None:
    data = gzip.compress(("id,name\n" + "".join(f"c{i},Name {i}\n" for i in range(2000))).encode())
    broken = {
        "truncate": data[: len(data) // 2],
        "corrupt": data[:40] + bytes(b ^ 0x5A for b in data[40:80]) + data[80:],
        "not-gzip": b"id,name\na,b\n",
    }[damage]
    assert "corrupt or truncated" in refusal(folder, "broken.csv.gz", broken)


def test_a_blank_first_line_says_the_header_must_come_first(folder: Path) -> None:
    assert "the header must be the first line" in refusal(folder, "blank.csv", "\nid,name\na,b\n")


def test_a_huge_unknown_key_is_quoted_short(folder: Path) -> None:
    reason = only_error(folder, "key.jsonl", '{"id": "a"}\n{"id": "b", "' + "k" * 100_000 + '": 1}\n')
    assert len(reason) < 300


# --- public edge lists (graph/datasets.py) --------------------------------------------------------------------------
EDGE_LINES = st.lists(
    st.one_of(
        st.tuples(IDS, IDS).map(" ".join),
        st.tuples(IDS, IDS, st.floats(allow_nan=True, allow_infinity=True).map(str)).map(" ".join),
        st.sampled_from(["# comment", "% comment", "", "1 2 3 4", "a", "x\ty", "1 1", "10 20", "-1 2"]),
        st.text(st.characters(max_codepoint=127, blacklist_characters="\r\n"), max_size=20),
    ),
    max_size=8,
)


@settings(max_examples=80, deadline=None)
@given(lines=EDGE_LINES, directed=st.booleans())
def test_any_ascii_edge_list_loads_or_is_refused_with_line_numbers(
    scratch: Path, lines: list[str], directed: bool
) -> None:
    path = write(scratch, "edges.txt", "\n".join(lines) + "\n")
    try:
        network = read_edge_list(path, directed=directed)
    except InvalidInput as exc:
        problems = exc.problems
    else:
        problems = []
        assert network.arcs == len(network.sources) == len(network.targets) == len(network.weights)
        assert all(0 < w <= 1e6 for w in network.weights.tolist())
    assert all(problem.line is not None for problem in problems)


@pytest.mark.parametrize("header", ["² ³", "1" * 5000 + " 2"])
def test_a_header_line_of_unicode_or_endless_digits_is_refused_not_crashed(folder: Path, header: str) -> None:
    with pytest.raises(InvalidInput):
        read_edge_list(write(folder, "edges.txt", f"{header}\n1 2 3\n"), directed=True)


def test_a_blank_name_reads_as_no_name_from_json_as_from_csv(folder: Path) -> None:
    from_json = read_all(write(folder, "c.jsonl", '{"id": "c1", "name": "   ", "phone": " "}\n'))
    from_csv = read_all(write(folder, "c.csv", "id,name,phone\nc1,   , \n"))
    assert not isinstance(from_json, InvalidInput)
    assert not isinstance(from_csv, InvalidInput)
    ((_, as_json, _),) = from_json
    ((_, as_csv, _),) = from_csv
    assert as_json == as_csv
    assert isinstance(as_json, Customer)
    assert (as_json.name, as_json.phone) == (None, None)
