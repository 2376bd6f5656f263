"""Both attention ops as PyTorch custom ops (torch.library): the one autograd wiring
of each op, and opaque single nodes for torch.compile (no graph break; inductor never
compiles their insides).

    amanet::window_attention(q, k, v, bias, window, scale, interpret=False) -> out
    amanet::window_attention_backward(q, k, v, bias, dout, window, scale, compute_dbias, interpret=False)
        -> (grads, dbias)
    amanet::frame_group_attention(q, k, v, group, scale, interpret=False) -> (out, probs)
    amanet::frame_group_attention_backward(q, k, v, probs, dout, group, scale, interpret=False) -> (dq, dk, dv)

CUDA tensors run the Triton launchers of window.py / frame_group.py; other devices run
the CPU implementations below (explicit formulas: autograd does not run inside a custom
op), or the same Triton launchers through the Triton interpreter when `interpret` is set
(backend="triton" on CPU, TRITON_INTERPRET=1). Each implementation logs once, when it
first runs, which backend it is (under torch.compile the public functions cannot log).

Output layouts are fixed per op, not per device, so one fake implementation serves
every device (docs/design.md §2.4; tests/kernels/test_custom_ops.py checks them).
"""
from __future__ import annotations

import logging

import torch
import triton

from . import frame_group, window
from ._checks import announce
from .reference import (_compute_dtype, frame_group_attention_reference, frame_group_probs, grouped_frames,
                        window_attention_reference, window_attention_reference_backward)

NAMESPACE = "amanet"
WINDOW_OP = window.OP
FRAME_GROUP_OP = frame_group.OP
logger = logging.getLogger("kernels")
_announced_eager_fallbacks: set[tuple[int, int]] = set()


# --------------------------------------------------------------------------- layouts (shared by every impl and the fakes)


def window_output_like(q: torch.Tensor, window_size: int) -> torch.Tensor:
    return window.empty_output(q, window_size)  # the layout the Triton forward stores


def window_grads_like(q: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    return window.empty_grads(q, device)  # the layout the Triton backward stores


def _dbias_like(bias: torch.Tensor, compute_dbias: bool) -> torch.Tensor:
    return bias.new_empty(bias.shape if compute_dbias else (0,))


def frame_group_probs_like(q: torch.Tensor, group: int) -> torch.Tensor:
    B, H, T = q.shape[:3]
    g = frame_group.effective_group(group, T)
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


def _window_grads_out(q, bias, compute_dbias, grads):
    """The backward op's outputs from (dq, dk, dv, dbias | None), whichever implementation made them."""
    dq, dk, dv, dbias = grads
    return _pack_grads(q, dq, dk, dv), dbias if compute_dbias else _dbias_like(bias, False)


# --------------------------------------------------------------------------- window_attention: CPU implementations


def cpu_window_forward(q, k, v, bias, window_size, scale):
    """Forward on devices without a Triton backend; any layout (the op copies into its own)."""
    return window_attention_reference(q, k, v, bias, window_size, scale)


def cpu_window_backward(q, k, v, bias, dout, window_size, scale, compute_dbias):
    """(dq, dk, dv, dbias | None) on devices without a Triton backend."""
    return window_attention_reference_backward(q, k, v, bias, dout, window_size, scale, compute_dbias)


# --------------------------------------------------------------------------- window_attention


# The schemas name the window size `window` (the ops' public argument names), so inside
# these two op functions `window` is an int, not the module: they call helpers only.
@torch.library.custom_op(f"{NAMESPACE}::window_attention", mutates_args=())
def window_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int,
                        scale: float, interpret: bool = False) -> torch.Tensor:
    if interpret:
        return _window_attention_triton(q, k, v, bias, window, scale)
    announce(WINDOW_OP, "eager", q.device.type)
    return _into(window_output_like(q, window), cpu_window_forward(q, k, v, bias, window, scale))


def _window_fallback(q: torch.Tensor, window_size: int) -> bool:
    """backend='auto' on CUDA with a window that does not fit the Triton tile runs the
    reference (the public function refuses it for backend='triton'); said once."""
    J = q.shape[3]
    if window.triton_supports(window_size, J):
        return False
    if (window_size, J) not in _announced_eager_fallbacks:
        _announced_eager_fallbacks.add((window_size, J))
        logger.warning("%s: window*J = %d tokens exceeds the Triton tile (%d); using the eager backend",
                       WINDOW_OP, window_size * J, window.MAX_WINDOW_TOKENS)
    return True


@window_attention_op.register_kernel("cuda")
def _window_attention_triton(q, k, v, bias, window_size, scale, interpret=False):
    if _window_fallback(q, window_size):
        return window_output_like(q, window_size).copy_(
            window_attention_reference(q, k, v, bias, window_size, scale))
    announce(WINDOW_OP, "triton", q.device.type)
    return _into(window_output_like(q, window_size), window.window_forward(q, k, v, bias, window_size, scale))


