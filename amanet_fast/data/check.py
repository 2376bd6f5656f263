"""`python -m amanet_fast.data.check DIR`: what is in a dataset, and what is wrong with it.

Two modes, one report:

    python -m amanet_fast.data.check data/mine                       # a prepared folder
    python -m amanet_fast.data.check pyskl --raw ann.pkl --layout my20.json   # raw input, before preparing

(the raw mode takes the same arguments as `prepare`, without --out, and reads
every sample through the same reader, writing nothing).

Reported: counts per split and class, a sequence-length histogram, samples cut
at T = 300 frames, persons per frame, coordinate ranges per channel. Errors
(exit status 1): NaN/inf values, all-zero samples, duplicate sample names
within or across splits, labels outside the class list, a layout that does
not match the arrays (joints, channels) or is invalid, arrays and labels of
different lengths, unreadable raw samples. Warnings (exit 0): classes without
samples, samples cut at T, frames without anyone inside a sequence, values
far outside the usual ranges, a layout without DP body parts. Usage errors
exit 2.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..graphs import LayoutError, SkeletonLayout, resolve_layout
from .errors import DataFormatError
from .io import (MANIFEST_NAME, NUM_FRAMES, PARSED_PREFIX, TEMP_PREFIXES, data_file, label_file, open_prepared_array,
                 read_label_pickle, read_manifest, sweep_temp_dirs)
from .manifest import ManifestError, manifest_classes, manifest_layout
from ..argparse_util import ArgumentParser

__all__ = ["CheckReport", "check_prepared", "check_raw", "main"]

_CHUNK = 256
_SHOW = 5  # names listed per finding
_LENGTH_BINS = (1, 33, 65, 129, 193, 257, 300, 301)
_INTENTIONAL = ("ignore list", "has_skeleton=false")


@dataclass
class CheckReport:
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = list(self.lines)
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"error: {e}" for e in self.errors]
        out.append(f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(out)


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f" and {len(names) - _SHOW} more" if len(names) > _SHOW else "")


class _SplitStats:
    """Accumulates one split's statistics over chunks of (n, C, T, V, M) samples."""

    def __init__(self, channels: Sequence[str]) -> None:
        self.channels = list(channels)
        self.lengths: list[int] = []
        self.nonfinite: list[str] = []
        self.all_zero: list[str] = []
        self.full_length: list[str] = []
        self.persons = Counter()
        self.cmin = np.full(len(channels), np.inf)
        self.cmax = np.full(len(channels), -np.inf)

    def add(self, x: np.ndarray, names: Sequence[str]) -> None:
        n, C, T = x.shape[:3]
        finite = np.isfinite(x)
        bad = ~finite.reshape(n, -1).all(axis=1)
        self.nonfinite += [names[i] for i in np.flatnonzero(bad)]
        xz = np.where(finite, x, 0.0)
        present = (xz != 0).any(axis=(1, 3))                      # (n, T, M): person m has data in frame t
        frame_any = present.any(axis=2)                            # (n, T)
        has = frame_any.any(axis=1)
        length = np.where(has, T - np.argmax(frame_any[:, ::-1], axis=1), 0)
        self.lengths += length.tolist()
        self.all_zero += [names[i] for i in np.flatnonzero(~has)]
        self.full_length += [names[i] for i in np.flatnonzero(length == T)]
        inside = np.arange(T)[None, :] < length[:, None]
        self.persons.update(present.sum(axis=2)[inside].tolist())
        mask = np.broadcast_to(present[:, None, :, None, :], xz.shape)
        for c in range(min(C, len(self.channels))):
            vals = xz[:, c][mask[:, c]]
            if vals.size:
                self.cmin[c] = min(self.cmin[c], float(vals.min()))
                self.cmax[c] = max(self.cmax[c], float(vals.max()))


def _histogram(lengths: Sequence[int]) -> list[str]:
    a = np.asarray(lengths)
    counts, _ = np.histogram(a, bins=_LENGTH_BINS)
    width = max(1, int(counts.max()))
    rows = []
    for lo, hi, k in zip(_LENGTH_BINS[:-1], _LENGTH_BINS[1:], counts):
        label = f"{lo}-{hi - 1}" if hi - 1 > lo else f"{lo}"
        rows.append(f"    {label:>8} frames {int(k):>7}  {'#' * int(round(30 * k / width))}")
    return rows


