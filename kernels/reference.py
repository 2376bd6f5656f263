"""Eager PyTorch references: the executable specification of both ops.

They are also the `backend="eager"` path (CPU training, CPU inference). Both
compute scores, softmax and the weighted sum in float32 (float64 stays
float64, which the naive-loop tests use) and return the input dtype.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def unfold_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, T, J, D) -> (B, H, T, window*J, D): the frames t..t+window-1 of
    every anchor t, zero-filled past the end, tokens ordered frame-major."""
    B, H, T, J, D = x.shape
    padded = F.pad(x, (0, 0, 0, 0, 0, window - 1))  # zero frames T..T+window-2
    windows = padded.unfold(2, window, 1)  # (B, H, T, J, D, window)
    return windows.permute(0, 1, 2, 5, 3, 4).reshape(B, H, T, window * J, D)


def tile_bias(bias: torch.Tensor, window: int) -> torch.Tensor:
    """(J, J) or (H, J, J) -> broadcastable (1|H, 1, window*J, window*J):
    the same joint-joint bias for every pair of frames inside a window."""
    tiled = bias.repeat(*([1] * (bias.dim() - 2)), window, window)
    if tiled.dim() == 2:
        return tiled[None, None]
    return tiled[:, None]


def window_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int, scale: float
) -> torch.Tensor:
    """Windowed spatio-temporal attention (SPEC §2.1): out (B, H, T, window, J, D)."""
    B, H, T, J, D = q.shape
    cdt = _compute_dtype(q.dtype)
    qw, kw, vw = (unfold_windows(t.to(cdt), window) for t in (q, k, v))
    scores = torch.matmul(qw, kw.transpose(-1, -2)) * scale + tile_bias(bias.to(cdt), window)
    out = torch.matmul(torch.softmax(scores, dim=-1), vw)
    return out.view(B, H, T, window, J, D).to(q.dtype)


def frame_group_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int, scale: float
) -> torch.Tensor:
    """Grouped frame attention (SPEC §2.2): each frame is one token of J*D
    features, attention inside consecutive groups of `group` frames; the last
    group may be shorter and has no padding tokens. Out (B, H, T, J, D)."""
    B, H, T, J, D = q.shape
    cdt = _compute_dtype(q.dtype)
    num_groups = -(-T // group)
    pad = num_groups * group - T

    def grouped(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x.to(cdt).reshape(B, H, T, J * D), (0, 0, 0, pad))
        return x.view(B, H, num_groups, group, J * D)

    qg, kg, vg = grouped(q), grouped(k), grouped(v)
    scores = torch.matmul(qg, kg.transpose(-1, -2)) * scale  # (B, H, G, g, g)
    if pad:
        # Frames past T do not exist: they must take no softmax mass.
        exists = torch.arange(num_groups * group, device=q.device).view(num_groups, group) < T
        scores = scores.masked_fill(~exists[:, None, :], float("-inf"))
    out = torch.matmul(torch.softmax(scores, dim=-1), vg)
    return out.reshape(B, H, num_groups * group, J, D)[:, :, :T].to(q.dtype)
