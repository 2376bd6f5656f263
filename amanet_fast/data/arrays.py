"""Your own skeletons as plain per-clip arrays: a folder of .npy / .csv files plus labels.csv.

RAW/labels.csv (header row required; columns in any order, extra columns ignored):

    file,label,split
    clips/jump_001.npy,jump,train       # file: path relative to RAW
    clips/wave_007.csv,wave,val         # label: a class name, or an integer class index
                                        # split: train or val

Integer labels: 0-based, unless the smallest is 1 and none is 0, which is read as
1-based (the usual MATLAB / NW-UCLA numbering): every label is lowered by 1 and the
log says so (`--label-base 0|1` decides explicitly). Class-name labels: classes
in sorted order, unless `--class-names FILE` gives the order.

Clips (V = the layout's joint count, C = 2 (x, y) or 3 (x, y, z) channels):
- `.npy`: float array (T, V, C) for one person or (M, T, V, C) for M persons
  (pyskl's `keypoint` order), read without pickle.
- `.csv`: a header row, then one row per frame, or per frame and person:
  optional `frame` column (integer; rows of one frame together, frames in
  increasing order, a missing frame number is an all-zero frame), optional
  `person` column (0-based integer, needs `frame`), then V*C numeric columns
  ordered joint-major: j0 x, j0 y[, j0 z], j1 x, ... (their header names are free).

Coordinates are stored as given (no centring, no scaling): the model sees the
camera's units. 2D clips get a score channel of 1 (every joint seen), as pyskl's
2D annotations without scores do. More than 2 persons: the 2 most active kept
(NTU's rule); frames past 300 dropped and counted.
"""
from __future__ import annotations

import csv
import logging
from functools import partial
from pathlib import Path

import numpy as np

from ..graphs import SkeletonLayout, resolve_layout
from .errors import DataFormatError, check_coordinates, read_text_file
from .io import NUM_FRAMES, NUM_PERSONS
from .ntu import select_bodies
from .plan import DatasetPlan, LoadResult, Problems, Sample

__all__ = ["read_clip", "clip_to_array", "read_labels_csv", "plan_arrays", "CLIP_SUFFIXES"]

log = logging.getLogger("amanet_fast.data.arrays")

CLIP_SUFFIXES = (".npy", ".csv")
MAX_PERSONS_READ = 16  # a person index past this is a corrupt column, not a crowd


def _read_npy_clip(path: Path) -> np.ndarray:
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataFormatError(f"not a readable .npy array ({str(err).splitlines()[0]})", path) from None
    if not np.issubdtype(x.dtype, np.number) or x.ndim not in (3, 4):
        raise DataFormatError(f"expected a number array (T, V, C) or (M, T, V, C), got {x.dtype} {x.shape}", path)
    return (x[None] if x.ndim == 3 else x).astype(np.float64)


