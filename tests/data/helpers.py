"""Shared helpers of the data tests: run the prepare CLI in-process and inspect what it left behind."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from amanet_fast.data.prepare import main as prepare_main


def run_prepare(*args: str | Path) -> int:
    return prepare_main([str(a) for a in args])


def load_prepared(out: Path, split: str) -> tuple[np.ndarray, list[str], list[int]]:
    data = np.load(out / f"{split}_data_joint.npy", mmap_mode="r")
    with open(out / f"{split}_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    return data, names, labels


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def assert_nothing_complete(out: Path) -> None:
    """A failed run leaves no manifest, no arrays, no label files and no temp dirs behind."""
    if not out.exists():
        return
    leftovers = sorted(p.name for p in out.iterdir() if p.name != ".lock")
    assert leftovers == [], f"failed run left {leftovers} in {out}"
