"""The built-in demo dataset: procedurally animated skeletons of 6 distinct actions.

Why it exists: `python train.py` with no data must train something real in
minutes on a CPU. The clips are written as genuine Kinetics-Skeleton JSON
(OpenPose-18, 2D + scores) and go through the same `kinetics` preparation as
real data, so the demo also exercises the real pipeline.

Each clip: a 3D stick figure animated by one action (joint angles driven by a
periodic phase), viewed from a random yaw, projected orthographically,
randomly scaled / rotated in the image plane / translated, with per-joint
noise, random confidences, occasional missing joints (score 0), occasional
empty frames and sometimes a second, idle, less confident person. Everything
derives from `(seed, split, index)`, so a dataset is reproducible bit for bit.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..registry import SYNTHETIC_ACTIONS
from .io import FORMAT_VERSION, read_manifest

__all__ = ["ACTIONS", "DEFAULT_NUM_TRAIN", "DEFAULT_NUM_VAL", "GENERATOR_VERSION", "synth_clip",
           "write_synthetic_raw", "prepare_synthetic", "ensure_synthetic"]

log = logging.getLogger("amanet_fast.data.synthetic")

ACTIONS = SYNTHETIC_ACTIONS  # label order lives in the registry
DEFAULT_NUM_TRAIN = 600
DEFAULT_NUM_VAL = 180
GENERATOR_VERSION = 1
FPS = 30.0
_SPLIT_IDS = {"train": 1, "val": 2}

# Body in "body units" (neck at the origin, y up, z towards the camera, x to the image right,
# so the person's right side has x < 0).  OpenPose-18 ids.
_NOSE, _NECK, _RSHO, _RELB, _RWRI, _LSHO, _LELB, _LWRI = 0, 1, 2, 3, 4, 5, 6, 7
_RHIP, _RKNE, _RANK, _LHIP, _LKNE, _LANK, _REYE, _LEYE, _REAR, _LEAR = 8, 9, 10, 11, 12, 13, 14, 15, 16, 17
_HEAD_OFFSETS = {_NOSE: (0.0, 0.20, 0.06), _REYE: (-0.04, 0.23, 0.05), _LEYE: (0.04, 0.23, 0.05),
                 _REAR: (-0.08, 0.21, 0.0), _LEAR: (0.08, 0.21, 0.0)}


def _two_link(base: np.ndarray, target: np.ndarray, l1: float, l2: float, pole: np.ndarray) -> tuple:
    """Analytic two-bone IK: middle joint bends towards `pole`; unreachable targets are pulled in.

    All arrays are (T, 3). Returns (middle joint, end joint) positions.
    """
    v = target - base
    d = np.linalg.norm(v, axis=-1, keepdims=True)
    d_ok = np.clip(d, abs(l1 - l2) + 1e-3, (l1 + l2) * 0.999)
    u = v / np.maximum(d, 1e-9)
    end = base + u * d_ok
    a = (l1 ** 2 - l2 ** 2 + d_ok ** 2) / (2 * d_ok)
    h = np.sqrt(np.maximum(l1 ** 2 - a ** 2, 0.0))
    n = pole - (pole * u).sum(-1, keepdims=True) * u
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
    return base + a * u + h * n, end


def _targets(action: str, t: np.ndarray, rng: np.random.Generator, dims: dict) -> dict:
    """Hand/foot targets (relative to their shoulder/hip), pelvis drop and root motion over `t` seconds.

    Hands and feet are driven, elbows and knees follow by IK: that keeps the
    six actions clearly distinct in what moves, where and how fast.
    """
    T = len(t)
    amp = rng.uniform(0.85, 1.15)
    leg = dims["thigh"] + dims["shin"]
    one = np.ones(T)

    def phase(freq: float) -> np.ndarray:
        return 2 * np.pi * freq * rng.uniform(0.8, 1.25) * t + rng.uniform(0, 2 * np.pi)

    def rest_hand(side: float) -> np.ndarray:
        return np.stack([side * 0.05 * one, -0.48 * one, 0.06 * one], -1)

    def foot(side: float) -> np.ndarray:
        return np.stack([side * 0.01 * one, -0.97 * leg * one, 0.0 * one], -1)

    hands = {-1.0: rest_hand(-1.0), 1.0: rest_hand(1.0)}
    feet = {-1.0: foot(-1.0), 1.0: foot(1.0)}
    drop = np.zeros(T)      # pelvis lowered by this much (feet stay planted)
    root = np.zeros((T, 3))  # whole-body motion
    if action == "wave":  # right hand above the head, swinging side to side
        p = phase(1.6)
        hands[-1.0] = np.stack([-0.12 + 0.16 * amp * np.sin(p), 0.38 * one, 0.08 * one], -1)
    elif action == "clap":  # both hands meet in front of the chest and part again
        c = 0.5 + 0.5 * np.sin(phase(2.0))
        for side in (-1.0, 1.0):
            hands[side] = np.stack([-side * dims["sho_w"] + side * (0.02 + 0.28 * amp * (1 - c)),
                                    -0.18 * one, 0.32 * one], -1)
    elif action == "jump":  # crouch, then the whole body leaves the ground, arms thrown up
        p = phase(1.3)
        air, crouch = np.maximum(0.0, np.sin(p)), np.maximum(0.0, -np.sin(p))
        drop = 0.22 * crouch
        root[:, 1] = 0.35 * amp * air
        for side in (-1.0, 1.0):
            hands[side] = np.stack([side * (0.08 + 0.1 * air), -0.45 + 0.9 * air, 0.05 + 0.12 * crouch], -1)
    elif action == "squat":  # slow deep knee bend, arms raised forward for balance
        c = amp * (0.5 - 0.5 * np.cos(phase(0.7)))
        drop = 0.38 * c
        for side in (-1.0, 1.0):
            hands[side] = np.stack([side * 0.03 * one, -0.45 + 0.45 * c, 0.08 + 0.38 * c], -1)
    elif action == "kick":  # right foot swings forward and up, arms out
        k = np.maximum(0.0, np.sin(phase(1.0))) ** 2
        feet[-1.0] = np.stack([-0.18 * k, -0.97 * leg + 0.55 * amp * k, 0.6 * amp * k], -1)
        for side in (-1.0, 1.0):
            hands[side] = np.stack([side * (0.15 + 0.1 * k), -0.4 * one, 0.05 * one], -1)
    elif action == "walk":  # alternating steps, counter-swinging arms, the body travels
        p = phase(1.0)
        s, c = np.sin(p), np.cos(p)
        for side, sign in ((-1.0, 1.0), (1.0, -1.0)):
            feet[side] = np.stack([side * 0.01 * one, -0.97 * leg + 0.1 * np.maximum(0.0, sign * c),
                                   0.28 * amp * sign * s], -1)
            hands[side] = np.stack([side * 0.06 * one, -0.47 * one, -0.22 * amp * sign * s], -1)
        root[:, 2] = rng.choice([-1.0, 1.0]) * rng.uniform(0.9, 1.4) * t
        root[:, 1] = 0.02 * np.abs(c)
    else:
        raise ValueError(f"unknown synthetic action {action!r}; expected one of {ACTIONS}")
    return {"hands": hands, "feet": feet, "drop": drop, "root": root}


def _body(action: str, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(T, 18, 3) joint positions in body units for one animated person."""
    T = len(t)
    size = rng.uniform(0.92, 1.08, size=4)  # shoulders, arms, legs, head
    dims = {"sho_w": 0.17 * size[0], "hip_w": 0.09 * size[0], "torso": 0.5 * size[2] ** 0.5,
            "upper": 0.27 * size[1], "fore": 0.25 * size[1], "thigh": 0.40 * size[2], "shin": 0.40 * size[2]}
    goal = _targets(action, t, rng, dims)
    x = np.zeros((T, 18, 3))
    drop = goal["drop"][:, None]
    for j, off in _HEAD_OFFSETS.items():
        x[:, j] = np.array(off) * size[3]
    x[:, :, 1] -= drop  # upper body (head, neck) goes down with the pelvis
    for side, sho, elb, wri in ((-1.0, _RSHO, _RELB, _RWRI), (1.0, _LSHO, _LELB, _LWRI)):
        x[:, sho] = np.array([side * dims["sho_w"], -0.02, 0.0])
        x[:, sho, 1] -= goal["drop"]
        pole = np.broadcast_to(np.array([side * 1.0, -0.6, -0.5]), (T, 3))
        x[:, elb], x[:, wri] = _two_link(x[:, sho], x[:, sho] + goal["hands"][side], dims["upper"], dims["fore"], pole)
    for side, hip, kne, ank in ((-1.0, _RHIP, _RKNE, _RANK), (1.0, _LHIP, _LKNE, _LANK)):
        x[:, hip] = np.array([side * dims["hip_w"], -dims["torso"], 0.0])
        x[:, hip, 1] -= goal["drop"]
        pole = np.broadcast_to(np.array([side * 0.2, 0.0, 1.0]), (T, 3))
        ground_foot = np.array([side * dims["hip_w"], -dims["torso"], 0.0]) + goal["feet"][side]
        x[:, kne], x[:, ank] = _two_link(x[:, hip], ground_foot, dims["thigh"], dims["shin"], pole)
    x += goal["root"][:, None, :]
    x[..., 1] += dims["torso"] * 0.5 + 0.4 * size[2]  # body centre near y = 0
    sway = 0.01 * np.sin(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 6.3))
    x[..., 0] += sway[:, None]
    return x


