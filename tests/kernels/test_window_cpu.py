"""The offset formulation of window attention (kernels/window_cpu.py), the eager backend's
training path: exact against the reference in float64, close in float32 and bfloat16, at real
and odd shapes, with the strided q/k/v views the model passes; and wired into autograd."""
from __future__ import annotations

import pytest
import torch

from kernels import window_attention
from kernels.reference import window_attention_reference, window_attention_reference_backward
from kernels.window_cpu import WindowAttentionCPU, window_attention_cpu, window_attention_cpu_backward

# (B, H, T, J, D, window, per-head bias): NW-UCLA's 20 joints and NTU's 25 at the model's head
# widths (3 = a raw-input STFEM, 12, 24), a clip shorter than the window, one frame, odd sizes.
SHAPES = [
    (2, 1, 13, 20, 12, 3, False),
    (2, 1, 9, 20, 12, 5, True),
    (1, 2, 7, 25, 24, 5, False),
    (2, 1, 6, 25, 3, 3, True),
    (1, 1, 3, 7, 5, 5, False),
    (3, 2, 1, 4, 2, 3, True),
    (1, 3, 11, 6, 7, 2, True),
]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def inputs(B, H, T, J, D, window, per_head, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    # The model's views: (N, H*D, T, V) activations seen as (B, H, T, J, D), D the slowest axis.
    q, k, v = (torch.randn(B, H * D, T, J, generator=g, dtype=torch.float64).view(B, H, D, T, J)
               .permute(0, 1, 3, 4, 2).to(dtype) for _ in range(3))
    bias = torch.randn(*((H,) if per_head else ()), J, J, generator=g, dtype=torch.float64)
    dout = torch.randn(B, H, T, window, J, D, generator=g, dtype=torch.float64).to(dtype)
    return q, k, v, bias, dout


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + ("_hb" if s[6] else ""))
def test_float64_equals_reference(shape):
    B, H, T, J, D, window, per_head = shape
    q, k, v, bias, dout = inputs(*shape)
    assert not q.is_contiguous()
    scale = D ** -0.5
    out = window_attention_cpu(q, k, v, bias, window, scale)
    assert out.shape == (B, H, T, window, J, D) and out.dtype == q.dtype
    assert rel_err(out, window_attention_reference(q, k, v, bias, window, scale)) < 1e-12
    got = window_attention_cpu_backward(q, k, v, bias, dout, window, scale, True)
    want = window_attention_reference_backward(q, k, v, bias, dout, window, scale, True)
    for name, a, b in zip(("dq", "dk", "dv", "dbias"), got, want):
        assert a.shape == b.shape, name
        assert rel_err(a, b) < 1e-12, name


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("shape", SHAPES[:4], ids=lambda s: "x".join(map(str, s[:6])))
def test_low_precision_close_to_float64(shape, dtype, tol):
    B, H, T, J, D, window, per_head = shape
    q, k, v, bias, dout = inputs(*shape)
    scale = D ** -0.5
    exact = window_attention_reference(q, k, v, bias, window, scale)
    exact_grads = window_attention_reference_backward(q, k, v, bias, dout, window, scale, True)
    lq, lk, lv, ldout = (t.to(dtype) for t in (q, k, v, dout))
    out = window_attention_cpu(lq, lk, lv, bias.float(), window, scale)
    assert out.dtype == dtype
    assert rel_err(out, exact) < tol
    for a, b in zip(window_attention_cpu_backward(lq, lk, lv, bias.float(), ldout, window, scale, True), exact_grads):
        assert rel_err(a, b) < tol


def test_no_bias_gradient_when_not_asked():
    q, k, v, bias, dout = inputs(*SHAPES[0])
    assert window_attention_cpu_backward(q, k, v, bias, dout, 3, 0.3, False)[3] is None


def test_large_scores_stay_finite():
    # Scores of +-200 overflow exp() without the per-offset maxima.
    q, k, v, bias, dout = inputs(*SHAPES[1])
    q = q * 60
    out = window_attention_cpu(q, k, v, bias, 5, 1.0)
    assert torch.isfinite(out).all()
    assert rel_err(out, window_attention_reference(q, k, v, bias, 5, 1.0)) < 1e-10


