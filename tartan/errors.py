"""User-facing errors: bad input is reported as one line and exit code 2, never a traceback."""
from __future__ import annotations

from pathlib import Path


class TartanError(Exception):
    """An error the user can fix (bad file, bad config value). The CLI prints it as one line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        return f"{where}{self.message}"


def first_line(error: Exception) -> str:
    """The first line of an exception's message (a library's message may run to a page)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
