"""Clip-length handling and MS-G3D's training augmentations, on one `(C, T, V, M)` numpy sample.

All functions are valid-frame aware: the valid segment is the span from the
first to the last frame with any non-zero value, so zero padding is never
mistaken for motion. Randomness comes from an explicit `np.random.Generator`
(the Dataset seeds it from torch, so DataLoader workers and `torch.manual_seed`
control it).
"""
from __future__ import annotations

import numpy as np

from ..streams import present

__all__ = ["PAD_MODES", "DEFAULT_PAD", "default_pad", "valid_range", "fit_length", "random_shift", "random_move"]

PAD_MODES = ("zero", "replay")
# `data.pad` default per prepared-data kind. NTU: MS-G3D's pre-normalization already
# replays null frames at preparation (the paper's reading; arrays are full); NW-UCLA:
# the paper's replay (it pads every dataset by replaying); Kinetics: zero, as MS-G3D's
# Kinetics feeder -- the paper's Kinetics numbers are compared with MS-G3D's; pyskl and
# the synthetic demo: zero, like the Kinetics-format data they resemble.
DEFAULT_PAD = {"ntu60": "replay", "ntu120": "replay", "ucla": "replay", "kinetics": "zero", "pyskl": "zero",
               "synthetic": "zero"}


def default_pad(kind: str) -> str:
    """The `data.pad` default of a prepared-data kind (zero for kinds not listed, e.g. external arrays)."""
    return DEFAULT_PAD.get(kind, "zero")

# MS-G3D / ST-GCN random_move candidates. Their code feeds the angle candidates to
# cos/sin as radians (so "10" is 573 degrees); we read them as the degrees they were
# evidently meant to be.
ANGLE_CANDIDATES_DEG = (-10.0, -5.0, 0.0, 5.0, 10.0)
SCALE_CANDIDATES = (0.9, 1.0, 1.1)
TRANSLATE_CANDIDATES = (-0.2, -0.1, 0.0, 0.1, 0.2)


def valid_range(x: np.ndarray) -> tuple[int, int]:
    """[begin, end) of the frames holding any non-zero value; (0, 0) for an empty sample."""
    nonzero = np.flatnonzero(np.abs(x).sum(axis=(0, 2, 3)) > 0)
    if nonzero.size == 0:
        return 0, 0
    return int(nonzero[0]), int(nonzero[-1]) + 1


def fit_length(x: np.ndarray, clip_len: int, rng: np.random.Generator | None = None,
               pad: str = "zero") -> np.ndarray:
    """Crop/pad the valid segment to `clip_len` frames, valid frames first.

    Longer segments: a random window when `rng` is given (MS-G3D random_choose),
    else the centre window (deterministic evaluation). Shorter ones: `pad`
    "zero" fills the rest with zeros (MS-G3D's feeder), "replay" repeats the
    segment until `clip_len` frames are filled (the paper: "padded to T = 300
    frames by replaying the actions").
    """
    if clip_len < 1:
        raise ValueError(f"clip_len must be >= 1, got {clip_len}")
    if pad not in PAD_MODES:
        raise ValueError(f"pad must be one of {PAD_MODES}, got {pad!r}")
    C, _, V, M = x.shape
    begin, end = valid_range(x)
    n = end - begin
    if n > clip_len:
        start = int(rng.integers(0, n - clip_len + 1)) if rng is not None else (n - clip_len) // 2
        begin, end = begin + start, begin + start + clip_len
    if pad == "replay" and 0 < n < clip_len:
        return np.ascontiguousarray(x[:, begin + np.arange(clip_len) % n])
    out = np.zeros((C, clip_len, V, M), dtype=x.dtype)
    out[:, :end - begin] = x[:, begin:end]
    return out


def random_shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Move the valid segment to a random start inside the clip (zeros around it)."""
    begin, end = valid_range(x)
    n, T = end - begin, x.shape[1]
    if n == 0 or n == T:
        return x
    start = int(rng.integers(0, T - n + 1))
    out = np.zeros_like(x)
    out[:, start:start + n] = x[:, begin:end]
    return out


def random_move(x: np.ndarray, rng: np.random.Generator, move_time: int = 1, *,
                confidence: bool = False) -> np.ndarray:
    """Smoothly varying random rotation / scale / translation of the x, y channels.

    Parameters are drawn at `move_time + 1` evenly spaced key frames and linearly
    interpolated in between (MS-G3D's scheme). Every joint of a body present in
    a frame moves with it, rigidly (an exactly-zero joint of a present body is
    real data, docs/design.md §3.2); absent bodies and padded frames stay exactly zero.
    With `confidence` (the last channel is an OpenPose/COCO score) joints with
    score 0 stay at zero, as the readers write them.
    """
    C, T, V, M = x.shape
    nodes = np.append(np.round(np.arange(0, T, T / move_time)).astype(int), T)
    k = len(nodes)
    angle = np.deg2rad(rng.choice(ANGLE_CANDIDATES_DEG, k))
    scale = rng.choice(SCALE_CANDIDATES, k)
    tx = rng.choice(TRANSLATE_CANDIDATES, k)
    ty = rng.choice(TRANSLATE_CANDIDATES, k)
    frames = np.arange(T)
    a, s = np.interp(frames, nodes, angle), np.interp(frames, nodes, scale)
    dx, dy = np.interp(frames, nodes, tx), np.interp(frames, nodes, ty)
    keep = present(x, C - 1 if confidence else C, confidence)[0]  # (T, 1 or V, M)
    xs, ys = x[0], x[1]
    cos, sin = (np.cos(a) * s)[:, None, None], (np.sin(a) * s)[:, None, None]
    new_x = cos * xs - sin * ys + dx[:, None, None]
    new_y = sin * xs + cos * ys + dy[:, None, None]
    out = x.copy()
    out[0] = np.where(keep, new_x, 0.0)
    out[1] = np.where(keep, new_y, 0.0)
    return out