def _project(x: np.ndarray, rng: np.random.Generator, yaw_range: float, scale: float,
             center: tuple[float, float], roll: float) -> np.ndarray:
    """Orthographic view from a random yaw, then image-plane rotation, scale, translation; y down."""
    yaw = rng.uniform(-yaw_range, yaw_range)
    cy, sy = np.cos(yaw), np.sin(yaw)
    px = cy * x[..., 0] + sy * x[..., 2]
    py = x[..., 1]
    cr, sr = np.cos(roll), np.sin(roll)
    rx, ry = cr * px - sr * py, sr * px + cr * py
    return np.stack([center[0] + scale * rx, center[1] - scale * ry], axis=-1)  # (T, 18, 2)


def synth_clip(seed: int, split: str, index: int, label: int) -> dict:
    """One Kinetics-Skeleton JSON document (as a dict) of action `ACTIONS[label]`."""
    rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
    T = int(rng.integers(50, 91))
    t = np.arange(T) / FPS
    action = ACTIONS[label]
    people = []
    yaw_range = np.deg2rad(70 if action == "walk" else 35)
    main_scale = rng.uniform(0.28, 0.5)
    main_center = (rng.uniform(0.3, 0.7), rng.uniform(0.4, 0.6))
    main = _project(_body(action, t, rng), rng, yaw_range, main_scale, main_center, np.deg2rad(rng.uniform(-12, 12)))
    people.append((main, rng.uniform(0.55, 0.95, size=(T, 18))))
    if rng.random() < 0.25:  # an idle bystander, less confidently detected
        other_center = ((main_center[0] + rng.uniform(0.25, 0.4)) % 1.0, rng.uniform(0.4, 0.6))
        other = _project(_idle_body(t, rng), rng, np.deg2rad(35), rng.uniform(0.2, 0.4), other_center, np.deg2rad(rng.uniform(-8, 8)))
        people.append((other, rng.uniform(0.15, 0.45, size=(T, 18))))
    frames = []
    empty_head = int(rng.integers(0, 6)) if rng.random() < 0.2 else 0
    streak = None
    if rng.random() < 0.3:  # one joint lost for a while (occlusion)
        start = int(rng.integers(0, T))
        streak = (int(rng.integers(0, 18)), start, start + int(rng.integers(5, 20)))
    for f in range(T):
        skeletons = []
        for k, (xy, score) in enumerate(people):
            if f < empty_head:
                continue
            xy_f = xy[f] + rng.normal(0.0, 0.004, size=(18, 2))
            sc = score[f].copy()
            lost = rng.random(18) < 0.02
            if k == 0 and streak and streak[1] <= f < streak[2]:
                lost[streak[0]] = True
            sc[lost] = 0.0
            xy_f[lost] = 0.0
            skeletons.append({"pose": np.round(xy_f, 4).ravel().tolist(), "score": np.round(sc, 3).tolist()})
        if len(skeletons) > 1 and rng.random() < 0.5:
            skeletons.reverse()  # listing order must not matter: preparation sorts by score
        frames.append({"frame_index": f + 1, "skeleton": skeletons})
    return {"data": frames, "label": action, "label_index": int(label)}


