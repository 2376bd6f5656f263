"""From a resolved config to datasets: where the prepared data lives, the
synthetic demo's automatic preparation, seeded subsets, and a clear message
(with the exact prepare command) when real data is missing. The prepared
folder's manifest describes the data (layout, classes, channels): the model is
built from it, whatever recipe (--dataset) trains it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from torch.utils.data import Dataset, Subset

from ..data.engine import cpu_cores
from ..data.io import data_dir, data_root
from ..graphs import SkeletonLayout
from ..registry import DATASETS, get_dataset


class MissingDataError(RuntimeError):
    """Prepared data is absent; the message says how to prepare it."""


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
    from amanet_fast.data.io import MANIFEST_NAME, read_manifest

    if not cfg["data"]["root"]:
        return
    root = data_root(cfg)
    if not root.exists():
        return
    if not root.is_dir():
        raise MissingDataError(f"data.root {root}: expected a folder for the synthetic demo data, found a file")
    if (root / MANIFEST_NAME).is_file():
        # A damaged manifest is reported as such (its error names the file and the field): whether
        # the folder is the demo's cannot be told from it, and nothing is written either way.
        manifest = read_manifest(root)
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


def fit_num_workers(requested: int, world_size: int = 1) -> tuple[int, str | None]:
    """DataLoader workers per process that fit the cores: one core per process stays with the main loop."""
    cap = max(0, cpu_cores() // max(1, world_size) - 1)
    if requested <= cap:
        return requested, None
    return cap, (f"data.num_workers {requested} -> {cap}: {cpu_cores()} CPU cores for {world_size} process(es), "
                 "one each kept for the training loop")


_RAW_MARKERS = (
    # (how to recognise raw data in a folder, registry dataset it belongs to)
    (lambda d: any(d.glob("*.skeleton")), "ntu60"),
    (lambda d: (d / "all_sqe").is_dir(), "ucla"),
    (lambda d: any(d.glob("a[0-9][0-9]_s[0-9][0-9]_e[0-9][0-9]_v[0-9][0-9].json")), "ucla"),  # all_sqe itself
    (lambda d: (d / "kinetics_train").is_dir() or (d / "kinetics_val").is_dir()
     or any(d.glob("*_label.json")), "kinetics"),
    (lambda d: any(d.glob("*.pkl")) and not any(d.glob("*_label.pkl")), "custom"),
)


def _outside(raw: Path, out: Path) -> Path:
    """`out`, unless it would land inside the raw data folder (never write there)."""
    raw_r, out_r = raw.resolve(), out.resolve()
    if out_r == raw_r or raw_r in out_r.parents:
        return raw_r.parent / f"{raw_r.name}_prepared"
    return out


def diagnose_missing(cfg: dict[str, Any], d: Path) -> str | None:
    """Recognise the usual mistakes behind "no prepared data here"; the fix as text, or None."""
    from amanet_fast.data import prepare_command as data_prepare_command

    from ..data.io import MANIFEST_NAME

    ds, split = cfg["dataset"], cfg["data"]["split"]
    info = get_dataset(ds)
    root = data_root(cfg)
    if split and info.benchmarks and split not in info.benchmarks:
        return (f"--split {split!r} is not a {ds} benchmark; use one of: {', '.join(info.benchmarks)}")
    if split and (root / MANIFEST_NAME).is_file():
        return (f"{root} is itself a prepared folder (it has {MANIFEST_NAME}); --split looks for DATA_ROOT/{split}: "
                f"drop --split (pass data.split=null if the recipe sets one) or point --data-root at its parent")
    if root.is_dir() and not d.exists():
        found = sorted(p.name for p in root.iterdir() if (p / MANIFEST_NAME).is_file())
        if found:
            return (f"{root} has prepared sub-folders {', '.join(found)} but no {split!r}: "
                    f"pass --split {found[0]}" + (f" (one of {', '.join(found)})" if len(found) > 1 else ""))
    if split is None and root.is_dir():
        found = sorted(p.name for p in root.iterdir() if (p / MANIFEST_NAME).is_file())
        if found:
            return f"{root} holds prepared benchmarks {', '.join(found)}: pick one with --split {found[0]}"
    target = d if d.exists() else root
    if target.is_file() and target.suffix == ".pkl":
        out = _outside(target.parent, Path("data") / "custom")
        return (f"{target} is a raw pyskl pickle, not a prepared folder; prepare it first:\n  "
                + data_prepare_command("custom", out, raw=target) + f"\nthen train with --data-root {out}")
    if target.is_dir():
        for looks, raw_ds in _RAW_MARKERS:
            if looks(target):
                raw_ds = "ntu120" if raw_ds == "ntu60" and ds == "ntu120" else raw_ds
                if target.resolve().name in ("all_sqe", "kinetics_train", "kinetics_val"):
                    # The clips' own folder: prepare reads its parent, and the parent is the raw data
                    # that --out must stay out of.
                    target = target.resolve().parent
                raw_info = DATASETS[raw_ds]
                bench = (split if split in raw_info.benchmarks else raw_info.default_benchmark)
                out = _outside(target, Path("data") / raw_ds / bench if bench else Path("data") / raw_ds)
                return (f"{target} holds raw {raw_info.raw}, not prepared data; prepare it first:\n  "
                        + data_prepare_command(raw_ds, out, bench, raw=target)
                        + f"\nthen train with --data-root {out.parent if bench else out}"
                        + (f" --split {bench}" if bench else ""))
    return None


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
    info = get_dataset(kind)
    hint = diagnose_missing(cfg, d)
    if hint is not None:
        raise MissingDataError(f"prepared data not found in {d}: {hint}")
    from amanet_fast.data import prepare_command as data_prepare_command

    out = d
    if d.is_dir() and any(d.iterdir()):  # files we do not recognise: maybe raw data, never prepare into it
        out = _outside(d, Path("data") / kind)
    split_note = ""
    if info.benchmarks and not cfg["data"]["split"]:
        split_note = (f"\n({info.title} has several benchmarks: pass --split {'|'.join(info.benchmarks)}; "
                      f"e.g. --split {info.default_benchmark})")
    raise MissingDataError(
        f"prepared {kind} data not found in {d.resolve()} (expected manifest.json, train/val _data_joint.npy "
        f"and _label.pkl).\n"
        f"Prepare it once from the {info.raw} with:\n"
        f"  {data_prepare_command(kind, out, cfg['data']['split'])}\n"
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
    layout: SkeletonLayout | None = None   # from the manifest: the model is built for it
    coord_dims: int = 3
    manifest: dict[str, Any] = field(default_factory=dict)
    inputs: Any = None   # data.inputs.InputSpec of the val split: recorded in checkpoints for inference


def _subset_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def _names_labels(ds: Any, idx: Sequence[int]) -> tuple[list[str], np.ndarray]:
    names = [str(ds.sample_names[i]) for i in idx]
    labels = np.asarray([int(ds.labels[i]) for i in idx], dtype=np.int64)
    return names, labels


def model_kwargs(cfg: dict[str, Any], data: "DataBundle") -> dict[str, Any]:
    """build_model overrides: what the data is (manifest), then the recipe's model.args and runtime."""
    from ..graphs import get_layout

    from_data = dict(num_class=data.num_classes, in_channels=data.in_channels, num_person=data.num_person,
                     layout=data.layout, coord_dims=data.coord_dims)
    args = dict(cfg["model"]["args"])
    for key, value in from_data.items():
        if key not in args or value is None:
            continue
        given = get_layout(args[key]) if key == "layout" else args[key]
        if given != value:
            shown = value.name if key == "layout" else value
            raise ValueError(f"model.args.{key}={args[key]!r} contradicts the prepared data in {data.directory} "
                             f"({key} {shown!r} from its manifest); drop the override: the model is built "
                             "from the data")
    kwargs = {k: v for k, v in from_data.items() if v is not None}
    kwargs.update(stream=cfg["data"]["stream"], kernel_backend=cfg["runtime"]["kernel_backend"])
    kwargs.update(args)
    return kwargs


