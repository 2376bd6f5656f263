"""pyskl / PoseC3D annotation pickles -> prepared arrays (the custom-dataset route).

Accepted pickles: pyskl's `{'split': {name: [frame_dir, ...]}, 'annotations': [...]}`,
a bare list of annotations, or one annotation dict. Each annotation has
`frame_dir`, `label`, `keypoint` (M, T, V, C) and, for 2D, `keypoint_score`
(M, T, V). Channels: 2D -> (x, y, score), 3D -> (x, y, z). 2D pixel
coordinates are normalized as pyskl's PreNormalize2D, `(p - size/2) / (size/2)`
with `img_shape` = (h, w), so they land in [-1, 1]. More than 2 persons: the 2
with the highest total score (2D) or the 2 most active (3D, NTU's rule) are
kept. Frames past 300 are dropped and counted.

Layout: `--layout NAME|FILE.json`. Without it only pyskl's own conventions are
assumed, and said so: 2D with 17 joints = COCO-17 (pyskl's 2D keypoints), 3D
with 25 joints = NTU-25 (pyskl's NTU 3D annotations). Any other joint count
needs --layout: a joint count alone does not tell the joint order.
Class names: a top-level `classes` / `class_names` / `label_names` list of the
pickle, or --class-names FILE (one name per line); otherwise unnamed.
"""
from __future__ import annotations

import logging
import numbers
from functools import partial
from pathlib import Path

import numpy as np

from .. import safe_pickle
from ..graphs import LAYOUTS, SkeletonLayout, resolve_layout
from .errors import DataFormatError, check_coordinates
from .io import NUM_FRAMES, NUM_PERSONS
from .ntu import select_bodies
from .plan import DatasetPlan, LoadResult, Problems, Sample, check_label

__all__ = ["PYSKL_CONVENTIONS", "read_pyskl_pickle", "annotation_to_array", "plan_pyskl"]

log = logging.getLogger("amanet_fast.data.pyskl")

# (coordinate dims, joints) -> the layout pyskl itself uses for such annotations.
PYSKL_CONVENTIONS = {(2, 17): "coco17", (3, 25): "ntu25"}
_CLASS_KEYS = ("classes", "class_names", "label_names")


def read_pyskl_pickle(path: Path) -> tuple[dict[str, list[str]] | None, list[dict]]:
    split, annotations, _ = _read_pickle(path)
    return split, annotations


def _read_pickle(path: Path) -> tuple[dict[str, list[str]] | None, list[dict], list[str] | None]:
    if not path.is_file():
        raise DataFormatError("pyskl annotation pickle not found", path)
    try:
        obj = safe_pickle.load_file(path)
    except safe_pickle.UnsafePickleError as err:
        raise DataFormatError(str(err), path) from None
    except Exception as err:  # truncated / not a pickle / unreadable
        raise DataFormatError(f"cannot unpickle ({type(err).__name__}: {str(err)[:200]})", path) from None
    classes = None
    if isinstance(obj, dict) and "annotations" in obj:
        for key in _CLASS_KEYS:
            if obj.get(key) is not None:
                classes = obj[key]
                if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes):
                    raise DataFormatError(f"'{key}' must be a list of class-name strings", path)
                classes = list(classes)
                break
        split = obj.get("split")
        if split is not None and not (isinstance(split, dict)
                                      and all(isinstance(v, (list, tuple)) for v in split.values())):
            raise DataFormatError("'split' must map split names to lists of frame_dir", path)
        annotations = obj["annotations"]
    elif isinstance(obj, dict) and "keypoint" in obj:
        split, annotations = None, [obj]
    elif isinstance(obj, list):
        split, annotations = None, obj
    else:
        raise DataFormatError("not a pyskl annotation pickle (expected {'split', 'annotations'}, "
                              "a list of annotations or one annotation)", path)
    if not isinstance(annotations, list) or not annotations:
        raise DataFormatError("no annotations in the pickle", path)
    return (dict(split) if split is not None else None), annotations, classes


