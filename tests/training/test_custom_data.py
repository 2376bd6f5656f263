"""Your own skeletons end to end: a custom 20-joint layout from a pyskl pickle trains, its checkpoint
carries the layout and --eval-only rebuilds exactly that model; COCO-17 pyskl data trains with no
override; mismatches and the usual data-root mistakes are one clear error with the fixing command."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from amanet_fast.data.prepare import main as prepare_main
from amanet_fast.graphs import LAYOUTS, load_layout
from amanet_fast.registry import UCLA_CLASS_NAMES
from amanet_fast.training import config as C
from amanet_fast.training.checkpoint import load_checkpoint, model_from_checkpoint
from amanet_fast.training.data import fit_num_workers

from .conftest import run_cli

FAST = ["--preset", "tiny", "runtime.threads=1", "runtime.tensorboard=false", "runtime.log_interval_s=0"]


def _shuffled_ucla_layout(order: np.ndarray, parts: bool = True) -> dict:
    """NW-UCLA's graph with the joints renumbered: new joint i is Kinect joint order[i]."""
    base = LAYOUTS["ucla20"]
    new = {int(old): i for i, old in enumerate(order)}
    d = {"name": "kinect20_shuffled", "num_joints": 20,
         "edges": [[new[a], new[b]] for a, b in base.edges], "center": new[base.center], "root": new[base.root],
         "joint_names": [base.joint_names[int(o)] for o in order]}
    if parts:
        d["parts"] = [{"name": p.name, "origin": new[p.origin], "axis": new[p.axis], "side": new[p.side],
                       "members": [new[m] for m in p.members]} for p in base.parts]
    return d


@pytest.fixture(scope="module")
def custom20(standin_data: Path, tmp_path_factory) -> dict:
    """A pyskl pickle of real NW-UCLA clips in a joint order that is not Kinect v1's, plus its layout file."""
    tmp = tmp_path_factory.mktemp("custom20")
    order = np.random.default_rng(0).permutation(20)
    files = sorted((standin_data / "nw_ucla" / "all_sqe").glob("*.json"))
    anns, split, per = [], {"train": [], "val": []}, {}
    for f in files:
        doc = json.loads(f.read_text())
        label, view = int(doc["label"]) - 1, f.stem[-3:]
        which = "val" if view == "v03" else "train"
        key = (which, label)
        if per.get(key, 0) >= (4 if which == "train" else 2):
            continue
        per[key] = per.get(key, 0) + 1
        kp = np.asarray(doc["skeletons"], dtype=np.float32)[None][:, :, order]  # (1, T, 20, 3), reordered
        anns.append({"frame_dir": f.stem, "label": label, "keypoint": kp, "total_frames": kp.shape[1]})
        split[which].append(f.stem)
    raw = tmp / "ann.pkl"
    with open(raw, "wb") as fh:
        pickle.dump({"split": split, "annotations": anns, "classes": list(UCLA_CLASS_NAMES)}, fh)
    layout = tmp / "kinect20_shuffled.json"
    layout.write_text(json.dumps(_shuffled_ucla_layout(order)))
    out = tmp / "prepared"
    assert prepare_main(["pyskl", "--raw", str(raw), "--layout", str(layout), "--out", str(out)]) == 0
    return {"raw": raw, "layout": layout, "out": out, "order": order, "tmp": tmp,
            "n": (len(split["train"]), len(split["val"]))}


