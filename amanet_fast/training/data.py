"""From a resolved config to datasets: where the prepared data lives, the
synthetic demo's automatic preparation, seeded subsets, and a clear message
(with the exact prepare command) when real data is missing."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset, Subset

# What the raw data is, for the "missing data" message (SPEC §5).
_RAW_HINTS = {
    "ntu60": ("NTU RGB+D 60 .skeleton files",),
    "ntu120": ("NTU RGB+D 120 .skeleton files (both halves)",),
    "kinetics": ("Kinetics-Skeleton (kinetics_train/, kinetics_val/ and the label json files)",),
    "ucla": ("NW-UCLA (all_sqe/ and val_label.pkl)",),
}
_DEFAULT_SPLITS = {"ntu60": "xsub", "ntu120": "xsub"}


class MissingDataError(RuntimeError):
    """Prepared data is absent; the message says how to prepare it."""


def cache_dir() -> Path:
    env = os.environ.get("AMANET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "amanet_fast"


def data_root(cfg: dict[str, Any]) -> Path:
    root = cfg["data"]["root"]
    if root:
        return Path(root).expanduser()
    if cfg["dataset"] == "synthetic":
        return cache_dir() / "synthetic"
    base = os.environ.get("AMANET_DATA")
    return (Path(base).expanduser() if base else Path("data")) / cfg["dataset"]


def data_dir(cfg: dict[str, Any]) -> Path:
    root = data_root(cfg)
    split = cfg["data"]["split"]
    return root / str(split) if split else root


def _is_prepared(d: Path) -> bool:
    from amanet_fast.data.io import MANIFEST_NAME, SPLITS, data_file, label_file

    files = [MANIFEST_NAME] + [f(s) for s in SPLITS for f in (data_file, label_file)]
    return all((d / f).is_file() for f in files)


def prepare_command(cfg: dict[str, Any]) -> str:
    """The data package's own prepare command line for this config's dataset and folder."""
    from amanet_fast.data import prepare_command as data_prepare_command

    return data_prepare_command(cfg["dataset"], data_dir(cfg), cfg["data"]["split"])


# What an interrupted demo generation leaves behind (lock, raw JSON, temp folders): still ours.
_SYNTHETIC_LEFTOVERS = (".lock", "raw")
_SYNTHETIC_TEMP_PREFIXES = (".raw-", ".tmp-")


def check_synthetic_root(cfg: dict[str, Any]) -> None:
    """The demo (re)generates its data into data.root: never into a folder holding anything else.

    Allowed: the default cache, a missing or empty folder, or one the demo
    generated (manifest kind "synthetic", or the leftovers of an interrupted
    generation). Anything else -- typically a user's prepared data passed as
    data.root without `dataset:` -- would be overwritten, so it stops here.
    """
    from amanet_fast.data.errors import DataFormatError
    from amanet_fast.data.io import MANIFEST_NAME, read_manifest

    if not cfg["data"]["root"]:
        return
    root = data_root(cfg)
    if not root.exists():
        return
    if not root.is_dir():
        raise MissingDataError(f"data.root {root}: expected a folder for the synthetic demo data, found a file")
    if (root / MANIFEST_NAME).is_file():
        try:
            manifest = read_manifest(root)
        except (OSError, ValueError, DataFormatError):
            manifest = None  # damaged or foreign: not the demo's either, so refused below
        kind = manifest.get("kind") if isinstance(manifest, dict) else None
        if kind == "synthetic":
            return
    else:
        kind = None
        if all(p.name in _SYNTHETIC_LEFTOVERS or p.name.startswith(_SYNTHETIC_TEMP_PREFIXES)
               for p in root.iterdir()):
            return
    what = f"prepared {kind} data" if kind else "files that the synthetic demo did not write"
    raise MissingDataError(
        f"data.root {root}: holds {what}, but dataset is synthetic (the default when no dataset is named), "
        f"whose generator would overwrite it; pass --dataset {kind or 'KIND'} for this data, or a new folder")


def ensure_data(cfg: dict[str, Any], is_main: bool) -> Path:
    """The prepared data dir; prepares the synthetic demo on first use (rank 0 only)."""
    if cfg["dataset"] == "synthetic":
        check_synthetic_root(cfg)
        if is_main:
            from amanet_fast.data.synthetic import ensure_synthetic

            syn = cfg["data"]["synthetic"]
            return Path(ensure_synthetic(data_root(cfg), seed=int(syn["seed"]), num_train=int(syn["num_train"]),
                                         num_val=int(syn["num_val"])))
        return None  # type: ignore[return-value]  # other ranks learn it by broadcast
    d = data_dir(cfg)
    if _is_prepared(d):
        return d
    kind = cfg["dataset"]
    what = _RAW_HINTS.get(kind, ("raw files",))[0]
    split_note = ""
    if kind in _DEFAULT_SPLITS and not cfg["data"]["split"]:
        split_note = f"\n(NTU has several benchmarks: pass --split xsub|xview|xset; e.g. --split {_DEFAULT_SPLITS[kind]})"
    raise MissingDataError(
        f"prepared {kind} data not found in {d.resolve()} (expected train/val _data_joint.npy and _label.pkl).\n"
        f"Prepare it once from the {what} with:\n"
        f"  {prepare_command(cfg)}\n"
        f"then run again, or pass --data-root DIR pointing at prepared data.{split_note}"
    )


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    holdout: Dataset | None
    val_names: list[str]
    val_labels: np.ndarray
    holdout_names: list[str] = field(default_factory=list)
    holdout_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    num_classes: int = 0
    in_channels: int = 3
    num_person: int = 2
    num_frames: int = 300
    num_joints: int = 25
    class_names: list[str] = field(default_factory=list)
    directory: Path | None = None


def _subset_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _names_labels(ds: Any, idx: Sequence[int]) -> tuple[list[str], np.ndarray]:
    names = [str(ds.sample_names[i]) for i in idx]
    labels = np.asarray([int(ds.labels[i]) for i in idx], dtype=np.int64)
    return names, labels


def build_datasets(cfg: dict[str, Any], directory: Path) -> DataBundle:
    from amanet_fast.data import SkeletonDataset

    d = cfg["data"]
    common = dict(stream=d["stream"], clip_len=d["clip_len"], pad=d["pad"])
    train_full = SkeletonDataset(directory, split="train", random_choose=d["random_choose"],
                                 random_shift=d["random_shift"], random_move=d["random_move"], **common)
    val_full = SkeletonDataset(directory, split="val", **common)
    seed = int(cfg["seed"])

    train_idx = _subset_indices(len(train_full), d["limit_train"], seed)
    holdout_idx = np.zeros(0, dtype=np.int64)
    if d["holdout_fraction"] > 0:
        perm = np.random.default_rng(seed + 1).permutation(train_idx)
        k = max(1, int(round(len(perm) * d["holdout_fraction"])))
        holdout_idx, train_idx = np.sort(perm[:k]), np.sort(perm[k:])
    val_idx = _subset_indices(len(val_full), d["limit_val"], seed + 2)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError(f"prepared data in {directory} has an empty train or val split")

    holdout = None
    holdout_names: list[str] = []
    holdout_labels = np.zeros(0, dtype=np.int64)
    if len(holdout_idx):
        plain_train = SkeletonDataset(directory, split="train", **common)  # no augmentation for scoring
        holdout = Subset(plain_train, holdout_idx.tolist())
        holdout_names, holdout_labels = _names_labels(plain_train, holdout_idx)

    val_names, val_labels = _names_labels(val_full, val_idx)
    x0 = val_full[int(val_idx[0])][0]
    num_classes = int(val_full.num_classes)
    manifest = getattr(val_full, "manifest", None) or {}
    classes = manifest.get("classes") if isinstance(manifest, dict) else None
    if isinstance(classes, list) and len(classes) == num_classes:
        class_names = [str(c) if c is not None else str(i) for i, c in enumerate(classes)]
    else:
        class_names = [str(i) for i in range(num_classes)]
    return DataBundle(
        train=train_full if len(train_idx) == len(train_full) else Subset(train_full, train_idx.tolist()),
        val=val_full if len(val_idx) == len(val_full) else Subset(val_full, val_idx.tolist()),
        holdout=holdout,
        val_names=val_names,
        val_labels=val_labels,
        holdout_names=holdout_names,
        holdout_labels=holdout_labels,
        num_classes=num_classes,
        in_channels=int(x0.shape[0]),
        num_person=int(x0.shape[-1]),
        num_frames=int(x0.shape[1]),
        num_joints=int(x0.shape[2]),
        class_names=class_names,
        directory=directory,
    )