class _Checker:
    def __init__(self, layout: SkeletonLayout, channels: Sequence[str], classes: list[str], T: int) -> None:
        self.layout, self.channels, self.classes, self.T = layout, list(channels), classes, T
        self.report = CheckReport()
        self.names: dict[str, list[str]] = {}

    def split(self, split: str, chunks: Iterable[tuple[np.ndarray, list[str]]], names: list[str],
              labels: list[int], dropped: dict[str, int] | None) -> None:
        r = self.report
        self.names[split] = names
        V = self.layout.num_joints
        stats = _SplitStats(self.channels)
        for x, chunk_names in chunks:
            if x.shape[1] != len(self.channels) or x.shape[3] != V:
                r.errors.append(f"{split}: arrays are {tuple(x.shape[1:])} (C, T, V, M) but the layout "
                                f"{self.layout.name!r} has {V} joints and the channels are {self.channels}")
                return
            stats.add(np.asarray(x, dtype=np.float64), chunk_names)
        n = len(names)
        r.lines.append(f"split {split}: {n} samples")
        per_class = Counter(labels)
        nc = len(self.classes)
        outside = sorted({l for l in per_class if not 0 <= l < nc})
        if outside:
            bad_names = [nm for nm, l in zip(names, labels) if not 0 <= l < nc]
            r.errors.append(f"{split}: {len(bad_names)} label(s) outside the {nc} classes (0..{nc - 1}): "
                            f"labels {outside[:10]} in {_names(bad_names)}")
        shown = [str(i) if self.classes[i] == str(i) else f"{i} {self.classes[i]}" for i in range(nc)]
        if nc <= 30:
            r.lines.append("  per class: " + ", ".join(f"{shown[i]}: {per_class.get(i, 0)}" for i in range(nc)))
        elif nc:
            counts = np.asarray([per_class.get(i, 0) for i in range(nc)])
            lo, hi = int(counts.argmin()), int(counts.argmax())
            r.lines.append(f"  per class ({nc} classes): min {counts[lo]} ({shown[lo]}), median "
                           f"{int(np.median(counts))}, max {counts[hi]} ({shown[hi]})")
        empty = [self.classes[i] for i in range(nc) if per_class.get(i, 0) == 0]
        if empty and n:
            r.warnings.append(f"{split}: {len(empty)} class(es) without samples: {_names(empty)}")
        dup = sorted(k for k, v in Counter(names).items() if v > 1)
        if dup:
            r.errors.append(f"{split}: {len(dup)} duplicate sample name(s): {_names(dup)}")
        if not stats.lengths:
            return
        L = np.asarray(stats.lengths)
        r.lines.append(f"  length (frames up to the last with data): min {L.min()}, median {int(np.median(L))}, "
                       f"max {L.max()} of T={self.T}")
        r.lines += _histogram(L)
        if stats.full_length:
            r.lines.append(f"  {len(stats.full_length)} sample(s) have data up to frame {self.T} (cut at T if the "
                           f"source was longer): {_names(stats.full_length)}")
        if dropped is not None:
            cut = {k: v for k, v in dropped.items() if v > 0}
            if cut:
                r.warnings.append(f"{split}: {len(cut)} sample(s) longer than T={self.T}: "
                                  f"{sum(cut.values())} frames past T dropped ({_names(sorted(cut))})")
        total = sum(stats.persons.values())
        if total:
            r.lines.append("  persons per frame (inside sequences): " + ", ".join(
                f"{k}: {100.0 * v / total:.1f}%" for k, v in sorted(stats.persons.items())))
            if stats.persons.get(0, 0):
                r.warnings.append(f"{split}: {stats.persons[0]} frame(s) inside sequences have nobody in them "
                                  "(gaps; the model sees zeros there)")
        ranges = [f"{c} [{lo:.4g}, {hi:.4g}]" for c, lo, hi in zip(self.channels, stats.cmin, stats.cmax)
                  if np.isfinite(lo)]
        if ranges:
            r.lines.append("  value ranges (where a person is present): " + ", ".join(ranges))
        for c, lo, hi in zip(self.channels, stats.cmin, stats.cmax):
            if not np.isfinite(lo):
                continue
            if c == "score" and (lo < 0 or hi > 1):
                r.warnings.append(f"{split}: score channel outside [0, 1] ({lo:.4g}..{hi:.4g})")
            elif c != "score" and max(abs(lo), abs(hi)) > 1e3:
                r.warnings.append(f"{split}: {c} reaches {max(abs(lo), abs(hi)):.4g}: far from the normalized "
                                  "range the model expects (pixels or millimetres?)")
        if stats.nonfinite:
            r.errors.append(f"{split}: {len(stats.nonfinite)} sample(s) with NaN/inf values: "
                            f"{_names(stats.nonfinite)}")
        if stats.all_zero:
            r.errors.append(f"{split}: {len(stats.all_zero)} all-zero sample(s) (no skeleton at all): "
                            f"{_names(stats.all_zero)}")

    def finish(self) -> CheckReport:
        splits = list(self.names)
        for i, a in enumerate(splits):
            for b in splits[i + 1:]:
                both = sorted(set(self.names[a]) & set(self.names[b]))
                if both:
                    self.report.errors.append(f"{len(both)} sample name(s) in both {a} and {b}: {_names(both)}")
        if not self.layout.parts:
            self.report.warnings.append(f"layout {self.layout.name!r} has no DP body parts: train with "
                                        "model.args.dp_mode=center or none, or add parts to the layout file")
        return self.report