def test_eager_backend_trains_through_offsets_and_matches_autograd():
    """backend='eager' with gradients: the offset path (spied), same gradients as autograd
    through the reference; without gradients: the reference itself."""
    B, H, T, J, D, window, per_head = SHAPES[1]
    q, k, v, bias, dout = inputs(*SHAPES[1])
    calls = []
    original = WindowAttentionCPU.forward

    def spy(ctx, *args):
        calls.append(args[4])
        return original(ctx, *args)

    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, bias)]
    WindowAttentionCPU.forward = staticmethod(spy)
    try:
        out = window_attention(*leaves, window, backend="eager")
        with torch.no_grad():
            window_attention(q, k, v, bias, window, backend="eager")
    finally:
        WindowAttentionCPU.forward = staticmethod(original)
    assert calls == [window]
    out.backward(dout)
    ref_leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, bias)]
    window_attention_reference(*ref_leaves, window, D ** -0.5).backward(dout)
    for a, b in zip(leaves, ref_leaves):
        assert rel_err(a.grad, b.grad) < 1e-12


@pytest.mark.parametrize("keys", [1, 2, 3, 4, 5, 7, 20, 25])
def test_max_over_keys_equals_amax(keys):
    # The tree of maxima overlaps odd halves by a row: any count must still give the exact max.
    from kernels.window_cpu import _max_over_keys

    s = torch.randn(6, keys, 9, generator=torch.Generator().manual_seed(keys), dtype=torch.float64)
    out = torch.full((6, 1, 9), float("nan"), dtype=torch.float64)
    _max_over_keys(s, out)
    assert torch.equal(out, s.amax(1, keepdim=True))


def test_bias_only_rows_with_large_bias():
    # T < τ: most (frame, offset) rows hold a zero frame, whose scores are the bias alone (the shared
    # constant block); a bias of +-300 overflows exp() unless that block is shifted by its own max.
    q, k, v, bias, dout = inputs(2, 2, 3, 6, 4, 5, True)
    bias = bias * 300
    out = window_attention_cpu(q, k, v, bias, 5, 0.5)
    assert torch.isfinite(out).all()
    assert rel_err(out, window_attention_reference(q, k, v, bias, 5, 0.5)) < 1e-12
    got = window_attention_cpu_backward(q, k, v, bias, dout, 5, 0.5, True)
    want = window_attention_reference_backward(q, k, v, bias, dout, 5, 0.5, True)
    for a, b in zip(got, want):
        assert torch.isfinite(a).all() and rel_err(a, b) < 1e-10


def test_output_is_the_collapse_input_as_a_channels_last_view():
    # STFEMWindow reads (N, H*D*τ, T, J) from the output; with the (B, T, J, H, D, τ) storage that is a
    # channels-last view (no copy before the channels-last collapse conv), in q's dtype.
    B, H, T, J, D, window = 2, 2, 7, 20, 6, 3
    q, k, v, bias, _ = inputs(B, H, T, J, D, window, False, dtype=torch.bfloat16)
    out = window_attention_cpu(q, k, v, bias.float(), window, D ** -0.5)
    assert out.dtype == torch.bfloat16
    collapse_input = out.permute(0, 1, 5, 3, 2, 4).reshape(B, H * D * window, T, J)
    assert collapse_input.data_ptr() == out.data_ptr()
    assert collapse_input.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + ("_hb" if s[6] else ""))
def test_padding_frames_are_never_read(shape, monkeypatch):
    # The frames-first buffers leave their padding frames unset (products touch real frames only):
    # NaN there must not reach the output or any gradient.
    import kernels.window_cpu as window_cpu

    original = window_cpu._frames_first

    def poisoned(x, window, *args, **kwargs):
        out = original(x, window, *args, **kwargs)
        out[:window - 1] = float("nan")
        out[window - 1 + x.shape[2]:] = float("nan")
        return out

    monkeypatch.setattr(window_cpu, "_frames_first", poisoned)
    B, H, T, J, D, window, per_head = shape
    q, k, v, bias, dout = inputs(*shape)
    out = window_attention_cpu(q, k, v, bias, window, 0.4)
    assert rel_err(out, window_attention_reference(q, k, v, bias, window, 0.4)) < 1e-12
    got = window_attention_cpu_backward(q, k, v, bias, dout, window, 0.4, True)
    for a, b in zip(got, window_attention_reference_backward(q, k, v, bias, dout, window, 0.4, True)):
        assert rel_err(a, b) < 1e-12
