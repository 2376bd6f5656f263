"""What every raw-format reader hands to the shared prepare driver.

A reader turns its raw layout into a `DatasetPlan`: per split the ordered
samples (name, label, where to read them) plus a picklable `load` function
that turns one sample into a `(C, 300, V, 2)` float32 array. The driver
(`engine.run_plan`) owns streaming, workers, progress, `--skip-bad` and the
atomic write, so each reader only knows its own file format.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import DataFormatError

__all__ = ["Sample", "LoadResult", "DatasetPlan", "Problems", "check_label"]


@dataclass
class Sample:
    name: str
    label: int
    source: Any               # whatever the reader's `load` needs
    where: str | None = None  # file (or file[entry]) to name in error messages


@dataclass
class LoadResult:
    data: Any                # np.ndarray (C, 300, V, 2) float32
    dropped_frames: int = 0  # frames past 300 that did not fit


@dataclass
class DatasetPlan:
    kind: str
    layout: str
    channels: tuple[str, ...]
    num_classes: int
    splits: dict[str, list[Sample]]
    load: Callable[[Any], LoadResult]
    benchmark: str | None = None
    classes: list[str | None] | None = None
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)


class Problems:
    """Either stops at the first bad input or, with `--skip-bad`, records it and goes on."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped: list[dict] = []

    def report(self, err: DataFormatError, split: str | None = None) -> None:
        if not self.skip_bad:
            raise err
        self.skipped.append({"file": err.path, "split": split, "line": err.line, "reason": str(err)})

    def skip(self, path: str, reason: str, split: str | None = None) -> None:
        """A sample left out on purpose (not an error): has_skeleton=false, official ignore list."""
        self.skipped.append({"file": str(path), "split": split, "line": None, "reason": reason})


def check_label(label: Any, num_classes: int, path: Any) -> int:
    """A class index in 0..num_classes-1 (ints and numpy integers; bools and floats are refused)."""
    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        raise DataFormatError(f"label must be an integer, got {label!r}", path)
    label = int(label)
    if not 0 <= label < num_classes:
        raise DataFormatError(f"label {label} out of range 0..{num_classes - 1}", path)
    return label
