"""Grouped frame attention (TFEM's Frame Features, eq. 12): Triton kernels,
launcher, autograd.Function and the thin public function, side by side."""
from __future__ import annotations

import torch

from ._checks import check_positive_int, check_qkv, choose_backend, resolve_scale
from .reference import frame_group_attention_reference

OP = "frame_group_attention"


class FrameGroupAttentionFunction(torch.autograd.Function):
    # Placeholder until the Triton kernels land (being written this session).
    @staticmethod
    def forward(ctx, q, k, v, group, scale):  # type: ignore[override]
        raise NotImplementedError("frame_group_attention: Triton backend not implemented yet")


def frame_group_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group: int,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention between the frames of each group of `group` consecutive frames.

    q, k, v: (B, H, T, J, D), any strides; each frame is one token of J*D
    features. The last group may be shorter (no padding tokens). Returns
    (B, H, T, J, D) in q's dtype.
    """
    check_qkv(OP, q, k, v)
    group = check_positive_int(OP, "group", group)
    J, D = q.shape[3], q.shape[4]
    scale = resolve_scale(OP, scale, (J * D) ** -0.5)
    if choose_backend(OP, backend, q) == "eager":
        return frame_group_attention_reference(q, k, v, group, scale)
    return FrameGroupAttentionFunction.apply(q, k, v, group, scale)
