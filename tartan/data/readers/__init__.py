"""Data readers keyed by file extension. A reader turns a file into (line number, row dict) pairs and
raises TartanError naming the file and line for anything malformed. Add a format: one file here."""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Callable, Iterator

from ...errors import TartanError
from ...registry import Registry

Row = dict
Reader = Callable[[Path], Iterator[tuple[int, Row]]]
readers: Registry[Reader] = Registry("data reader")


class EmptyFileError(TartanError):
    """A file that holds no row: a reader of passages words it as such."""


def read_rows(path: Path) -> Iterator[tuple[int, Row]]:
    """Rows of `path` by the reader registered for its extension; the file must hold at least one row."""
    path = Path(path)
    if not path.is_file():
        raise TartanError("file not found" if not path.exists() else "not a file", path)
    extension = path.suffix.lstrip(".").lower()
    if extension not in readers:
        raise TartanError(f"unsupported file type {path.suffix or '(none)'!r} (known: "
                          f"{', '.join('.' + e for e in readers.names())})", path)
    reader = readers.get(extension)
    empty = True
    for line, row in reader(path):
        empty = False
        yield line, row
    if empty:
        raise EmptyFileError("file is empty (no rows)", path)


def decoded_lines(path: Path, keep_newline: bool = False) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without newline unless `keep_newline`), decoding UTF-8 strictly
    line by line so that bad bytes are reported at their line."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                # utf-8-sig on the first line: a byte-order mark (as spreadsheet programs write it)
                # would otherwise become part of the first column's name
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise TartanError(f"undecodable bytes (not UTF-8) at byte {error.start} of the line",
                                  path, number) from None
            if number == 1 and not raw.endswith(b"\n") and "\r" in text.rstrip("\r"):
                # no line feed in the whole file, but carriage returns: every row would read as one
                raise TartanError("the line breaks are carriage returns only (classic Mac OS): convert them "
                                  "to line feeds (\\n)", path, number)
            yield number, text if keep_newline else text.rstrip("\r\n")


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
