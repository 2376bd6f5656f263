"""Windowed spatio-temporal attention (STFEM, eq. 14; window=1 is SFEM's
per-frame joint attention, eq. 10): Triton kernels, launcher, autograd.Function
and the thin public function, side by side."""
from __future__ import annotations

import torch

from ._checks import check_bias, check_positive_int, check_qkv, choose_backend, resolve_scale
from .reference import window_attention_reference

OP = "window_attention"


class WindowAttentionFunction(torch.autograd.Function):
    # Placeholder until the Triton kernels land (being written this session).
    @staticmethod
    def forward(ctx, q, k, v, bias, window, scale):  # type: ignore[override]
        raise NotImplementedError("window_attention: Triton backend not implemented yet")


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    window: int,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over every window of `window` consecutive frames.

    q, k, v: (B, H, T, J, D), any strides. bias: (J, J) or (H, J, J), added to
    every (frame, frame) block of the window's scores. Frames past T are zeros
    that still take softmax mass. Returns (B, H, T, window, J, D) in q's dtype.
    """
    check_qkv(OP, q, k, v)
    check_bias(OP, bias, q)
    window = check_positive_int(OP, "window", window)
    scale = resolve_scale(OP, scale, q.shape[-1] ** -0.5)
    if choose_backend(OP, backend, q) == "eager":
        return window_attention_reference(q, k, v, bias, window, scale)
    return WindowAttentionFunction.apply(q, k, v, bias, window, scale)
