from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amanet_fast.data.synthetic import ACTIONS, ensure_synthetic, synth_clip

from .helpers import load_prepared, manifest, run_prepare

SMALL = dict(num_train=60, num_val=30)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("synth") / "demo", seed=0, **SMALL)


def test_prepared_by_the_kinetics_path(synth_dir: Path) -> None:
    m = manifest(synth_dir)
    assert m["kind"] == "synthetic" and m["layout"]["name"] == "openpose18" and m["channels"] == ["x", "y", "score"]
    assert m["classes"] == list(ACTIONS) and m["num_classes"] == 6
    assert m["counts"] == {"train": 60, "val": 30}
    assert m["synthetic"]["seed"] == 0
    # The raw clips are real Kinetics-Skeleton JSON in the release layout.
    raw = synth_dir / "raw"
    table = json.loads((raw / "kinetics_train_label.json").read_text())
    assert len(table) == 60 and all(v["has_skeleton"] for v in table.values())
    clip = json.loads(next((raw / "kinetics_val").iterdir()).read_text())
    assert clip["data"][0]["frame_index"] == 1 and clip["label"] in ACTIONS
    data, names, labels = load_prepared(synth_dir, "train")
    assert data.shape == (60, 3, 300, 18, 2)
    assert np.bincount(labels, minlength=6).tolist() == [10] * 6
    assert not data[:, :, 100:].any()  # clips are 50..90 frames, zero padded to 300
    assert np.isfinite(data).all()


def test_realistic_imperfections(synth_dir: Path) -> None:
    data, _, _ = load_prepared(synth_dir, "train")
    score = data[:, 2]
    present = np.abs(data).sum(axis=(1, 3, 4)) > 0            # (N, T) frames with anybody
    seen = score[..., 0][present]                                 # main person, real frames
    assert 0.005 < (seen == 0).mean() < 0.1                       # some joints missing
    assert (np.abs(data[..., 1]).sum(axis=(1, 2, 3)) > 0).any()   # some clips have a 2nd person
    assert (score[..., 1][present].max() <= 0.5)                  # ... less confident, kept second


def test_deterministic_and_idempotent(synth_dir: Path, tmp_path: Path) -> None:
    stamp = (synth_dir / "manifest.json").stat().st_mtime_ns
    assert ensure_synthetic(synth_dir, seed=0, **SMALL) == synth_dir
    assert (synth_dir / "manifest.json").stat().st_mtime_ns == stamp  # nothing regenerated
    again = ensure_synthetic(tmp_path / "again", seed=0, **SMALL)
    np.testing.assert_array_equal(np.load(again / "val_data_joint.npy"), np.load(synth_dir / "val_data_joint.npy"))
    other = synth_clip(1, "val", 0, 0)
    assert other != synth_clip(0, "val", 0, 0) and synth_clip(0, "val", 0, 0) == synth_clip(0, "val", 0, 0)


def test_settings_change_regenerates(tmp_path: Path) -> None:
    out = ensure_synthetic(tmp_path / "d", seed=0, num_train=12, num_val=6)
    out = ensure_synthetic(out, seed=1, num_train=18, num_val=6)
    assert manifest(out)["counts"] == {"train": 18, "val": 6} and manifest(out)["synthetic"]["seed"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp") or p.name.startswith(".raw")]


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert run_prepare("synthetic", "--out", out, "--num-train", "12", "--num-val", "6", "--seed", "3") == 0
    assert manifest(out)["counts"] == {"train": 12, "val": 6}


def _features(data: np.ndarray) -> np.ndarray:
    """Scale-free pose statistics of the main person: mean and spread of each joint around the neck."""
    feats = []
    for s in data[..., 0]:
        s = s[:, np.abs(s).sum(axis=(0, 2)) > 0]
        xy = s[:2] - s[:2, :, 1:2]
        scale = np.linalg.norm(xy[:, :, [8, 11]].mean(axis=2), axis=0).mean() + 1e-6
        xy = xy / scale
        feats.append(np.concatenate([xy.mean(axis=1).ravel(), xy.std(axis=1).ravel()]))
    return np.array(feats)


def test_actions_are_clearly_distinct(synth_dir: Path, tmp_path: Path) -> None:
    """Even a linear model on crude statistics separates the six actions (so a GCN surely can)."""
    d = ensure_synthetic(tmp_path / "sep", seed=5, num_train=120, num_val=60)
    xtr, _, ytr = load_prepared(d, "train")
    xva, _, yva = load_prepared(d, "val")
    ftr, fva = _features(np.asarray(xtr)), _features(np.asarray(xva))
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    a = np.c_[(ftr - mu) / sd, np.ones(len(ftr))]
    w = np.linalg.solve(a.T @ a + np.eye(a.shape[1]), a.T @ np.eye(6)[ytr])
    pred = (np.c_[(fva - mu) / sd, np.ones(len(fva))] @ w).argmax(1)
    assert (pred == np.array(yva)).mean() >= 0.9
