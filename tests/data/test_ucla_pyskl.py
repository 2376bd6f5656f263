from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from amanet_fast.graphs import LAYOUTS

from .helpers import load_prepared, manifest, run_prepare


def test_nw_ucla_standard_split(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ucla"
    assert run_prepare("ucla", "--raw", shared_data / "nw_ucla", "--out", out, "--workers", "2") == 0
    m = manifest(out)
    assert m["counts"] == {"train": 1020, "val": 464}
    assert m["layout"] == LAYOUTS["ucla20"].to_dict() and m["num_classes"] == 10
    val, names, labels = load_prepared(out, "val")
    assert val.shape == (464, 3, 300, 20, 2)
    assert all(n.endswith("_v03") for n in names)
    with open(shared_data / "nw_ucla" / "val_label.pkl", "rb") as f:
        listed = {e["file_name"]: e["label"] - 1 for e in pickle.load(f)}
    assert dict(zip(names, labels)) == listed
    # One sample checked against its raw JSON: frame-0 spine joint at the origin, second person empty.
    i = names.index("a05_s04_e02_v03")
    raw = np.array(json.loads((shared_data / "nw_ucla" / "all_sqe" / "a05_s04_e02_v03.json").read_text())["skeletons"])
    expect = (raw - raw[0, 1]).transpose(2, 0, 1)
    np.testing.assert_allclose(val[i, :, :len(raw), :, 0], expect, atol=1e-5)
    assert not val[i, :, len(raw):].any() and not val[i, ..., 1].any()


def test_pyskl_single_annotation(standin_data: Path, tmp_path: Path) -> None:
    src = standin_data / "pyskl" / "example_UCF101_skeleton.pkl"
    out = tmp_path / "pyskl"
    assert run_prepare("pyskl", "--raw", src, "--out", out) == 0
    m = manifest(out)
    assert m["layout"]["name"] == "coco17" and m["channels"] == ["x", "y", "score"] and m["counts"] == {"train": 1}
    data, names, labels = load_prepared(out, "train")
    assert data.shape == (1, 3, 300, 17, 2) and names == ["v_ApplyEyeMakeup_g01_c01"] and labels == [0]
    with open(src, "rb") as f:
        ann = pickle.load(f)
    h, w = ann["img_shape"]
    kp = ann["keypoint"].astype(np.float64)
    np.testing.assert_allclose(data[0, 0, :163, :, 0], (kp[0, :, :, 0] - w / 2) / (w / 2), atol=1e-5)
    np.testing.assert_allclose(data[0, 2, :163, :, 1], ann["keypoint_score"][1], atol=1e-3)
    assert not data[0, :, 163:].any()


def test_pyskl_with_split_names(standin_data: Path, tmp_path: Path) -> None:
    with open(standin_data / "pyskl" / "example_UCF101_skeleton.pkl", "rb") as f:
        ann = pickle.load(f)
    other = dict(ann, frame_dir="clip_b", label=3)
    bundle = tmp_path / "bundle.pkl"
    with open(bundle, "wb") as f:
        pickle.dump({"split": {"train1": [ann["frame_dir"]], "test1": ["clip_b"]}, "annotations": [ann, other]}, f)
    out = tmp_path / "p"
    assert run_prepare("pyskl", "--raw", bundle, "--out", out, "--train-split", "train1",
                       "--val-split", "test1") == 0
    m = manifest(out)
    assert m["counts"] == {"train": 1, "val": 1} and m["num_classes"] == 4
    assert load_prepared(out, "val")[2] == [3]
    # Unknown split names are a user error naming what exists.
    assert run_prepare("pyskl", "--raw", bundle, "--out", tmp_path / "q") == 2
