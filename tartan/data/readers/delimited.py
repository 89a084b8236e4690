from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Iterator

from ...errors import TartanError
from . import decoded_lines, readers

# csv refuses a field over 131,072 characters by default: a whole article or patent in one cell is
# data, as it is in a .jsonl (2**31 - 1: the largest a C long takes everywhere)
csv.field_size_limit(2**31 - 1)


def _read_delimited(path: Path, delimiter: str, quoting: int, strict: bool = False,
                    warn: bool = True) -> Iterator[tuple[int, dict]]:
    header: list[str] | None = None
    blank, skipped = [], []  # blank lines; those of them with a row after them
    # decoded_lines checks the encoding line by line; _track keeps the number of the line csv is on.
    # The lines keep their newlines: csv needs them to keep a quoted field's line breaks.
    position = [0]
    reader = csv.reader(_track(decoded_lines(path, keep_newline=True), position), delimiter=delimiter,
                        quoting=quoting, strict=strict)
    record_end = 0
    try:
        for fields in reader:
            # a record (a quoted field may span lines) is named by the line it starts on
            number, record_end = record_end + 1, position[0]
            if header is None:
                header = [name.strip() for name in fields]
                if not any(header):
                    raise TartanError("empty header line (a header naming the columns is expected)", path, number)
                twice = sorted({name for name in header if name and header.count(name) > 1})
                if twice:  # a row would keep only the last of the columns so named
                    raise TartanError(f"the header names column{'s' if len(twice) > 1 else ''} "
                                      f"{', '.join(map(repr, twice))} more than once", path, number)
                continue
            # a blank line is no row; a record of empty fields is one (`""`, as pandas writes an empty
            # text, or `,`): skipped, `tartan predict`'s output would no longer line up with its input
            if not fields or (len(fields) == 1 and fields[0] != "" and not fields[0].strip()):
                blank.append(number)
                continue
            skipped += blank
            blank = []
            if len(fields) != len(header):
                raise TartanError(f"{len(fields)} field{'s' if len(fields) != 1 else ''} where the header has "
                                  f"{len(header)}", path, number)
            yield number, dict(zip(header, fields))
    except csv.Error as error:
        raise TartanError(f"malformed {path.suffix.lstrip('.')} ({error}) in the record starting here", path,
                          record_end + 1) from None
    if skipped and warn:  # trailing blank lines move nothing; one between rows shifts every row after it
        shown = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
        print(f"warning: {path}: skipped {len(skipped)} blank line(s) between rows (line {shown})", file=sys.stderr)


def _track(numbered, position: list[int]):
    for number, line in numbered:
        position[0] = number
        yield line


@readers.register("csv")
def read_csv(path: Path) -> Iterator[tuple[int, dict]]:
    return _read_delimited(path, ",", csv.QUOTE_MINIMAL)


@readers.register("tsv")
def read_tsv(path: Path) -> Iterator[tuple[int, dict]]:
    """Two conventions meet in .tsv files: csv writers (pandas included) wrap a field holding a tab, a
    newline or a quotation mark in quotation marks; GLUE-style sets never quote, so that a field may
    begin with a quotation mark that is text. A file that reads cleanly as quoted is quoted; any
    other is read with every quotation mark as text. If neither reading is clean, the error reported
    is that of the reading that got further into the file."""
    readings = []
    for quoting, strict in ((csv.QUOTE_MINIMAL, True), (csv.QUOTE_NONE, False)):
        try:
            rows = list(_read_delimited(path, "\t", quoting, strict=strict))
        except TartanError as error:
            readings.append(error)
            continue
        if quoting == csv.QUOTE_MINIMAL:
            _warn_if_ambiguous(path, rows)
        yield from rows
        return
    raise max(readings, key=lambda error: error.line or 0)


def _warn_if_ambiguous(path: Path, quoted: list[tuple[int, dict]]) -> None:
    """A quoted field holding a tab and a line break is what a csv writer makes of such a field, and
    also what two GLUE-style rows make when one text begins with a quotation mark and a later one
    ends with one: the bytes are the same, so the file is read as quoted, but said where the other
    reading is clean too and counts other rows (an example merged into another, its label lost)."""
    spanning = next((line for line, row in quoted if any("\t" in v and "\n" in v for v in row.values())), None)
    if spanning is None:
        return
    try:
        plain = sum(1 for _ in _read_delimited(path, "\t", csv.QUOTE_NONE, warn=False))
    except TartanError:
        return
    if plain != len(quoted):
        print(f"warning: {path}:{spanning}: read as quoted, {len(quoted)} rows; with its quotation marks as text it "
              f"reads as {plain}. The record starting here holds a tab and a line break between quotation marks: "
              "if those are text, remove them or write the file as .jsonl", file=sys.stderr)