def _idle_body(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = _body("walk", np.zeros_like(t), rng)  # frozen mid-stride pose, no walking
    return x + 0.01 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.3))[:, None, None]


def write_synthetic_raw(raw_dir: str | Path, seed: int = 0, num_train: int = DEFAULT_NUM_TRAIN,
                        num_val: int = DEFAULT_NUM_VAL) -> Path:
    """Write the release layout: kinetics_{train,val}/<id>.json + kinetics_{train,val}_label.json."""
    raw_dir = Path(raw_dir)
    for split, n in (("train", num_train), ("val", num_val)):
        if n < len(ACTIONS):
            raise ValueError(f"num_{split} must be >= {len(ACTIONS)} (one clip per action), got {n}")
        clip_dir = raw_dir / f"kinetics_{split}"
        clip_dir.mkdir(parents=True, exist_ok=True)
        table = {}
        order = np.random.default_rng([seed, _SPLIT_IDS[split], 10**6]).permutation(n)
        for i in range(n):
            label = int(order[i] % len(ACTIONS))  # balanced classes, shuffled order
            cid = f"synth_{split}_{i:05d}"
            doc = synth_clip(seed, split, i, label)
            (clip_dir / f"{cid}.json").write_text(json.dumps(doc, separators=(",", ":")))
            table[cid] = {"has_skeleton": True, "label": ACTIONS[label], "label_index": label}
        (raw_dir / f"kinetics_{split}_label.json").write_text(json.dumps(table, indent=1))
    return raw_dir