def _header(report: CheckReport, what: str, layout: SkeletonLayout, channels: Sequence[str], nc: int) -> None:
    report.lines.append(f"checking {what}")
    report.lines.append(f"  layout {layout.name!r}: {layout.num_joints} joints, {len(layout.edges)} edges, center "
                        f"{layout.center}, root {layout.root}, {len(layout.parts)} DP parts | channels "
                        f"{'/'.join(channels)} | {nc} classes")


def check_prepared(data_dir: str | Path) -> CheckReport:
    """Check a prepared folder (manifest + arrays + labels)."""
    d = Path(data_dir)
    path = d / MANIFEST_NAME
    if not path.is_file():
        found = sorted(p.name for p in d.iterdir() if (p / MANIFEST_NAME).is_file()) if d.is_dir() else []
        hint = f" (its sub-folders {', '.join(found)} are prepared: check one of them)" if found else \
            " (not a prepared folder; for raw input: python -m amanet_fast.data.check KIND --raw PATH)"
        raise FileNotFoundError(f"{path}: not found{hint}")
    report = CheckReport()
    try:  # training's loaders: what they refuse is a finding here
        manifest = read_manifest(d)
        layout = manifest_layout(manifest, d)
        nc = int(manifest["num_classes"])
        classes = manifest_classes(manifest)
    except (DataFormatError, ManifestError) as err:
        report.errors.append(str(err) if str(path) in str(err) else f"{path}: {err}")
        return report
    # A killed prepare's temp folders: in the folder, and NTU's parse-once folder next to its benchmarks.
    for where, prefixes in ((d, TEMP_PREFIXES), (d.parent, (PARSED_PREFIX,))):
        removed, left = sweep_temp_dirs(where, prefixes)
        report.warnings += removed + left
    channels = manifest.get("channels") or [f"c{i}" for i in range(int(manifest.get("num_channels", 3)))]
    if isinstance(manifest.get("classes"), list) and len(manifest["classes"]) != nc:
        report.warnings.append(f"{path}: classes lists {len(manifest['classes'])} names for num_classes {nc}; "
                               "the others are called by their index")
    if manifest.get("num_joints") not in (None, layout.num_joints):
        report.errors.append(f"{path}: num_joints {manifest['num_joints']} but the layout has {layout.num_joints}")
    _header(report, f"{d} (kind {manifest.get('kind')})", layout, channels, nc)
    checker = _Checker(layout, channels, classes, int(manifest.get("num_frames", NUM_FRAMES)))
    checker.report = report
    for split in (manifest.get("counts") or {}):
        arr_path, lab_path = d / data_file(split), d / label_file(split)
        if not arr_path.is_file() or not lab_path.is_file():
            report.errors.append(f"{d}: split {split} is in the manifest but {arr_path.name} or {lab_path.name} "
                                 "is missing")
            continue
        try:  # the loaders training uses: their refusals are this report's findings
            arr = open_prepared_array(arr_path)
            names, labels = read_label_pickle(lab_path)
        except DataFormatError as err:
            report.errors.append(str(err))
            continue
        if not (len(arr) == len(names) == len(labels)):
            report.errors.append(f"{split}: {len(arr)} samples in {arr_path.name} but {len(labels)} labels and "
                                 f"{len(names)} names in {lab_path.name}")
            continue
        if arr.ndim != 5:
            report.errors.append(f"{arr_path}: shape {arr.shape}, expected (N, C, T, V, M)")
            continue
        chunks = ((arr[i:i + _CHUNK], names[i:i + _CHUNK]) for i in range(0, len(arr), _CHUNK))
        checker.split(split, chunks, names, labels, None)
        info = (manifest.get("splits") or {}).get(split) or {}
        if info.get("samples_with_dropped_frames"):
            report.warnings.append(f"{split}: {info['samples_with_dropped_frames']} sample(s) were longer than "
                                   f"T={checker.T} when prepared: {info.get('dropped_frames')} frames dropped")
    for rec in manifest.get("skipped") or []:
        report.warnings.append(f"skipped when prepared: {rec.get('reason')}")
    return checker.finish()


