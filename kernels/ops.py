"""Both attention ops as PyTorch custom ops (torch.library), so torch.compile
traces a model that calls them as single opaque nodes: no graph break, and
inductor never compiles their insides.

    amanet::window_attention(q, k, v, bias, window, scale) -> out
    amanet::window_attention_backward(q, k, v, bias, dout, window, scale, compute_dbias) -> (grads, dbias)
    amanet::frame_group_attention(q, k, v, group, scale) -> (out, probs)
    amanet::frame_group_attention_backward(q, k, v, probs, dout, group, scale) -> (dq, dk, dv)

CUDA tensors run the Triton kernels; every other device runs the eager
reference, whose backward ops are explicit formulas (autograd does not run
inside a custom op's implementation), so inductor never compiles a reference
backward.
Each implementation logs once, when it first RUNS (outside any traced graph),
which backend it is: under torch.compile the public functions cannot log.

Output layouts are fixed per op, not per device, so one fake implementation
serves every device (tests/kernels/test_custom_ops.py checks the Triton
launchers still return them):
- window_attention: (B, H, D, window, T, J) storage viewed as
  (B, H, T, window, J, D), the layout the Triton forward stores (STFEM's
  collapse reads it as a view); defined by window_attention._empty_output.
- window_attention_backward: dq, dk, dv packed in one (3, B, H, D, T, J)
  buffer viewed as (3, B, H, T, J, D) (custom ops may not return aliasing
  tensors, and the Triton backward writes all three into one buffer);
  dbias like bias, or an empty (0,) tensor when compute_dbias is False.
- frame_group_attention: out and dq/dk/dv like torch.empty_like(q/k/v), probs
  (B*H, groups, G2, G2) with G2 the group padded to a power of two, fp32
  (float64 for float64 inputs, which only the reference takes).
"""
from __future__ import annotations

import importlib
import logging

import torch
import triton

from ._checks import announce
from .reference import (_compute_dtype, frame_group_attention_reference, frame_group_probs, grouped_frames,
                        window_attention_reference, window_attention_reference_backward)

# `kernels.window_attention` / `kernels.frame_group_attention` are also the re-exported
# functions' names: import the modules explicitly.
_wa = importlib.import_module("kernels.window_attention")
_fga = importlib.import_module("kernels.frame_group_attention")

NAMESPACE = "amanet"
logger = logging.getLogger("kernels")
_announced_eager_fallbacks: set[tuple[int, int]] = set()


# --------------------------------------------------------------------------- layouts (shared by every impl and the fakes)


def window_output_like(q: torch.Tensor, window: int) -> torch.Tensor:
    return _wa._empty_output(q, window)  # the layout the Triton forward stores