def _settings(seed: int, num_train: int, num_val: int) -> dict:
    return {"seed": int(seed), "num_train": int(num_train), "num_val": int(num_val),
            "generator_version": GENERATOR_VERSION, "format_version": FORMAT_VERSION}


def prepare_synthetic(out_dir: str | Path, seed: int = 0, num_train: int = DEFAULT_NUM_TRAIN,
                      num_val: int = DEFAULT_NUM_VAL, raw_dir: str | Path | None = None, workers: int = 1,
                      command: str | None = None) -> Path:
    """Generate the raw JSON (into `raw_dir`, default OUT/raw) and prepare it with the Kinetics reader."""
    from .kinetics import plan_kinetics
    from .plan import Problems
    from .engine import run_plan

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # whatever was here is being replaced
    raw_dir = Path(raw_dir) if raw_dir else out_dir / "raw"
    raw_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_raw = Path(tempfile.mkdtemp(prefix=".raw-tmp-", dir=raw_dir.parent))
    os.chmod(tmp_raw, 0o755)  # mkdtemp makes 0700
    try:
        write_synthetic_raw(tmp_raw, seed, num_train, num_val)
        if raw_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=".raw-old-", dir=raw_dir.parent))
            os.replace(raw_dir, old / "raw")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp_raw, raw_dir)
    finally:
        shutil.rmtree(tmp_raw, ignore_errors=True)
    plan = plan_kinetics(raw_dir, Problems(skip_bad=False), num_classes=len(ACTIONS), kind="synthetic",
                         class_names=list(ACTIONS))
    plan.notes.append("synthetic demo: procedurally animated OpenPose-18 skeletons, prepared by the Kinetics reader")
    if command is None:
        command = (f"python -m amanet_fast.data.prepare synthetic --out {out_dir} --seed {seed} "
                   f"--num-train {num_train} --num-val {num_val}")
    return run_plan(plan, out_dir, workers=workers, command=command, progress=False,
                    extra={"synthetic": _settings(seed, num_train, num_val)})


@contextlib.contextmanager
def _dir_lock(directory: Path):
    """Serialize concurrent `ensure_synthetic` calls (e.g. several DDP ranks) on POSIX."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: atomic writes still keep it consistent
        yield
        return
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_synthetic(out_dir: str | Path, seed: int = 0, num_train: int = DEFAULT_NUM_TRAIN,
                     num_val: int = DEFAULT_NUM_VAL) -> Path:
    """The prepared demo dataset in `out_dir`, generated only if missing or made with other settings."""
    out_dir = Path(out_dir)
    want = _settings(seed, num_train, num_val)
    with _dir_lock(out_dir):
        manifest = read_manifest(out_dir)
        if manifest is not None and manifest.get("kind") == "synthetic" and manifest.get("synthetic") == want:
            return out_dir
        log.info("generating the synthetic demo dataset in %s (%s)", out_dir, want)
        return prepare_synthetic(out_dir, seed, num_train, num_val)
