"""Atomic writing of a prepared dataset (SPEC §5 prepared format + manifest).

Everything is written into `DIR/.tmp-XXXX` first and moved into place with
`os.replace` only when the whole run succeeded, manifest last. The manifest is
the "this dataset is complete" marker: readers refuse a directory without it,
so an interrupted or failed run never leaves something that looks usable.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import write_json_atomic

__all__ = [
    "FORMAT_VERSION",
    "NUM_FRAMES",
    "NUM_PERSONS",
    "MANIFEST_NAME",
    "data_file",
    "label_file",
    "PreparedWriter",
    "read_manifest",
    "write_json_atomic",
]

FORMAT_VERSION = 1
NUM_FRAMES = 300
NUM_PERSONS = 2
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val")


def data_file(split: str) -> str:
    return f"{split}_data_joint.npy"


def label_file(split: str) -> str:
    return f"{split}_label.pkl"



def read_manifest(data_dir: Path) -> dict | None:
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    with open(path) as f:
        return json.load(f)


class PreparedWriter:
    """Collects the splits of one prepared dataset in a private temp directory.

    Use as a context manager: leaving the block with an exception deletes the
    temp directory and leaves `out_dir` exactly as it was.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.out_dir))
        self._files: list[str] = []

    def __enter__(self) -> "PreparedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def open_data(self, split: str, shape: tuple[int, ...]) -> np.memmap:
        """A float32 memory-mapped .npy so a split never has to fit in RAM."""
        name = data_file(split)
        arr = np.lib.format.open_memmap(self.tmp_dir / name, mode="w+", dtype=np.float32, shape=shape)
        self._files.append(name)
        return arr

    def shrink_data(self, split: str, arr: np.memmap, count: int, chunk: int = 256) -> np.memmap:
        """Keep the first `count` samples (after `--skip-bad` dropped some), copied in chunks."""
        if count == arr.shape[0]:
            return arr
        name = data_file(split)
        part = self.tmp_dir / (name + ".part")
        out = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(count, *arr.shape[1:]))
        for start in range(0, count, chunk):
            out[start:start + chunk] = arr[start:min(start + chunk, count)]
        out.flush()
        del arr
        os.replace(part, self.tmp_dir / name)
        return np.load(self.tmp_dir / name, mmap_mode="r+")

    def write_labels(self, split: str, sample_names: list[str], labels: list[int]) -> None:
        name = label_file(split)
        with open(self.tmp_dir / name, "wb") as f:
            pickle.dump((list(sample_names), [int(l) for l in labels]), f)
        self._files.append(name)

    def commit(self, manifest: dict) -> Path:
        """Move every file into place, manifest last; stale split files of an older run go first."""
        old_manifest = self.out_dir / MANIFEST_NAME
        old_manifest.unlink(missing_ok=True)
        for split in SPLITS:
            for name in (data_file(split), label_file(split)):
                if name not in self._files:
                    (self.out_dir / name).unlink(missing_ok=True)
        for name in self._files:
            os.replace(self.tmp_dir / name, self.out_dir / name)
        write_json_atomic(self.tmp_dir / MANIFEST_NAME, manifest)
        os.replace(self.tmp_dir / MANIFEST_NAME, old_manifest)
        self.discard()
        return self.out_dir
