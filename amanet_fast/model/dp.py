"""AMANet's data-preprocessing (DP) features, paper eq. (3)-(8) and Alg. 1.

DP enriches the raw input with relative coordinates, velocity and
acceleration, concatenated on the channel axis; the model's input BatchNorm
then normalizes the concatenation (the "BN" of eq. 8).

Readings worth stating:
- Alien relative coordinates ("alien", default): each body part gets a
  moving frame at its origin joint o; the first axis runs along x_r - x_o, the
  second along the part of x_c - x_o orthogonal to it, the third is their
  cross product (2D: the first axis rotated +90°). A joint maps to
  s * R^T (x_j - x_o) / |x_r - x_o|, so the axis joint r lands on (s, 0, 0) —
  the paper's "Q = (s, 0, 0)" — and the result is invariant to rigid motion
  and to body scale.
- "alien_pinv": Alg. 1 taken literally. The only map it pins down is the
  least-norm one sending u = x_r - x_o to Q = (s, 0, 0): M = Q u^+ =
  Q u^T / |u|^2, a rank-1 map, so only the first coordinate is non-zero.
- "center": eq. (5), joint minus the layout's center joint (Table 2 ori_rel).
- "center+alien": both (Table 2's 15-channel row).
- Missing data (`amanet_fast.streams.present`, docs/design.md §3.2): without a
  confidence channel a body is missing in a frame when all its coordinates
  are exactly 0 (padding, no detection); an exactly-zero joint of a present
  body is real (NTU's pre-normalized spine-mid, NW-UCLA's frame-0 spine, a
  root's zero bone). With `confidence=True` (joint stream of Kinetics /
  pyskl 2D: channel `coord_dims` is the OpenPose/COCO score) a joint with score
  0 is missing. Missing bodies/joints, missing frame joints o/r/c and
  degenerate frames (|x_r - x_o| or the orthogonal side component below
  `eps`) give 0, never NaN.
- Channels after the first `coord_dims` (Kinetics' OpenPose score) are not
  geometry: every derived group (relative, velocity, acceleration) carries the
  score through unchanged, so each group keeps C channels.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..graphs import SkeletonLayout
from ..streams import present

__all__ = ["DP_MODES", "DataPreprocessing", "velocity", "acceleration"]

DP_MODES = ("alien", "center", "alien_pinv", "none", "center+alien")


def velocity(x: torch.Tensor) -> torch.Tensor:
    """I_vel[0] = I[0], I_vel[t] = I[t] - I[t-1] along the frame axis (dim 2 of (N, C, T, V, M))."""
    return torch.cat([x[:, :, :1], x[:, :, 1:] - x[:, :, :-1]], dim=2)


def acceleration(vel: torch.Tensor) -> torch.Tensor:
    """I_acc[0:2] = I_vel[0:2], I_acc[t] = I_vel[t] - I_vel[t-1] for t >= 2."""
    return torch.cat([vel[:, :, :2], vel[:, :, 2:] - vel[:, :, 1:-1]], dim=2)


class DataPreprocessing(nn.Module):
    """(N, C, T, V, M) -> (N, G*C, T, V, M), groups [I, rel..., vel, acc] (eq. 8 order)."""

    def __init__(self, layout: SkeletonLayout, mode: str = "alien", scale: float = 1.2,
                 coord_dims: int = 3, in_channels: int = 3, eps: float = 1e-6,
                 confidence: bool = False) -> None:
        super().__init__()
        if mode not in DP_MODES:
            raise ValueError(f"dp_mode must be one of {DP_MODES}, got {mode!r}")
        if coord_dims not in (2, 3) or coord_dims > in_channels:
            raise ValueError(f"coord_dims must be 2 or 3 and <= in_channels={in_channels}, got {coord_dims}")
        if "alien" in mode and not layout.parts:
            raise ValueError(f"dp_mode={mode!r} needs body parts, layout {layout.name!r} defines none")
        self.mode, self.scale, self.coord_dims, self.in_channels, self.eps = mode, scale, coord_dims, in_channels, eps
        if confidence and in_channels <= coord_dims:
            raise ValueError(f"confidence=True needs a score channel after the {coord_dims} coordinates "
                             f"(in_channels={in_channels})")
        self.confidence = confidence
        self.center = layout.center
        origin, axis, side = [0] * layout.num_joints, [0] * layout.num_joints, [0] * layout.num_joints
        for part in layout.parts:
            for j in part.members:
                origin[j], axis[j], side[j] = part.origin, part.axis, part.side
        for name, idx in (("origin_idx", origin), ("axis_idx", axis), ("side_idx", side)):
            self.register_buffer(name, torch.tensor(idx, dtype=torch.long), persistent=False)

    @property
    def num_groups(self) -> int:
        return {"none": 3, "center+alien": 5}.get(self.mode, 4)

    @property
    def out_channels(self) -> int:
        return self.num_groups * self.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"DP expects (N, {self.in_channels}, T, V, M), got {tuple(x.shape)}")
        groups = [x]
        if self.mode in ("center", "center+alien"):
            groups.append(self._with_extra(self.center_relative(x), x))
        if self.mode in ("alien", "center+alien"):
            groups.append(self._with_extra(self.alien(x, pinv=False), x))
        if self.mode == "alien_pinv":
            groups.append(self._with_extra(self.alien(x, pinv=True), x))
        vel = velocity(x[:, : self.coord_dims])
        groups.append(self._with_extra(vel, x))
        groups.append(self._with_extra(acceleration(vel), x))
        return torch.cat(groups, dim=1)

    def _with_extra(self, coords: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == self.coord_dims:
            return coords
        return torch.cat([coords, x[:, self.coord_dims:]], dim=1)

    def _present(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, T, V, M) bool: the joint is observed (per body and frame, or by its score)."""
        return present(x, self.coord_dims, self.confidence).expand(-1, -1, -1, x.shape[3], -1)

    def center_relative(self, x: torch.Tensor) -> torch.Tensor:
        p = x[:, : self.coord_dims]
        present = self._present(x)
        rel = p - p[:, :, :, self.center: self.center + 1]
        ok = present & present[:, :, :, self.center: self.center + 1]
        return torch.where(ok, rel, torch.zeros_like(rel))

    def alien(self, x: torch.Tensor, pinv: bool) -> torch.Tensor:
        p = x[:, : self.coord_dims]
        present = self._present(x)
        xo = p.index_select(3, self.origin_idx)
        u = p.index_select(3, self.axis_idx) - xo
        d = p - xo
        u_norm = torch.linalg.vector_norm(u, dim=1, keepdim=True)
        ok = (present & present.index_select(3, self.origin_idx) & present.index_select(3, self.axis_idx)
              & (u_norm > self.eps))
        safe_norm = torch.where(ok, u_norm, torch.ones_like(u_norm))
        e1 = u / safe_norm
        along = (e1 * d).sum(dim=1, keepdim=True)
        if pinv:
            first = self.scale * along / safe_norm
            rel = torch.cat([first, torch.zeros_like(d[:, 1:])], dim=1)
        elif self.coord_dims == 2:
            e2 = torch.cat([-e1[:, 1:2], e1[:, 0:1]], dim=1)
            rel = torch.cat([along, (e2 * d).sum(dim=1, keepdim=True)], dim=1) * (self.scale / safe_norm)
        else:
            w = p.index_select(3, self.side_idx) - xo
            w_perp = w - (w * e1).sum(dim=1, keepdim=True) * e1
            w_norm = torch.linalg.vector_norm(w_perp, dim=1, keepdim=True)
            ok = ok & present.index_select(3, self.side_idx) & (w_norm > self.eps)
            e2 = w_perp / torch.where(ok, w_norm, torch.ones_like(w_norm))
            e3 = torch.linalg.cross(e1, e2, dim=1)
            rel = torch.cat([along, (e2 * d).sum(dim=1, keepdim=True), (e3 * d).sum(dim=1, keepdim=True)], dim=1)
            rel = rel * (self.scale / safe_norm)
        return torch.where(ok, rel, torch.zeros_like(rel))
