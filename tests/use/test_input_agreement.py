"""predict reproduces --eval-only clip by clip, for every built-in data kind and a custom layout.

Each case prepares a few real clips, trains a tiny model for one epoch,
scores the val split with `train.py --eval-only`, then runs `Predictor` on the
raw files of those clips. `data.clip_len` is longer than some clips, so the
short-clip padding (replay for NTU / NW-UCLA, and Kinetics when configured)
decides the scores: zero padding at inference, as before, fails these tests.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from amanet_fast.data.augment import valid_range
from amanet_fast.data.dataset import SkeletonDataset
from amanet_fast.data.prepare import main as prepare_main
from amanet_fast.predict import Predictor, model_input
from amanet_fast.training.checkpoint import load_checkpoint
from amanet_fast.training.cli import main as train_main
from amanet_fast.visualize import load_sample

TINY = ["runtime.threads=1", "runtime.tensorboard=false", "runtime.progress=false", "--amp", "off",
        "train.epochs=1", "model.args.channels=[6,12,24]", "model.args.num_gcn_scales=2",
        "model.args.num_g3d_scales=2", "data.limit_train=8", "data.num_workers=0", "optim.batch_size=4",
        "optim.lr_steps=[]", "seed=0"]


def _link(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)
    return dst


def _kinetics(shared: Path, tmp: Path) -> tuple[list[str], dict[str, Path]]:
    clips = sorted((shared / "kinetics_raw").glob("--*.json"))
    table = json.loads((shared / "kinetics_raw" / "my_val_label.json").read_text())
    raw, files = tmp / "raw", {}
    for split, chosen in (("train", clips[:2]), ("val", clips[2:])):
        for c in chosen:
            files[c.name] = _link(c, raw / f"kinetics_{split}" / c.name)
        (raw / f"kinetics_{split}_label.json").write_text(json.dumps({c.stem: table[c.stem] for c in chosen}))
    return ["kinetics", "--raw", str(raw)], files


def _ntu(shared: Path, tmp: Path) -> tuple[list[str], dict[str, Path]]:
    files = {p.name: p for p in (shared / "ntu_raw").glob("*.skeleton")}
    return ["ntu60", "--split", "xview", "--raw", str(shared / "ntu_raw")], files


def _ucla(shared: Path, tmp: Path) -> tuple[list[str], dict[str, Path]]:
    files = {p.stem: p for p in (shared / "nw_ucla" / "all_sqe").glob("*.json")}
    return ["ucla", "--raw", str(shared / "nw_ucla")], files


def _pyskl_file(anns: list[dict], split: dict, path: Path) -> Path:
    with open(path, "wb") as fh:
        pickle.dump({"split": split, "annotations": anns}, fh)
    return path


def _pyskl(shared: Path, tmp: Path) -> tuple[list[str], dict[str, Path]]:
    with open(shared / "pyskl" / "example_UCF101_skeleton.pkl", "rb") as fh:
        ann = pickle.load(fh)
    anns, split = [], {"train": [], "val": []}
    for i in range(10):
        # Clips of 20..(20+9*12) frames: several shorter than the 64-frame clip length.
        kp, sc = ann["keypoint"][:, 7 * i:7 * i + 20 + 12 * i], ann["keypoint_score"][:, 7 * i:7 * i + 20 + 12 * i]
        anns.append(dict(ann, frame_dir=f"clip{i}", label=i % 2, keypoint=kp, keypoint_score=sc,
                         total_frames=kp.shape[1]))
        split["val" if i < 4 else "train"].append(f"clip{i}")
    raw = _pyskl_file(anns, split, tmp / "coco.pkl")
    return ["pyskl", "--raw", str(raw)], {"pyskl": raw}


def _custom(shared: Path, tmp: Path) -> tuple[list[str], dict[str, Path]]:
    """3D NW-UCLA clips in a joint order of our own, described by a layout file."""
    from amanet_fast.graphs import LAYOUTS

    order = np.random.default_rng(0).permutation(20)
    base, new = LAYOUTS["ucla20"], {int(old): i for i, old in enumerate(order)}
    layout = {"name": "kinect20_mine", "num_joints": 20, "edges": [[new[a], new[b]] for a, b in base.edges],
              "center": new[base.center], "root": new[base.root],
              "parts": [{"name": p.name, "origin": new[p.origin], "axis": new[p.axis], "side": new[p.side],
                         "members": [new[m] for m in p.members]} for p in base.parts]}
    (tmp / "layout.json").write_text(json.dumps(layout))
    anns, split = [], {"train": [], "val": []}
    for f in sorted((shared / "nw_ucla" / "all_sqe").glob("a0[12]_s0[12]_e0[01]_v0[13].json")):
        doc = json.loads(f.read_text())
        kp = np.asarray(doc["skeletons"], dtype=np.float32)[None][:, :, order]
        anns.append({"frame_dir": f.stem, "label": int(doc["label"]) - 1, "keypoint": kp,
                     "total_frames": kp.shape[1]})
        split["val" if f.stem.endswith("v03") else "train"].append(f.stem)
    raw = _pyskl_file(anns, split, tmp / "mine.pkl")
    return ["pyskl", "--raw", str(raw), "--layout", str(tmp / "layout.json")], {"pyskl": raw}


def _synthetic(shared: Path, tmp: Path) -> tuple[list[str], dict[str, Path]]:
    from amanet_fast.data.synthetic import ensure_synthetic

    data = Path(ensure_synthetic(tmp / "synthetic", seed=0, num_train=8, num_val=6))
    files = {p.name: p for p in (data / "raw" / "kinetics_val").glob("*.json")}
    return [str(data)], files


# kind -> (maker, extra training overrides, the padding that must be recorded)
CASES = {
    "kinetics": (_kinetics, ["data.clip_len=250", "data.pad=replay"], "replay"),
    "ntu60": (_ntu, ["data.split=null", "data.clip_len=128"], "replay"),
    "ucla": (_ucla, ["data.clip_len=64", "data.limit_val=10"], "replay"),
    # the published NW-UCLA protocol (configs/ucla.yaml `standard`): one body, centring, a random view in
    # training, min-max, whole clip resampled to 52 frames -- recorded and replayed by predict
    "ucla_protocol": (_ucla, ["--preset", "standard", "data.limit_val=10", "train.epochs=1", "optim.lr_steps=[]",
                              "optim.warmup_epochs=0", "optim.batch_size=4", "data.train_repeat=1"], "replay"),
    "pyskl": (_pyskl, ["data.clip_len=64"], "zero"),
    "custom": (_custom, ["data.clip_len=64"], "zero"),
    "synthetic": (_synthetic, ["data.clip_len=96", "data.pad=replay"], "replay"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_predict_equals_eval_only(kind: str, shared_data: Path, tmp_path: Path) -> None:
    maker, overrides, pad = CASES[kind]
    prep, files = maker(shared_data, tmp_path)
    if kind == "synthetic":
        out = Path(prep[0])
    else:
        out = tmp_path / "prepared"
        assert prepare_main([*prep, "--out", str(out)]) == 0
    wd = tmp_path / "run"
    assert train_main(["--data-root", str(out), "--work-dir", str(wd), *TINY, *overrides]) == 0
    ck = wd / "latest.pt"
    assert train_main(["--eval-only", "--checkpoint", str(ck), "runtime.threads=1"]) == 0
    with open(wd / "eval" / "scores_val.pkl", "rb") as fh:
        scores = pickle.load(fh)
    spec = load_checkpoint(ck)["inputs"]
    protocol = kind == "ucla_protocol"
    if protocol:
        clip_len = None
        assert spec["protocol"]["resample"] == 52 and spec["protocol"]["persons"] == 1 and spec["clip_len"] is None
    else:
        clip_len = next(int(o.split("=")[1]) for o in overrides if o.startswith("data.clip_len="))
        assert spec["pad"] == pad and spec["clip_len"] == clip_len

    predictor = Predictor(ck, batch_size=4)
    if "pyskl" in files:
        preds = {p.name.split("[")[1].rstrip("]"): p for p in predictor.predict_files([files["pyskl"]])}
    else:
        preds = {n: p for n, p in zip(scores, predictor.predict_files([files[n] for n in scores]))}
    assert set(scores) <= set(preds) and len(scores) >= 2
    for name, ref in scores.items():
        # Relative: 400 Kinetics classes after one epoch are all near 1/400.
        np.testing.assert_allclose(preds[name].probabilities, ref, rtol=1e-4, atol=1e-8, err_msg=name)

    # visualize draws a prepared sample through the same input path as the dataset's evaluation
    from amanet_fast.data.protocol import ClipProtocol

    ds = SkeletonDataset(out, "val", stream=spec["stream"], clip_len=clip_len, pad=spec["pad"],
                         protocol=ClipProtocol.from_dict(spec["protocol"]))
    tm = predictor.models[0]
    for i in range(min(3, len(ds))):
        _, x, _ = load_sample(tm, ds.sample_names[i])
        np.testing.assert_array_equal(model_input(x, tm), ds[i][0].numpy())

    if kind == "ntu60" or protocol:
        return  # ntu: prepare already replays NTU clips to 300 frames; protocol: no clip_len to pad to replays NTU clips to 300 frames; clip_len cuts the centre window
    # The padding mattered: at least one val clip is shorter than the clip length.
    lengths = [np.subtract(*valid_range(np.asarray(ds.data[i]))[::-1]) for i in range(len(ds))]
    assert min(lengths) < clip_len
