"""Generated stand-ins for the shared sample files, in the same folder layout and formats.

Why: most tests only need *a* valid file of each raw format to edit, break or push
through a CLI; only the readers' fidelity tests need the real release files (those
use the `shared_data` fixture and skip without it). With these stand-ins the error
corpus, the checker and the prepare/train/predict error paths run on a fresh clone.

Layout (as ../shared/data): kinetics_raw/ (4 clips + my_val_label.json),
ntu_raw/ (7 .skeleton files, 1 and 2 bodies, CRLF and LF, + label_map_ntu60.txt),
nw_ucla/ (all_sqe/*.json for views 1-3 + val_label.pkl), pyskl/example_UCF101_skeleton.pkl.
Everything derives from a fixed seed, so a stand-in tree is identical on every machine.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from amanet_fast.data.synthetic import synth_clip

KINETICS_CLIPS = {"--07WQ2iBlw": 166, "--33Lscn6sk": 129, "--7VUM9MKg4": 244, "--7goKgS4kc": 10}
# (name, bodies, CRLF): the real sample's names, so split rules (xsub subjects, xview cameras) hold.
NTU_FILES = [("S001C001P001R001A001", 1, True), ("S001C001P001R001A011", 1, True),
             ("S001C001P001R001A050", 2, False), ("S001C003P008R002A058", 2, True),
             ("S002C001P003R001A003", 1, True), ("S003C001P015R001A034", 1, True),
             ("S004C002P003R001A017", 1, True)]
UCLA_NAMES = [f"a{a:02d}_s{s:02d}_e00_v{v:02d}" for a in (1, 2, 3, 4, 5, 6, 8, 9, 11, 12)
              for s in (1, 2) for v in (1, 2, 3)]
UCLA_ACTION_IDS = [1, 2, 3, 4, 5, 6, 8, 9, 11, 12]  # the 10 NW-UCLA action numbers, label = rank + 1


def _kinetics(root: Path) -> None:
    d = root / "kinetics_raw"
    d.mkdir(parents=True)
    table = {}
    for i, (name, label) in enumerate(KINETICS_CLIPS.items()):
        doc = synth_clip(7, "val", i, i % 6)
        doc["label"], doc["label_index"] = f"class {label}", label
        # Like the release: some clips pretty-printed (errors then have line numbers > 1), some on one line.
        (d / f"{name}.json").write_text(json.dumps(doc, indent=4 if i in (0, 3) else None))
        table[name] = {"has_skeleton": True, "label": doc["label"], "label_index": label}
    (d / "my_val_label.json").write_text(json.dumps(table, indent=4))


def _body_motion(rng: np.random.Generator, frames: int, joints: int, offset: float) -> np.ndarray:
    """A rigid random 3D stick pose swaying smoothly: (frames, joints, 3), a person ~1.7 m tall at ~3 m."""
    pose = rng.normal(0.0, 0.25, size=(joints, 3)) * np.array([1.0, 2.5, 0.3])
    t = np.arange(frames)[:, None, None] / 30.0
    sway = 0.05 * np.sin(2 * np.pi * (0.5 + rng.random((1, joints, 3))) * t + rng.random((1, joints, 3)) * 6)
    return pose[None] + sway + np.array([offset, 0.0, 3.0])


def _ntu(root: Path) -> None:
    d = root / "ntu_raw"
    d.mkdir(parents=True)
    for k, (name, bodies, crlf) in enumerate(NTU_FILES):
        rng = np.random.default_rng([11, k])
        frames = int(rng.integers(40, 90))
        xyz = [_body_motion(rng, frames, 25, off) for off in (-0.4, 0.4)[:bodies]]
        lines = [str(frames)]
        for t in range(frames):
            lines.append(str(bodies))
            for m in range(bodies):
                lines.append(f"7205759403793{1100 + m} 0 1 1 1 1 0 0.02764709 0.05745083 2")
                lines.append("25")
                for j in range(25):
                    x, y, z = xyz[m][t, j]
                    lines.append(f"{x:.7f} {y:.7f} {z:.6f} 277.4 191.8 1036.2 519.2 -0.2 0.05 0.97 -0.12 2")
        (d / f"{name}.skeleton").write_bytes(("\r\n" if crlf else "\n").join(lines).encode() + b"\n")
    (d / "label_map_ntu60.txt").write_text("".join(f"action {a}\n" for a in range(1, 61)))


def _ucla(root: Path) -> None:
    d = root / "nw_ucla" / "all_sqe"
    d.mkdir(parents=True)
    val = []
    for k, name in enumerate(UCLA_NAMES):
        rng = np.random.default_rng([13, k])
        frames = int(rng.integers(20, 60))
        label = UCLA_ACTION_IDS.index(int(name[1:3])) + 1
        sk = np.round(_body_motion(rng, frames, 20, 0.0), 6).tolist()
        (d / f"{name}.json").write_text(json.dumps({"file_name": name, "skeletons": sk, "label": label}))
        if name.endswith("v03"):
            val.append({"file_name": name, "length": frames, "label": label})
    with open(root / "nw_ucla" / "val_label.pkl", "wb") as f:
        pickle.dump(val, f)


def _pyskl(root: Path) -> None:
    d = root / "pyskl"
    d.mkdir(parents=True)
    rng = np.random.default_rng(17)
    frames = 163
    kp = np.stack([_body_motion(rng, frames, 17, off)[..., :2] for off in (-0.4, 0.4)])  # (2, T, 17, 2)
    kp = (kp - kp.min()) / (kp.max() - kp.min()) * np.array([300.0, 220.0]) + 10.0
    ann = {"keypoint": kp.astype(np.float16), "keypoint_score": rng.uniform(0.3, 1.0, (2, frames, 17)).astype(np.float16),
           "frame_dir": "v_ApplyEyeMakeup_g01_c01", "total_frames": frames, "original_shape": (256, 340),
           "img_shape": (256, 340), "label": 0, "modality": "Pose", "start_index": 0}
    with open(d / "example_UCF101_skeleton.pkl", "wb") as f:
        pickle.dump(ann, f)


def make_standin(root: Path) -> Path:
    """Write the stand-in tree under `root` (which must not exist yet) and return it."""
    root = Path(root)
    root.mkdir(parents=True)
    for make in (_kinetics, _ntu, _ucla, _pyskl):
        make(root)
    return root
