"""Kinetics-Skeleton (ST-GCN release JSON) -> prepared arrays; also used by the synthetic demo.

Facts from ST-GCN's / MS-G3D's Kinetics feeder: up to 5 persons per frame are
read in listed order; x, y are shifted by -0.5, y is negated (MS-G3D), and
x = y = 0 wherever the score is 0; then, frame by frame, persons are ranked
by their summed joint scores (stable, highest first) and the top 2 kept.
Differences, on purpose: frame slot = frame_index - 1 (release files count
from 1), frames past 300 are dropped and counted, samples are in sorted file
order, and malformed files stop with a DataFormatError.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ..registry import DATASETS
from .errors import DataFormatError, check_coordinates, read_json_file
from .io import NUM_FRAMES, NUM_PERSONS
from .plan import DatasetPlan, LoadResult, Problems, Sample, check_label

__all__ = ["NUM_JOINTS", "MAX_PERSONS_READ", "load_kinetics_clip", "skeleton_from_kinetics_json",
           "plan_kinetics", "find_kinetics_splits"]

NUM_JOINTS = 18
MAX_PERSONS_READ = 5


def _numbers(values, count: int, what: str, path: Path, frame: int) -> np.ndarray:
    if not isinstance(values, list) or len(values) != count:
        n = len(values) if isinstance(values, list) else type(values).__name__
        raise DataFormatError(f"frame_index {frame}: '{what}' must be a list of {count} numbers, got {n}", path)
    # JSON numbers only: numpy would also turn "0.5", [0.5] or true into a number without a word.
    bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))), None)
    if bad is not None:
        raise DataFormatError(f"frame_index {frame}: non-numeric value {bad!r} in '{what}'", path)
    arr = np.array(values, dtype=np.float64)
    check_coordinates(arr, path, f"'{what}' of frame_index {frame}")
    return arr


def skeleton_from_kinetics_json(video: dict, path: Path, num_frames: int = NUM_FRAMES) -> tuple[np.ndarray, int]:
    """The parsed JSON of one clip -> `(3, T, 18, 2)` float32 and the number of frames dropped."""
    frames = video.get("data") if isinstance(video, dict) else None
    if not isinstance(frames, list):
        raise DataFormatError("missing 'data' list (not a Kinetics-Skeleton clip)", path)
    x = np.zeros((3, num_frames, NUM_JOINTS, MAX_PERSONS_READ), dtype=np.float64)
    dropped = set()
    seen: set[int] = set()
    for k, frame in enumerate(frames):
        if not isinstance(frame, dict) or "frame_index" not in frame or not isinstance(frame.get("skeleton"), list):
            raise DataFormatError(f"data[{k}] needs 'frame_index' and a 'skeleton' list", path)
        fi = frame["frame_index"]
        if isinstance(fi, bool) or not isinstance(fi, int) or fi < 1:
            raise DataFormatError(f"data[{k}]: frame_index must be an integer >= 1, got {fi!r}", path)
        if fi in seen:  # a second entry would silently overwrite the first
            raise DataFormatError(f"data[{k}]: frame_index {fi} appears more than once", path)
        seen.add(fi)
        t = fi - 1
        if t >= num_frames:
            dropped.add(t)
            continue
        for m, person in enumerate(frame["skeleton"]):
            if m >= MAX_PERSONS_READ:
                break
            if not isinstance(person, dict):
                raise DataFormatError(f"frame_index {fi}: skeleton entry {m} is not an object", path)
            pose = _numbers(person.get("pose"), 2 * NUM_JOINTS, "pose", path, fi)
            score = _numbers(person.get("score"), NUM_JOINTS, "score", path, fi)
            x[0, t, :, m] = pose[0::2]
            x[1, t, :, m] = pose[1::2]
            x[2, t, :, m] = score
    if not (x[2] > 0).any():
        raise DataFormatError(f"no skeleton in any frame ({len(frames)} frames, no joint with a score > 0): "
                              "an empty clip would train as an all-zero sample (pass --skip-bad to leave it out)",
                              path)
    x[0:2] -= 0.5
    x[1] = -x[1]
    missing = x[2] == 0
    x[0][missing] = 0
    x[1][missing] = 0
    order = np.argsort(-x[2].sum(axis=1), axis=1, kind="stable")  # (T, persons)
    x = np.take_along_axis(x, order[None, :, None, :], axis=3)[..., :NUM_PERSONS]
    return x.astype(np.float32), len(dropped)


def load_kinetics_clip(path: Path, expected_label: int | None = None) -> LoadResult:
    video = read_json_file(path)
    data, dropped = skeleton_from_kinetics_json(video, path)
    file_label = video.get("label_index") if isinstance(video, dict) else None
    if expected_label is not None and file_label is not None and file_label != expected_label:
        raise DataFormatError(
            f"label_index {file_label} in the clip disagrees with {expected_label} in the label file", path)
    return LoadResult(data, dropped)


def _load_source(source: tuple[Path, int]) -> LoadResult:
    return load_kinetics_clip(*source)


def find_kinetics_splits(raw: Path, train_dir: Path | None = None, val_dir: Path | None = None,
                         train_label_file: Path | None = None,
                         val_label_file: Path | None = None) -> dict[str, tuple[Path, Path]]:
    """(clip folder, label file) per split present.

    Release layout: RAW/kinetics_{p}/ + RAW/kinetics_{p}_label.json. A flat RAW
    holding clips next to exactly one `*{p}_label.json` (as the shared test
    sample, `my_val_label.json`) is used as split p. When both splits share one
    folder, each takes the clips its label file lists; otherwise every clip
    in the folder must have a label.
    """
    found: dict[str, tuple[Path, Path]] = {}
    given = {"train": (train_dir, train_label_file), "val": (val_dir, val_label_file)}
    for split, (d, lf) in given.items():
        d = Path(d) if d else raw / f"kinetics_{split}"
        lf = Path(lf) if lf else raw / f"kinetics_{split}_label.json"
        if not lf.is_file() and given[split][1] is None and raw.is_dir():
            flat = sorted(raw.glob(f"*{split}_label.json"))
            if len(flat) == 1:
                lf = flat[0]
                if given[split][0] is None and not d.is_dir():
                    d = raw
        if given[split][1] is not None and not lf.is_file():
            raise DataFormatError(f"{split} label file not found", lf)
        if given[split][0] is not None and not d.is_dir():
            raise DataFormatError(f"{split} clip folder not found", d)
        if d.is_dir() and lf.is_file():
            found[split] = (d, lf)
        elif d.is_dir() != lf.is_file():
            missing = lf if d.is_dir() else d
            raise DataFormatError(f"{split} split is incomplete: {missing} is missing", missing)
    return found


def plan_kinetics(raw: str | Path, problems: Problems, *, train_dir=None, val_dir=None, train_label_file=None,
                  val_label_file=None, num_classes: int = DATASETS["kinetics"].num_class, kind: str = "kinetics",
                  class_names: list[str] | None = None) -> DatasetPlan:
    raw = Path(raw)
    if not raw.is_dir() and not (train_dir or val_dir):
        raise DataFormatError("raw Kinetics directory not found", raw)
    if num_classes < 1:
        raise DataFormatError(f"--num-classes must be >= 1, got {num_classes}")
    found = find_kinetics_splits(raw, train_dir, val_dir, train_label_file, val_label_file)
    if not found:
        raise DataFormatError("no Kinetics data found: expected kinetics_{train,val}/ with "
                              "kinetics_{train,val}_label.json (or --val-dir/--val-label-file)", raw)
    names: dict[int, str] = {}
    splits: dict[str, list[Sample]] = {}
    claimed: dict[Path, str] = {}  # clip -> the split that took it
    for split, (clip_dir, label_path) in found.items():
        table = read_json_file(label_path)
        if not isinstance(table, dict):
            raise DataFormatError("label file must map clip id -> {has_skeleton, label, label_index}", label_path)
        clips = sorted(p for p in clip_dir.iterdir() if p.suffix == ".json" and p != label_path
                       and not p.name.endswith("_label.json"))
        if sum(d == clip_dir for d, _ in found.values()) > 1:  # one folder for both splits
            clips = [p for p in clips if p.stem in table]
        if not clips:
            raise DataFormatError(f"no .json clips in the {split} folder", clip_dir)
        samples = []
        for path in clips:
            try:
                entry = table.get(path.stem)
                if not isinstance(entry, dict) or "label_index" not in entry:
                    raise DataFormatError(f"missing label: clip id {path.stem!r} not in {label_path}", path)
                if not entry.get("has_skeleton", True):
                    problems.skip(path, "has_skeleton=false in the label file", split)
                    continue
                try:
                    label = check_label(entry["label_index"], num_classes, path)
                except DataFormatError as err:  # the value is in the label file: say which
                    raise DataFormatError(f"{err.reason} (label_index of {path.stem!r} in {label_path})",
                                          path) from None
            except DataFormatError as err:
                problems.report(err, split)
                continue
            other = claimed.setdefault(path.absolute(), split)
            if other != split:  # e.g. the val label file given as the train one: every clip in both splits
                raise DataFormatError(f"clip is in both the {other} and the {split} split "
                                      f"({found[other][1]} and {label_path} both list {path.stem!r})", path)
            if isinstance(entry.get("label"), str):
                names.setdefault(label, entry["label"])
            samples.append(Sample(path.name, label, (path, label), str(path)))
        if samples:
            splits[split] = samples
    if not splits:
        skipped = len(problems.skipped)
        raise DataFormatError(f"no usable clip: all {skipped} listed clips were skipped "
                              f"({problems.skipped[0]['reason'] if skipped else 'none listed'})",
                              found[next(iter(found))][1])
    classes = list(class_names) if class_names else [names.get(i) for i in range(num_classes)]
    return DatasetPlan(
        kind=kind, layout=DATASETS[kind].layout, channels=DATASETS[kind].channels, num_classes=num_classes,
        classes=classes, splits=splits, load=partial(_load_source),
        options={"split_sources": {k: [str(d), str(l)] for k, (d, l) in found.items()}},
        notes=["x,y - 0.5, y negated, zeroed where score is 0; per frame the 2 persons with the highest "
               "score sum of the first 5 listed; frame slot = frame_index - 1"],
    )
