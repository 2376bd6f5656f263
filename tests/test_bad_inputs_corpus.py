"""A corpus of bad inputs through the real CLIs (prepare, train.py, --eval-only, ensemble).

Every case must end in one line `...error: WHERE...` naming the offending file or
argument, exit code 2, no traceback and no finished output; or, where the input
is legitimately odd, exit 0 with a printed warning. The CLIs run in-process
(`main(argv)`) so the whole table takes seconds; `test_real_subprocesses_*`
checks a few of them as real processes.

Each case builds its input in a fresh temp dir and returns the argv, the text
the error line must name, and optionally more text the output must (or, with
a leading "!", must not) contain.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .bad_inputs import TINY, Case, Cases, Ctx, Evil, check_one_error, run_main, train_tiny, write_pickle

REPO = Path(__file__).resolve().parents[1]
CASES = Cases()
case = CASES.case


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def _read_only(c: Ctx, directory: Path) -> None:
    """`directory` refuses to be created or written (root ignores chmod, so refuse at mkdir)."""
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if Path(self) == directory:
            raise PermissionError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real(self, *a, **k)

    c.monkeypatch.setattr(Path, "mkdir", mkdir)


def _unreadable(c: Ctx, target: Path) -> None:
    """Reading `target` fails with EACCES (root ignores chmod 000, so refuse at open)."""
    import builtins
    import io

    real_open = builtins.open

    def guarded(file, *a, **k):
        if isinstance(file, (str, os.PathLike)) and Path(file) == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real_open(file, *a, **k)

    c.monkeypatch.setattr(builtins, "open", guarded)
    c.monkeypatch.setattr(io, "open", guarded)  # what pathlib calls


def _enospc(c: Ctx) -> None:
    """A full disk: every space reservation and free-space query says there is no room."""
    def no_space(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    c.monkeypatch.setattr(os, "posix_fallocate", no_space, raising=False)
    c.monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))


# --------------------------------------------------------------------------- prepare: Kinetics

KCLIP = "--7VUM9MKg4"


def _kin(c: Ctx) -> Path:
    return _copy(c.shared / "kinetics_raw", c.tmp / "kin")


def _kin_edit(c: Ctx, fn, clip: str = KCLIP) -> tuple[list[str], Path]:
    raw = _kin(c)
    f = raw / f"{clip}.json"
    doc = json.loads(f.read_text())
    fn(doc)
    f.write_text(json.dumps(doc))
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], f


def _person(doc: dict) -> dict:
    return next(fr["skeleton"][0] for fr in doc["data"] if fr["skeleton"])


def _frame(doc: dict) -> dict:
    return next(fr for fr in doc["data"] if fr["skeleton"])


def _kin_label(c: Ctx, fn) -> tuple[list[str], Path]:
    raw = _kin(c)
    f = raw / "my_val_label.json"
    table = json.loads(f.read_text())
    fn(table)
    f.write_text(json.dumps(table))
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], f


def _kin_bytes(c: Ctx, data: bytes, clip: str = KCLIP) -> tuple[list[str], Path]:
    raw = _kin(c)
    f = raw / f"{clip}.json"
    f.write_bytes(data)
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], f


@case("prepare")
def k_truncated_json(c):
    raw = _kin(c)
    f = raw / f"{KCLIP}.json"
    f.write_text(f.read_text()[:3000])
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], f"{f}:"


@case("prepare")
def k_pose_one_element_lists(c):
    return _kin_edit(c, lambda d: _person(d).__setitem__("pose", [[v] for v in _person(d)["pose"]]))


@case("prepare")
def k_pose_numbers_as_strings(c):
    return _kin_edit(c, lambda d: _person(d).__setitem__("pose", [str(v) for v in _person(d)["pose"]]))


@case("prepare")
def k_score_bool(c):
    return _kin_edit(c, lambda d: _person(d)["score"].__setitem__(0, True))


@case("prepare")
def k_deep_nesting(c):
    return _kin_bytes(c, b"[" * 200_000 + b"]" * 200_000)


@case("prepare")
def k_deep_nesting_label_file(c):
    raw = _kin(c)
    f = raw / "my_val_label.json"
    f.write_bytes(b'{"a":' * 100_000 + b"1" + b"}" * 100_000)
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], f


@case("prepare")
def k_clip_is_directory(c):
    raw = _kin(c)
    table = json.loads((raw / "my_val_label.json").read_text())
    table["zdir"] = {"has_skeleton": True, "label": "x", "label_index": 1}
    (raw / "my_val_label.json").write_text(json.dumps(table))
    (raw / "zdir.json").mkdir()
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], raw / "zdir.json"


@case("prepare")
def k_clip_symlink_loop(c):
    raw = _kin(c)
    table = json.loads((raw / "my_val_label.json").read_text())
    table["zloop"] = {"has_skeleton": True, "label": "x", "label_index": 1}
    (raw / "my_val_label.json").write_text(json.dumps(table))
    os.symlink("zloop.json", raw / "zloop.json")
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], raw / "zloop.json"


@case("prepare")
def k_clip_broken_symlink(c):
    raw = _kin(c)
    f = raw / f"{KCLIP}.json"
    f.unlink()
    os.symlink("nowhere.json", f)
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], f


@case("prepare")
def k_clip_unreadable(c):
    raw = _kin(c)
    _unreadable(c, raw / f"{KCLIP}.json")
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], raw / f"{KCLIP}.json"


@case("prepare")
def k_clip_invalid_utf8(c):
    return _kin_bytes(c, b'{"data": [], "label": "\xff\xfe"}')


@case("prepare")
def k_clip_top_level_list(c):
    return _kin_bytes(c, b"[1, 2, 3]")


@case("prepare")
def k_clip_missing_data(c):
    return _kin_edit(c, lambda d: d.pop("data"))


@case("prepare")
def k_label_file_invalid_utf8(c):
    raw = _kin(c)
    f = raw / "my_val_label.json"
    f.write_bytes(f.read_bytes().replace(b'"label"', b'"lab\xffel"', 1))
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], f


@case("prepare")
def k_label_file_is_list(c):
    raw = _kin(c)
    f = raw / "my_val_label.json"
    f.write_text("[1, 2]")
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], f


@case("prepare")
def k_train_label_equals_val(c):
    raw = _kin(c)
    lf = raw / "my_val_label.json"
    return ["kinetics", "--raw", str(raw), "--out", str(c.out), "--train-dir", str(raw), "--val-dir", str(raw),
            "--train-label-file", str(lf), "--val-label-file", str(lf)], "both"


@case("prepare")
def k_repeated_frame_index(c):
    def dup(d):
        d["data"].append(dict(_frame(d)))
    return _kin_edit(c, dup) + ("frame_index",)


@case("prepare")
def k_coordinate_1e30(c):
    return _kin_edit(c, lambda d: _person(d)["pose"].__setitem__(0, 1e30))


@case("prepare")
def k_coordinate_1e39(c):
    return _kin_edit(c, lambda d: _person(d)["pose"].__setitem__(0, 1e39))


@case("prepare")
def k_nan_pose(c):
    return _kin_edit(c, lambda d: _person(d)["pose"].__setitem__(0, float("nan")))


@case("prepare")
def k_empty_clip_no_frames(c):
    return _kin_edit(c, lambda d: d.__setitem__("data", []))


@case("prepare")
def k_clip_without_persons(c):
    return _kin_edit(c, lambda d: [fr.__setitem__("skeleton", []) for fr in d["data"]])


@case("prepare")
def k_all_scores_zero(c):
    def zero(d):
        for fr in d["data"]:
            for p in fr["skeleton"]:
                p["score"] = [0.0] * 18
    return _kin_edit(c, zero)


@case("prepare")
def k_label_index_string(c):
    return _kin_label(c, lambda t: t[KCLIP].__setitem__("label_index", "3"))


@case("prepare")
def k_label_index_bool(c):
    return _kin_label(c, lambda t: t[KCLIP].__setitem__("label_index", True))


@case("prepare")
def k_label_index_negative(c):
    return _kin_label(c, lambda t: t[KCLIP].__setitem__("label_index", -1))


@case("prepare")
def k_label_entry_not_object(c):
    return _kin_label(c, lambda t: t.__setitem__(KCLIP, 5))


@case("prepare")
def k_label_disagrees_with_clip(c):
    return _kin_edit(c, lambda d: d.__setitem__("label_index", 3))


@case("prepare")
def k_all_has_skeleton_false(c):
    def none(t):
        for v in t.values():
            v["has_skeleton"] = False
    args, f = _kin_label(c, none)
    return args, f


@case("prepare")
def k_num_classes_zero(c):
    raw = _kin(c)
    return ["kinetics", "--raw", str(raw), "--out", str(c.out), "--num-classes", "0"], "--num-classes"


@case("prepare")
def k_frame_index_zero(c):
    return _kin_edit(c, lambda d: _frame(d).__setitem__("frame_index", 0))


@case("prepare")
def k_frame_index_float(c):
    return _kin_edit(c, lambda d: _frame(d).__setitem__("frame_index", 1.5))


@case("prepare")
def k_skeleton_not_list(c):
    return _kin_edit(c, lambda d: _frame(d).__setitem__("skeleton", {"pose": []}))


@case("prepare")
def k_person_not_object(c):
    return _kin_edit(c, lambda d: _frame(d)["skeleton"].__setitem__(0, [1, 2]))


@case("prepare")
def k_score_wrong_length(c):
    return _kin_edit(c, lambda d: _person(d).__setitem__("score", _person(d)["score"][:17]))


@case("prepare")
def k_train_label_file_missing(c):
    raw = _kin(c)
    return ["kinetics", "--raw", str(raw), "--out", str(c.out), "--train-label-file", str(raw / "nope.json"),
            "--train-dir", str(raw)], raw / "nope.json"


@case("prepare")
def k_val_dir_missing(c):
    raw = _kin(c)
    return ["kinetics", "--raw", str(raw), "--out", str(c.out), "--val-dir", str(raw / "nodir"),
            "--val-label-file", str(raw / "my_val_label.json")], raw / "nodir"


@case("prepare")
def k_raw_missing(c):
    return ["kinetics", "--raw", str(c.tmp / "nothing"), "--out", str(c.out)], c.tmp / "nothing"


@case("prepare")
def k_out_is_a_file(c):
    raw = _kin(c)
    out = c.tmp / "outfile"
    out.write_text("x")
    return ["kinetics", "--raw", str(raw), "--out", str(out)], out


@case("prepare")
def k_out_inside_a_file(c):
    raw = _kin(c)
    f = c.tmp / "outfile"
    f.write_text("x")
    return ["kinetics", "--raw", str(raw), "--out", str(f / "sub")], f


@case("prepare")
def k_out_read_only(c):
    raw = _kin(c)
    _read_only(c, c.out)
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], c.out


@case("prepare")
def k_disk_full(c):
    raw = _kin(c)
    _enospc(c)
    return ["kinetics", "--raw", str(raw), "--out", str(c.out)], c.out


# --------------------------------------------------------------------------- prepare: NTU

NNAME = "S001C001P001R001A001.skeleton"


def _ntu(c: Ctx) -> Path:
    return _copy(c.shared / "ntu_raw", c.tmp / "ntu")


def _ntu_args(raw: Path, c: Ctx, *extra: str) -> list[str]:
    return ["ntu60", "--split", "xsub", "--raw", str(raw), "--out", str(c.out), *extra]


def _ntu_lines(c: Ctx, fn, name: str = NNAME) -> tuple[list[str], Path]:
    raw = _ntu(c)
    f = raw / name
    lines = f.read_text().splitlines()
    lines = fn(lines) or lines
    f.write_text("\n".join(lines) + "\n")
    return _ntu_args(raw, c), f


def _set_field(lines: list[str], lineno: int, k: int, value: str) -> None:
    fields = lines[lineno].split()
    fields[k] = value
    lines[lineno] = " ".join(fields)


@case("prepare")
def n_directory_named_skeleton(c):
    raw = _ntu(c)
    d = raw / "S001C001P002R001A002.skeleton"
    d.mkdir()
    return _ntu_args(raw, c), d


@case("prepare")
def n_symlink_loop(c):
    raw = _ntu(c)
    d = raw / "S001C001P002R001A002.skeleton"
    os.symlink(d.name, d)
    return _ntu_args(raw, c), d


@case("prepare")
def n_broken_symlink(c):
    raw = _ntu(c)
    d = raw / "S001C001P002R001A002.skeleton"
    os.symlink("gone.skeleton", d)
    return _ntu_args(raw, c), d


@case("prepare")
def n_unreadable_file(c):
    raw = _ntu(c)
    _unreadable(c, raw / NNAME)
    return _ntu_args(raw, c), raw / NNAME


@case("prepare")
def n_ignore_list_invalid_utf8(c):
    raw = _ntu(c)
    f = c.tmp / "ignore.txt"
    f.write_bytes(b"S001C001P001R001A011\n\xff\xfe\n")
    return _ntu_args(raw, c, "--ignore-list", str(f)), f


@case("prepare")
def n_ignore_list_is_directory(c):
    raw = _ntu(c)
    d = c.tmp / "ignoredir"
    d.mkdir()
    return _ntu_args(raw, c, "--ignore-list", str(d)), d


@case("prepare")
def n_ignore_list_missing(c):
    raw = _ntu(c)
    return _ntu_args(raw, c, "--ignore-list", str(c.tmp / "none.txt")), c.tmp / "none.txt"


@case("prepare")
def n_label_map_invalid_utf8(c):
    raw = _ntu(c)
    f = raw / "label_map_ntu60.txt"
    f.write_bytes(f.read_bytes() + b"\xff\n")
    return _ntu_args(raw, c), f


@case("prepare")
def n_label_map_wrong_count(c):
    raw = _ntu(c)
    f = raw / "label_map_ntu60.txt"
    f.write_text("\n".join(f.read_text().splitlines()[:59]) + "\n")
    return _ntu_args(raw, c), f


@case("prepare")
def n_truncated(c):
    return _ntu_lines(c, lambda ls: ls[:1000])


@case("prepare")
def n_wrong_joint_count(c):
    return _ntu_lines(c, lambda ls: ls.__setitem__(3, "24"))


@case("prepare")
def n_nan_coordinate(c):
    return _ntu_lines(c, lambda ls: _set_field(ls, 10, 1, "nan"))


@case("prepare")
def n_non_numeric_coordinate(c):
    return _ntu_lines(c, lambda ls: _set_field(ls, 10, 1, "abc"))


@case("prepare")
def n_coordinate_1e30(c):
    return _ntu_lines(c, lambda ls: _set_field(ls, 10, 1, "1e30"))


@case("prepare")
def n_joint_line_11_values(c):
    return _ntu_lines(c, lambda ls: ls.__setitem__(10, " ".join(ls[10].split()[:11])))


@case("prepare")
def n_empty_file(c):
    return _ntu_lines(c, lambda ls: [""])


@case("prepare")
def n_zero_frames(c):
    return _ntu_lines(c, lambda ls: ["0"])


@case("prepare")
def n_negative_frames(c):
    return _ntu_lines(c, lambda ls: ["-5"])


@case("prepare")
def n_body_count_text(c):
    return _ntu_lines(c, lambda ls: ls.__setitem__(1, "one"))


@case("prepare")
def n_body_info_wrong(c):
    return _ntu_lines(c, lambda ls: ls.__setitem__(2, "1 2 3"))


@case("prepare")
def n_trailing_data(c):
    return _ntu_lines(c, lambda ls: ls + ["1", "2"])


@case("prepare")
def n_no_skeleton(c):
    return _ntu_lines(c, lambda ls: ["3", "0", "0", "0"])


@case("prepare")
def n_all_joints_zero(c):
    def zero(ls):
        for i, line in enumerate(ls):
            if len(line.split()) == 12:
                ls[i] = " ".join(["0"] * 12)
    return _ntu_lines(c, zero)


@case("prepare")
def n_binary_garbage(c):
    raw = _ntu(c)
    f = raw / NNAME
    f.write_bytes(bytes(range(256)) * 4)
    return _ntu_args(raw, c), f


@case("prepare")
def n_bad_file_name(c):
    raw = _ntu(c)
    f = raw / "foo.skeleton"
    shutil.copy(raw / NNAME, f)
    return _ntu_args(raw, c), f


@case("prepare")
def n_action_out_of_range(c):
    raw = _ntu(c)
    f = raw / "S001C001P001R001A061.skeleton"
    (raw / NNAME).rename(f)
    return _ntu_args(raw, c), f


@case("prepare")
def n_split_bogus(c):
    return ["ntu60", "--split", "xfoo", "--raw", str(_ntu(c)), "--out", str(c.out)], "--split"


@case("prepare")
def n_split_empty(c):
    # (no --split at all is valid: it prepares every benchmark of the dataset)
    return ["ntu60", "--split", "", "--raw", str(_ntu(c)), "--out", str(c.out)], "--split"


@case("prepare")
def n_raw_is_a_file(c):
    raw = _ntu(c)
    return _ntu_args(raw / NNAME, c), raw / NNAME


@case("prepare")
def n_empty_directory(c):
    d = c.tmp / "empty"
    d.mkdir()
    return _ntu_args(d, c), d


@case("prepare")
def n_out_is_a_file(c):
    raw = _ntu(c)
    out = c.tmp / "outfile"
    out.write_text("x")
    return ["ntu60", "--split", "xsub", "--raw", str(raw), "--out", str(out)], out


@case("prepare")
def n_disk_full(c):
    raw = _ntu(c)
    _enospc(c)
    return _ntu_args(raw, c), c.out


@case("prepare")
def n_workers_zero(c):
    return _ntu_args(_ntu(c), c, "--workers", "0"), "--workers"


# --------------------------------------------------------------------------- prepare: NW-UCLA

U_TRAIN, U_VAL = "a01_s01_e00_v01", "a01_s01_e00_v03"


def _ucla(c: Ctx, with_val_pkl: bool = False) -> Path:
    raw = c.tmp / "ucla"
    (raw / "all_sqe").mkdir(parents=True)
    for n in (U_TRAIN, U_VAL):
        shutil.copy(c.shared / "nw_ucla" / "all_sqe" / f"{n}.json", raw / "all_sqe" / f"{n}.json")
    return raw


def _ucla_edit(c: Ctx, fn, name: str = U_TRAIN) -> tuple[list[str], Path]:
    raw = _ucla(c)
    f = raw / "all_sqe" / f"{name}.json"
    doc = json.loads(f.read_text())
    doc = fn(doc) or doc
    f.write_text(json.dumps(doc))
    return ["ucla", "--raw", str(raw), "--out", str(c.out)], f


def _ucla_bytes(c: Ctx, data: bytes) -> tuple[list[str], Path]:
    raw = _ucla(c)
    f = raw / "all_sqe" / f"{U_TRAIN}.json"
    f.write_bytes(data)
    return ["ucla", "--raw", str(raw), "--out", str(c.out)], f


def _ucla_val_pkl(c: Ctx, obj: Any) -> tuple[list[str], Path]:
    raw = _ucla(c)
    f = write_pickle(raw / "val_label.pkl", obj)
    return ["ucla", "--raw", str(raw), "--out", str(c.out)], f


@case("prepare")
def u_label_zero(c):
    return _ucla_edit(c, lambda d: d.__setitem__("label", 0)) + ("label 0", "!label -1")


@case("prepare")
def u_label_bool(c):
    return _ucla_edit(c, lambda d: d.__setitem__("label", True))


@case("prepare")
def u_label_string(c):
    return _ucla_edit(c, lambda d: d.__setitem__("label", "1"))


@case("prepare")
def u_label_eleven(c):
    return _ucla_edit(c, lambda d: d.__setitem__("label", 11))


@case("prepare")
def u_label_missing(c):
    return _ucla_edit(c, lambda d: d.pop("label"))


@case("prepare")
def u_wrong_joint_count(c):
    return _ucla_edit(c, lambda d: d.__setitem__("skeletons", [fr[:19] for fr in d["skeletons"]]))


@case("prepare")
def u_no_frames(c):
    return _ucla_edit(c, lambda d: d.__setitem__("skeletons", []))


@case("prepare")
def u_skeletons_missing(c):
    return _ucla_edit(c, lambda d: d.pop("skeletons"))


@case("prepare")
def u_numbers_as_strings(c):
    return _ucla_edit(c, lambda d: d.__setitem__("skeletons", [[[str(v) for v in j] for j in fr]
                                                               for fr in d["skeletons"]]))


@case("prepare")
def u_ragged(c):
    return _ucla_edit(c, lambda d: d["skeletons"][3].pop())


@case("prepare")
def u_nan(c):
    return _ucla_edit(c, lambda d: d["skeletons"][2][3].__setitem__(1, float("nan")))


@case("prepare")
def u_coordinate_1e30(c):
    return _ucla_edit(c, lambda d: d["skeletons"][2][3].__setitem__(1, 1e30))


@case("prepare")
def u_all_zero_skeleton(c):
    return _ucla_edit(c, lambda d: d.__setitem__("skeletons", [[[0.0] * 3] * 20] * 10))


@case("prepare")
def u_deep_nesting(c):
    return _ucla_bytes(c, b"[" * 200_000 + b"]" * 200_000)


@case("prepare")
def u_invalid_utf8(c):
    return _ucla_bytes(c, b'{"label": 1, "x": "\xff"}')


@case("prepare")
def u_document_is_list(c):
    return _ucla_bytes(c, b"[1, 2]")


@case("prepare")
def u_val_label_3tuple(c):
    return _ucla_val_pkl(c, (1, 2, 3))


@case("prepare")
def u_val_label_crafted(c):
    return _ucla_val_pkl(c, [Evil(c.marker)])


@case("prepare")
def u_val_label_random_bytes(c):
    raw = _ucla(c)
    f = raw / "val_label.pkl"
    f.write_bytes(os.urandom(300))
    return ["ucla", "--raw", str(raw), "--out", str(c.out)], f


@case("prepare")
def u_val_label_disagrees_with_view(c):
    return _ucla_val_pkl(c, [{"file_name": U_TRAIN, "label": 1}, {"file_name": U_VAL, "label": 1}])


@case("prepare")
def u_all_sqe_missing(c):
    raw = c.tmp / "ucla_empty"
    raw.mkdir()
    return ["ucla", "--raw", str(raw), "--out", str(c.out)], raw


@case("prepare")
def u_bad_file_name(c):
    raw = _ucla(c)
    f = raw / "all_sqe" / "walk.json"
    shutil.copy(raw / "all_sqe" / f"{U_TRAIN}.json", f)
    return ["ucla", "--raw", str(raw), "--out", str(c.out)], f


@case("prepare")
def u_directory_named_json(c):
    raw = _ucla(c)
    d = raw / "all_sqe" / "a02_s01_e00_v01.json"
    d.mkdir()
    return ["ucla", "--raw", str(raw), "--out", str(c.out)], d


@case("prepare")
def u_all_bad_with_skip_bad(c):
    raw = _ucla(c)
    for n in (U_TRAIN, U_VAL):
        (raw / "all_sqe" / f"{n}.json").write_text('{"label": 1, "skeletons": []}')
    return ["ucla", "--raw", str(raw), "--out", str(c.out), "--skip-bad"], raw / "all_sqe"


# --------------------------------------------------------------------------- prepare: pyskl

def _ann(c: Ctx) -> dict:
    with open(c.shared / "pyskl" / "example_UCF101_skeleton.pkl", "rb") as fh:
        return pickle.load(fh)


def _pyskl(c: Ctx, obj: Any, *extra: str) -> tuple[list[str], Path]:
    f = write_pickle(c.tmp / "ann.pkl", obj)
    return ["pyskl", "--raw", str(f), "--out", str(c.out), *extra], f


def _pyskl_one(c: Ctx, **changes: Any) -> tuple[list[str], Path]:
    ann = _ann(c)
    ann.update(changes)
    for k, v in list(changes.items()):
        if v is KeyError:
            del ann[k]
    return _pyskl(c, ann)


def _two(c: Ctx) -> tuple[dict, dict]:
    a = _ann(c)
    b = dict(a, frame_dir="v_other", label=1)
    return a, b


@case("prepare")
def p_crafted_reduce(c):
    return _pyskl(c, {"annotations": [Evil(c.marker)]})


@case("prepare")
def p_crafted_inside_annotation(c):
    ann = _ann(c)
    ann["extra"] = Evil(c.marker)
    return _pyskl(c, ann)


@case("prepare")
def p_truncated(c):
    f = c.tmp / "ann.pkl"
    f.write_bytes((c.shared / "pyskl" / "example_UCF101_skeleton.pkl").read_bytes()[:5000])
    return ["pyskl", "--raw", str(f), "--out", str(c.out)], f


@case("prepare")
def p_random_bytes(c):
    f = c.tmp / "ann.pkl"
    f.write_bytes(os.urandom(2000))
    return ["pyskl", "--raw", str(f), "--out", str(c.out)], f


@case("prepare")
def p_img_shape_text(c):
    return _pyskl_one(c, img_shape="256x340", original_shape="256x340")


@case("prepare")
def p_img_shape_one_value(c):
    return _pyskl_one(c, img_shape=(256,), original_shape=(256,))


@case("prepare")
def p_img_shape_negative(c):
    return _pyskl_one(c, img_shape=(-256, 340), original_shape=(-256, 340))


@case("prepare")
def p_img_shape_nan(c):
    return _pyskl_one(c, img_shape=(float("nan"), 340), original_shape=(float("nan"), 340))


@case("prepare")
def p_name_twice_in_split(c):
    a, b = _two(c)
    return _pyskl(c, {"split": {"train": [a["frame_dir"], a["frame_dir"]], "val": [b["frame_dir"]]},
                      "annotations": [a, b]}) + (a["frame_dir"],)


@case("prepare")
def p_name_in_both_splits(c):
    a, b = _two(c)
    return _pyskl(c, {"split": {"train": [a["frame_dir"], b["frame_dir"]], "val": [a["frame_dir"]]},
                      "annotations": [a, b]}) + (a["frame_dir"],)


@case("prepare")
def p_two_annotations_one_frame_dir(c):
    a, b = _two(c)
    b["frame_dir"] = a["frame_dir"]
    return _pyskl(c, [a, b]) + (a["frame_dir"],)


@case("prepare")
def p_no_frames(c):
    a = _ann(c)
    return _pyskl_one(c, keypoint=a["keypoint"][:, :0], keypoint_score=a["keypoint_score"][:, :0])


@case("prepare")
def p_no_persons(c):
    a = _ann(c)
    return _pyskl_one(c, keypoint=a["keypoint"][:0], keypoint_score=a["keypoint_score"][:0])


@case("prepare")
def p_keypoint_strings(c):
    return _pyskl_one(c, keypoint=_ann(c)["keypoint"].astype(str))


@case("prepare")
def p_keypoint_object_dtype(c):
    return _pyskl_one(c, keypoint=_ann(c)["keypoint"].astype(object))


@case("prepare")
def p_keypoint_list(c):
    return _pyskl_one(c, keypoint=_ann(c)["keypoint"].tolist())


@case("prepare")
def p_keypoint_3d_dims(c):
    return _pyskl_one(c, keypoint=_ann(c)["keypoint"][0])


@case("prepare")
def p_coordinate_1e30(c):
    kp = _ann(c)["keypoint"].astype(np.float64)
    kp[0, 3, 2, 0] = 1e30
    return _pyskl_one(c, keypoint=kp)


@case("prepare")
def p_nan_score(c):
    s = _ann(c)["keypoint_score"].copy()
    s[0, 1, 1] = np.nan
    return _pyskl_one(c, keypoint_score=s)


@case("prepare")
def p_score_wrong_shape(c):
    return _pyskl_one(c, keypoint_score=_ann(c)["keypoint_score"][:, :5])


@case("prepare")
def p_label_negative(c):
    return _pyskl_one(c, label=-1)


@case("prepare")
def p_label_text(c):
    return _pyskl_one(c, label="0")


@case("prepare")
def p_label_float(c):
    return _pyskl_one(c, label=0.0)


@case("prepare")
def p_label_missing(c):
    return _pyskl_one(c, label=KeyError)


@case("prepare")
def p_frame_dir_missing_in_list(c):
    a, b = _two(c)
    del b["frame_dir"]
    return _pyskl(c, [a, b])


@case("prepare")
def p_annotation_not_dict(c):
    return _pyskl(c, [_ann(c), "junk"])


@case("prepare")
def p_split_not_lists(c):
    a = _ann(c)
    return _pyskl(c, {"split": {"train": "v_ApplyEyeMakeup_g01_c01"}, "annotations": [a]})


@case("prepare")
def p_split_names_absent(c):
    a = _ann(c)
    return _pyskl(c, {"split": {"xsub_train": [a["frame_dir"]]}, "annotations": [a]})


@case("prepare")
def p_split_lists_unknown_name(c):
    a = _ann(c)
    return _pyskl(c, {"split": {"train": [a["frame_dir"], "ghost"]}, "annotations": [a]}) + ("ghost",)


@case("prepare")
def p_empty_annotations(c):
    return _pyskl(c, {"annotations": []})


@case("prepare")
def p_three_tuple(c):
    return _pyskl(c, (1, 2, 3))


@case("prepare")
def p_layout_mismatch(c):
    args, f = _pyskl(c, _ann(c))
    return args + ["--layout", "ntu25"], "--layout"


@case("prepare")
def p_num_classes_too_small(c):
    args, f = _pyskl_one(c, label=3)
    return args + ["--num-classes", "2"], f


@case("prepare")
def p_raw_missing(c):
    return ["pyskl", "--raw", str(c.tmp / "none.pkl"), "--out", str(c.out)], c.tmp / "none.pkl"


@case("prepare")
def p_raw_is_directory(c):
    return ["pyskl", "--raw", str(c.tmp), "--out", str(c.out)], c.tmp


@case("prepare")
def p_mixed_joint_counts(c):
    a, b = _two(c)
    b["keypoint"] = b["keypoint"][:, :, :16]
    b["keypoint_score"] = b["keypoint_score"][:, :, :16]
    return _pyskl(c, [a, b])


@case("prepare")
def p_disk_full(c):
    _enospc(c)
    return _pyskl(c, _ann(c))[0], c.out


# --------------------------------------------------------------------------- train.py on broken prepared data

def _train_args(c: Ctx, root: Path, *extra: str) -> list[str]:
    return [*TINY, "--work-dir", str(c.tmp / "wd"), f"data.root={root}", *extra]


def _bad_data(c: Ctx, fn) -> tuple[list[str], Any]:
    root = _copy(c.syn, c.tmp / "data")
    where = fn(root)
    return _train_args(c, root), where


@case("train")
def d_truncated_npy(c):
    def f(root):
        p = root / "val_data_joint.npy"
        p.write_bytes(p.read_bytes()[:5000])
        return p
    return _bad_data(c, f)


@case("train")
def d_random_bytes_npy(c):
    def f(root):
        p = root / "val_data_joint.npy"
        p.write_bytes(os.urandom(4096))
        return p
    return _bad_data(c, f) + ("!allow_pickle",)


@case("train")
def d_object_npy(c):
    def f(root):
        p = root / "val_data_joint.npy"
        with open(p, "wb") as fh:
            np.save(fh, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return p
    return _bad_data(c, f) + ("!allow_pickle",)


@case("train")
def d_all_nan_array(c):
    def f(root):
        p = root / "train_data_joint.npy"
        a = np.load(p)
        a[:] = np.nan
        np.save(p, a)
        return p
    return _bad_data(c, f)


@case("train")
def d_wrong_ndim_npy(c):
    def f(root):
        p = root / "val_data_joint.npy"
        np.save(p, np.zeros((12, 3), np.float32))
        return p
    return _bad_data(c, f)


@case("train")
def d_truncated_manifest(c):
    def f(root):
        p = root / "manifest.json"
        p.write_text(p.read_text()[:40])
        return p
    return _bad_data(c, f)


@case("train")
def d_manifest_without_layout(c):
    def f(root):
        p = root / "manifest.json"
        m = json.loads(p.read_text())
        del m["layout"]
        p.write_text(json.dumps(m))
        return p
    return _bad_data(c, f) + ("layout",)


@case("train")
def d_manifest_is_list(c):
    def f(root):
        p = root / "manifest.json"
        p.write_text("[1, 2]")
        return p
    return _bad_data(c, f)


@case("train")
def d_manifest_num_classes_text(c):
    def f(root):
        p = root / "manifest.json"
        m = json.loads(p.read_text())
        m["num_classes"] = "six"
        p.write_text(json.dumps(m))
        return p
    return _bad_data(c, f) + ("num_classes",)


@case("train")
def d_manifest_invalid_utf8(c):
    def f(root):
        p = root / "manifest.json"
        p.write_bytes(p.read_bytes().replace(b'"layout"', b'"lay\xffout"'))
        return p
    return _bad_data(c, f)


@case("train")
def d_label_pickle_3tuple(c):
    def f(root):
        return write_pickle(root / "val_label.pkl", (["a"], [1], [2]))
    return _bad_data(c, f)


@case("train")
def d_label_pickle_crafted(c):
    def f(root):
        return write_pickle(root / "val_label.pkl", (["a"], [Evil(c.marker)]))
    return _bad_data(c, f)


@case("train")
def d_label_pickle_truncated(c):
    def f(root):
        p = root / "val_label.pkl"
        p.write_bytes(p.read_bytes()[:20])
        return p
    return _bad_data(c, f)


@case("train")
def d_label_out_of_range(c):
    def f(root):
        p = root / "val_label.pkl"
        with open(p, "rb") as fh:
            names, labels = pickle.load(fh)
        labels[0] = 99
        return write_pickle(p, (names, labels))
    return _bad_data(c, f)


@case("train")
def d_label_text(c):
    def f(root):
        p = root / "val_label.pkl"
        with open(p, "rb") as fh:
            names, labels = pickle.load(fh)
        labels[0] = "walk"
        return write_pickle(p, (names, labels))
    return _bad_data(c, f)


@case("train")
def d_label_count_mismatch(c):
    def f(root):
        p = root / "val_label.pkl"
        with open(p, "rb") as fh:
            names, labels = pickle.load(fh)
        write_pickle(p, (names[:-1], labels[:-1]))
        return root  # the count disagrees with the array next to it: the message names the folder
    return _bad_data(c, f)


# --------------------------------------------------------------------------- train.py: config and work dir

def _train_cfg(c: Ctx, *extra: str) -> list[str]:
    return _train_args(c, c.syn, *extra)


def _override_case(key: str, value: str):
    def build(c):
        # model.args.* is checked by building the model: its error names model.args and the values
        return _train_cfg(c, f"{key}={value}"), "model.args" if key.startswith("model.args.") else key
    return build


for _name, _key, _value in [
    ("t_eval_every_zero", "train.eval_every", "0"),
    ("t_eval_every_negative", "train.eval_every", "-2"),
    ("t_threads_negative", "runtime.threads", "-3"),
    ("t_epochs_overflow", "train.epochs", "1e309"),
    ("t_base_lr_nan", "optim.base_lr", ".nan"),
    ("t_base_lr_inf", "optim.base_lr", ".inf"),
    ("t_momentum_negative", "optim.momentum", "-0.5"),
    ("t_weight_decay_negative", "optim.weight_decay", "-1"),
    ("t_label_smoothing_two", "optim.label_smoothing", "2"),
    ("t_grad_clip_negative", "optim.grad_clip", "-1"),
    ("t_lr_gamma_negative", "optim.lr_gamma", "-0.1"),
    ("t_warmup_negative", "optim.warmup_epochs", "-1"),
    ("t_device_unknown", "runtime.device", "banana"),
    ("t_dist_timeout_one_second", "runtime.dist_timeout_s", "1"),
    ("t_dist_timeout_nan", "runtime.dist_timeout_s", ".nan"),
    ("t_stop_after_zero", "train.stop_after_epoch", "0"),
    ("t_eval_batch_negative", "train.eval_batch_size", "-4"),
    ("t_num_workers_negative", "data.num_workers", "-1"),
    ("t_synthetic_num_train_zero", "data.synthetic.num_train", "0"),
    ("t_unknown_key", "optim.base_lrr", "0.1"),
    ("t_wrong_type", "optim.batch_size", "big"),
    ("t_clip_len_zero", "data.clip_len", "0"),
    ("t_holdout_fraction_one", "data.holdout_fraction", "1.0"),
    ("t_lr_steps_decreasing", "optim.lr_steps", "[3, 1]"),
    ("t_model_args_unknown", "model.args.bogus_arg", "1"),
    ("t_model_args_channels_text", "model.args.channels", "wide"),
    ("t_alias_bomb_override", "model.args.x",
     "[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b], "
     "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d], &f [*e,*e,*e,*e,*e,*e,*e,*e,*e], "
     "&g [*f,*f,*f,*f,*f,*f,*f,*f,*f], &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]]"),
]:
    CASES.add(_name, "train", _override_case(_key, _value))


@case("train")
def t_override_without_equals(c):
    return _train_cfg(c, "optim.base_lr"), "optim.base_lr"


@case("train")
def t_override_invalid_yaml(c):
    return _train_cfg(c, "optim.lr_steps=[1,"), "optim.lr_steps"


@case("train")
def t_batch_size_zero(c):
    return _train_cfg(c, "--batch-size", "0"), "optim.batch_size"


@case("train")
def t_amp_fp16_on_cpu(c):
    return _train_cfg(c, "--amp", "fp16"), "fp16"


@case("train")
def t_preset_unknown(c):
    return [a if a != "tiny" else "huge" for a in _train_cfg(c)], "--preset"


@case("train")
def t_config_invalid_utf8(c):
    f = c.tmp / "cfg.yaml"
    f.write_bytes(b"dataset: synthetic\nseed: \xff\n")
    return _train_cfg(c, "--config", str(f)), f


@case("train")
def t_config_is_directory(c):
    return _train_cfg(c, "--config", str(c.tmp)), c.tmp


@case("train")
def t_config_not_mapping(c):
    f = c.tmp / "cfg.yaml"
    f.write_text("- 1\n- 2\n")
    return _train_cfg(c, "--config", str(f)), f


@case("train")
def t_config_alias_bomb(c):
    f = c.tmp / "cfg.yaml"
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [{', '.join(['*' + prev] * 10)}]")
    lines.append("dataset: synthetic")
    f.write_text("\n".join(lines) + "\n")
    return _train_cfg(c, "--config", str(f)), f


@case("train")
def t_config_bad_yaml(c):
    f = c.tmp / "cfg.yaml"
    f.write_text("dataset: [synthetic\n")
    return _train_cfg(c, "--config", str(f)), f


@case("train")
def t_work_dir_is_a_file(c):
    wd = c.tmp / "wdfile"
    wd.write_text("x")
    args = _train_cfg(c)
    args[args.index("--work-dir") + 1] = str(wd)
    return args, wd


@case("train")
def t_data_root_is_a_file(c):
    f = c.tmp / "datafile"
    f.write_text("x")
    return _train_args(c, f), f


@case("train")
def t_ntu_data_missing(c):
    return ["--dataset", "ntu60", "--split", "xsub", "--data-root", str(c.tmp / "nodata"), "--work-dir",
            str(c.tmp / "wd")], c.tmp / "nodata"


@case("train")
def t_latest_symlink_loop(c):
    wd = c.tmp / "wd"
    wd.mkdir()
    os.symlink("latest.pt", wd / "latest.pt")
    return _train_cfg(c), wd / "latest.pt"


@case("train")
def t_latest_random_bytes(c):
    wd = c.tmp / "wd"
    wd.mkdir()
    (wd / "latest.pt").write_bytes(os.urandom(1000))
    return _train_cfg(c), wd / "latest.pt"


@case("train")
def t_resume_weights_do_not_fit(c):
    from amanet_fast.training.checkpoint import load_checkpoint, save_checkpoint

    wd = c.tmp / "wd"
    wd.mkdir()
    state = load_checkpoint(c.ckpt)
    key = next(iter(state["model"]))
    state["model"][key] = state["model"][key][..., :1].clone()
    save_checkpoint(wd / "latest.pt", state)
    return _train_cfg(c), wd / "latest.pt"


@case("train")
def t_resume_different_arch(c):
    wd = c.tmp / "wd"
    wd.mkdir()
    shutil.copy(c.ckpt, wd / "latest.pt")
    return _train_cfg(c, "--arch", "msg3d"), wd / "latest.pt"


@case("train")
def t_work_dir_locked(c):
    from amanet_fast.training.workdir import WorkDirLock

    wd = c.tmp / "wd"
    lock = WorkDirLock.acquire(wd, "another run")
    c.monkeypatch.setattr(c, "lock", lock, raising=False)  # released with the case
    return _train_cfg(c), wd


@case("train")
def t_work_dir_read_only(c):
    _read_only(c, c.tmp / "wd")
    return _train_cfg(c), c.tmp / "wd"


@case("train")
def t_work_dir_disk_full(c):
    import amanet_fast.atomic as atomic

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    c.monkeypatch.setattr(atomic.os, "fsync", full)
    return _train_cfg(c), c.tmp / "wd"


# --------------------------------------------------------------------------- train.py --eval-only

def _eval(c: Ctx, ckpt: Path, *extra: str) -> list[str]:
    return ["--eval-only", "--checkpoint", str(ckpt), f"data.root={c.syn}", "runtime.threads=1",
            "runtime.tensorboard=false", "--work-dir", str(c.tmp / "ev"), *extra]


@case("train")
def e_checkpoint_missing(c):
    return _eval(c, c.tmp / "none.pt"), c.tmp / "none.pt"


@case("train")
def e_checkpoint_random_bytes(c):
    f = c.tmp / "x.pt"
    f.write_bytes(os.urandom(5000))
    return _eval(c, f), f


@case("train")
def e_checkpoint_truncated(c):
    f = c.tmp / "x.pt"
    f.write_bytes(c.ckpt.read_bytes()[:100_000])
    return _eval(c, f), f


@case("train")
def e_checkpoint_is_directory(c):
    d = c.tmp / "x.pt"
    d.mkdir()
    return _eval(c, d), d


@case("train")
def e_checkpoint_symlink_loop(c):
    f = c.tmp / "x.pt"
    os.symlink("x.pt", f)
    return _eval(c, f), f


@case("train")
def e_checkpoint_runs_code(c):
    import io

    import torch
    from amanet_fast.training.checkpoint import _seal, load_checkpoint

    state = dict(load_checkpoint(c.ckpt), evil=Evil(c.marker))
    buf = io.BytesIO()
    torch.save(state, buf)
    f = c.tmp / "x.pt"
    f.write_bytes(_seal(buf.getvalue()))
    return _eval(c, f), f, "!weights_only=False", "!weights_only"


@case("train")
def e_checkpoint_config_not_mapping(c):
    from amanet_fast.training.checkpoint import load_checkpoint, save_checkpoint

    f = c.tmp / "x.pt"
    save_checkpoint(f, dict(load_checkpoint(c.ckpt), config="tiny"))
    return _eval(c, f), f


@case("train")
def e_weights_do_not_fit(c):
    return _eval(c, c.ckpt, "model.args.channels=[12,24,48]"), c.ckpt


@case("train")
def e_without_checkpoint(c):
    return ["--eval-only", f"data.root={c.syn}"], "--checkpoint"


@case("train")
def e_eval_dir_locked(c):
    from amanet_fast.training.workdir import WorkDirLock

    lock = WorkDirLock.acquire(c.tmp / "ev", "another run")
    c.monkeypatch.setattr(c, "lock", lock, raising=False)
    return _eval(c, c.ckpt), c.tmp / "ev"


# --------------------------------------------------------------------------- ensemble

def _scores(c: Ctx, name: str, scores: dict | Any) -> Path:
    return write_pickle(c.tmp / name, scores)


def _ens_inputs(c: Ctx, a: Any = None, b: Any = None, labels: Any = None) -> list[str]:
    names = [f"s{i}" for i in range(6)]
    rng = np.random.default_rng(0)
    good = {n: rng.random(4).astype(np.float32) for n in names}
    fa = _scores(c, "a.pkl", good if a is None else a)
    fb = _scores(c, "b.pkl", good if b is None else b)
    fl = write_pickle(c.tmp / "labels.pkl", (names, [0, 1, 2, 3, 0, 1]) if labels is None else labels)
    return [str(fa), str(fb), "--labels", str(fl)]


def _good_scores(n: int = 6, width: int = 4) -> dict:
    rng = np.random.default_rng(1)
    return {f"s{i}": rng.random(width).astype(np.float32) for i in range(n)}


@case("ensemble")
def z_nan_scores(c):
    return _ens_inputs(c, a={f"s{i}": np.full(4, np.nan, np.float32) for i in range(6)}), c.tmp / "a.pkl"


@case("ensemble")
def z_inf_scores(c):
    s = _good_scores()
    s["s2"][1] = np.inf
    return _ens_inputs(c, a=s), c.tmp / "a.pkl"


@case("ensemble")
def z_weights_nan(c):
    return _ens_inputs(c) + ["--weights", "nan", "1"], "--weights"


@case("ensemble")
def z_weights_inf(c):
    return _ens_inputs(c) + ["--weights", "inf", "1"], "--weights"


@case("ensemble")
def z_weights_all_zero(c):
    return _ens_inputs(c) + ["--weights", "0", "0"], "--weights"


@case("ensemble")
def z_weights_wrong_count(c):
    return _ens_inputs(c) + ["--weights", "1"], "--weights"


@case("ensemble")
def z_weights_text(c):
    return _ens_inputs(c) + ["--weights", "one", "1"], "--weights"


@case("ensemble")
def z_grid_nan(c):
    return _ens_inputs(c) + ["--search", "--grid", "nan", "1"], "--grid"


@case("ensemble")
def z_crafted_scores(c):
    return _ens_inputs(c, a={"s0": Evil(c.marker)}), c.tmp / "a.pkl"


@case("ensemble")
def z_crafted_labels(c):
    return _ens_inputs(c, labels=([f"s{i}" for i in range(6)], [Evil(c.marker)] * 6)), c.tmp / "labels.pkl"


@case("ensemble")
def z_scores_text(c):
    return _ens_inputs(c, a={f"s{i}": "high" for i in range(6)}), c.tmp / "a.pkl"


@case("ensemble")
def z_scores_dicts(c):
    return _ens_inputs(c, a={f"s{i}": {"x": 1} for i in range(6)}), c.tmp / "a.pkl"


@case("ensemble")
def z_scores_empty_vectors(c):
    return _ens_inputs(c, a={f"s{i}": np.zeros(0) for i in range(6)}), c.tmp / "a.pkl"


@case("ensemble")
def z_scores_width_mismatch(c):
    return _ens_inputs(c, b=_good_scores(width=5)), "class"


@case("ensemble")
def z_scores_missing_samples(c):
    return _ens_inputs(c, b=_good_scores(n=3)), c.tmp / "b.pkl"


@case("ensemble")
def z_scores_empty(c):
    return _ens_inputs(c, a={}), c.tmp / "a.pkl"


@case("ensemble")
def z_scores_truncated(c):
    args = _ens_inputs(c)
    p = c.tmp / "a.pkl"
    p.write_bytes(p.read_bytes()[:30])
    return args, p


@case("ensemble")
def z_scores_missing_file(c):
    args = _ens_inputs(c)
    (c.tmp / "a.pkl").unlink()
    return args, c.tmp / "a.pkl"


@case("ensemble")
def z_labels_text(c):
    return _ens_inputs(c, labels=([f"s{i}" for i in range(6)], ["walk"] * 6)), c.tmp / "labels.pkl"


@case("ensemble")
def z_labels_out_of_range(c):
    return _ens_inputs(c, labels=([f"s{i}" for i in range(6)], [0, 1, 2, 3, 4, 99])), c.tmp / "labels.pkl"


@case("ensemble")
def z_labels_3tuple(c):
    return _ens_inputs(c, labels=(1, 2, 3)), c.tmp / "labels.pkl"


@case("ensemble")
def z_output_is_directory(c):
    return _ens_inputs(c) + ["--output", str(c.tmp)], c.tmp


@case("ensemble", expect="warn")
def z_negative_weight_warns(c):
    return _ens_inputs(c) + ["--weights", "-0.5", "1"], "negative"


@case("prepare", expect="warn")
def k_one_clip_without_skeleton_warns(c):
    args, _ = _kin_label(c, lambda t: t[KCLIP].__setitem__("has_skeleton", False))
    return args, "has_skeleton"


# --------------------------------------------------------------------------- the runner

@pytest.fixture(scope="module")
def corpus_data(tmp_path_factory) -> tuple[Path, Path]:
    return train_tiny(tmp_path_factory.mktemp("corpus"))


def _main(cli: str):
    if cli == "prepare":
        from amanet_fast.data.prepare import main
    elif cli == "train":
        from amanet_fast.training.cli import main
    else:
        from amanet_fast.ensemble import main
    return main


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, corpus_data, standin_data, tmp_path, monkeypatch, capsys, caplog) -> None:
    syn, ckpt = corpus_data
    c = Ctx(tmp=tmp_path, shared=standin_data, syn=syn, ckpt=ckpt, monkeypatch=monkeypatch)
    built = case.build(c)
    argv, where, extra = built[0], str(built[1]), built[2:]
    try:
        rc = run_main(_main(case.cli), argv)
    except BaseException as err:  # noqa: BLE001 - any escape is the failure this corpus looks for
        pytest.fail(f"{case.cli} raised {type(err).__name__}: {str(err)[:300]}")
    finally:
        if c.lock is not None:
            c.lock.release()
    out = capsys.readouterr()
    text = out.err + out.out + caplog.text
    assert not c.marker.exists(), "a pickle ran code"
    assert "Traceback" not in text
    if case.expect == "warn":
        assert rc == 0, f"exit {rc}: {out.err[-500:]}"
        assert "warn" in text.lower() and where in text, text[-800:]
    else:
        # One error line; the missing-data error may follow it with the prepare command to run.
        check_one_error(rc, [l for l in out.err.splitlines() if "error:" in l], where, extra, out.err)
        if case.cli == "prepare":
            out_dir = Path(argv[argv.index("--out") + 1])
            if out_dir.is_dir():
                left = sorted(p.name for p in out_dir.iterdir())
                assert left == [], f"failed prepare left {left} in {out_dir}"




def test_corpus_size() -> None:
    assert len(CASES) >= 100, len(CASES)


# --------------------------------------------------------------------------- a few as real processes

def _proc(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)


def test_real_subprocesses_exit_2_without_traceback(standin_data, tmp_path) -> None:
    raw = _copy(standin_data / "ntu_raw", tmp_path / "ntu")
    (raw / "S001C001P002R001A002.skeleton").mkdir()
    scores = write_pickle(tmp_path / "a.pkl", {"s0": np.ones(3)})
    labels = write_pickle(tmp_path / "l.pkl", (["s0"], [0]))
    runs = {
        "prepare": _proc(["-m", "amanet_fast.data.prepare", "ntu60", "--split", "xsub", "--raw", str(raw),
                          "--out", str(tmp_path / "out")]),
        "train": _proc(["train.py", "--work-dir", str(tmp_path / "wd"), "train.eval_every=0"]),
        "ensemble": _proc(["-m", "amanet_fast.ensemble", str(scores), str(scores), "--labels", str(labels),
                           "--weights", "nan", "1"]),
    }
    for name, proc in runs.items():
        assert proc.returncode == 2, (name, proc.returncode, proc.stderr[-1000:])
        assert "Traceback" not in proc.stderr, (name, proc.stderr[-1000:])
        assert "error:" in proc.stderr.strip().splitlines()[-1], (name, proc.stderr[-500:])
    assert not (tmp_path / "wd").exists(), "a refused train.py start created its work dir"