@pytest.mark.slow
def test_custom_layout_trains_and_eval_only_rebuilds_it(custom20, tmp_path, capsys):
    out, wd = custom20["out"], tmp_path / "run"
    m = json.loads((out / "manifest.json").read_text())
    assert m["layout"] == load_layout(custom20["layout"]).to_dict() and m["classes"] == list(UCLA_CLASS_NAMES)
    assert m["counts"] == {"train": custom20["n"][0], "val": custom20["n"][1]} == {"train": 40, "val": 20}

    rc, err = run_cli(["--data-root", str(out), "--work-dir", str(wd), *FAST], capsys)
    assert rc == 0, err
    res = json.loads((wd / "results.json").read_text())
    assert res["dataset"] == "custom"  # --dataset not given: the manifest picked the recipe
    log = (wd / "log.txt").read_text()
    assert "data layout: kinect20_shuffled (20 joints" in log
    assert "epoch 2/2 step 5/5 (100%)" in log and "samples/s" in log and "ETA epoch" in log  # not a TTY
    assert (wd / "confusion_matrix.csv").read_text().splitlines()[1].startswith("pick up with one hand")
    state = load_checkpoint(wd / "latest.pt")
    assert state["layout"] == m["layout"] and state["classes"] == list(UCLA_CLASS_NAMES)
    assert state["model_config"]["layout"] == m["layout"] and state["model_config"]["num_class"] == 10
    model = model_from_checkpoint(state)  # what later tools call
    assert model.layout == load_layout(custom20["layout"]) and model.num_class == 10

    rc, err = run_cli(["--eval-only", "--checkpoint", str(wd / "latest.pt"), "runtime.threads=1"], capsys)
    assert rc == 0, err
    ev = json.loads((wd / "eval" / "results.json").read_text())
    assert ev["top1"] == res["top1"] and ev["num_val_samples"] == 20
    with open(wd / "scores_val.pkl", "rb") as f:
        trained = pickle.load(f)
    with open(wd / "eval" / "scores_val.pkl", "rb") as f:
        again = pickle.load(f)
    assert trained.keys() == again.keys() and all(np.array_equal(trained[k], again[k]) for k in trained)

    # The same clips tagged with the built-in Kinect order (same joint count): a clear mismatch, not a
    # silently wrong model, for eval and for resume.
    other = tmp_path / "as_ucla20"
    assert prepare_main(["pyskl", "--raw", str(custom20["raw"]), "--layout", "ucla20", "--out", str(other)]) == 0
    rc, err = run_cli(["--eval-only", "--checkpoint", str(wd / "latest.pt"), "--data-root", str(other)], capsys)
    assert rc == 2 and "trained on layout 'kinect20_shuffled' (20 joints)" in err and "ucla20" in err
    rc, err = run_cli(["--data-root", str(other), "--dataset", "custom", "--work-dir", str(wd), *FAST,
                       "train.epochs=3"], capsys)
    assert rc == 2 and "trained on layout 'kinect20_shuffled'" in err and "Traceback" not in err


def test_layout_without_parts_stops_with_the_fix(custom20, tmp_path, capsys, caplog):
    lay = tmp_path / "noparts.json"
    lay.write_text(json.dumps(_shuffled_ucla_layout(custom20["order"], parts=False)))
    out = tmp_path / "prepared"
    assert prepare_main(["pyskl", "--raw", str(custom20["raw"]), "--layout", str(lay), "--out", str(out)]) == 0
    assert "has no DP body parts" in caplog.text
    rc, err = run_cli(["--data-root", str(out), "--work-dir", str(tmp_path / "wd"), *FAST], capsys)
    assert rc == 2 and "no DP body parts" in err and "model.args.dp_mode=center" in err and '"parts"' in err


