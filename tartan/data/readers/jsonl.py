from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ...errors import TartanError
from . import decoded_lines, readers


@readers.register("jsonl")
def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for number, line in decoded_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise TartanError(f"malformed JSON ({error.msg} at column {error.colno})", path, number) from None
        if not isinstance(row, dict):
            raise TartanError(f"expected a JSON object, got {type(row).__name__}", path, number)
        yield number, row
