"""NW-UCLA (`all_sqe/<name>.json` + `val_label.pkl`) -> prepared arrays.

Standard split: view 3 is val. `val_label.pkl` (the list of val samples the
community loaders use) decides membership when present and must agree with
the view in the file name; without it, the view decides. Labels 1..10 in the
files become 0..9. One person per clip (slot 2 stays zero). Coordinates are
Kinect v1 metres, translated so the frame-0 spine joint sits at the origin
(the raw camera offset carries no action information); no rotation or scaling.
That puts the frame-0 spine exactly at (0, 0, 0): real data, which is why DP
and random_move decide "missing" per body and frame, never per joint
(`amanet_fast.streams.present`). Clips shorter than 300 frames are zero-filled
here; `data.pad` (default replay for NW-UCLA, as the paper) pads them at load.
"""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from .. import safe_pickle
from ..registry import DATASETS
from .errors import DataFormatError, check_coordinates, read_json_file
from .io import NUM_FRAMES, NUM_PERSONS
from .plan import DatasetPlan, LoadResult, Problems, Sample

__all__ = ["NUM_JOINTS", "NUM_CLASSES", "CLASS_NAMES", "load_ucla_clip", "plan_ucla"]

_INFO = DATASETS["ucla"]
NUM_JOINTS = 20  # Kinect v1 (layout ucla20)
NUM_CLASSES = _INFO.num_class
VAL_VIEW = 3
CENTER_JOINT = 1
CLASS_NAMES = list(_INFO.class_names)
# Action ids a01..a12 of the release (a07 and a10 do not exist) in label order 1..10.
_ACTION_IDS = [1, 2, 3, 4, 5, 6, 8, 9, 11, 12]
_NAME_RE = re.compile(r"^a(\d\d)_s(\d\d)_e(\d\d)_v(\d\d)$")