@window_attention_op.register_fake
def _(q, k, v, bias, window_size, scale, interpret=False):
    return window_output_like(q, window_size)


@torch.library.custom_op(f"{NAMESPACE}::window_attention_backward", mutates_args=())
def window_attention_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor,
                                 dout: torch.Tensor, window: int, scale: float, compute_dbias: bool,
                                 interpret: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    if interpret:
        return _window_attention_backward_triton(q, k, v, bias, dout, window, scale, compute_dbias)
    return _window_grads_out(q, bias, compute_dbias,
                             cpu_window_backward(q, k, v, bias, dout, window, scale, compute_dbias))


def _window_reference_backward(q, k, v, bias, dout, window_size, scale, compute_dbias):
    return _window_grads_out(q, bias, compute_dbias, window_attention_reference_backward(
        q, k, v, bias, dout, window_size, scale, compute_dbias))


@window_attention_backward_op.register_kernel("cuda")
def _window_attention_backward_triton(q, k, v, bias, dout, window_size, scale, compute_dbias, interpret=False):
    if not window.triton_supports(window_size, q.shape[3]):
        return _window_reference_backward(q, k, v, bias, dout, window_size, scale, compute_dbias)
    return _window_grads_out(q, bias, compute_dbias,
                             window.window_backward(q, k, v, bias, dout, window_size, scale, compute_dbias))


@window_attention_backward_op.register_fake
def _(q, k, v, bias, dout, window_size, scale, compute_dbias, interpret=False):
    return window_grads_like(q), _dbias_like(bias, compute_dbias)


def _window_setup_context(ctx, inputs, output):
    q, k, v, bias, window_size, scale, interpret = inputs
    ctx.save_for_backward(q, k, v, bias)
    ctx.window, ctx.scale, ctx.interpret = window_size, scale, interpret


def _window_backward(ctx, dout):
    q, k, v, bias = ctx.saved_tensors
    need_bias = ctx.needs_input_grad[3]
    grads, dbias = window_attention_backward_op(q, k, v, bias, dout, ctx.window, ctx.scale, need_bias,
                                                ctx.interpret)
    dq, dk, dv = grads.unbind(0)
    return dq, dk, dv, dbias if need_bias else None, None, None, None


window_attention_op.register_autograd(_window_backward, setup_context=_window_setup_context)


# --------------------------------------------------------------------------- frame_group_attention


@torch.library.custom_op(f"{NAMESPACE}::frame_group_attention", mutates_args=())
def frame_group_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int, scale: float,
                             interpret: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    if interpret:
        return _frame_group_attention_triton(q, k, v, group, scale)
    announce(FRAME_GROUP_OP, "eager", q.device.type)
    group = frame_group.effective_group(group, q.shape[2])
    probs = frame_group_probs(q, k, group, scale)  # (B, H, groups, g, g)
    padded = frame_group_probs_like(q, group).zero_()
    padded.view(*probs.shape[:3], *padded.shape[2:])[..., :group, :group] = probs
    out = torch.empty_like(q).copy_(frame_group_attention_reference(q, k, v, group, scale, probs=probs))
    return out, padded


@frame_group_attention_op.register_kernel("cuda")
def _frame_group_attention_triton(q, k, v, group, scale, interpret=False):
    announce(FRAME_GROUP_OP, "triton", q.device.type)
    return frame_group.frame_group_forward(q, k, v, group, scale)


@frame_group_attention_op.register_fake
def _(q, k, v, group, scale, interpret=False):
    return torch.empty_like(q), frame_group_probs_like(q, group)


@torch.library.custom_op(f"{NAMESPACE}::frame_group_attention_backward", mutates_args=())
def frame_group_attention_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, probs: torch.Tensor,
                                      dout: torch.Tensor, group: int, scale: float,
                                      interpret: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if interpret:
        return _frame_group_attention_backward_triton(q, k, v, probs, dout, group, scale)
    # Explicit softmax-attention backward from the saved probabilities, per group.
    B, H, T, J, D = q.shape
    g = frame_group.effective_group(group, T)
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
def _frame_group_attention_backward_triton(q, k, v, probs, dout, group, scale, interpret=False):
    return frame_group.frame_group_backward(q, k, v, probs, dout, group, scale)


@frame_group_attention_backward_op.register_fake
def _(q, k, v, probs, dout, group, scale, interpret=False):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _frame_group_setup_context(ctx, inputs, output):
    q, k, v, group, scale, interpret = inputs
    ctx.save_for_backward(q, k, v, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.group, ctx.scale, ctx.interpret = group, scale, interpret


def _frame_group_backward(ctx, dout, _dprobs):
    q, k, v, probs = ctx.saved_tensors
    dq, dk, dv = frame_group_attention_backward_op(q, k, v, probs, dout, ctx.group, ctx.scale, ctx.interpret)
    return dq, dk, dv, None, None, None


frame_group_attention_op.register_autograd(_frame_group_backward, setup_context=_frame_group_setup_context)
