"""`python -m amanet_fast.predict` and `Predictor`: raw files give exactly the scores the
training evaluation gave for the same clips, streams fuse like the ensemble, bad input
is one `error:` line with exit 2."""
from __future__ import annotations

import json
import pickle

import numpy as np

from amanet_fast import Predictor
from amanet_fast.ensemble import fuse
from amanet_fast.predict import main


def _scores(work_dir):
    with open(work_dir / "scores_val.pkl", "rb") as fh:
        return pickle.load(fh)


def test_cli_on_raw_clips_reproduces_training_scores(trained, tmp_path, capsys):
    files = trained.raw_val()[:3]
    out = tmp_path / "preds.json"
    rc = main(["--checkpoint", str(trained.joint / "latest.pt"), "--topk", "3", "--json", str(out),
               *map(str, files)])
    printed = capsys.readouterr().out
    assert rc == 0
    doc = json.loads(out.read_text())
    scores = _scores(trained.joint)
    assert [p["name"] for p in doc["predictions"]] == [f.name for f in files]
    for p in doc["predictions"]:
        ref = scores[p["name"]]  # the eval of train.py: prepared arrays, centre clip, same weights
        assert len(p["topk"]) == 3
        order = np.argsort(-ref, kind="stable")[:3]
        assert [t["label"] for t in p["topk"]] == order.tolist()
        assert np.allclose([t["probability"] for t in p["topk"]], ref[order], atol=2e-6)
        assert p["topk"][0]["class"] in {"wave", "clap", "jump", "squat", "kick", "walk"}  # names from the manifest
        assert p["name"] in printed and p["topk"][0]["class"] in printed


def test_npy_sample_and_fused_streams_match_ensemble(trained, tmp_path):
    data = np.load(trained.data / "val_data_joint.npy", mmap_mode="r")
    with open(trained.data / "val_label.pkl", "rb") as fh:
        names, _ = pickle.load(fh)
    i = 5
    npy = tmp_path / "clip.npy"
    np.save(npy, np.asarray(data[i])[:, :120])  # shorter than 300 frames: zero-padded like prepared data

    single = Predictor(trained.joint / "latest.pt")
    (pred,) = single.predict(npy, topk=6)
    assert np.allclose(pred.probabilities, _scores(trained.joint)[names[i]], atol=2e-6)

    weights = [0.6, 0.4]
    both = Predictor([trained.joint / "latest.pt", trained.bone / "latest.pt"], weights)
    assert [tm.stream for tm in both.models] == ["joint", "bone"]
    stacked = np.stack([[_scores(trained.joint)[names[i]]], [_scores(trained.bone)[names[i]]]]).astype(np.float64)
    expected = fuse(stacked, weights)[0] / sum(weights)
    got = both.predict(np.asarray(data[i]))
    assert np.allclose(got.probabilities, expected, atol=2e-6)
    assert abs(got.probabilities.sum() - 1) < 1e-6
    assert not np.allclose(_scores(trained.joint)[names[i]], _scores(trained.bone)[names[i]], atol=1e-4)


def test_real_kinetics_clips_read_as_prepare_reads_them(trained, standin_data, tmp_path):
    from amanet_fast.data.prepare import main as prepare_main

    raw = standin_data / "kinetics_raw"
    assert prepare_main(["kinetics", "--raw", str(raw), "--out", str(tmp_path / "prep"), "--no-progress"]) == 0
    prepared = np.load(tmp_path / "prep" / "val_data_joint.npy")
    with open(tmp_path / "prep" / "val_label.pkl", "rb") as fh:
        names, _ = pickle.load(fh)
    p = Predictor(trained.joint / "latest.pt")
    from_raw = p.predict_files([raw / n for n in names], topk=1)
    from_prepared = p.predict_arrays(list(prepared))
    assert [r.name for r in from_raw] == list(names)
    assert np.allclose(np.stack([r.probabilities for r in from_raw]), from_prepared, atol=1e-7)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_bad_inputs_are_one_line_errors(trained, standin_data, tmp_path, capsys):
    ckpt = ["--checkpoint", str(trained.joint / "latest.pt")]
    ntu = standin_data / "ntu_raw" / "S001C001P001R001A001.skeleton"
    assert "a ntu25 skeleton, but the checkpoint's model expects openpose18" in _error(capsys, [*ckpt, str(ntu)])
    ucla = sorted((standin_data / "nw_ucla" / "all_sqe").glob("*.json"))[0]
    assert "a ucla20 skeleton" in _error(capsys, [*ckpt, str(ucla)])
    pyskl = standin_data / "pyskl" / "example_UCF101_skeleton.pkl"
    assert "shape (3, 300, 17, 2) does not fit the model: expected (C=3, T, V=18 (openpose18)" in _error(
        capsys, [*ckpt, str(pyskl)])

    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [')
    assert f"{broken}:1: malformed JSON" in _error(capsys, [*ckpt, str(broken)])
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert "unknown file type '.txt'" in _error(capsys, [*ckpt, str(other)])
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((3, 50, 25, 2), np.float32))
    assert "does not fit the model" in _error(capsys, [*ckpt, str(wrong)])

    clip = str(trained.raw_val()[0])
    assert "does not exist" in _error(capsys, ["--checkpoint", str(tmp_path / "none.pt"), clip])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all, just bytes")
    assert "no amanet-fast checksum" in _error(capsys, ["--checkpoint", str(garbage), clip])
    assert "--weights: expected 1 values" in _error(capsys, [clip, *ckpt, "--weights", "1", "2"])
    assert "--topk" in _error(capsys, [*ckpt, "--topk", "0", clip])
