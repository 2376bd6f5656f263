"""The one exception type for bad user data.

A dedicated class lets the prepare CLI tell "your file is broken" (one line,
exit 2, no traceback) apart from bugs in this code (full traceback).
"""
from __future__ import annotations

from os import PathLike

__all__ = ["DataFormatError"]


class DataFormatError(ValueError):
    """Raw or prepared data that cannot be used as it is.

    `path` and `line` (1-based, text formats only) are kept as attributes so
    `--skip-bad` can list the offending file in the manifest.
    """

    def __init__(self, message: str, path: str | PathLike | None = None, line: int | None = None):
        self.reason = message
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)
