"""Bad inputs to the tools around a trained model: predict (CLI and `Predictor`), export, visualize,
data.check, and prepare's output checks.

Each case ends in one of three outcome classes: "error" (exit 2, one `error:`
line naming the input, no traceback), "finding" (data.check: exit 1, the
report names the file) or "ok" (exit 0 / a result). In every case no file
that existed before the call changed (SHA-256 before and after), and no
pickle ran code. In-process calls; the model is the synthetic demo's
(openpose18, channels x/y/score), trained once for one epoch.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from .bad_inputs import Case, Cases, Ctx, Evil, check_one_error, run_main, train_tiny, write_pickle

KCLIP = "--7VUM9MKg4"
V, C = 18, 3  # the synthetic model's joints and channels


CASES = Cases()
_add = CASES.add


def _npy(c: Ctx, x: np.ndarray, name: str = "clip.npy", allow_pickle: bool = False) -> Path:
    p = c.tmp / name
    np.save(p, x, allow_pickle=allow_pickle)
    return p


def _good(frames: int = 20, persons: int = 2) -> np.ndarray:
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (C, frames, V, persons)).astype(np.float32)
    x[2] = 1.0  # scores
    return x


def _with(fn: Callable[[np.ndarray], Any], frames: int = 20) -> np.ndarray:
    x = _good(frames)
    fn(x)
    return x


def _set(idx, value):
    def f(x):
        x[idx] = value
    return f


# --------------------------------------------------------------------------- arrays: .npy and Predictor.predict

ARRAYS: dict[str, tuple[Callable[[], np.ndarray], str]] = {
    "nan": (lambda: _with(_set((0, 5, 3, 0), np.nan)), "error"),
    "inf": (lambda: _with(_set((1, 2, 0, 1), np.inf)), "error"),
    "neg_inf": (lambda: _with(_set((0, 0, 0, 0), -np.inf)), "error"),
    "value_1e30": (lambda: _with(_set((0, 3, 3, 0), 1e30)), "error"),
    "all_zero": (lambda: np.zeros((C, 20, V, 2), np.float32), "error"),
    "zero_frames": (lambda: np.zeros((C, 0, V, 2), np.float32), "error"),
    "ndim1": (lambda: np.ones(10, np.float32), "error"),
    "ndim3": (lambda: np.ones((C, 20, V), np.float32), "error"),
    "ndim5": (lambda: _good()[None], "error"),
    "two_channels": (lambda: _good()[:2], "error"),
    "four_channels": (lambda: np.concatenate([_good(), _good()[:1]]), "error"),
    "25_joints": (lambda: np.ones((C, 20, 25, 2), np.float32), "error"),
    "no_person_slot": (lambda: np.ones((C, 20, V, 0), np.float32), "error"),
    "three_persons": (lambda: np.ones((C, 20, V, 3), np.float32), "error"),
    "bool_dtype": (lambda: np.ones((C, 20, V, 2), bool), "error"),
    "complex_dtype": (lambda: _good().astype(np.complex64), "error"),
    "string_dtype": (lambda: np.full((C, 20, V, 2), "a"), "error"),
    "ok_short": (lambda: _good(20), "ok"),
    "ok_one_person": (lambda: _good(20, 1), "ok"),
    "ok_int_dtype": (lambda: (_good(20) * 100).astype(np.int32), "ok"),
    "ok_400_frames": (lambda: _good(400), "ok"),
    "ok_float64": (lambda: _good(30).astype(np.float64), "ok"),
}


def _npy_case(make):
    def build(c):
        p = _npy(c, make())
        return ["--checkpoint", c.ckpt, p], p
    return build


def _api_case(make):
    def build(c):
        x = make()
        return (lambda: c.predictor.predict(x)), "array"
    return build


for _name, (_make, _expect) in ARRAYS.items():
    _add(f"npy_{_name}", "predict", _npy_case(_make), _expect)
    _add(f"api_{_name}", "api", _api_case(_make), _expect)


def _api_not_array(c):
    return (lambda: c.predictor.predict([[1.0, 2.0]])), "array"


_add("api_list_not_array", "api", _api_not_array)


def _npy_bytes(data: bytes, name: str = "clip.npy"):
    def build(c):
        p = c.tmp / name
        p.write_bytes(data)
        return ["--checkpoint", c.ckpt, p], p
    return build


def _npy_truncated(c):
    p = _npy(c, _good(50))
    p.write_bytes(p.read_bytes()[:300])
    return ["--checkpoint", c.ckpt, p], p


def _npy_object(c):
    p = _npy(c, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return ["--checkpoint", c.ckpt, p], p


def _npy_evil(c):
    p = c.tmp / "evil.npy"
    write_pickle(p, Evil(c.marker))
    return ["--checkpoint", c.ckpt, p], p


def _npz_named_npy(c):
    p = c.tmp / "clip.npy"
    with open(p, "wb") as fh:
        np.savez(fh, x=_good())
    return ["--checkpoint", c.ckpt, p], p


def _npy_directory(c):
    p = c.tmp / "dir.npy"
    p.mkdir()
    return ["--checkpoint", c.ckpt, p], p


def _npy_missing(c):
    return ["--checkpoint", c.ckpt, c.tmp / "nothing.npy"], c.tmp / "nothing.npy"


for _name, _build in {"npy_truncated": _npy_truncated, "npy_object_dtype": _npy_object, "npy_evil_pickle": _npy_evil,
                      "npz_named_npy": _npz_named_npy, "npy_is_directory": _npy_directory,
                      "npy_missing": _npy_missing, "npy_random_bytes": _npy_bytes(os.urandom(512)),
                      "npy_empty_file": _npy_bytes(b"")}.items():
    _add(_name, "predict", _build)


# --------------------------------------------------------------------------- raw clips through predict

def _kin_doc(c: Ctx) -> dict:
    return json.loads((c.shared / "kinetics_raw" / f"{KCLIP}.json").read_text())


def _clip_edit(fn, expect: str = "error"):
    def build(c):
        doc = _kin_doc(c)
        fn(doc)
        p = c.tmp / "clip.json"
        p.write_text(json.dumps(doc))
        return ["--checkpoint", c.ckpt, p], p
    return build


def _clip_text(text: str | bytes):
    def build(c):
        p = c.tmp / "clip.json"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["--checkpoint", c.ckpt, p], p
    return build


def _first_pose(doc):
    return next(fr["skeleton"][0] for fr in doc["data"] if fr["skeleton"])


def _scores_zero(doc):
    for fr in doc["data"]:
        for s in fr["skeleton"]:
            s["score"] = [0.0] * len(s["score"])


def _pose_strings(doc):
    _first_pose(doc)["pose"] = [str(v) for v in _first_pose(doc)["pose"]]


def _big_value(doc):
    _first_pose(doc)["pose"][0] = 1e39


def _clip_5000_digits(c):
    text = (c.shared / "kinetics_raw" / f"{KCLIP}.json").read_text()
    p = c.tmp / "clip.json"
    p.write_text(text.replace('"pose": [', '"pose": [' + "7" * 5000 + ", ", 1))
    return ["--checkpoint", c.ckpt, p], p


def _clip_nan_literal(c):
    text = (c.shared / "kinetics_raw" / f"{KCLIP}.json").read_text()
    p = c.tmp / "clip.json"
    p.write_text(text.replace('"pose": [', '"pose": [NaN, ', 1))
    return ["--checkpoint", c.ckpt, p], p


def _ucla_clip(c):
    src = c.shared / "nw_ucla" / "all_sqe" / "a01_s01_e00_v01.json"
    p = c.tmp / src.name
    p.write_bytes(src.read_bytes())
    return ["--checkpoint", c.ckpt, p], p, "ucla20"


def _ntu_clip(c):
    src = c.shared / "ntu_raw" / "S001C001P001R001A001.skeleton"
    p = c.tmp / src.name
    p.write_bytes(src.read_bytes())
    return ["--checkpoint", c.ckpt, p], p, "ntu25"


def _pyskl_ann(c, kp: np.ndarray, score: bool) -> Path:
    ann = {"frame_dir": "a", "label": 0, "keypoint": kp, "total_frames": kp.shape[1], "img_shape": (480, 640)}
    if score:
        ann["keypoint_score"] = np.ones(kp.shape[:3], np.float32)
    return write_pickle(c.tmp / "ann.pkl", {"split": {"val": ["a"]}, "annotations": [ann]})


def _pyskl_3d(c):
    kp = np.random.default_rng(1).uniform(0.1, 1, (1, 30, V, 3)).astype(np.float32)
    p = _pyskl_ann(c, kp, False)
    return ["--checkpoint", c.ckpt, p], p, "3D keypoints"


def _pyskl_2d_ok(c):
    kp = np.random.default_rng(1).uniform(10, 400, (1, 30, V, 2)).astype(np.float32)
    p = _pyskl_ann(c, kp, True)
    return ["--checkpoint", c.ckpt, p], p


def _pyskl_evil(c):
    p = write_pickle(c.tmp / "ann.pkl", Evil(c.marker))
    return ["--checkpoint", c.ckpt, p], p


def _unknown_suffix(c):
    p = c.tmp / "clip.txt"
    p.write_text("1 2 3")
    return ["--checkpoint", c.ckpt, p], p


def _kin_ok(c):
    p = c.tmp / "clip.json"
    p.write_bytes((c.shared / "kinetics_raw" / f"{KCLIP}.json").read_bytes())
    return ["--checkpoint", c.ckpt, p], p


RAW = {
    "json_truncated": _clip_text('{"data": [{"frame_index": 1, "skeleton": ['),
    "json_5000_digit_number": _clip_5000_digits,
    "json_nested_deeply": _clip_text("[" * 100000 + "]" * 100000),
    "json_not_utf8": _clip_text(b'{"data": [], "label": "\xff\xfe"}'),
    "json_top_level_list": _clip_text("[1, 2, 3]"),
    "json_no_data_key": _clip_text('{"label": "x"}'),
    "json_nan_literal": _clip_nan_literal,
    "json_value_1e39": _clip_edit(_big_value),
    "json_no_frames": _clip_edit(lambda d: d.update(data=[])),
    "json_all_scores_zero": _clip_edit(_scores_zero),
    "json_pose_strings": _clip_edit(_pose_strings),
    "ucla_clip_for_openpose_model": _ucla_clip,
    "ntu_clip_for_openpose_model": _ntu_clip,
    "pyskl_3d_for_2d_model": _pyskl_3d,
    "pyskl_evil_pickle": _pyskl_evil,
    "pyskl_random_bytes": _npy_bytes(os.urandom(300), "ann.pkl"),
    "unknown_suffix": _unknown_suffix,
    "checkpoint_random_bytes": lambda c: (["--checkpoint", _bytes(c, "ck.pt", os.urandom(400)), _npy(c, _good())],
                                          c.tmp / "ck.pt"),
    "checkpoint_missing": lambda c: (["--checkpoint", c.tmp / "no.pt", _npy(c, _good())], c.tmp / "no.pt"),
}


def _bytes(c: Ctx, name: str, data: bytes) -> Path:
    p = c.tmp / name
    p.write_bytes(data)
    return p


for _name, _build in RAW.items():
    _add(_name, "predict", _build)
_add("pyskl_2d_ok", "predict", _pyskl_2d_ok, "ok")
_add("kinetics_clip_ok", "predict", _kin_ok, "ok")


# --------------------------------------------------------------------------- output paths

def _json_out(target: Callable[[Ctx, Path], Path], expect: str = "error"):
    def build(c):
        clip = _kin_ok(c)[1]
        out = target(c, clip)
        return ["--checkpoint", c.ckpt, "--json", out, clip], out
    return build


def _symlink_to(c: Ctx, src: Path, name: str) -> Path:
    link = c.tmp / name
    link.symlink_to(src)
    return link


def _under_file(c: Ctx, _clip: Path) -> Path:
    f = c.tmp / "plainfile"
    f.write_text("x")
    return f / "preds.json"


def _unwritable(c: Ctx, _clip: Path) -> Path:
    d = c.tmp / "locked"
    d.mkdir()
    real = os.access
    c.monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == d else real(p, mode, **k))
    return d / "preds.json"


def _existing_dir(c: Ctx, _clip: Path) -> Path:
    d = c.tmp / "preds.json"
    d.mkdir()
    return d


OUTPUTS = {
    "json_is_the_input": lambda c, clip: clip,
    "json_is_symlink_to_input": lambda c, clip: _symlink_to(c, clip, "link.json"),
    "json_is_the_checkpoint": lambda c, clip: c.ckpt,
    "json_is_existing_dir": _existing_dir,
    "json_under_a_file": _under_file,
    "json_parent_unwritable": _unwritable,
}
for _name, _target in OUTPUTS.items():
    _add(f"predict_{_name}", "predict", _json_out(_target))
_add("predict_json_new_file_ok", "predict", _json_out(lambda c, clip: c.tmp / "new" / "preds.json"), "ok")


def _ck_copy(c: Ctx) -> Path:
    p = c.tmp / "ck.pt"
    p.write_bytes(c.ckpt.read_bytes())
    return p


def _export(out: Callable[[Ctx, Path], Path], *extra: str):
    def build(c):
        ck = _ck_copy(c)
        o = out(c, ck)
        where = "--opset" if extra else o
        return ["onnx", "--checkpoint", ck, "--out", o, "--no-check", *extra], where
    return build


EXPORTS = {
    "export_out_is_checkpoint": _export(lambda c, ck: ck),
    "export_out_is_symlink_to_checkpoint": _export(lambda c, ck: _symlink_to(c, ck, "model.onnx")),
    "export_out_is_existing_dir": _export(lambda c, ck: _existing_dir(c, ck)),
    "export_out_under_a_file": _export(_under_file),
    "export_opset_5": _export(lambda c, ck: c.tmp / "m.onnx", "--opset", "5"),
    "export_opset_1000": _export(lambda c, ck: c.tmp / "m.onnx", "--opset", "1000"),
}
for _name, _build in EXPORTS.items():
    _add(_name, "export", _build)


def _viz(out: Callable[[Ctx, Path, Path], Path]):
    def build(c):
        ck, clip = _ck_copy(c), _kin_ok(c)[1]
        o = out(c, ck, clip)
        return ["attention", "--checkpoint", ck, "--sample", clip, "--out", o], o
    return build


_add("visualize_out_is_checkpoint", "visualize", _viz(lambda c, ck, clip: ck))
_add("visualize_out_is_sample", "visualize", _viz(lambda c, ck, clip: clip))
_add("visualize_out_is_a_file", "visualize", _viz(lambda c, ck, clip: _bytes(c, "notes.txt", b"mine")))


def _kin_raw(c: Ctx) -> Path:
    raw = c.tmp / "kin"
    raw.mkdir()
    for f in (c.shared / "kinetics_raw").iterdir():
        (raw / f.name).symlink_to(f)
    return raw


def _prep(out: Callable[[Ctx, Path], Path]):
    def build(c):
        raw = _kin_raw(c)
        o = out(c, raw)
        return ["kinetics", "--raw", raw, "--out", o], o
    return build


def _pyskl_prep(out: Callable[[Ctx, Path, Path], Path]):
    def build(c):
        raw = _pyskl_2d_ok(c)[1]
        lay = _bytes(c, "layout.json", json.dumps({"name": "l18", "num_joints": V,
                                                   "edges": [[i, i + 1] for i in range(V - 1)],
                                                   "center": 0}).encode())
        o = out(c, raw, lay)
        return ["pyskl", "--raw", raw, "--layout", lay, "--out", o], o
    return build


PREPARES = {
    "prepare_out_is_raw": _prep(lambda c, raw: raw),
    "prepare_out_inside_raw": _prep(lambda c, raw: raw / "prepared"),
    "prepare_out_inside_raw_via_symlink": _prep(lambda c, raw: _symlink_to(c, raw, "rawlink") / "p"),
    "prepare_out_is_raw_pickle": _pyskl_prep(lambda c, raw, lay: raw),
    "prepare_out_is_layout_file": _pyskl_prep(lambda c, raw, lay: lay),
}
for _name, _build in PREPARES.items():
    _add(_name, "prepare", _build)


def _layout_text(text: str):
    def build(c):
        raw = _pyskl_2d_ok(c)[1]
        lay = _bytes(c, "layout.json", text.encode())
        return ["pyskl", "--raw", raw, "--layout", lay, "--out", c.tmp / "out"], lay
    return build


_add("layout_num_joints_1e12", "prepare", _layout_text(json.dumps(
    {"name": "huge", "num_joints": 10**12, "edges": [[0, 1]], "center": 0})))
_add("layout_nested_deeply", "prepare", _layout_text("[" * 100000 + "]" * 100000))
_add("layout_5000_digit_number", "prepare", _layout_text('{"name": "x", "num_joints": ' + "9" * 5000 + "}"))


# --------------------------------------------------------------------------- data.check on damaged prepared data

def _checked(damage: Callable[[Ctx, Path], Path]):
    def build(c):
        d = c.tmp / "prepared"
        shutil.copytree(c.syn, d, ignore=shutil.ignore_patterns("raw", ".lock"))
        return [d], damage(c, d)
    return build


def _truncate(name: str):
    def damage(c, d):
        p = d / name
        p.write_bytes(p.read_bytes()[:40])
        return p
    return damage


def _replace(name: str, data: Callable[[Ctx], bytes]):
    def damage(c, d):
        p = d / name
        p.write_bytes(data(c))
        return p
    return damage


def _object_array(c, d):
    p = d / "val_data_joint.npy"
    np.save(p, np.array([None, {"x": 1}], dtype=object), allow_pickle=True)
    return p


def _manifest_edit(fn):
    def damage(c, d):
        p = d / "manifest.json"
        m = json.loads(p.read_text())
        fn(m)
        p.write_text(json.dumps(m))
        return p
    return damage


def _evil_labels(c, d):
    return write_pickle(d / "val_label.pkl", Evil(c.marker))


CHECKS = {
    "check_truncated_array": _truncate("val_data_joint.npy"),
    "check_random_bytes_array": _replace("val_data_joint.npy", lambda c: os.urandom(400)),
    "check_object_dtype_array": _object_array,
    "check_random_bytes_label_pickle": _replace("val_label.pkl", lambda c: os.urandom(200)),
    "check_truncated_label_pickle": _truncate("val_label.pkl"),
    "check_evil_label_pickle": _evil_labels,
    "check_label_pickle_3_tuple": lambda c, d: write_pickle(d / "val_label.pkl", (["a"], [0], [1])),
    "check_manifest_not_utf8": _replace("manifest.json", lambda c: b'{"kind": "\xff"}'),
    "check_manifest_is_list": _replace("manifest.json", lambda c: b"[1, 2]"),
    "check_manifest_truncated": _truncate("manifest.json"),
    "check_manifest_no_num_classes": _manifest_edit(lambda m: m.pop("num_classes")),
    "check_manifest_more_names_than_classes": _manifest_edit(lambda m: m.update(num_classes=2)),
}
for _name, _damage in CHECKS.items():
    _add(_name, "check", _checked(_damage), "finding")
_add("check_manifest_class_count_raised_ok", "check",
     _checked(_manifest_edit(lambda m: m.update(num_classes=len(m["classes"]) + 2))), "ok")


# --------------------------------------------------------------------------- harness

@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, Path, Any]:
    from amanet_fast.predict import Predictor

    syn, ckpt = train_tiny(tmp_path_factory.mktemp("tools"), "--amp", "off")
    return syn, ckpt, Predictor(ckpt)


def _main(cli: str):
    if cli == "predict":
        from amanet_fast.predict import main
    elif cli == "export":
        from amanet_fast.export import main
    elif cli == "visualize":
        from amanet_fast.visualize import main
    elif cli == "check":
        from amanet_fast.data.check import main
    else:
        from amanet_fast.data.prepare import main
    return main


def _hashes(*roots: Path) -> dict[Path, str]:
    out = {}
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        for p in files:
            out[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_tool_input(case: Case, model, standin_data, tmp_path, monkeypatch, capsys) -> None:
    from amanet_fast.data.errors import DataFormatError

    syn, ckpt, predictor = model
    c = Ctx(tmp=tmp_path, shared=standin_data, syn=syn, ckpt=ckpt, monkeypatch=monkeypatch, predictor=predictor)
    built = case.build(c)
    target, where = built[0], str(built[1])
    extra = built[2:]
    before = _hashes(tmp_path, ckpt, syn, standin_data / "kinetics_raw")
    if case.cli == "api":
        try:
            target()
            rc, text = 0, ""
        except DataFormatError as err:
            rc, text = 2, f"error: {err}"
    else:
        rc = run_main(_main(case.cli), target)
        out = capsys.readouterr()
        text = out.err + out.out
    monkeypatch.undo()
    assert not c.marker.exists(), "a pickle ran code"
    assert "Traceback" not in text
    after = _hashes(*before.keys()) if all(p.is_file() for p in before) else None
    assert after == before, "an input file changed or vanished"
    if case.expect == "ok":
        assert rc == 0, text[-600:]
    elif case.expect == "finding":
        assert rc == 1 and where in text, text[-600:]
    else:
        check_one_error(rc, [line for line in text.splitlines() if line.startswith("error:")], where, extra, text)


def test_corpus_size() -> None:
    assert len(CASES) >= 100, len(CASES)