def check_raw(args: argparse.Namespace) -> CheckReport:
    """Check raw input through its reader (nothing is written)."""
    from .plan import Problems
    from .prepare import make_plan

    args.skip_bad = True  # collect every problem instead of stopping at the first
    if args.kind == "synthetic":
        raise DataFormatError("synthetic data is generated, there is no raw input to check")
    if args.kind in ("ntu60", "ntu120") and (args.split is None or args.split == "all"):
        raise DataFormatError(f"--split is required to check {args.kind} raw data (one benchmark at a time)")
    try:
        plan = make_plan(args)
    except DataFormatError as err:
        if args.raw is None or not Path(args.raw).exists():  # a usage error, not a data defect
            raise
        # The reader refuses the input as a whole (e.g. a sample listed in two splits): a data error.
        report = CheckReport(lines=[f"checking raw {args.kind} input {args.raw}"])
        report.errors.append(f"the {args.kind} reader refuses this input: {err}")
        return report
    layout = resolve_layout(plan.layout)
    classes = [str(c) if c is not None else str(i) for i, c in enumerate(plan.classes or [None] * plan.num_classes)]
    report = CheckReport()
    _header(report, f"raw {plan.kind} input {args.raw}", layout, plan.channels, plan.num_classes)
    for rec in plan.skipped:
        reason = str(rec.get("reason"))
        where = f"{rec['file']}: " if rec.get("file") and str(rec["file"]) not in reason else ""
        (report.lines if any(k in reason for k in _INTENTIONAL) else report.errors).append(
            f"skipped {where}{reason}")
    checker = _Checker(layout, plan.channels, classes, NUM_FRAMES)
    checker.report = report
    problems = Problems(skip_bad=True)
    for split, samples in plan.splits.items():
        dropped: dict[str, int] = {}
        names: list[str] = []   # filled while the checker consumes the samples (unreadable ones left out)
        labels: list[int] = []

        def loaded(samples=samples, split=split, dropped=dropped, names=names, labels=labels):
            for s in samples:
                try:
                    res = plan.load(s.source)
                except DataFormatError as err:
                    problems.report(err, split)
                    continue
                dropped[s.name] = int(res.dropped_frames)
                names.append(s.name)
                labels.append(s.label)
                yield np.asarray(res.data)[None], [s.name]

        checker.split(split, loaded(), names, labels, dropped)
    for rec in problems.skipped:
        report.errors.append(f"unreadable: {rec['reason']}" if rec["file"] and rec["file"] in rec["reason"]
                             else f"unreadable: {rec['file']}: {rec['reason']}")
    return checker.finish()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from .prepare import KINDS, build_parser

    prog = "python -m amanet_fast.data.check"
    if argv and argv[0] in KINDS:
        parser = build_parser(prog=f"{prog} KIND --raw PATH", need_out=False)
        parser.description = "Check raw input before preparing it (same arguments as prepare, without --out)."
        args = parser.parse_args(argv)
        try:
            report = check_raw(args)
        except (DataFormatError, LayoutError, FileNotFoundError, NotADirectoryError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    else:
        parser = ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                         epilog=f"raw input: {prog} KIND --raw PATH [prepare options] "
                                                f"(KIND: {', '.join(k for k in KINDS if k != 'synthetic')})")
        parser.add_argument("data_dir", type=Path, help="prepared folder (holds manifest.json)")
        args = parser.parse_args(argv)
        try:
            report = check_prepared(args.data_dir)
        except (ManifestError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(report.text())
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
