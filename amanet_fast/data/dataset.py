"""`SkeletonDataset`: prepared skeleton arrays, memory-mapped, as torch samples.

Reads what `amanet_fast.data.prepare` wrote (docs/design.md §5 prepared format plus
manifest.json). The array stays on disk (`mmap=True`): each item copies one
sample out, so datasets far larger than RAM work and DataLoader workers share
the page cache. Each item goes through `inputs.model_input` with the split's
`InputSpec` (`self.spec`, recorded in checkpoints so inference feeds the same):
clip length and short-clip padding (`pad`: zero or replay, default per dataset
kind: `augment.DEFAULT_PAD`) -> random shift -> random move, then the stream.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..graphs import SkeletonLayout, resolve_layout
from ..registry import DATASETS
from ..streams import STREAMS
from . import augment
from .inputs import InputSpec, model_input
from .io import (MANIFEST_NAME, check_sampled_finite, data_file, label_file, open_prepared_array, read_label_pickle,
                 read_manifest)
from .manifest import manifest_coord_dims, manifest_layout
from .protocol import ClipProtocol

__all__ = ["SkeletonDataset", "prepare_command"]

log = logging.getLogger("amanet_fast.data.dataset")


def _guess_kind(data_dir: Path) -> tuple[str, str | None]:
    """A registry dataset guessed from a folder name, for the hint in an error message."""
    name = str(data_dir).lower().replace("_", "")
    for ds in sorted(DATASETS, key=len, reverse=True):  # ntu120 before ntu60
        info = DATASETS[ds]
        if ds in name or info.kind in name:
            bench = next((b for b in info.benchmarks if b in name), info.default_benchmark)
            return ds, bench
    if "synth" in name or "demo" in name:
        return "synthetic", None
    return "KIND", None


def prepare_command(dataset: str, data_dir: str | Path, split: str | None = None, raw: str | Path | None = None) -> str:
    """The command that creates `data_dir` for a registry dataset (or a prepare KIND; KIND = placeholder)."""
    info = DATASETS.get(dataset) or next((d for d in DATASETS.values() if d.kind == dataset), None)
    parts = ["python -m amanet_fast.data.prepare", info.kind if info else dataset]
    if split:
        parts.append(f"--split {split}")
    hint = info.raw_hint if info else "--raw /path/to/raw"
    if raw is not None:
        hint = " ".join([f"--raw {raw}", *hint.split()[2:]])
    if hint:
        parts.append(hint)
    parts.append(f"--out {data_dir}")
    return " ".join(parts)


class SkeletonDataset(torch.utils.data.Dataset):
    """One split of a prepared dataset; items are `(x (C, T, V, M) float32, label, index)`."""

    def __init__(self, data_dir: str | Path, split: str = "train", stream: str = "joint",
                 clip_len: int | None = None, random_choose: bool = False, random_shift: bool = False,
                 random_move: bool = False, mmap: bool = True, *, layout: str | SkeletonLayout | None = None,
                 num_classes: int | None = None, pad: str | None = None, protocol: ClipProtocol | None = None,
                 random_view: bool = False) -> None:
        self.data_dir = Path(data_dir)
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, got {stream!r}")
        if clip_len is not None and (not isinstance(clip_len, int) or clip_len < 1):
            raise ValueError(f"clip_len must be a positive int or None, got {clip_len!r}")
        if random_choose and clip_len is None:
            raise ValueError("random_choose picks a window of clip_len frames: set clip_len")
        self.split, self.stream, self.clip_len = split, stream, clip_len
        self.random_choose, self.random_shift, self.random_move = random_choose, random_shift, random_move
        self.mmap = mmap
        self.manifest = self._manifest(layout, num_classes)
        counts = self.manifest.get("counts", {})
        if split not in counts:
            raise ValueError(f"split {split!r} not in {self.data_dir} (has {sorted(counts)})")
        self.layout: SkeletonLayout = manifest_layout(self.manifest, self.data_dir)
        self.num_classes: int = int(self.manifest["num_classes"])
        self.num_channels: int = int(self.manifest["num_channels"])
        # A score channel (OpenPose/COCO) decides per joint what is missing; else per body and frame.
        self.confidence: bool = list(self.manifest.get("channels") or [])[-1:] == ["score"]
        self.pad = self._pad_mode(pad)
        # `random_view`: draw the protocol's random steps (view transform, resampled frames) -- training.
        self.protocol, self.random_view = protocol or ClipProtocol(), random_view
        self.coord_dims: int = manifest_coord_dims(self.manifest)
        self.protocol.check(self.layout.num_joints, self.coord_dims, str(self.data_dir))
        if self.protocol.resample is not None and clip_len is not None and clip_len != self.protocol.resample:
            raise ValueError(f"data.resample={self.protocol.resample} sets the clip length; data.clip_len="
                             f"{clip_len} contradicts it: set data.clip_len to null")
        names, labels = read_label_pickle(self.data_dir / label_file(split))
        self.sample_names: list[str] = list(names)
        self.labels: list[int] = [int(l) for l in labels]
        self._data: np.ndarray | None = None
        data = self.data
        if len(data) != len(self.labels) or len(self.sample_names) != len(self.labels):
            raise ValueError(f"{self.data_dir}: {len(data)} samples but {len(self.labels)} labels "
                             f"and {len(self.sample_names)} names in split {split!r}")
        if data.ndim != 5 or data.shape[1] != self.num_channels or data.shape[3] != self.layout.num_joints:
            raise ValueError(f"{self.data_dir / data_file(split)}: shape {data.shape}, expected "
                             f"(N, {self.num_channels}, T, {self.layout.num_joints}, M) (layout "
                             f"{self.layout.name!r} of {MANIFEST_NAME})")
        bad = [l for l in self.labels if not 0 <= l < self.num_classes]
        if bad:
            raise ValueError(f"{self.data_dir / label_file(split)}: label {bad[0]} outside 0..{self.num_classes - 1}")
        check_sampled_finite(data, self.data_dir / data_file(split))
        channels = tuple(self.manifest.get("channels") or ())
        if len(channels) != self.num_channels:  # external arrays: meaning unknown, only the count is
            channels = tuple(f"c{i}" for i in range(self.num_channels))
        self.spec = InputSpec(layout=self.layout, channels=channels, stream=stream, clip_len=clip_len, pad=self.pad,
                              num_frames=int(data.shape[2]), num_person=int(data.shape[4]), protocol=self.protocol)

    def _manifest(self, layout: str | None, num_classes: int | None) -> dict:
        manifest = read_manifest(self.data_dir)
        if manifest is not None:
            return manifest
        has_files = (self.data_dir / data_file(self.split)).is_file() and (self.data_dir / label_file(self.split)).is_file()
        kind, bench = _guess_kind(self.data_dir)
        cmd = prepare_command(kind, self.data_dir, bench)
        if has_files and layout and num_classes:
            # Arrays prepared elsewhere (e.g. MS-G3D's own scripts): usable when the caller says what they are.
            log.warning("%s has no %s; using it as layout=%s, num_classes=%d as given", self.data_dir,
                        MANIFEST_NAME, layout, num_classes)
            shape = open_prepared_array(self.data_dir / data_file(self.split)).shape
            count = len(read_label_pickle(self.data_dir / label_file(self.split))[1])
            return {"kind": "external", "layout": resolve_layout(layout).to_dict(), "num_classes": int(num_classes),
                    "num_channels": int(shape[1]), "counts": {self.split: count}}
        if has_files:
            raise FileNotFoundError(
                f"{self.data_dir} has {data_file(self.split)} but no {MANIFEST_NAME}: the preparation did not "
                f"finish (re-run: {cmd}), or the arrays come from another tool (pass layout= and num_classes=)")
        raise FileNotFoundError(f"prepared dataset not found in {self.data_dir} (no {MANIFEST_NAME}); "
                                f"create it with: {cmd}")

    def _pad_mode(self, pad: str | None) -> str:
        kind = str(self.manifest.get("kind"))
        if pad is None:
            return augment.default_pad(kind)
        if pad not in augment.PAD_MODES:
            raise ValueError(f"pad must be one of {augment.PAD_MODES} (or None for the {kind} default), got {pad!r}")
        prepared = (self.manifest.get("options") or {}).get("pad") or augment.DEFAULT_PAD.get(kind)
        if pad == "zero" and prepared == "replay":
            raise ValueError(f"data.pad=zero, but {self.data_dir} was prepared with replayed frames ({kind} "
                             f"pre-normalization); prepare it again with --pad zero, or use data.pad=replay")
        return pad

    @property
    def data(self) -> np.ndarray:
        """Opened on first use, so pickling the dataset to a spawned worker does not copy the array."""
        if self._data is None:
            path = self.data_dir / data_file(self.split)
            self._data = open_prepared_array(path, self.mmap)
        return self._data

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_data"] = None
        return state

    def __len__(self) -> int:
        return len(self.labels)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        x = np.array(self.data[index], dtype=np.float32)  # copy out of the memory map
        needs_rng = self.random_choose or self.random_shift or self.random_move or self.random_view
        x = model_input(x, self.spec, self._rng() if needs_rng else None, random_choose=self.random_choose,
                        random_shift=self.random_shift, random_move=self.random_move, random_view=self.random_view)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), self.labels[index], index

    def __repr__(self) -> str:
        return (f"SkeletonDataset({str(self.data_dir)!r}, split={self.split!r}, stream={self.stream!r}, "
                f"n={len(self)}, layout={self.layout.name!r}, classes={self.num_classes})")
