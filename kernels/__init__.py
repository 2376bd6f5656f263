"""Fused Triton attention kernels of amanet-fast (leaf package: torch + triton only).

    window_attention(q, k, v, bias, window, *, scale=None, backend="auto")
    frame_group_attention(q, k, v, group, *, scale=None, backend="auto")

backend: "auto" (Triton on CUDA tensors, eager elsewhere), "triton", "eager".
"""
from .frame_group_attention import frame_group_attention
from .window_attention import window_attention
from . import ops  # noqa: E402,F401  registers the torch.library custom ops the functions dispatch to

__all__ = ["window_attention", "frame_group_attention"]
