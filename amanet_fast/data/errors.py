"""The one exception type for bad user data.

A dedicated class lets the prepare CLI tell "your file is broken" (one line,
exit 2, no traceback) apart from bugs in this code (full traceback).
"""
from __future__ import annotations

import json
from os import PathLike
from pathlib import Path
from typing import Any

__all__ = ["DataFormatError", "read_json_file", "read_text_file", "check_coordinates", "COORD_LIMIT"]


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


# Longer number tokens are corrupt data; bounding them keeps int() off its quadratic path and
# Python's 4300-digit limit (a ValueError json does not wrap) out of reach.
MAX_NUMBER_CHARS = 64


class _LongNumber(Exception):
    pass


def _number(kind: type):
    def parse(token: str):
        if len(token) > MAX_NUMBER_CHARS:
            raise _LongNumber(len(token))
        return kind(token)
    return parse


def read_json_file(path: Path) -> Any:
    """Parse a raw JSON file; malformed or non-UTF-8 content is a DataFormatError
    naming the file and line."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:  # a directory or a symlink loop named *.json, an unreadable file
        raise DataFormatError(f"cannot read: {err.strerror or err}", path) from None
    try:
        return json.loads(raw, parse_int=_number(int), parse_float=_number(float))
    except _LongNumber as err:
        raise DataFormatError(f"malformed JSON: a number of {err.args[0]} characters (at most {MAX_NUMBER_CHARS}): "
                              "not skeleton data", path) from None
    except json.JSONDecodeError as err:
        raise DataFormatError(f"malformed JSON: {err.msg} (column {err.colno})", path, err.lineno) from None
    except UnicodeDecodeError:
        raise DataFormatError("malformed JSON: not UTF-8 text", path) from None
    except RecursionError:
        raise DataFormatError("malformed JSON: nested too deeply to be skeleton data", path) from None


# Far beyond any real coordinate (pixels, metres or normalized units); larger values are corrupt data
# that would lose all precision in float32 (1e30) or become inf (1e39).
COORD_LIMIT = 1e6


def read_text_file(path: Path, what: str) -> str:
    """A UTF-8 text file (ignore list, label map); unreadable or undecodable content names file and line."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise DataFormatError(f"cannot read {what}: {err.strerror or err}", path) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataFormatError(f"{what} is not UTF-8 text (byte 0x{data[err.start]:02x})", path, line) from None


def check_coordinates(values: Any, path: str | PathLike | None, what: str, line: int | None = None) -> None:
    """Finite and within COORD_LIMIT; the message names the first bad value."""
    import numpy as np

    arr = np.asarray(values)
    bad = ~np.isfinite(arr)
    if bad.any():
        raise DataFormatError(f"non-finite (NaN/inf) value in {what}", path, line)
    big = np.abs(arr) > COORD_LIMIT
    if big.any():
        raise DataFormatError(f"implausible value {arr[big].flat[0]:g} in {what} (|value| > {COORD_LIMIT:g}: "
                              "corrupt data?)", path, line)
