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
    if torch.compiler.is_compiling():
        # The same tensor as stacked shifted slices: torch 2.13's inductor CPU code for unfold's
        # backward corrupts the heap (docs/kernels.md); eager keeps unfold, the faster one there.
        return torch.stack([padded[:, :, s:s + T] for s in range(window)], dim=3).reshape(B, H, T, window * J, D)
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
    """Windowed spatio-temporal attention (docs/design.md §2.1): out (B, H, T, window, J, D)."""
    B, H, T, J, D = q.shape
    cdt = _compute_dtype(q.dtype)
    qw, kw, vw = (unfold_windows(t.to(cdt), window) for t in (q, k, v))
    scores = torch.matmul(qw, kw.transpose(-1, -2)) * scale + tile_bias(bias.to(cdt), window)
    out = torch.matmul(torch.softmax(scores, dim=-1), vw)
    return out.view(B, H, T, window, J, D).to(q.dtype)


def window_attention_reference_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dout: torch.Tensor, window: int,
    scale: float, compute_dbias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Gradients of window_attention_reference written out (softmax-attention backward
    per window, then each frame sums over the windows that hold it): the CPU backward
    of the custom op (kernels/ops.py), where autograd cannot run."""
    B, H, T, J, D = q.shape
    cdt = _compute_dtype(q.dtype)
    qw, kw, vw = (unfold_windows(t.to(cdt), window) for t in (q, k, v))
    scores = torch.matmul(qw, kw.transpose(-1, -2)) * scale + tile_bias(bias.to(cdt), window)
    p = torch.softmax(scores, dim=-1)
    dow = dout.to(cdt).reshape(B, H, T, window * J, D)
    dp = torch.matmul(dow, vw.transpose(-1, -2))
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    per_window = (torch.matmul(ds, kw) * scale, torch.matmul(ds.transpose(-1, -2), qw) * scale,
                  torch.matmul(p.transpose(-1, -2), dow))

    def fold(xw: torch.Tensor) -> torch.Tensor:
        # Window slot s of anchor t is frame t + s; slots past T were zero padding.
        xw = xw.view(B, H, T, window, J, D)
        acc = xw.new_zeros(B, H, T + window - 1, J, D)
        for s in range(window):
            acc[:, :, s:s + T] += xw[:, :, :, s]
        return acc[:, :, :T].to(q.dtype)

    dq, dk, dv = (fold(x) for x in per_window)
    dbias = None
    if compute_dbias:
        per_head = ds.view(B, H, T, window, J, window, J).sum(dim=(0, 2, 3, 5))  # (H, J, J)
        dbias = (per_head if bias.dim() == 3 else per_head.sum(0)).to(bias.dtype)
    return dq, dk, dv, dbias


def grouped_frames(x: torch.Tensor, group: int) -> torch.Tensor:
    """(B, H, T, J, D) -> (B, H, groups, group, J*D) in the compute dtype, frames past T zero."""
    B, H, T, J, D = x.shape
    # (T + g - 1) // g, not -(-T // g): exported graphs (ONNX) truncate integer division of negatives.
    num_groups = (T + group - 1) // group
    x = F.pad(x.to(_compute_dtype(x.dtype)).reshape(B, H, T, J * D), (0, 0, 0, num_groups * group - T))
    return x.view(B, H, num_groups, group, J * D)


def frame_group_probs(q: torch.Tensor, k: torch.Tensor, group: int, scale: float) -> torch.Tensor:
    """Softmax weights of grouped frame attention, (B, H, groups, group, group) in the
    compute dtype; frames past T (the short last group) take no mass."""
    T = q.shape[2]
    num_groups = (T + group - 1) // group
    scores = torch.matmul(grouped_frames(q, group), grouped_frames(k, group).transpose(-1, -2)) * scale
    # Masked even when T divides evenly (a no-op then) so that an exported graph (torch.export /
    # ONNX) has no branch on T and takes any frame count.
    exists = torch.arange(num_groups * group, device=q.device).view(num_groups, group) < T
    scores = scores.masked_fill(~exists[:, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1)


def frame_group_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int, scale: float, *,
    probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """Grouped frame attention (docs/design.md §2.2): each frame is one token of J*D
    features, attention inside consecutive groups of `group` frames; the last
    group may be shorter and has no padding tokens. Out (B, H, T, J, D).
    `probs`: frame_group_probs(q, k, group, scale) when the caller already has them."""
    B, H, T, J, D = q.shape
    if probs is None:
        probs = frame_group_probs(q, k, group, scale)
    out = torch.matmul(probs, grouped_frames(v, group))
    return out.reshape(B, H, -1, J, D)[:, :, :T].to(q.dtype)