@pytest.fixture(scope="module")
def coco_prepared(standin_data: Path, tmp_path_factory) -> Path:
    """The shipped pyskl sample (COCO-17, 2D + scores) as a small train/val pickle, prepared without --layout."""
    tmp = tmp_path_factory.mktemp("coco")
    with open(standin_data / "pyskl" / "example_UCF101_skeleton.pkl", "rb") as f:
        ann = pickle.load(f)
    anns, split = [], {"train": [], "val": []}
    for i in range(8):
        a = dict(ann, frame_dir=f"clip{i}", label=i % 2, keypoint=np.roll(ann["keypoint"], 7 * i, axis=1))
        anns.append(a)
        split["train" if i < 6 else "val"].append(a["frame_dir"])
    raw = tmp / "coco.pkl"
    with open(raw, "wb") as f:
        pickle.dump({"split": split, "annotations": anns}, f)
    out = tmp / "data" / "coco"
    assert prepare_main(["pyskl", "--raw", str(raw), "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_coco17_pyskl_trains_without_override(coco_prepared, tmp_path, capsys):
    wd = tmp_path / "run"
    rc, err = run_cli(["--data-root", str(coco_prepared), "--work-dir", str(wd), *FAST], capsys)
    assert rc == 0, err
    state = load_checkpoint(wd / "latest.pt")
    assert state["layout"]["name"] == "coco17" and state["model_config"]["coord_dims"] == 2
    assert state["data_channels"] == ["x", "y", "score"] and state["classes"] == ["0", "1"]


def test_model_override_contradicting_the_data_is_refused(coco_prepared, tmp_path, capsys):
    rc, err = run_cli(["--data-root", str(coco_prepared), "--work-dir", str(tmp_path / "wd"), *FAST,
                       "model.args.layout=ntu25"], capsys)
    assert rc == 2 and "model.args.layout='ntu25' contradicts the prepared data" in err and "'coco17'" in err


def test_data_root_mistakes_print_the_fixing_command(standin_data, coco_prepared, tmp_path, capsys):
    raw = standin_data / "nw_ucla"
    rc, err = run_cli(["--data-root", str(raw)], capsys)  # raw data given as the data root
    assert rc == 2 and "holds raw NW-UCLA" in err
    assert f"python -m amanet_fast.data.prepare ucla --raw {raw} --out data/ucla" in err
    rc, err = run_cli(["--dataset", "ntu60", "--data-root", str(standin_data / "ntu_raw")], capsys)
    assert rc == 2 and f"prepare ntu60 --split xsub --raw {standin_data / 'ntu_raw'} --out data/ntu60/xsub" in err
    rc, err = run_cli(["--data-root", str(standin_data / "pyskl" / "example_UCF101_skeleton.pkl")], capsys)
    assert rc == 2 and "is a raw pyskl pickle" in err and "--layout LAYOUT.json --out data/custom" in err
    # A prepared folder given together with --split (the split folder as root).
    rc, err = run_cli(["--dataset", "ntu60", "--data-root", str(coco_prepared), "--split", "xsub"], capsys)
    assert rc == 2 and "is itself a prepared folder" in err and "drop --split" in err
    # The parent of prepared benchmarks without --split, and a split name the dataset does not have.
    rc, err = run_cli(["--dataset", "custom", "--data-root", str(coco_prepared.parent)], capsys)
    assert rc == 2 and "holds prepared benchmarks coco: pick one with --split coco" in err
    rc, err = run_cli(["--dataset", "ntu60", "--split", "xsab", "--data-root", str(tmp_path)], capsys)
    assert rc == 2 and "'xsab' is not a ntu60 benchmark; use one of: xsub, xview" in err


def test_fix_never_writes_into_the_raw_folder(standin_data, monkeypatch, capsys):
    raw = (standin_data / "nw_ucla").resolve()  # the fix names the resolved folders
    monkeypatch.chdir(raw)  # ./data/ucla would land inside the raw data
    rc, err = run_cli(["--data-root", str(raw)], capsys)
    assert rc == 2 and f"--raw {raw} --out {raw.parent / 'nw_ucla_prepared'}" in err


def test_every_flag_has_help_and_presets_are_listed(capsys):
    parser = C.build_arg_parser()
    missing = [a.dest for a in parser._actions if not a.help]
    assert not missing, f"flags without help: {missing}"
    text = parser.format_help()
    assert "custom     your own data (pyskl pickle); presets: cpu, tiny" in text
    assert "ucla       NW-UCLA; presets: cpu" in text and "synthetic  built-in synthetic demo; presets: tiny" in text


def test_worker_count_fits_the_cores():
    n, note = fit_num_workers(10_000)
    assert n < 10_000 and note is not None and "CPU cores" in note
    assert fit_num_workers(0) == (0, None)
