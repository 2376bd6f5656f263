"""Own data as plain per-clip arrays: prepare arrays -> train one tiny epoch -> predict on a .csv clip."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from amanet_fast.data.prepare import main as prepare_main
from amanet_fast.graphs import LAYOUTS

V = LAYOUTS["ucla20"].num_joints  # a built-in 3D layout with DP parts


def _clip(rng: np.random.Generator, label: int, frames: int) -> np.ndarray:
    """(T, V, 3): a random pose swinging at a class-dependent rate, metres in front of a camera."""
    pose = rng.normal(0, 0.3, (V, 3)) + np.array([0.0, 0.0, 3.0])
    t = np.arange(frames)[:, None, None] / 30
    return pose + 0.1 * np.sin(2 * np.pi * (1 + 2 * label) * t + rng.random((1, V, 3)))


def _write_csv(path: Path, x: np.ndarray, person_axis: bool) -> None:
    """x (M, T, V, 3) -> the documented CSV: frame[,person], then joint-major coordinates."""
    head = ["frame"] + (["person"] if person_axis else []) + [f"j{j}_{c}" for j in range(V) for c in "xyz"]
    rows = [",".join(head)]
    for t in range(x.shape[1]):
        for m in range(x.shape[0] if person_axis else 1):
            lead = [str(t + 5)] + ([str(m)] if person_axis else [])  # frame numbers need not start at 0
            rows.append(",".join(lead + [f"{v:.6f}" for v in x[m, t].ravel()]))
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory) -> Path:
    """12 clips of 2 classes in all four clip forms, labels 1-based as many tools write them."""
    raw = tmp_path_factory.mktemp("own") / "clips"
    (raw / "c").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = ["file,label,split"]
    for i in range(12):
        label, split = i % 2, ("train" if i < 8 else "val")
        x = _clip(rng, label, int(rng.integers(30, 50)))[None]
        if i % 4 == 1:
            x = np.concatenate([x, x + 0.5])  # two persons
        form = i % 4
        name = f"c/clip{i:02d}" + (".npy" if form in (0, 1) else ".csv")
        if form == 0:
            np.save(raw / name, x[0])                       # (T, V, C)
        elif form == 1:
            np.save(raw / name, x)                          # (M, T, V, C)
        else:
            _write_csv(raw / name, x, person_axis=form == 3)
        lines.append(f"{name},{label + 1},{split}")
    (raw / "labels.csv").write_text("\n".join(lines) + "\n")
    return raw


def test_prepare_reads_every_clip_form_and_says_labels_are_1_based(own_folder, tmp_path, caplog):
    caplog.set_level("INFO")
    out = tmp_path / "p"
    assert prepare_main(["arrays", "--raw", str(own_folder), "--layout", "ucla20", "--out", str(out)]) == 0
    assert "1-based (smallest label 1, no 0): every label lowered by 1" in caplog.text
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "arrays" and m["counts"] == {"train": 8, "val": 4} and m["channels"] == ["x", "y", "z"]
    data = np.load(out / "train_data_joint.npy")
    with open(out / "train_label.pkl", "rb") as f:
        names, labels = pickle.load(f)
    assert labels == [i % 2 for i in range(8)] and names[0] == "c/clip00"
    # The CSV clip (frame numbers from 5) holds the same numbers as the npy it was written from.
    x3 = _csv_back(own_folder / "c/clip03.csv")
    np.testing.assert_allclose(data[3, :, :x3.shape[1], :, :x3.shape[0]], x3.transpose(3, 1, 2, 0), atol=1e-5)
    assert data[1, ..., 1].any() and not data[0, ..., 1].any()  # second person only where there is one


def _csv_back(path: Path) -> np.ndarray:
    rows = np.loadtxt(path, delimiter=",", skiprows=1)
    T, M = int(rows[:, 0].max() - rows[:, 0].min() + 1), int(rows[:, 1].max() + 1)  # frame, person columns
    return rows[:, 2:].reshape(T, M, V, 3).transpose(1, 0, 2, 3)


@pytest.mark.parametrize("labels, csv_text, want", [
    ("file,label\nc/a.npy,1\n", None, "labels.csv:1: header row must name the columns file,label,split; missing split"),
    ("file,label,split\nc/a.npy,1,test\n", None, "labels.csv:2: split must be train or val, got 'test'"),
    ("file,label,split\nc/a.npy,jump,train\nc/b.npy,2,val\n", None, "labels.csv:3: labels mix integers and class"),
    ("file,label,split\nc/a.txt,1,train\n", None, "labels.csv:2: 'c/a.txt': clips must be .npy or .csv"),
    ("file,label,split\nc/a.csv,1,train\n", "frame,x,y\n0,1,2\n", "a.csv:1: 2 coordinate columns; the layout's 20 "
     "joints need 40 (x, y) or 60 (x, y, z), joint-major"),
    ("file,label,split\nc/a.csv,1,train\n", "frame," + ",".join(["x"] * 60) + "\n0," + ",".join(["oops"] * 60) + "\n",
     "a.csv:2: non-numeric value 'oops'"),
    ("file,label,split\nc/a.csv,1,train\n", "frame," + ",".join(["x"] * 60) + "\n3," + ",".join(["1"] * 60)
     + "\n1," + ",".join(["1"] * 60) + "\n", "a.csv:3: frame 1 after frame 3: rows must be in frame order"),
])
def test_bad_own_folders_are_one_line_errors(tmp_path, capsys, labels, csv_text, want):
    raw = tmp_path / "raw"
    (raw / "c").mkdir(parents=True)
    np.save(raw / "c" / "a.npy", np.ones((10, V, 3)))
    np.save(raw / "c" / "b.npy", np.ones((10, V, 3)))
    if csv_text is not None:
        (raw / "c" / "a.csv").write_text(csv_text)
    (raw / "labels.csv").write_text(labels)
    assert prepare_main(["arrays", "--raw", str(raw), "--layout", "ucla20", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and want in err[-1], err[-1]


def test_arrays_without_layout_names_the_flag(own_folder, tmp_path, capsys):
    assert prepare_main(["arrays", "--raw", str(own_folder), "--out", str(tmp_path / "o")]) == 2
    assert "error: --layout is required for arrays" in capsys.readouterr().err


@pytest.mark.slow
def test_prepare_train_predict_on_a_csv_clip(own_folder, tmp_path, capsys):
    from amanet_fast.predict import main as predict_main
    from amanet_fast.training.cli import main as train_main

    data = tmp_path / "data"
    assert prepare_main(["arrays", "--raw", str(own_folder), "--layout", "ucla20", "--out", str(data)]) == 0
    wd = tmp_path / "wd"
    assert train_main(["--data-root", str(data), "--preset", "tiny", "train.epochs=1", "runtime.threads=1",
                       "runtime.tensorboard=false", "--work-dir", str(wd)]) == 0
    capsys.readouterr()
    out_json = tmp_path / "preds.json"
    assert predict_main(["--checkpoint", str(wd / "latest.pt"), "--topk", "2", "--json", str(out_json),
                         str(own_folder / "c/clip10.csv"), str(own_folder / "c/clip08.npy")]) == 0
    preds = json.loads(out_json.read_text())
    text = json.dumps(preds)
    assert "clip10.csv" in text and "clip08.npy" in text
    # The clip as predict reads it is the clip as prepare wrote it.
    from amanet_fast.predict import Predictor

    p = Predictor([wd / "latest.pt"])
    got = p.read(own_folder / "c/clip10.csv")[0].data
    val = np.load(data / "val_data_joint.npy")
    np.testing.assert_array_equal(got, val[2])
