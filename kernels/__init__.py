"""Fused Triton attention kernels of amanet-fast (leaf package: torch + triton only).

    window_attention(q, k, v, bias, window, *, scale=None, backend="auto")
    frame_group_attention(q, k, v, group, *, scale=None, backend="auto")

backend: "auto" (Triton on CUDA tensors, eager elsewhere), "triton", "eager".
Modules: docs/kernels.md ("Package layout"); maths: docs/design.md §2.
"""
from ._checks import BACKENDS, resolve_backend
from .api import frame_group_attention, window_attention

__all__ = ["window_attention", "frame_group_attention", "BACKENDS", "resolve_backend"]
