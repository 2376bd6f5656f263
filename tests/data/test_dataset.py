from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from amanet_fast.data import SkeletonDataset, ensure_synthetic
from amanet_fast.data.augment import fit_length, random_move, random_shift, valid_range
from amanet_fast.streams import STREAMS, to_stream

from .helpers import run_prepare


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("ds") / "synthetic", seed=0, num_train=24, num_val=12)


def test_items_and_attributes(demo: Path) -> None:
    ds = SkeletonDataset(demo, "val")
    assert len(ds) == 12 and ds.num_classes == 6 and ds.layout.name == "openpose18"
    assert ds.manifest["kind"] == "synthetic" and len(ds.sample_names) == 12
    x, label, index = ds[4]
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and tuple(x.shape) == (3, 300, 18, 2)
    assert label == ds.labels[4] and index == 4
    assert isinstance(ds.data, np.memmap)  # memory-mapped, not loaded
    assert not isinstance(SkeletonDataset(demo, "val", mmap=False).data, np.memmap)
    np.testing.assert_array_equal(x.numpy(), np.load(demo / "val_data_joint.npy")[4])


def test_streams(demo: Path) -> None:
    joint = SkeletonDataset(demo, "val")[2][0].numpy()
    for stream in STREAMS:
        x = SkeletonDataset(demo, "val", stream=stream)[2][0].numpy()
        np.testing.assert_allclose(x, to_stream(joint, stream, "openpose18"), atol=1e-6)
    bone = SkeletonDataset(demo, "val", stream="bone")[2][0].numpy()
    assert not bone[:, :, 0].any()  # nose is the OpenPose bone root
    np.testing.assert_allclose(bone[:, :, 2], joint[:, :, 2] - joint[:, :, 1], atol=1e-6)  # RShoulder - neck
    with pytest.raises(ValueError, match="stream"):
        SkeletonDataset(demo, "val", stream="velocity")


def test_clip_len_is_valid_frame_aware(demo: Path) -> None:
    ds = SkeletonDataset(demo, "val", clip_len=40)
    full = SkeletonDataset(demo, "val")
    x = ds[0][0].numpy()
    ref = full[0][0].numpy()
    b, e = valid_range(ref)
    n = e - b
    assert x.shape == (3, 40, 18, 2) and n > 40
    start = b + (n - 40) // 2  # centre window of the valid frames
    np.testing.assert_array_equal(x, ref[:, start:start + 40])
    long = SkeletonDataset(demo, "val", clip_len=128)[0][0].numpy()
    np.testing.assert_array_equal(long[:, :n], ref[:, b:e])
    assert not long[:, n:].any()


def test_augmentations_random_but_seeded(demo: Path) -> None:
    ds = SkeletonDataset(demo, "train", clip_len=64, random_choose=True, random_shift=True, random_move=True)
    torch.manual_seed(0)
    a = ds[1][0]
    torch.manual_seed(0)
    b = ds[1][0]
    torch.manual_seed(1)
    c = ds[1][0]
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = SkeletonDataset(demo, "train", clip_len=64)[1][0]
    assert not torch.equal(a, plain)
    with pytest.raises(ValueError, match="clip_len"):
        SkeletonDataset(demo, "train", random_choose=True)


def test_augment_functions() -> None:
    rng = np.random.default_rng(0)
    x = np.zeros((3, 50, 18, 2), np.float32)
    x[:, 10:30, :, 0] = rng.normal(size=(3, 20, 18))
    x[:, 12, 5, 0] = 0  # a missing joint
    assert valid_range(x) == (10, 30)
    y = random_shift(x, rng)
    b, e = valid_range(y)
    assert e - b == 20 and np.array_equal(y[:, b:e], x[:, 10:30])
    chosen = fit_length(x, 8, rng)
    assert chosen.shape == (3, 8, 18, 2) and valid_range(chosen) == (0, 8)
    moved = random_move(x, np.random.default_rng(3), confidence=True)  # channel 2 as a score: per joint
    assert np.array_equal(moved[2], x[2])                      # score/z channel untouched
    absent = np.abs(x).sum(axis=0) == 0
    assert absent.any() and not moved[:, absent].any()
    assert not np.allclose(moved[:2, 10:30, :, 0], x[:2, 10:30, :, 0])
    assert not moved[:, 12, 5, 0].any() and not moved[:, :10].any()  # missing stays missing, padding zero
    # a pure similarity transform per frame: pairwise distance ratios are preserved within a frame
    f = 20
    d0 = np.linalg.norm(x[:2, f, 0, 0] - x[:2, f, 1, 0])
    d1 = np.linalg.norm(x[:2, f, 0, 0] - x[:2, f, 2, 0])
    m0 = np.linalg.norm(moved[:2, f, 0, 0] - moved[:2, f, 1, 0])
    m1 = np.linalg.norm(moved[:2, f, 0, 0] - moved[:2, f, 2, 0])
    assert abs(d0 / d1 - m0 / m1) < 1e-4 and 0.85 < m0 / d0 < 1.15


def test_dataloader_workers(demo: Path) -> None:
    ds = SkeletonDataset(demo, "val", clip_len=32)
    state = pickle.loads(pickle.dumps(ds))  # what a spawned worker receives: no array copy
    assert state._data is None and len(state) == len(ds)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=1)
    xs, ys, idx = next(iter(loader))
    assert xs.shape == (5, 3, 32, 18, 2) and idx.tolist() == [0, 1, 2, 3, 4]


def test_missing_data_dir_gives_the_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as exc:
        SkeletonDataset(tmp_path / "data" / "ntu60" / "xview")
    msg = str(exc.value)
    assert "python -m amanet_fast.data.prepare ntu60 --split xview --raw " in msg
    assert f"--out {tmp_path / 'data' / 'ntu60' / 'xview'}" in msg


def test_incomplete_dir_is_refused_and_external_arrays_accepted(demo: Path, tmp_path: Path) -> None:
    d = tmp_path / "copy"
    shutil.copytree(demo, d, ignore=shutil.ignore_patterns("raw", "manifest.json"))
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        SkeletonDataset(d, "val")
    ds = SkeletonDataset(d, "val", layout="openpose18", num_classes=6)  # e.g. MS-G3D-prepared arrays
    assert len(ds) == 12 and ds[0][0].shape == (3, 300, 18, 2)


def test_real_ntu_dataset_bone(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ntu"
    assert run_prepare("ntu60", "--split", "xsub", "--raw", shared_data / "ntu_raw", "--out", out) == 0
    ds = SkeletonDataset(out, "val", stream="bone")
    x, label, _ = ds[0]
    assert tuple(x.shape) == (3, 300, 25, 2) and ds.layout.name == "ntu25" and label == 2
    assert not x[:, :, 20].any()  # spine shoulder is the NTU bone root
