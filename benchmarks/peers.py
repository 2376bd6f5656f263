"""The peers the two attention ops are benchmarked against (shared by the
pytest-benchmark suite and `python -m benchmarks.gpu_suite`).

  sdpa     F.scaled_dot_product_attention on unfolded windows with a float bias
           (window_attention) / on (B*H, G, g, J*D) frame groups with a boolean
           mask for the short last group (frame_group_attention)
  flex     FlexAttention on unfolded windows, score_mod looks the bias up
           (window_attention; CUDA only: FlexAttention has no CPU backward)
  compile  torch.compile of the eager reference

Every peer takes the model's (B, H, T, J, D) views and returns the op's output
shape; benchmarks/test_kernels.py checks each against the eager reference.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F

from kernels.reference import (
    frame_group_attention_reference,
    tile_bias,
    unfold_windows,
    window_attention_reference,
)

__all__ = ["sdpa_window", "flex_window", "sdpa_frame_group", "compiled_reference"]


def _unfolded(x: torch.Tensor, window: int) -> torch.Tensor:
    B, H, T, J, D = x.shape
    return unfold_windows(x, window).transpose(1, 2).reshape(B * T, H, window * J, D)


def sdpa_window(q, k, v, bias, window: int, scale: float) -> torch.Tensor:
    """Unfold windows to (B*T, H, window*J, D) and run SDPA with the tiled bias
    as a float mask (only the memory-efficient/math backends take one)."""
    B, H, T, J, D = q.shape
    mask = tile_bias(bias.to(q.dtype), window).reshape(-1, H if bias.dim() == 3 else 1, window * J, window * J)
    out = F.scaled_dot_product_attention(_unfolded(q, window), _unfolded(k, window), _unfolded(v, window),
                                         attn_mask=mask, scale=scale)
    return out.view(B, T, H, window, J, D).transpose(1, 2)


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def flex_window(q, k, v, bias, window: int, scale: float) -> torch.Tensor:
    """FlexAttention on the unfolded windows; score_mod adds bias[h, j_q, j_k]
    (tokens are frame-major, so a token's joint is its index mod J)."""
    B, H, T, J, D = q.shape
    bias3 = bias if bias.dim() == 3 else bias.expand(H, J, J)

    def add_bias(score, b, h, q_idx, kv_idx):
        return score + bias3[h, q_idx % J, kv_idx % J]

    out = _compiled_flex()(_unfolded(q, window), _unfolded(k, window), _unfolded(v, window),
                           score_mod=add_bias, scale=scale)
    return out.view(B, T, H, window, J, D).transpose(1, 2)


def sdpa_frame_group(q, k, v, group: int, scale: float) -> torch.Tensor:
    """Frames as tokens of J*D features, groups as SDPA 'heads': (B*H, G, g, J*D),
    boolean mask hiding the padding frames of the short last group."""
    B, H, T, J, D = q.shape
    G = -(-T // group)
    pad = G * group - T

    def grouped(x):
        return F.pad(x.reshape(B * H, T, J * D), (0, 0, 0, pad)).view(B * H, G, group, J * D)

    mask = None
    if pad:
        exists = torch.arange(G * group, device=q.device).view(G, group) < T
        mask = exists[None, :, None, :].expand(1, G, group, group)
    out = F.scaled_dot_product_attention(grouped(q), grouped(k), grouped(v), attn_mask=mask, scale=scale)
    return out.reshape(B, H, G * group, J, D)[:, :, :T]


def compiled_reference(op: str, backend: str = "inductor") -> Callable:
    """torch.compile of the eager reference of `op` ("window" or "frame_group"),
    shape-specialized: benchmarks time one shape at a time."""
    fn = window_attention_reference if op == "window" else frame_group_attention_reference
    return torch.compile(fn, dynamic=False, backend=backend)
