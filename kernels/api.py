"""The two public functions: argument checks, backend choice, then one call, either
to the eager reference (backend="eager") or to the custom op (kernels/ops.py), which
runs Triton on CUDA, the Triton interpreter when asked to on CPU, and the CPU
implementation otherwise. Semantics: docs/design.md §2; usage: docs/kernels.md.
"""
from __future__ import annotations

import torch

from . import frame_group, ops
from . import window as window_triton  # `window` is window_attention's argument
from ._checks import announce, check_bias, check_positive_int, check_qkv, choose_backend, resolve_scale
from .reference import frame_group_attention_reference, window_attention_reference
from .window_cpu import WindowAttentionCPU

# The eager backend trains windows > 1 by frame offset (kernels/window_cpu.py); False trains through
# autograd of the reference instead (the path before it; benchmarks.cpu_step --window-reference).
TRAIN_WINDOW_BY_OFFSETS = True


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
    that still take softmax mass. Returns (B, H, T, window, J, D) in q's dtype
    (the custom op stores it as a permuted view of a (B, H, D, window, T, J)
    buffer, the eager training path of a (B, T, J, H, D, window) one: STFEM's
    collapse reads either without a copy, NCHW or channels-last).
    """
    op = ops.WINDOW_OP
    check_qkv(op, q, k, v)
    check_bias(op, bias, q)
    size = check_positive_int(op, "window", window)
    scale = resolve_scale(op, scale, q.shape[-1] ** -0.5)
    chosen = choose_backend(op, backend, q)
    if backend == "triton" and not window_triton.triton_supports(size, q.shape[3]):
        window_triton.launch_config(q.dtype, size, q.shape[3], q.shape[-1])  # raises the explanatory ValueError
    if backend == "eager":
        if not torch.compiler.is_compiling():
            announce(op, "eager", q.device.type)
            if (TRAIN_WINDOW_BY_OFFSETS and size > 1 and torch.is_grad_enabled()
                    and any(t.requires_grad for t in (q, k, v, bias))):
                # Training: the offset formulation, about 2x faster than autograd through the reference
                # (docs/kernels.md); inference and export keep the reference itself.
                return WindowAttentionCPU.apply(q, k, v, bias, size, scale)
        return window_attention_reference(q, k, v, bias, size, scale)
    return torch.ops.amanet.window_attention(q, k, v, bias, size, scale, _interpret(chosen, q))


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
    op = ops.FRAME_GROUP_OP
    check_qkv(op, q, k, v)
    group = check_positive_int(op, "group", group)
    J, D = q.shape[3], q.shape[4]
    scale = resolve_scale(op, scale, (J * D) ** -0.5)
    chosen = choose_backend(op, backend, q)
    if chosen == "triton":
        frame_group.check_triton_group(frame_group.effective_group(group, q.shape[2]))
    if backend == "eager":
        if not torch.compiler.is_compiling():
            announce(op, "eager", q.device.type)
        return frame_group_attention_reference(q, k, v, group, scale)
    return torch.ops.amanet.frame_group_attention(q, k, v, group, scale, _interpret(chosen, q))[0]


def _interpret(chosen: str, q: torch.Tensor) -> bool:
    # Off CUDA, "triton" can only mean the interpreter (choose_backend checked it is on).
    return chosen == "triton" and not q.is_cuda