def describe_data(cfg: dict[str, Any], data: "DataBundle", world_size: int = 1) -> list[str]:
    """Log lines saying what the data is (from its manifest) and how it is loaded."""
    lines = []
    _, note = fit_num_workers(int(cfg["data"]["num_workers"]), world_size)
    if note:
        lines.append(note)
    lay = data.layout
    if lay is not None:
        lines.append(f"data layout: {lay.name} ({lay.num_joints} joints, center {lay.center}, root {lay.root}, "
                     f"{len(lay.parts)} DP parts) | channels {'/'.join(data.manifest.get('channels') or []) or '?'} "
                     f"| recipe {cfg['dataset']}")
    return lines


def build_datasets(cfg: dict[str, Any], directory: Path) -> DataBundle:
    from amanet_fast.data import SkeletonDataset

    d = cfg["data"]
    from amanet_fast.data.protocol import ClipProtocol

    common = dict(stream=d["stream"], clip_len=d["clip_len"], pad=d["pad"], protocol=ClipProtocol.from_config(d))
    train_full = SkeletonDataset(directory, split="train", random_choose=d["random_choose"],
                                 random_shift=d["random_shift"], random_move=d["random_move"], random_view=True,
                                 **common)
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
    from amanet_fast.data.manifest import manifest_classes, manifest_coord_dims

    num_classes = int(val_full.num_classes)
    manifest = val_full.manifest
    class_names = manifest_classes(manifest)
    repeat = int(d["train_repeat"])
    if repeat > 1:  # one epoch = `repeat` passes over the training set (CTR-GCN's NW-UCLA feeder: 5)
        train_idx = np.tile(train_idx, repeat)
    return DataBundle(
        train=train_full if len(train_idx) == len(train_full) and repeat == 1 else Subset(train_full, train_idx.tolist()),
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
        layout=val_full.layout,
        coord_dims=manifest_coord_dims(manifest),
        manifest=manifest,
        inputs=val_full.spec,
    )
