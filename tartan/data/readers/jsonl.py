from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from ...errors import TartanError, first_line
from . import decoded_lines, readers


SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


@readers.register("jsonl")
def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    for number, line in decoded_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise TartanError(f"malformed JSON ({error.msg} at column {error.colno})", path, number) from None
        except (ValueError, RecursionError) as error:  # an integer of over 4,300 digits; nesting too deep
            raise TartanError(f"unreadable JSON ({first_line(error)})", path, number) from None
        if SURROGATE_ESCAPE.search(line):  # a lone one (half a cut-off emoji) is valid JSON but no text
            try:
                json.dumps(row, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise TartanError("a string holds half of a UTF-16 surrogate pair (\\ud800-\\udfff escaped "
                                  "alone): not text a tokenizer can read", path, number) from None
        if not isinstance(row, dict):
            raise TartanError(f"expected a JSON object, got {type(row).__name__}", path, number)
        yield number, row