def load_ucla_clip(path: Path, expected_label: int | None = None, num_frames: int = NUM_FRAMES) -> LoadResult:
    """One sequence -> `(3, 300, 20, 2)`; its own `label` (1..10) must equal expected_label + 1."""
    doc = read_json_file(path)
    if expected_label is not None:
        raw_label = doc.get("label") if isinstance(doc, dict) else None
        if raw_label is None:
            raise DataFormatError("missing 'label'", path)
        # The file counts from 1: check the number as written, so label 0 is reported as 0, not -1.
        if isinstance(raw_label, bool) or not isinstance(raw_label, int):
            raise DataFormatError(f"'label' must be an integer 1..{NUM_CLASSES}, got {raw_label!r}", path)
        if not 1 <= raw_label <= NUM_CLASSES:
            raise DataFormatError(f"label {raw_label} out of range 1..{NUM_CLASSES}", path)
        if raw_label - 1 != expected_label:
            raise DataFormatError(f"label {raw_label} disagrees with the action id in the file name "
                                  f"(expected {expected_label + 1})", path)
    skel = doc.get("skeletons") if isinstance(doc, dict) else None
    if not isinstance(skel, list) or not skel:
        raise DataFormatError("missing or empty 'skeletons' (T x 20 x 3)", path)
    try:
        arr = np.array(skel)  # no dtype: numbers given as text or true/false must not pass as numbers
    except (TypeError, ValueError):
        raise DataFormatError("'skeletons' is not a rectangular T x 20 x 3 array of numbers", path) from None
    if arr.dtype.kind not in "iuf":
        raise DataFormatError("'skeletons' is not a rectangular T x 20 x 3 array of numbers", path)
    arr = arr.astype(np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (NUM_JOINTS, 3):
        raise DataFormatError(f"'skeletons' has shape {arr.shape}, expected (T, {NUM_JOINTS}, 3) "
                              f"(wrong joint count?)", path)
    if not np.isfinite(arr).all():
        t = int(np.argwhere(~np.isfinite(arr))[0, 0])
        raise DataFormatError(f"non-finite (NaN/inf) coordinate in frame {t}", path)
    check_coordinates(arr, path, "'skeletons'")
    if not arr.any():
        raise DataFormatError(f"no skeleton data: all coordinates of the {len(arr)} frames are 0 "
                              "(pass --skip-bad to leave the clip out)", path)
    dropped = max(0, len(arr) - num_frames)
    arr = arr[:num_frames] - arr[0, CENTER_JOINT]
    out = np.zeros((3, num_frames, NUM_JOINTS, NUM_PERSONS), dtype=np.float32)
    out[:, :len(arr), :, 0] = arr.transpose(2, 0, 1)
    return LoadResult(out, dropped)


def _load_source(source: tuple[Path, int]) -> LoadResult:
    return load_ucla_clip(*source)


def _val_names(path: Path) -> dict[str, int] | None:
    if not path.is_file():
        return None
    expected = "expected a pickled list of {file_name, label}"
    try:
        entries = safe_pickle.load_file(path)
    except safe_pickle.UnsafePickleError as err:
        raise DataFormatError(str(err), path) from None
    except Exception as err:  # truncated / not a pickle / unreadable: a data problem
        raise DataFormatError(f"cannot read the val sample list ({type(err).__name__}: {err}); {expected}",
                              path) from None
    if not isinstance(entries, (list, tuple)):
        raise DataFormatError(f"holds a {type(entries).__name__}; {expected}", path)
    names: dict[str, int] = {}
    for i, e in enumerate(entries):
        name = e.get("file_name") if isinstance(e, dict) else None
        label = e.get("label") if isinstance(e, dict) else None
        if not isinstance(name, str) or isinstance(label, bool) or not isinstance(label, (int, np.integer)):
            raise DataFormatError(f"entry {i} is {e!r:.80}; {expected} (label an integer)", path)
        names[name] = int(label)
    return names


def plan_ucla(raw: str | Path, problems: Problems) -> DatasetPlan:
    raw = Path(raw)
    seq_dir = raw / "all_sqe"
    if not seq_dir.is_dir():
        raise DataFormatError("NW-UCLA folder must contain all_sqe/ (and val_label.pkl)", raw)
    files = sorted(seq_dir.glob("*.json"))
    if not files:
        raise DataFormatError("no .json sequences in all_sqe/", seq_dir)
    val_names = _val_names(raw / "val_label.pkl")
    splits: dict[str, list[Sample]] = {"train": [], "val": []}
    seen_val = set()
    for path in files:
        split = None
        try:
            m = _NAME_RE.match(path.stem)
            if not m:
                raise DataFormatError("file name is not an NW-UCLA sample name (aAA_sSS_eEE_vVV.json)", path)
            view = int(m.group(4))
            split = "val" if view == VAL_VIEW else "train"
            if val_names is not None and (path.stem in val_names) != (split == "val"):
                raise DataFormatError(f"view {view} disagrees with {raw / 'val_label.pkl'} membership "
                                      f"({'listed' if split == 'train' else 'not listed'} there)", path)
            label = _label_from_name(path, int(m.group(1)), val_names)
        except DataFormatError as err:
            problems.report(err, split)
            continue
        if split == "val":
            seen_val.add(path.stem)
        splits[split].append(Sample(path.stem, label, (path, label), str(path)))
    if val_names is not None:
        missing = sorted(set(val_names) - seen_val - {Path(r["file"] or "").stem for r in problems.skipped})
        if missing:
            problems.report(DataFormatError(f"{len(missing)} val samples listed in val_label.pkl have no "
                                            f"all_sqe/ file, e.g. {missing[0]}", raw / "val_label.pkl"))
    return DatasetPlan(
        kind="ucla", layout=_INFO.layout, channels=_INFO.channels, num_classes=NUM_CLASSES, classes=CLASS_NAMES,
        splits={k: v for k, v in splits.items() if v}, load=partial(_load_source),
        notes=["view 3 = val; coordinates translated so the frame-0 spine joint is the origin"],
    )


def _label_from_name(path: Path, action: int, val_names: dict[str, int] | None) -> int:
    """0-based label from the action id in the name, checked against val_label.pkl when it lists the sample."""
    if action not in _ACTION_IDS:
        raise DataFormatError(f"unknown action a{action:02d} (NW-UCLA has {sorted(_ACTION_IDS)})", path)
    label = _ACTION_IDS.index(action)
    if val_names is not None and path.stem in val_names and val_names[path.stem] - 1 != label:
        raise DataFormatError(f"label {label + 1} of a{action:02d} disagrees with val_label.pkl "
                              f"({val_names[path.stem]})", path)
    return label
