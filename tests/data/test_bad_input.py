"""Every kind of broken input stops with one clear line naming the file, and leaves nothing complete."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import amanet_fast.data.engine as engine_mod
from amanet_fast.data import DataFormatError

from .helpers import assert_nothing_complete, load_prepared, manifest, run_prepare

NAME = "S001C001P001R001A001.skeleton"


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


def _fail_ntu(raw: Path, out: Path, capsys, *extra: str) -> str:
    code = run_prepare("ntu60", "--split", "xsub", "--raw", raw, "--out", out, *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    assert_nothing_complete(out)
    return err[-1]


# --------------------------------------------------------------------------- NTU


def test_truncated_skeleton(ntu_copy: Path, tmp_path: Path, capsys) -> None:
    f = ntu_copy / NAME
    _write(f, _lines(f)[:1000])
    msg = _fail_ntu(ntu_copy, tmp_path / "out", capsys)
    assert f"{f}:1001:" in msg and "truncated" in msg


def test_frame_count_inconsistent(ntu_copy: Path, tmp_path: Path, capsys) -> None:
    f = ntu_copy / NAME
    lines = _lines(f)
    lines[0] = str(int(lines[0]) - 2)  # header promises fewer frames than the file holds
    _write(f, lines)
    msg = _fail_ntu(ntu_copy, tmp_path / "out", capsys)
    first_extra = 1 + int(lines[0]) * (1 + 2 + 25) + 1  # header, then per one-body frame: count, info, 25 joints
    assert str(f) in msg and "inconsistent" in msg and f":{first_extra}:" in msg


def test_wrong_joint_count(ntu_copy: Path, tmp_path: Path, capsys) -> None:
    f = ntu_copy / NAME
    lines = _lines(f)
    assert lines[3].strip() == "25"
    lines[3] = "24"
    _write(f, lines)
    msg = _fail_ntu(ntu_copy, tmp_path / "out", capsys)
    assert f"{f}:4:" in msg and "wrong joint count 24" in msg


@pytest.mark.parametrize("bad", ["nan", "inf", "abc"])
def test_bad_coordinate(ntu_copy: Path, tmp_path: Path, capsys, bad: str) -> None:
    f = ntu_copy / NAME
    lines = _lines(f)
    fields = lines[10].split()
    fields[1] = bad
    lines[10] = " ".join(fields)
    _write(f, lines)
    msg = _fail_ntu(ntu_copy, tmp_path / "out", capsys)
    assert f"{f}:11:" in msg
    assert ("non-finite" in msg) if bad != "abc" else ("non-numeric" in msg)


def test_sample_without_any_skeleton(ntu_copy: Path, tmp_path: Path, capsys) -> None:
    f = ntu_copy / NAME
    _write(f, ["3", "0", "0", "0"])
    msg = _fail_ntu(ntu_copy, tmp_path / "out", capsys)
    assert str(f) in msg and "no skeleton in any frame" in msg and "--ignore-list" in msg


def test_out_of_range_label(ntu_copy: Path, tmp_path: Path, capsys) -> None:
    (ntu_copy / NAME).rename(ntu_copy / "S001C001P001R001A061.skeleton")
    msg = _fail_ntu(ntu_copy, tmp_path / "out", capsys)
    assert "A061" in msg and "out of range" in msg


def test_empty_directory(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    msg = _fail_ntu(tmp_path / "empty", tmp_path / "out", capsys)
    assert "no .skeleton files" in msg and str(tmp_path / "empty") in msg


def test_skip_bad_lists_file_and_shrinks(ntu_copy: Path, tmp_path: Path) -> None:
    f = ntu_copy / NAME
    _write(f, _lines(f)[:500])
    out = tmp_path / "out"
    assert run_prepare("ntu60", "--split", "xsub", "--raw", ntu_copy, "--out", out, "--skip-bad") == 0
    m = manifest(out)
    assert m["counts"] == {"train": 4, "val": 2}
    assert len(m["skipped"]) == 1 and m["skipped"][0]["file"] == str(f) and m["skipped"][0]["line"] == 501
    data, names, _ = load_prepared(out, "train")
    assert data.shape[0] == 4 and NAME not in names


def test_failed_rerun_keeps_previous_dataset(ntu_copy: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert run_prepare("ntu60", "--split", "xsub", "--raw", ntu_copy, "--out", out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    f = ntu_copy / NAME
    _write(f, _lines(f)[:10])
    assert run_prepare("ntu60", "--split", "xsub", "--raw", ntu_copy, "--out", out) == 2
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() or p.is_dir()}
    assert after == before  # untouched, and no temp dir left behind


def test_interrupted_run_leaves_nothing(ntu_copy: Path, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = engine_mod._load_guarded

    def flaky(load, sample):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(load, sample)

    monkeypatch.setattr(engine_mod, "_load_guarded", flaky)
    out = tmp_path / "out"
    assert run_prepare("ntu60", "--split", "xsub", "--raw", ntu_copy, "--out", out) == 130
    assert_nothing_complete(out)


def test_cli_subprocess_exit_code_no_traceback(ntu_copy: Path, tmp_path: Path) -> None:
    f = ntu_copy / NAME
    _write(f, _lines(f)[:100])
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "amanet_fast.data.prepare", "ntu60", "--split", "xsub",
                           "--raw", str(ntu_copy), "--out", str(tmp_path / "out")],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {f}:101:")


# --------------------------------------------------------------------------- Kinetics


def _fail_kinetics(raw: Path, out: Path, capsys) -> str:
    code = run_prepare("kinetics", "--raw", raw, "--out", out)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ")
    assert_nothing_complete(out)
    return err[-1]


def test_malformed_json(kinetics_copy: Path, tmp_path: Path, capsys) -> None:
    f = kinetics_copy / "--07WQ2iBlw.json"
    text = f.read_text()
    f.write_text(text[: len(text) // 2])
    msg = _fail_kinetics(kinetics_copy, tmp_path / "out", capsys)
    assert str(f) in msg and "malformed JSON" in msg
    line = int(msg.split(str(f) + ":")[1].split(":")[0])
    assert line > 1


def _edit_clip(path: Path, fn) -> None:
    video = json.loads(path.read_text())
    fn(video)
    path.write_text(json.dumps(video))


def _first_person(video: dict) -> dict:
    return next(fr["skeleton"][0] for fr in video["data"] if fr["skeleton"])


def test_wrong_pose_length(kinetics_copy: Path, tmp_path: Path, capsys) -> None:
    f = kinetics_copy / "--7VUM9MKg4.json"
    _edit_clip(f, lambda v: _first_person(v).__setitem__("pose", _first_person(v)["pose"][:34]))
    msg = _fail_kinetics(kinetics_copy, tmp_path / "out", capsys)
    assert str(f) in msg and "'pose' must be a list of 36 numbers, got 34" in msg


def test_nan_score(kinetics_copy: Path, tmp_path: Path, capsys) -> None:
    f = kinetics_copy / "--7VUM9MKg4.json"
    _edit_clip(f, lambda v: _first_person(v)["score"].__setitem__(3, float("nan")))  # json writes NaN
    msg = _fail_kinetics(kinetics_copy, tmp_path / "out", capsys)
    assert str(f) in msg and "non-finite" in msg


def test_missing_and_out_of_range_label(kinetics_copy: Path, tmp_path: Path, capsys) -> None:
    table_path = kinetics_copy / "my_val_label.json"
    table = json.loads(table_path.read_text())
    del table["--33Lscn6sk"]
    table_path.write_text(json.dumps(table))
    msg = _fail_kinetics(kinetics_copy, tmp_path / "out", capsys)
    assert "--33Lscn6sk.json" in msg and "missing label" in msg

    table["--33Lscn6sk"] = {"has_skeleton": True, "label": "x", "label_index": 400}
    table_path.write_text(json.dumps(table))
    msg = _fail_kinetics(kinetics_copy, tmp_path / "out2", capsys)
    assert "--33Lscn6sk.json" in msg and "label 400 out of range 0..399" in msg


def test_label_disagreement(kinetics_copy: Path, tmp_path: Path, capsys) -> None:
    f = kinetics_copy / "--7goKgS4kc.json"
    _edit_clip(f, lambda v: v.__setitem__("label_index", 3))
    msg = _fail_kinetics(kinetics_copy, tmp_path / "out", capsys)
    assert str(f) in msg and "disagrees" in msg


def test_no_kinetics_data(tmp_path: Path, capsys) -> None:
    (tmp_path / "raw").mkdir()
    msg = _fail_kinetics(tmp_path / "raw", tmp_path / "out", capsys)
    assert "no Kinetics data found" in msg


# --------------------------------------------------------------------------- NW-UCLA / pyskl


def _mini_ucla(shared: Path, dst: Path, names: list[str]) -> Path:
    (dst / "all_sqe").mkdir(parents=True)
    for n in names:
        (dst / "all_sqe" / f"{n}.json").write_bytes((shared / "nw_ucla" / "all_sqe" / f"{n}.json").read_bytes())
    return dst


def test_ucla_wrong_joint_count(standin_data: Path, tmp_path: Path, capsys) -> None:
    raw = _mini_ucla(standin_data, tmp_path / "ucla", ["a01_s01_e00_v01", "a01_s01_e00_v03"])
    f = raw / "all_sqe" / "a01_s01_e00_v01.json"
    doc = json.loads(f.read_text())
    doc["skeletons"] = [frame[:19] for frame in doc["skeletons"]]
    f.write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert run_prepare("ucla", "--raw", raw, "--out", out) == 2
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(f) in msg and "wrong joint count" in msg
    assert_nothing_complete(out)


def test_ucla_label_out_of_range(standin_data: Path, tmp_path: Path, capsys) -> None:
    raw = _mini_ucla(standin_data, tmp_path / "ucla", ["a01_s01_e00_v01", "a01_s01_e00_v03"])
    f = raw / "all_sqe" / "a01_s01_e00_v03.json"
    doc = json.loads(f.read_text())
    doc["label"] = 11
    f.write_text(json.dumps(doc))
    out = tmp_path / "out"
    assert run_prepare("ucla", "--raw", raw, "--out", out) == 2
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(f) in msg and "out of range" in msg
    assert_nothing_complete(out)


def test_truncated_pyskl_pickle(standin_data: Path, tmp_path: Path, capsys) -> None:
    f = tmp_path / "ann.pkl"
    f.write_bytes((standin_data / "pyskl" / "example_UCF101_skeleton.pkl").read_bytes()[:5000])
    out = tmp_path / "out"
    assert run_prepare("pyskl", "--raw", f, "--out", out) == 2
    msg = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(f) in msg and "cannot unpickle" in msg
    assert_nothing_complete(out)


def test_pyskl_nan_and_joint_count(standin_data: Path, tmp_path: Path, capsys) -> None:
    with open(standin_data / "pyskl" / "example_UCF101_skeleton.pkl", "rb") as fh:
        ann = pickle.load(fh)
    nan_kp = ann["keypoint"].astype(np.float32)
    nan_kp[0, 5, 3, 1] = np.nan
    cases = (("nan", dict(ann, keypoint=nan_kp), "non-finite"),
             ("v16", dict(ann, keypoint=ann["keypoint"][:, :, :16], keypoint_score=ann["keypoint_score"][:, :, :16]),
              "16 joints (2D): which joint is which cannot be told from the count; pass --layout"))
    for name, bad, expect in cases:
        f = tmp_path / f"{name}.pkl"
        with open(f, "wb") as fh:
            pickle.dump(bad, fh)
        out = tmp_path / f"out_{name}"
        assert run_prepare("pyskl", "--raw", f, "--out", out) == 2
        msg = capsys.readouterr().err.strip().splitlines()[-1]
        assert str(f) in msg and expect in msg
        assert_nothing_complete(out)


def test_error_type_is_valueerror() -> None:
    err = DataFormatError("bad", "/x/y.skeleton", 7)
    assert isinstance(err, ValueError) and str(err) == "/x/y.skeleton:7: bad"


def test_prepared_arrays_reserve_their_blocks(tmp_path: Path) -> None:
    """A full disk must fail when the array is created (an OSError), not later as SIGBUS inside the memory map."""
    from amanet_fast.data.io import PreparedWriter

    with PreparedWriter(tmp_path / "out") as writer:
        arr = writer.open_data("train", (4, 3, 300, 25, 2))
        path = writer.tmp_dir / "train_data_joint.npy"
        st = path.stat()
        assert st.st_blocks * 512 >= st.st_size  # allocated, not a sparse file
        del arr