def annotation_to_array(ann: dict, where: str, num_frames: int = NUM_FRAMES) -> tuple[np.ndarray, int, str]:
    """One annotation -> `(3, 300, V, 2)` float32, frames dropped, and 'channels' name ('2d'/'3d')."""
    kp = ann.get("keypoint")
    if not isinstance(kp, np.ndarray) or kp.ndim != 4 or kp.shape[-1] not in (2, 3):
        shape = getattr(kp, "shape", None)
        raise DataFormatError(f"'keypoint' must be an array (M, T, V, 2|3), got {shape}", where)
    if kp.dtype.kind not in "iuf":
        raise DataFormatError(f"'keypoint' must hold numbers, got dtype {kp.dtype}", where)
    kp = kp.astype(np.float64)
    M, T, V, C = kp.shape
    if M == 0 or T == 0:  # would become an all-zero training sample
        raise DataFormatError(f"'keypoint' is empty (shape {kp.shape}: no persons or no frames)", where)
    if not np.isfinite(kp).all():
        raise DataFormatError("non-finite (NaN/inf) keypoint coordinates", where)
    check_coordinates(kp, where, "'keypoint'")
    if C == 2:
        score = ann.get("keypoint_score")
        if score is None:
            score = np.ones((M, T, V))  # no confidences recorded: every keypoint counts as seen
        score = np.asarray(score)
        if score.dtype.kind not in "iuf":
            raise DataFormatError(f"'keypoint_score' must hold numbers, got dtype {score.dtype}", where)
        score = score.astype(np.float64)
        if score.shape != (M, T, V):
            raise DataFormatError(f"'keypoint_score' has shape {score.shape}, expected {(M, T, V)}", where)
        if not np.isfinite(score).all():
            raise DataFormatError("non-finite (NaN/inf) keypoint scores", where)
        h, w = _image_size(ann, where)
        kp[..., 0] = (kp[..., 0] - w / 2) / (w / 2)
        kp[..., 1] = (kp[..., 1] - h / 2) / (h / 2)
        x = np.concatenate([kp, score[..., None]], axis=-1)  # (M, T, V, 3)
        if M > NUM_PERSONS:
            x = x[np.argsort(-score.sum(axis=(1, 2)), kind="stable")[:NUM_PERSONS]]
        mode = "2d"
    else:
        x = select_bodies(kp, NUM_PERSONS) if M > NUM_PERSONS else kp
        mode = "3d"
    dropped = max(0, T - num_frames)
    out = np.zeros((3, num_frames, V, NUM_PERSONS), dtype=np.float32)
    x = x[:, :num_frames]
    out[:, :x.shape[1], :, :x.shape[0]] = x.transpose(3, 1, 2, 0)
    return out, dropped, mode


def _image_size(ann: dict, where: str) -> tuple[float, float]:
    shape = ann.get("img_shape")
    if shape is None:
        shape = ann.get("original_shape")
    if shape is None:
        raise DataFormatError("2D keypoints need 'img_shape' (h, w) to normalize", where)
    ok = (isinstance(shape, (tuple, list, np.ndarray)) and len(shape) == 2
          and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0 for v in shape))
    if not ok:
        raise DataFormatError(f"'img_shape' must be (height, width) in pixels, two positive numbers; "
                              f"got {shape!r:.60}", where)
    return float(shape[0]), float(shape[1])


def _load_annotation(source: tuple[dict, str]) -> LoadResult:
    ann, where = source
    data, dropped, _ = annotation_to_array(ann, where)
    return LoadResult(data, dropped)


