"""Whole-clip preprocessing of the CTR-GCN family's protocol, as options for every dataset.

Since CTR-GCN (ICCV 2021) the published NW-UCLA numbers (CTR-GCN, InfoGCN, HD-GCN, ...)
share one feeder; `ClipProtocol` is that feeder's steps, each optional, on one `(C, T, V, M)`
sample (docs/protocol.md):

1. keep the first `persons` bodies;
2. take the valid frames (first to last non-zero frame) as the clip;
3. translate so that joint `center_joint` of the clip's first frame (first body) is the origin;
4. training only: rotate about x and y by integer angles drawn from [-rotate_deg, rotate_deg]
   and scale uniformly by a factor from `scale_range` (a random view);
5. min-max normalise each coordinate axis over the whole clip to [-1, 1];
6. resample the clip to `resample` frames: linearly spaced frame indices for evaluation; for
   training a sorted random draw of frame indices (each frame may repeat), as that feeder does.

Evaluation (`rng=None`) is deterministic, so prediction on a raw file gives the same input as
evaluation on the prepared sample.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .augment import valid_range

__all__ = ["ClipProtocol", "PROTOCOL_KEYS"]

# config key under `data:` -> ClipProtocol field
PROTOCOL_KEYS = {
    "persons": "persons",
    "center_joint": "center_joint",
    "view_rotate_deg": "rotate_deg",
    "view_scale": "scale_range",
    "minmax_normalize": "minmax",
    "resample": "resample",
}


@dataclass(frozen=True)
class ClipProtocol:
    persons: int | None = None
    center_joint: int | None = None
    rotate_deg: float = 0.0
    scale_range: tuple[float, float] | None = None
    minmax: bool = False
    resample: int | None = None

    @classmethod
    def from_config(cls, data_cfg: dict[str, Any]) -> "ClipProtocol":
        values = {field: data_cfg.get(key) for key, field in PROTOCOL_KEYS.items()}
        values["rotate_deg"] = float(values["rotate_deg"] or 0.0)
        values["minmax"] = bool(values["minmax"])
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipProtocol":
        """Inverse of to_dict (a checkpoint's record)."""
        d = dict(d)
        if d.get("scale_range") is not None:
            d["scale_range"] = tuple(float(v) for v in d["scale_range"])
        return cls(**d)

    @property
    def active(self) -> bool:
        return self != ClipProtocol()

    @property
    def whole_clip(self) -> bool:
        """The steps that need the clip's valid frames (not a fixed-length window of them)."""
        return (self.center_joint is not None or self.minmax or self.resample is not None
                or self.rotate_deg > 0 or self.scale_range is not None)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["scale_range"] is not None:
            d["scale_range"] = list(d["scale_range"])
        return d

    def check(self, num_joints: int, coord_dims: int, where: str) -> None:
        """Options that cannot apply to this data: one line naming the key and the fix."""
        if self.persons is not None and (not isinstance(self.persons, int) or self.persons < 1):
            raise ValueError(f"data.persons: expected a positive integer or null, got {self.persons!r}")
        if self.center_joint is not None and not (isinstance(self.center_joint, int)
                                                  and 0 <= self.center_joint < num_joints):
            raise ValueError(f"data.center_joint: expected a joint index 0..{num_joints - 1} of {where}, "
                             f"got {self.center_joint!r}")
        if not 0 <= self.rotate_deg <= 180:
            raise ValueError(f"data.view_rotate_deg: expected degrees in [0, 180], got {self.rotate_deg!r}")
        if self.rotate_deg > 0 and coord_dims != 3:
            raise ValueError(f"data.view_rotate_deg: rotates x, y, z, but {where} has {coord_dims}D coordinates; "
                             "set it to 0 (data.view_scale still applies)")
        if self.scale_range is not None and (len(self.scale_range) != 2
                                             or not 0 < self.scale_range[0] <= self.scale_range[1]):
            raise ValueError(f"data.view_scale: expected [low, high] with 0 < low <= high, got "
                             f"{list(self.scale_range)!r}")
        if self.resample is not None and (not isinstance(self.resample, int) or self.resample < 1):
            raise ValueError(f"data.resample: expected a positive number of frames or null, got {self.resample!r}")

    def apply(self, x: np.ndarray, coord_dims: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """(C, T, V, M) float32 -> the protocol's sample; `rng` None = evaluation (deterministic)."""
        if self.persons is not None:
            x = x[..., :self.persons]
        if not self.whole_clip:
            return x
        begin, end = valid_range(x)
        if end == begin:
            raise ValueError("empty skeleton: no frame holds a non-zero value")
        x = x[:, begin:end].astype(np.float32, copy=True)
        body = np.abs(x).sum(axis=(0, 2)) > 0  # (T, M): bodies present in each frame
        coords = x[:coord_dims]  # a view: the steps below edit x in place
        if self.center_joint is not None:
            first_body = int(np.flatnonzero(body[0])[0]) if body[0].any() else 0
            coords -= coords[:, 0, self.center_joint, first_body][:, None, None, None]
        if rng is not None and (self.rotate_deg > 0 or self.scale_range is not None):
            coords[...] = self._random_view(coords, rng)
        if self.minmax:
            coords[...] = _minmax(coords, body)
        coords *= body[None, :, None, :]  # absent bodies stay exactly zero
        if self.resample is not None:
            x = x[:, _resample_indices(x.shape[1], self.resample, rng)]
        return np.ascontiguousarray(x)

    def _random_view(self, coords: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        limit = int(round(self.rotate_deg))
        ax, ay = (np.deg2rad(rng.integers(-limit, limit + 1)) for _ in range(2))
        s = rng.uniform(*self.scale_range) if self.scale_range is not None else 1.0
        if coords.shape[0] != 3:
            return coords * s
        rot_x = np.array([[1, 0, 0], [0, np.cos(ax), np.sin(ax)], [0, -np.sin(ax), np.cos(ax)]])
        rot_y = np.array([[np.cos(ay), 0, -np.sin(ay)], [0, 1, 0], [np.sin(ay), 0, np.cos(ay)]])
        m = rot_y @ rot_x * s  # row vectors: p' = p @ Ry Rx S
        return np.einsum("ctvm,cd->dtvm", coords, m).astype(np.float32)


def _minmax(coords: np.ndarray, body: np.ndarray) -> np.ndarray:
    """Each axis mapped to [-1, 1] over the present bodies' joints; a constant axis becomes 0."""
    mask = np.broadcast_to(body[None, :, None, :], coords.shape)
    lo = np.where(mask, coords, np.inf).min(axis=(1, 2, 3), keepdims=True)
    hi = np.where(mask, coords, -np.inf).max(axis=(1, 2, 3), keepdims=True)
    span = hi - lo
    out = np.where(span > 0, (coords - lo) / np.where(span > 0, span, 1) * 2 - 1, 0.0)
    return out.astype(np.float32)


def _resample_indices(n: int, frames: int, rng: np.random.Generator | None) -> np.ndarray:
    if rng is None:
        return np.linspace(0, n - 1, frames).astype(np.int64)
    # A sorted draw without replacement from 100 copies of every frame index (the feeder's rule):
    # short clips repeat frames, long ones skip some, order is kept.
    return np.sort(rng.choice(n * 100, size=frames, replace=False) % n)
