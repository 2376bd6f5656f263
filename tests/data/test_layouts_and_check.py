"""Custom layouts (docs/design.md §4) and the data checker: every layout-file error is one clear line naming the
field; built-ins round-trip through their JSON form; the checker finds each defect of a crafted dataset."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from amanet_fast.data.check import check_prepared
from amanet_fast.data.check import main as check_main
from amanet_fast.data.io import PreparedWriter
from amanet_fast.graphs import LAYOUTS, LayoutError, load_layout
from amanet_fast.graphs import main as graphs_main
from amanet_fast.registry import DATASETS

from .helpers import manifest, run_prepare


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_builtin_layouts_round_trip_through_json(name, tmp_path, capsys):
    assert graphs_main(["dump", name]) == 0
    f = tmp_path / f"{name}.json"
    f.write_text(capsys.readouterr().out)
    assert load_layout(f) == LAYOUTS[name]  # same object: edges, center, root, parts, parents, names
    assert graphs_main(["check", str(f)]) == 0


def test_registry_is_the_one_table():
    assert set(DATASETS) == {"synthetic", "ntu60", "ntu120", "kinetics", "ucla", "custom"}
    for d in DATASETS.values():
        assert d.layout is None or d.layout in LAYOUTS
        assert (Path(__file__).resolve().parents[2] / "configs" / d.recipe).is_file()


def _ucla() -> dict:
    return LAYOUTS["ucla20"].to_dict()


def _with(**changes) -> dict:
    d = _ucla()
    d.update(changes)
    return d


def _part(i: int, **changes) -> dict:
    d = _ucla()
    d["parts"][i].update(changes)
    return d


def _drop(key: str) -> dict:
    d = _ucla()
    del d[key]
    return d


# (layout document, field named in the message, words of the expectation)
BAD_LAYOUTS = {
    "not_object": ([1, 2], "expected a JSON object", "got list"),
    "missing_edges": (_drop("edges"), "edges", "missing"),
    "unknown_field": (_with(centre=1), "unknown field", "centre"),
    "name": (_with(name=""), "name", "non-empty string"),
    "num_joints": (_with(num_joints="20"), "num_joints", "integer in 1..1024"),
    "edges_type": (_with(edges={"a": 1}), "edges", "list of [i, j]"),
    "edge_pair": (_with(edges=[[0, 1, 2]]), "edges[0]", "pair"),
    "edge_range": (_with(edges=[[0, 1], [1, 20]]), "edges[1][1]", "0..19"),
    "self_loop": (_with(edges=[[0, 1], [3, 3]]), "edges[1]", "no self loops"),
    "duplicate_edge": (_with(edges=_ucla()["edges"] + [[1, 0]]), "edges[19]", "each bone once"),
    "disconnected": (_with(edges=_ucla()["edges"][:-1]), "edges", "not connected: [19]"),
    "center": (_with(center=-1), "center", "0..19"),
    "root": (_with(root=25), "root", "0..19"),
    "joint_names": (_with(joint_names=["a"] * 3), "joint_names", "20 non-empty strings"),
    "parts_type": (_with(parts={"x": 1}), "parts", "a list"),
    "part_keys": (_with(parts=[{"name": "arm", "origin": 4}]), "parts[0]", "missing ['axis', 'members', 'side']"),
    "part_joint": (_part(1, axis=33), "parts[1].axis", "0..19"),
    "part_distinct": (_part(2, axis=12), "parts[2]", "three different joints"),
    "part_twice": (_part(4, members=[0, 1, 2, 3, 4]), "parts[4].members[4]", "already in part 'left_arm'"),
    "part_cover": (_part(4, members=[0, 1, 2]), "parts", "joints [3] are in none"),
}


@pytest.mark.parametrize("case", sorted(BAD_LAYOUTS))
def test_each_layout_file_error_is_one_clear_line(case, tmp_path, capsys, standin_data):
    doc, fld, words = BAD_LAYOUTS[case]
    f = tmp_path / "layout.json"
    f.write_text(json.dumps(doc))
    out = tmp_path / "out"
    rc = run_prepare("pyskl", "--raw", standin_data / "pyskl" / "example_UCF101_skeleton.pkl", "--layout", f,
                     "--out", out)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith(f"error: {f}: {fld}") and words in err[0], err[0]
    assert not (out / "manifest.json").exists()


def test_layout_file_not_json_and_unknown_name(tmp_path, capsys):
    f = tmp_path / "l.json"
    f.write_text("{name: 1")
    with pytest.raises(LayoutError, match=rf"{f}:1: malformed JSON"):
        load_layout(f)
    assert graphs_main(["dump", "kinect19"]) == 2
    assert "built-in layout" in capsys.readouterr().err


def test_pyskl_joint_count_mismatch_and_no_silent_tagging(standin_data, tmp_path, capsys):
    src = standin_data / "pyskl" / "example_UCF101_skeleton.pkl"
    assert run_prepare("pyskl", "--raw", src, "--layout", "ucla20", "--out", tmp_path / "a") == 2
    assert "--layout ucla20 has 20 joints, the keypoints have 17" in capsys.readouterr().err
    # Without --layout, a 17-joint 2D pickle is pyskl's COCO-17 and the log says so.
    assert run_prepare("pyskl", "--raw", src, "--out", tmp_path / "b") == 0
    m = manifest(tmp_path / "b")
    assert m["layout"] == LAYOUTS["coco17"].to_dict() and m["coord_dims"] == 2
    assert any("pyskl's convention" in n for n in m["notes"])


# ----------------------------------------------------------------------------- the checker

def _write_prepared(out: Path, splits: dict[str, tuple[np.ndarray, list[str], list[int]]], layout: dict,
                    classes: list[str], extra: dict | None = None) -> Path:
    with PreparedWriter(out) as w:
        for split, (x, names, labels) in splits.items():
            arr = w.open_data(split, x.shape)
            arr[:] = x
            arr.flush()
            del arr
            w.write_labels(split, names, labels)
        w.commit({"kind": "pyskl", "layout": layout, "channels": ["x", "y", "z"], "num_channels": 3,
                  "num_frames": 300, "num_classes": len(classes), "classes": classes,
                  "counts": {s: len(v[1]) for s, v in splits.items()}, **(extra or {})})
    return out


def _clean(n: int, rng: np.random.Generator, length: int = 40) -> np.ndarray:
    x = np.zeros((n, 3, 300, 20, 2), np.float32)
    x[:, :, :length, :, 0] = rng.normal(size=(n, 3, length, 20))
    return x


def test_checker_clean_dataset_passes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    d = _write_prepared(tmp_path / "ok", {
        "train": (_clean(4, rng), ["a", "b", "c", "d"], [0, 1, 2, 0]),
        "val": (_clean(3, rng), ["e", "f", "g"], [0, 1, 2])}, _ucla(), ["x", "y", "z"])
    assert check_main([str(d)]) == 0
    out = capsys.readouterr().out
    assert "split train: 4 samples" in out and "per class: 0 x: 2, 1 y: 1, 2 z: 1" in out
    assert "min 40, median 40, max 40" in out and "persons per frame (inside sequences): 1: 100.0%" in out
    assert "0 error(s), 0 warning(s)" in out


def test_checker_finds_each_defect(tmp_path, capsys):
    rng = np.random.default_rng(1)
    train = _clean(6, rng)
    train[0, 1, 5, 3, 0] = np.nan                  # NaN
    train[1] = 0                                   # all-zero sample
    train[2, :, :, :, 0] = 1.0                     # fills all 300 frames
    train[3, :, 10:20] = 0                         # a gap of 10 empty frames inside the sequence
    train[4, 0, :5, :, 0] = 5e4                    # pixel-sized values
    names = ["s0", "s1", "s2", "s3", "s3", "s5"]   # duplicate within train
    labels = [0, 1, 2, 0, 1, 7]                    # 7 is outside the 4 classes
    val = _clean(2, rng)
    d = _write_prepared(tmp_path / "bad", {"train": (train, names, labels), "val": (val, ["s0", "v1"], [0, 1])},
                        _ucla(), ["a", "b", "c", "d"],
                        extra={"splits": {"train": {"samples_with_dropped_frames": 1, "dropped_frames": 12}}})
    report = check_prepared(d)
    errors, warnings = "\n".join(report.errors), "\n".join(report.warnings)
    assert "train: 1 sample(s) with NaN/inf values: s0" in errors
    assert "train: 1 all-zero sample(s) (no skeleton at all): s1" in errors
    assert "train: 1 duplicate sample name(s): s3" in errors
    assert "1 sample name(s) in both train and val: s0" in errors
    assert "train: 1 label(s) outside the 4 classes (0..3): labels [7] in s5" in errors
    assert "10 frame(s) inside sequences have nobody" in warnings
    assert "train: 1 sample(s) were longer than T=300 when prepared: 12 frames dropped" in warnings
    assert "x reaches 5e+04" in warnings and "val: 2 class(es) without samples: c, d" in warnings
    assert len(report.errors) == 5
    assert "min 0, median 40, max 300" in report.text() and "1 sample(s) have data up to frame 300" in report.text()
    assert check_main([str(d)]) == 1
    capsys.readouterr()


def test_checker_layout_inconsistency(tmp_path, capsys):
    rng = np.random.default_rng(2)
    lay = LAYOUTS["openpose18"].to_dict()          # 18 joints, arrays have 20
    d = _write_prepared(tmp_path / "lay", {"train": (_clean(2, rng), ["a", "b"], [0, 0])}, lay, ["x"])
    report = check_prepared(d)
    assert any("layout 'openpose18' has 18 joints" in e for e in report.errors)
    broken = dict(_ucla(), center=30)
    d2 = _write_prepared(tmp_path / "lay2", {"train": (_clean(2, rng), ["a", "b"], [0, 0])}, broken, ["x"])
    assert check_main([str(d2)]) == 1
    assert "manifest.json: layout: center: expected a joint index in 0..19" in capsys.readouterr().out
    assert check_main([str(tmp_path)]) == 2  # not a prepared folder: usage error naming the sub-folders
    assert "its sub-folders lay, lay2 are prepared" in capsys.readouterr().err


def test_checker_on_raw_pyskl_input(standin_data, tmp_path, capsys):
    with open(standin_data / "pyskl" / "example_UCF101_skeleton.pkl", "rb") as f:
        ann = pickle.load(f)
    bad = ann["keypoint"].copy()
    bad[0, 3, 2, 0] = np.inf
    anns = [dict(ann, frame_dir="a", label=0), dict(ann, frame_dir="b", label=5),
            dict(ann, frame_dir="c", label=1, keypoint=bad), dict(ann, frame_dir="d", label=1, total_frames=400,
                                                                  keypoint=np.concatenate([ann["keypoint"]] * 3, 1),
                                                                  keypoint_score=np.concatenate(
                                                                      [ann["keypoint_score"]] * 3, 1))]
    f = tmp_path / "raw.pkl"
    with open(f, "wb") as fh:
        pickle.dump({"split": {"train": ["a", "b", "c"], "val": ["d"]}, "annotations": anns,
                     "classes": ["one", "two"]}, fh)
    assert check_main(["pyskl", "--raw", str(f)]) == 1
    out = capsys.readouterr().out
    assert "label 5 out of range 0..1" in out                       # label outside the class list
    assert "non-finite (NaN/inf) keypoint coordinates" in out       # unreadable sample named
    assert "val: 1 sample(s) longer than T=300: 189 frames past T dropped (d)" in out
    assert not (tmp_path / "manifest.json").exists()
    with open(f, "wb") as fh:  # a sample in both splits: the reader refuses the whole input
        pickle.dump({"split": {"train": ["a"], "val": ["a"]}, "annotations": anns[:1]}, fh)
    assert check_main(["pyskl", "--raw", str(f)]) == 1
    assert "the pyskl reader refuses this input:" in capsys.readouterr().out


def test_prepare_says_what_it_cut_and_skipped(standin_data, tmp_path, caplog):
    with open(standin_data / "pyskl" / "example_UCF101_skeleton.pkl", "rb") as f:
        ann = pickle.load(f)
    long = dict(ann, frame_dir="long", keypoint=np.concatenate([ann["keypoint"]] * 2, 1),
                keypoint_score=np.concatenate([ann["keypoint_score"]] * 2, 1))
    broken = dict(ann, frame_dir="broken", keypoint=ann["keypoint"][0])  # 3-D keypoint array
    f = tmp_path / "a.pkl"
    with open(f, "wb") as fh:
        pickle.dump({"split": {"train": ["long", "broken"], "val": ["long2"]},
                     "annotations": [long, broken, dict(long, frame_dir="long2")]}, fh)
    caplog.set_level("INFO")
    assert run_prepare("pyskl", "--raw", f, "--out", tmp_path / "out", "--skip-bad") == 0
    assert "train: 1 of 1 samples were longer than 300 frames: 26 frames past frame 300 were dropped " \
           "(longest 326 frames)" in caplog.text
    assert "skipped 1 sample(s): " in caplog.text and "'keypoint' must be an array" in caplog.text


def test_older_manifests_with_a_layout_name_still_read():
    from amanet_fast.data.manifest import ManifestError, manifest_layout

    assert manifest_layout({"layout": "ntu25"}) == LAYOUTS["ntu25"]
    with pytest.raises(ManifestError, match="layout: 'kinect19' is not a built-in layout"):
        manifest_layout({"layout": "kinect19"}, "/d")