def _read_csv_clip(path: Path, num_joints: int) -> np.ndarray:
    rows = list(csv.reader(read_text_file(path, "CSV clip").splitlines()))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        raise DataFormatError("CSV clip needs a header row and at least one frame row", path)
    header = [h.strip().lower() for h in rows[0]]
    has_frame = bool(header) and header[0] == "frame"
    has_person = has_frame and len(header) > 1 and header[1] == "person"
    if "person" in header and not has_person:
        raise DataFormatError("a 'person' column must come second, after a 'frame' column", path, 1)
    lead = int(has_frame) + int(has_person)
    ncoord = len(header) - lead
    if ncoord % num_joints or ncoord // num_joints not in (2, 3):
        raise DataFormatError(f"{ncoord} coordinate columns; the layout's {num_joints} joints need "
                              f"{2 * num_joints} (x, y) or {3 * num_joints} (x, y, z), joint-major", path, 1)
    C = ncoord // num_joints
    entries = []
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DataFormatError(f"{len(row)} columns, the header has {len(header)}", path, lineno)
        try:
            values = [float(v) for v in row]
        except ValueError:
            bad = next(v for v in row if not _is_number(v))
            raise DataFormatError(f"non-numeric value {bad.strip()[:30]!r}", path, lineno) from None
        check_coordinates(values[lead:], path, "coordinates", lineno)
        frame = values[0] if has_frame else float(lineno - 2)
        person = values[1] if has_person else 0.0
        for what, v, top in (("frame", frame, None), ("person", person, MAX_PERSONS_READ)):
            if v != int(v) or v < 0 or (top is not None and v >= top):
                limit = f" below {top}" if top else ""
                raise DataFormatError(f"{what} must be an integer >= 0{limit}, got {v:g}", path, lineno)
        if entries and int(frame) < entries[-1][0]:
            raise DataFormatError(f"frame {int(frame)} after frame {entries[-1][0]}: rows must be in frame order",
                                  path, lineno)
        entries.append((int(frame), int(person), values[lead:], lineno))
    first = entries[0][0]
    T = entries[-1][0] - first + 1
    M = max(e[1] for e in entries) + 1
    out = np.zeros((M, T, num_joints, C))
    seen = set()
    for frame, person, coords, lineno in entries:
        if (frame, person) in seen:
            raise DataFormatError(f"frame {frame} person {person} appears twice", path, lineno)
        seen.add((frame, person))
        out[person, frame - first] = np.asarray(coords).reshape(num_joints, C)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_clip(path: str | Path, layout: SkeletonLayout) -> np.ndarray:
    """One clip file -> (M, T, V, C) float64, checked against the layout's joint count."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DataFormatError("clip file not found", path)
    if suffix == ".npy":
        x = _read_npy_clip(path)
    elif suffix == ".csv":
        x = _read_csv_clip(path, layout.num_joints)
    else:
        raise DataFormatError(f"unknown clip type {suffix or '(none)'!r}; expected .npy or .csv", path)
    M, T, V, C = x.shape
    if V != layout.num_joints:
        raise DataFormatError(f"{V} joints, the layout {layout.name} has {layout.num_joints}", path)
    if C not in (2, 3):
        raise DataFormatError(f"{C} channels per joint; expected 2 (x, y) or 3 (x, y, z)", path)
    if M == 0 or T == 0:  # would become an all-zero training sample
        raise DataFormatError(f"empty clip (shape {x.shape}: no persons or no frames)", path)
    check_coordinates(x, path, "the clip")
    return x


def clip_to_array(x: np.ndarray, num_frames: int = NUM_FRAMES) -> tuple[np.ndarray, int]:
    """(M, T, V, C) -> the prepared (3, 300, V, 2) float32 and the frames dropped past 300."""
    M, T, V, C = x.shape
    if C == 2:
        # A score channel of 1: the model's 2D input is (x, y, score) and every joint here counts as seen.
        present = np.any(x != 0, axis=(1, 2, 3))[:, None, None, None]
        x = np.concatenate([x, np.broadcast_to(present, (M, T, V, 1)).astype(x.dtype)], axis=-1)
    if M > NUM_PERSONS:
        x = select_bodies(x, NUM_PERSONS)
    dropped = max(0, T - num_frames)
    x = x[:, :num_frames]
    out = np.zeros((3, num_frames, V, NUM_PERSONS), dtype=np.float32)
    out[:, :x.shape[1], :, :x.shape[0]] = x.transpose(3, 1, 2, 0)
    return out, dropped


def _load(source: tuple[Path, SkeletonLayout, int]) -> LoadResult:
    path, layout, channels = source
    x = read_clip(path, layout)
    if x.shape[-1] != channels:  # a 2D clip among 3D ones would have its score read as z
        raise DataFormatError(f"{x.shape[-1]} channels per joint, the first clip has {channels}", path)
    data, dropped = clip_to_array(x)
    return LoadResult(data, dropped)


def read_labels_csv(path: Path) -> list[tuple[str, str, str, int]]:
    """labels.csv -> [(file, label text, split, line)]."""
    if not path.is_file():
        raise DataFormatError("labels file not found (expected a CSV with header file,label,split)", path)
    rows = list(csv.reader(read_text_file(path, "labels file").splitlines()))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    missing = [c for c in ("file", "label", "split") if c not in header]
    if missing:
        raise DataFormatError(f"header row must name the columns file,label,split; missing {', '.join(missing)}",
                              path, 1)
    fi, li, si = (header.index(c) for c in ("file", "label", "split"))
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise DataFormatError(f"{len(row)} columns, the header has {len(header)}", path, lineno)
        split = row[si].strip()
        if split not in ("train", "val"):
            raise DataFormatError(f"split must be train or val, got {split!r}", path, lineno)
        out.append((row[fi].strip(), row[li].strip(), split, lineno))
    if not out:
        raise DataFormatError("no clips listed (only a header row)", path)
    return out


def _labels(entries: list, path: Path, label_base: int | None,
            class_names: list[str] | None) -> tuple[list[int], list[str] | None, str]:
    texts = [e[1] for e in entries]
    numeric = [t.lstrip("-").isdigit() for t in texts]
    if all(numeric) and class_names is None:
        values = [int(t) for t in texts]
        low = min(values)
        if label_base is None:
            label_base = 1 if low == 1 else 0
            how = ("1-based (smallest label 1, no 0): every label lowered by 1; --label-base 0 keeps them"
                   if label_base == 1 else "0-based")
        else:
            how = f"{label_base}-based as given by --label-base"
        for (_, text, _, lineno), v in zip(entries, values):
            if v - label_base < 0:
                raise DataFormatError(f"label {v} is below the label base {label_base} (--label-base)", path, lineno)
        return [v - label_base for v in values], None, f"labels: integers, {how}"
    if class_names is None:
        if any(numeric):  # a mix would silently turn "3" into a class name next to "jump"
            lineno = entries[numeric.index(True)][3]
            raise DataFormatError("labels mix integers and class names; use one kind", path, lineno)
        class_names = sorted(set(texts))
        how = f"labels: {len(class_names)} class names, sorted (--class-names FILE sets the order)"
    else:
        how = f"labels: class names in the order of --class-names ({len(class_names)})"
    index = {n: i for i, n in enumerate(class_names)}
    labels = []
    for _, text, _, lineno in entries:
        if text not in index:
            raise DataFormatError(f"label {text!r} is not one of the --class-names", path, lineno)
        labels.append(index[text])
    return labels, list(class_names), how


def plan_arrays(raw: str | Path, problems: Problems, *, layout: str | Path | SkeletonLayout | None,
                label_base: int | None = None, class_names: list[str] | None = None) -> DatasetPlan:
    raw = Path(raw)
    if layout is None:
        raise DataFormatError("--layout is required for arrays: a joint count does not tell the joint order "
                              "(start from python -m amanet_fast.graphs dump ucla20 > my.json)")
    layout = resolve_layout(layout)
    if not raw.is_dir():
        raise DataFormatError("--raw must be the folder holding labels.csv and the clips", raw)
    labels_path = raw / "labels.csv"
    entries = read_labels_csv(labels_path)
    labels, names, label_note = _labels(entries, labels_path, label_base, class_names)
    log.info("%s", label_note)
    listed: list[tuple[str, str, int, Path]] = []
    taken: dict[str, int] = {}
    for (file, _, split, lineno), label in zip(entries, labels):
        if file in taken:
            raise DataFormatError(f"{file!r} is listed twice (lines {taken[file]} and {lineno})", labels_path, lineno)
        taken[file] = lineno
        clip = raw / file
        if clip.suffix.lower() not in CLIP_SUFFIXES:
            raise DataFormatError(f"{file!r}: clips must be .npy or .csv files", labels_path, lineno)
        if not clip.is_file():
            problems.report(DataFormatError(f"lists {file!r}, which is not a file in {raw}", labels_path, lineno),
                            split)
            continue
        listed.append((file, split, label, clip))
    if not listed:
        raise DataFormatError("no usable clips", labels_path)
    C = read_clip(listed[0][3], layout).shape[-1]  # the first clip decides 2D or 3D; every clip must agree
    splits: dict[str, list[Sample]] = {}
    for file, split, label, clip in listed:
        splits.setdefault(split, []).append(Sample(Path(file).with_suffix("").as_posix(), label,
                                                   (clip, layout, C), str(clip)))
    num_classes = len(names) if names is not None else max(labels) + 1
    notes = [label_note, f"layout {layout.name} as given by --layout",
             f"{C}D clips: coordinates as stored (no centring or scaling)"
             + ("; score channel 1 for every person present" if C == 2 else "")]
    return DatasetPlan(kind="arrays", layout=layout, channels=("x", "y", "score") if C == 2 else ("x", "y", "z"),
                       num_classes=num_classes, splits=splits, load=partial(_load), notes=notes, classes=names,
                       options={"source": str(raw), "coord_dims": C})
