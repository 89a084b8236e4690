from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from ...errors import TartanError
from . import decoded_lines, readers

# csv refuses a field over 131,072 characters by default: a whole article or patent in one cell is
# data, as it is in a .jsonl (2**31 - 1: the largest a C long takes everywhere)
csv.field_size_limit(2**31 - 1)


def _read_delimited(path: Path, delimiter: str, quoting: int, strict: bool = False) -> Iterator[tuple[int, dict]]:
    header: list[str] | None = None
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
            if not fields or not any(field.strip() for field in fields):
                continue
            if len(fields) != len(header):
                raise TartanError(f"{len(fields)} field{'s' if len(fields) != 1 else ''} where the header has "
                                  f"{len(header)}", path, number)
            yield number, dict(zip(header, fields))
    except csv.Error as error:
        raise TartanError(f"malformed {path.suffix.lstrip('.')} ({error}) in the record starting here", path,
                          record_end + 1) from None


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
        yield from rows
        return
    raise max(readings, key=lambda error: error.line or 0)
