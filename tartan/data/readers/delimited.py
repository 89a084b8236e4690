from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterator

from ...errors import TartanError
from . import decoded_lines, readers


def _read_delimited(path: Path, delimiter: str) -> Iterator[tuple[int, dict]]:
    header: list[str] | None = None
    # decoded_lines checks the encoding line by line; _track keeps the number of the line csv is on
    position = [0]
    reader = csv.reader(_track(decoded_lines(path), position), delimiter=delimiter)
    try:
        for fields in reader:
            number = position[0]
            if header is None:
                header = [name.strip() for name in fields]
                if not any(header):
                    raise TartanError("empty header line (a header naming the columns is expected)", path, number)
                continue
            if not fields or not any(field.strip() for field in fields):
                continue
            if len(fields) != len(header):
                raise TartanError(f"{len(fields)} fields where the header has {len(header)}", path, number)
            yield number, dict(zip(header, fields))
    except csv.Error as error:
        raise TartanError(f"malformed {path.suffix.lstrip('.')} ({error})", path, position[0]) from None


def _track(numbered, position: list[int]):
    for number, line in numbered:
        position[0] = number
        yield line


@readers.register("csv")
def read_csv(path: Path) -> Iterator[tuple[int, dict]]:
    return _read_delimited(path, ",")


@readers.register("tsv")
def read_tsv(path: Path) -> Iterator[tuple[int, dict]]:
    return _read_delimited(path, "\t")
