"""Unlabelled text for masked-LM objectives: a `.txt` file (one passage a line) or `.jsonl` with
`text`, or the end task's own train texts; optionally cut to a size given as a multiple of the end
task's train set (`1x`, `10x`) or a line count, by a seeded sample."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import TartanError
from .readers import EmptyFileError, read_rows


def read_texts(path: Path) -> list[str]:
    """Non-blank passages of a text file; an empty or blank-only file is an error."""
    path = Path(path)
    texts = []
    try:
        for line, row in read_rows(path):
            text = row.get("text")
            if not isinstance(text, str):
                raise TartanError("missing or non-string field 'text'", path, line)
            if text.strip():
                texts.append(text)
    except EmptyFileError:
        raise TartanError("no text in file (it is empty or has only blank lines)", path) from None
    if not texts:
        raise TartanError("no text in file (it is empty or has only blank lines)", path)
    return texts


def parse_size(size: str | int | None, train_size: int) -> int | None:
    """`None` (all), an integer line count, or `Nx`: N times the end task's train set."""
    if size is None or size == "all":
        return None
    if isinstance(size, int):
        count = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*x\s*", str(size))
        if match:
            count = int(round(float(match.group(1)) * train_size))
        elif str(size).strip().isdigit():
            count = int(size)
        else:
            raise TartanError(f"size must be a line count, 'all' or a multiple like '10x', got {size!r}")
    if count < 1:
        raise TartanError(f"size must be at least one line, got {size!r}")
    return count


def sample_texts(texts: list[str], count: int | None, seed: int, source: str) -> list[str]:
    """A seeded sample of `count` passages, in file order (all of them when count is None)."""
    if count is None:
        return texts
    if count > len(texts):
        raise TartanError(f"asked for {count} lines but the file has only {len(texts)} non-blank lines", source)
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), size=count, replace=False))
    return [texts[i] for i in keep]
