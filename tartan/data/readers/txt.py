from __future__ import annotations

from pathlib import Path
from typing import Iterator

from . import decoded_lines, readers


@readers.register("txt")
def read_txt(path: Path) -> Iterator[tuple[int, dict]]:
    """One passage per line; blank lines are skipped."""
    for number, line in decoded_lines(path):
        if line.strip():
            yield number, {"text": line}