def plan_pyskl(raw: str | Path, problems: Problems, *, train_split: str = "train", val_split: str = "val",
               unsplit_to: str = "train", layout: str | Path | SkeletonLayout | None = None,
               num_classes: int | None = None, class_names: list[str] | None = None) -> DatasetPlan:
    path = Path(raw)
    if layout is not None:
        layout = resolve_layout(layout)  # a bad layout file fails before the pickle is read
    split_map, annotations, pickle_classes = _read_pickle(path)
    classes_from = "--class-names" if class_names is not None else "the pickle"
    class_names = class_names if class_names is not None else pickle_classes
    if class_names is not None:
        if num_classes is not None and num_classes != len(class_names):
            raise DataFormatError(f"--num-classes {num_classes} disagrees with the {len(class_names)} class names "
                                  f"of {classes_from}", path)
        num_classes = len(class_names)
    by_name: dict[str, dict] = {}
    for i, ann in enumerate(annotations):
        if not isinstance(ann, dict) or "frame_dir" not in ann:
            problems.report(DataFormatError(f"annotation {i} is not a dict with 'frame_dir'", path))
            continue
        name = str(ann["frame_dir"])
        if name in by_name:  # which one is meant cannot be told; never drop one silently
            raise DataFormatError(f"two annotations have frame_dir {name!r}", path)
        by_name[name] = ann
    if split_map is None:
        wanted = {unsplit_to: list(by_name)}
        split_note = f"pickle has no 'split': all {len(by_name)} annotations -> {unsplit_to}"
    else:
        wanted = {}
        for ours, theirs in (("train", train_split), ("val", val_split)):
            if theirs in split_map:
                wanted[ours] = [str(n) for n in split_map[theirs]]
        if not wanted:
            raise DataFormatError(f"none of the split names {train_split!r}/{val_split!r} is in the pickle; "
                                  f"it has {sorted(split_map)} (use --train-split/--val-split)", path)
        split_note = f"splits: train <- {train_split!r}, val <- {val_split!r}"
    # Probe the first usable annotation for channels and joint count.
    modes, joints = set(), set()
    splits: dict[str, list[Sample]] = {}
    labels_seen: list[int] = []
    taken: dict[str, str] = {}  # sample -> the split that lists it
    for split, names in wanted.items():
        samples = []
        for name in names:
            if name in taken:  # twice in one split, or in both: duplicated or leaked samples
                raise DataFormatError(f"{name!r} is listed twice (in split {taken[name]!r} and in split "
                                      f"{split!r})", path)
            taken[name] = split
            where = f"{path}[{name}]"
            try:
                ann = by_name.get(name)
                if ann is None:
                    raise DataFormatError(f"split {split!r} lists {name!r} but no annotation has that frame_dir",
                                          path)
                kp = ann.get("keypoint")
                if getattr(kp, "ndim", 0) != 4:
                    raise DataFormatError("'keypoint' must be an array (M, T, V, C)", where)
                label = ann.get("label")
                if label is None:
                    raise DataFormatError("missing 'label'", where)
                label = check_label(label, num_classes if num_classes else 1 << 30, where)
            except DataFormatError as err:
                problems.report(err, split)
                continue
            modes.add(kp.shape[-1])
            joints.add(kp.shape[2])
            labels_seen.append(label)
            samples.append(Sample(name, label, (ann, where), where))
        if samples:
            splits[split] = samples
    if not splits:
        raise DataFormatError("no usable annotations", path)
    if len(modes) > 1 or len(joints) > 1:
        raise DataFormatError(f"annotations mix keypoint layouts (C in {sorted(modes)}, V in {sorted(joints)})",
                              path)
    (C,), (V,) = modes, joints
    if layout is None:
        name = PYSKL_CONVENTIONS.get((C, V))
        if name is None:
            raise DataFormatError(
                f"{V} joints ({C}D): which joint is which cannot be told from the count; pass --layout LAYOUT.json "
                f"(format: python -m amanet_fast.graphs dump ntu25) or a built-in name ({', '.join(LAYOUTS)}) "
                "if the joint order is exactly that", path)
        layout_note = f"layout {name}: pyskl's convention for {C}D annotations with {V} joints (--layout overrides)"
        log.info("%s", layout_note)
        layout = resolve_layout(name)
    else:
        if layout.num_joints != V:
            raise DataFormatError(f"--layout {layout.name} has {layout.num_joints} joints, the keypoints have {V}",
                                  path)
        layout_note = f"layout {layout.name} as given by --layout"
    if num_classes is None:
        num_classes = max(labels_seen) + 1
    notes = [split_note, layout_note,
             "2D: pyskl PreNormalize2D to [-1, 1] by img_shape" if C == 2 else "3D: coordinates as stored"]
    if C == 2 and any(s.source[0].get("keypoint_score") is None for v in splits.values() for s in v):
        notes.append("some 2D annotations had no keypoint_score: score channel set to 1")
    return DatasetPlan(
        kind="pyskl", layout=layout, channels=("x", "y", "score") if C == 2 else ("x", "y", "z"),
        num_classes=num_classes, splits=splits, load=partial(_load_annotation), notes=notes,
        classes=list(class_names) if class_names is not None else None,
        options={"train_split": train_split, "val_split": val_split, "source": str(path)},
    )
