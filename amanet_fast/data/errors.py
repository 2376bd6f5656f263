"""The one exception type for bad user data.

A dedicated class lets the prepare CLI tell "your file is broken" (one line,
exit 2, no traceback) apart from bugs in this code (full traceback).
"""
from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

__all__ = ["DataFormatError", "read_json_file"]


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


def read_json_file(path: Path) -> Any:
    """Parse a raw JSON file; malformed or non-UTF-8 content is a DataFormatError
    naming the file and line."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except json.JSONDecodeError as err:
        raise DataFormatError(f"malformed JSON: {err.msg} (column {err.colno})", path, err.lineno) from None
    except UnicodeDecodeError:
        raise DataFormatError("malformed JSON: not UTF-8 text", path) from None