def window_grads_like(q: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    return _wa._empty_grads(q, device)  # the layout the Triton backward stores


def _dbias_like(bias: torch.Tensor, compute_dbias: bool) -> torch.Tensor:
    return bias.new_empty(bias.shape if compute_dbias else (0,))


def frame_group_probs_like(q: torch.Tensor, group: int) -> torch.Tensor:
    B, H, T = q.shape[:3]
    g = _fga.effective_group(group, T)
    g2 = triton.next_power_of_2(g)
    return q.new_empty((B * H, triton.cdiv(T, g), g2, g2), dtype=_compute_dtype(q.dtype))


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.stride() == b.stride() and a.dtype == b.dtype


def _into(layout: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` in `layout`'s strides: itself when it already has them, else one copy."""
    if _same_layout(value, layout):
        return value
    return layout.copy_(value)


def _pack_grads(q: torch.Tensor, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor) -> torch.Tensor:
    """dq, dk, dv as one (3, ...) tensor in window_grads_like's layout, without a copy when
    they already are the three slices of such a buffer (what the Triton backward returns)."""
    want = window_grads_like(q, device="meta")
    step = want.stride(0)
    if (all(g.shape == want.shape[1:] and g.stride() == want.stride()[1:] and g.dtype == q.dtype
            for g in (dq, dk, dv))
            and dq.untyped_storage().data_ptr() == dk.untyped_storage().data_ptr() == dv.untyped_storage().data_ptr()
            and dk.storage_offset() - dq.storage_offset() == step
            and dv.storage_offset() - dk.storage_offset() == step):
        return dq.as_strided(want.shape, want.stride(), dq.storage_offset())
    packed = window_grads_like(q)
    for dst, src in zip(packed.unbind(0), (dq, dk, dv)):
        dst.copy_(src)
    return packed


# --------------------------------------------------------------------------- window_attention


@torch.library.custom_op(f"{NAMESPACE}::window_attention", mutates_args=())
def window_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int,
                        scale: float) -> torch.Tensor:
    announce(_wa.OP, "eager", q.device.type)
    return window_output_like(q, window).copy_(window_attention_reference(q, k, v, bias, window, scale))


def _window_fallback(q: torch.Tensor, window: int) -> bool:
    """backend='auto' on CUDA with a window that does not fit the Triton tile runs the
    reference (the public function refuses it for backend='triton'); said once."""
    J = q.shape[3]
    if _wa.triton_supports(window, J):
        return False
    if (window, J) not in _announced_eager_fallbacks:
        _announced_eager_fallbacks.add((window, J))
        logger.warning("%s: window*J = %d tokens exceeds the Triton tile (%d); using the eager backend",
                       _wa.OP, window * J, _wa.MAX_WINDOW_TOKENS)
    return True


@window_attention_op.register_kernel("cuda")
def _window_attention_cuda(q, k, v, bias, window, scale):
    if _window_fallback(q, window):
        return window_output_like(q, window).copy_(window_attention_reference(q, k, v, bias, window, scale))
    announce(_wa.OP, "triton", q.device.type)
    return _into(window_output_like(q, window), _wa._window_forward(q, k, v, bias, window, scale))


@window_attention_op.register_fake
def _(q, k, v, bias, window, scale):
    return window_output_like(q, window)


@torch.library.custom_op(f"{NAMESPACE}::window_attention_backward", mutates_args=())
def window_attention_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                                 dout: torch.Tensor, window: int, scale: float,
                                 compute_dbias: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return _window_reference_backward(q, k, v, bias, dout, window, scale, compute_dbias)


def _window_reference_backward(q, k, v, bias, dout, window, scale, compute_dbias):
    dq, dk, dv, dbias = window_attention_reference_backward(q, k, v, bias, dout, window, scale, compute_dbias)
    return _pack_grads(q, dq, dk, dv), dbias if compute_dbias else _dbias_like(bias, False)


@window_attention_backward_op.register_kernel("cuda")
def _window_attention_backward_cuda(q, k, v, bias, dout, window, scale, compute_dbias):
    if not _wa.triton_supports(window, q.shape[3]):
        return _window_reference_backward(q, k, v, bias, dout, window, scale, compute_dbias)
    dq, dk, dv, dbias = _wa._window_backward(q, k, v, bias, dout, window, scale, compute_dbias)
    return _pack_grads(q, dq, dk, dv), dbias if compute_dbias else _dbias_like(bias, False)


@window_attention_backward_op.register_fake
def _(q, k, v, bias, dout, window, scale, compute_dbias):
    return window_grads_like(q), _dbias_like(bias, compute_dbias)


def _window_setup_context(ctx, inputs, output):
    q, k, v, bias, window, scale = inputs
    ctx.save_for_backward(q, k, v, bias)
    ctx.window, ctx.scale = window, scale


def _window_backward(ctx, dout):
    q, k, v, bias = ctx.saved_tensors
    need_bias = ctx.needs_input_grad[3]
    grads, dbias = window_attention_backward_op(q, k, v, bias, dout, ctx.window, ctx.scale, need_bias)
    dq, dk, dv = grads.unbind(0)
    return dq, dk, dv, dbias if need_bias else None, None, None


window_attention_op.register_autograd(_window_backward, setup_context=_window_setup_context)


# --------------------------------------------------------------------------- frame_group_attention


@torch.library.custom_op(f"{NAMESPACE}::frame_group_attention", mutates_args=())
def frame_group_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int,
                             scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    announce(_fga.OP, "eager", q.device.type)
    group = _fga.effective_group(group, q.shape[2])
    probs = frame_group_probs(q, k, group, scale)  # (B, H, groups, g, g)
    padded = frame_group_probs_like(q, group).zero_()
    padded.view(*probs.shape[:3], *padded.shape[2:])[..., :group, :group] = probs
    out = torch.empty_like(q).copy_(frame_group_attention_reference(q, k, v, group, scale, probs=probs))
    return out, padded


@frame_group_attention_op.register_kernel("cuda")
def _frame_group_attention_cuda(q, k, v, group, scale):
    announce(_fga.OP, "triton", q.device.type)
    return _fga.fga_forward(q, k, v, group, scale)


@frame_group_attention_op.register_fake
def _(q, k, v, group, scale):
    return torch.empty_like(q), frame_group_probs_like(q, group)


@torch.library.custom_op(f"{NAMESPACE}::frame_group_attention_backward", mutates_args=())
def frame_group_attention_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, probs: torch.Tensor,
                                      dout: torch.Tensor, group: int,
                                      scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Explicit softmax-attention backward from the saved probabilities, per group.
    B, H, T, J, D = q.shape
    g = _fga.effective_group(group, T)
    groups = probs.shape[1]
    cdt = _compute_dtype(q.dtype)
    p = probs.view(B, H, groups, *probs.shape[2:])[..., :g, :g].to(cdt)
    qg, kg, vg, dog = (grouped_frames(x, g) for x in (q, k, v, dout))
    dp = dog @ vg.transpose(-1, -2)
    ds = p * (dp - (p * dp).sum(-1, keepdim=True)) * scale
    # Rows of frames past T: dout is zero there, so dS is zero; P is zero on their columns.
    grads = (ds @ kg, ds.transpose(-1, -2) @ qg, p.transpose(-1, -2) @ dog)

    def ungrouped(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(like).copy_(x.reshape(B, H, groups * g, J, D)[:, :, :T])

    return tuple(ungrouped(x, like) for x, like in zip(grads, (q, k, v)))  # type: ignore[return-value]


@frame_group_attention_backward_op.register_kernel("cuda")
def _frame_group_attention_backward_cuda(q, k, v, probs, dout, group, scale):
    return _fga.fga_backward(q, k, v, probs, dout, group, scale)


@frame_group_attention_backward_op.register_fake
def _(q, k, v, probs, dout, group, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _fga_setup_context(ctx, inputs, output):
    q, k, v, group, scale = inputs
    ctx.save_for_backward(q, k, v, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.group, ctx.scale = group, scale


def _fga_backward(ctx, dout, _dprobs):
    q, k, v, probs = ctx.saved_tensors
    dq, dk, dv = frame_group_attention_backward_op(q, k, v, probs, dout, ctx.group, ctx.scale)
    return dq, dk, dv, None, None


frame_group_attention_op.register_autograd(_fga_backward, setup_context=_fga_setup_context)
