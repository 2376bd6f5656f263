"""The torch.library custom ops of kernels/ops.py: registration (opcheck), the
explicit reference backwards (gradcheck), the Triton implementations' layouts
against the fakes (run on CPU through the interpreter), the eager fallback past
the window tile, and backend logging that happens when a backend runs."""
from __future__ import annotations

import logging

import pytest
import torch

import kernels
from kernels import _checks, ops, window
from kernels.reference import frame_group_attention_reference, window_attention_reference


window_op = torch.ops.amanet.window_attention.default
window_bwd_op = torch.ops.amanet.window_attention_backward.default
fga_op = torch.ops.amanet.frame_group_attention.default
fga_bwd_op = torch.ops.amanet.frame_group_attention_backward.default


def _model_view(B, H, T, J, D, *, dtype=torch.float32, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, H * D, T, J, generator=gen, dtype=dtype).view(B, H, D, T, J).permute(0, 1, 3, 4, 2)
    return x.requires_grad_(requires_grad)


def _qkv(shape, **kw):
    return [_model_view(*shape, seed=i, **kw) for i in range(3)]


# --------------------------------------------------------------------------- opcheck


@pytest.mark.parametrize("per_head_bias", [False, True], ids=["shared-bias", "per-head-bias"])
def test_opcheck_window_attention(per_head_bias):
    B, H, T, J, D, window = 1, 2, 3, 4, 5, 3
    q, k, v = _qkv((B, H, T, J, D), requires_grad=True)
    bias = torch.randn((H, J, J) if per_head_bias else (J, J), requires_grad=True)
    torch.library.opcheck(window_op, (q, k, v, bias, window, 0.5))
    dout = torch.randn(B, H, T, window, J, D)
    for compute_dbias in (True, False):
        torch.library.opcheck(window_bwd_op, (q.detach(), k.detach(), v.detach(), bias.detach(), dout, window, 0.5,
                                              compute_dbias))


@pytest.mark.parametrize("T,group", [(7, 3), (4, 5)], ids=["partial-group", "group-longer-than-clip"])
def test_opcheck_frame_group_attention(T, group):
    q, k, v = _qkv((2, 1, T, 3, 4), requires_grad=True)
    torch.library.opcheck(fga_op, (q, k, v, group, 0.3))
    _, probs = fga_op(q.detach(), k.detach(), v.detach(), group, 0.3)
    dout = torch.randn(q.shape)
    torch.library.opcheck(fga_bwd_op, (q.detach(), k.detach(), v.detach(), probs, dout, group, 0.3))


# --------------------------------------------------------------------------- the ops' own backwards (explicit formulas)


@pytest.mark.parametrize("per_head_bias", [False, True], ids=["shared-bias", "per-head-bias"])
def test_window_op_gradcheck_float64(per_head_bias):
    q, k, v = _qkv((1, 2, 3, 3, 2), dtype=torch.float64, requires_grad=True)
    bias = torch.randn((2, 3, 3) if per_head_bias else (3, 3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: window_op(*a, 3, 0.7), (q, k, v, bias))


def test_frame_group_op_gradcheck_float64():
    q, k, v = _qkv((1, 2, 7, 2, 2), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: fga_op(*a, 3, 0.7)[0], (q, k, v))


def test_ops_match_the_reference_and_refuse_double_backward():
    q, k, v = _qkv((1, 2, 5, 4, 3), requires_grad=True)
    bias = torch.randn(4, 4, requires_grad=True)
    for fn, ref in ((lambda *a: window_op(*a, bias, 3, 0.6), lambda *a: window_attention_reference(*a, bias, 3, 0.6)),
                    (lambda *a: fga_op(*a, 2, 0.6)[0], lambda *a: frame_group_attention_reference(*a, 2, 0.6))):
        out = fn(q, k, v)
        torch.testing.assert_close(out, ref(q, k, v))
        dout = torch.randn(out.shape)
        got = torch.autograd.grad(out, (q, k, v), dout, create_graph=True)
        want = torch.autograd.grad(ref(q, k, v), (q, k, v), dout)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
        with pytest.raises(RuntimeError):  # no silent zero second derivative
            torch.autograd.grad(got[0].sum(), q)


# --------------------------------------------------------------------------- Triton implementations vs the fakes


def test_triton_window_impl_layouts_match_the_fakes():
    """The CUDA implementations, run here through the interpreter: the Triton forward's
    output and packed gradients have the layouts the fakes promise, without copies."""
    q, k, v = _qkv((1, 2, 3, 18, 8))
    bias = torch.randn(18, 18)
    raw = window.window_forward(q, k, v, bias, 3, 0.4)
    fake = ops.window_output_like(q, 3)
    assert raw.shape == fake.shape and raw.stride() == fake.stride()
    out = ops._window_attention_triton(q, k, v, bias, 3, 0.4)
    torch.testing.assert_close(out, window_attention_reference(q, k, v, bias, 3, 0.4), rtol=1e-4, atol=1e-5)
    dout = torch.randn(out.shape)
    dq, dk, dv, _ = window.window_backward(q, k, v, bias, dout, 3, 0.4, False)
    packed = ops._pack_grads(q, dq, dk, dv)
    assert packed.stride() == ops.window_grads_like(q).stride()
    assert packed.untyped_storage().data_ptr() == dq.untyped_storage().data_ptr()  # no copy
    grads, dbias = ops._window_attention_backward_triton(q, k, v, bias, dout, 3, 0.4, True)
    want = ops._window_reference_backward(q, k, v, bias, dout, 3, 0.4, True)
    torch.testing.assert_close(grads, want[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dbias, want[1], rtol=1e-4, atol=1e-5)


def test_pack_grads_copies_separate_buffers():
    q = _model_view(1, 2, 3, 4, 5)
    dq, dk, dv = (torch.randn(q.shape) for _ in range(3))
    packed = ops._pack_grads(q, dq, dk, dv)
    assert packed.stride() == ops.window_grads_like(q).stride()
    for got, want in zip(packed.unbind(0), (dq, dk, dv)):
        assert torch.equal(got, want)


def test_triton_frame_group_impl_layouts_match_the_fakes():
    q, k, v = _qkv((1, 1, 7, 18, 24))  # J*D = 432: two feature chunks
    out, probs = ops._frame_group_attention_triton(q, k, v, 5, 0.05)
    assert out.stride() == q.stride()
    fake_probs = ops.frame_group_probs_like(q, 5)
    assert probs.shape == fake_probs.shape and probs.dtype == fake_probs.dtype
    cpu_out, cpu_probs = fga_op(q, k, v, 5, 0.05)
    torch.testing.assert_close(out, cpu_out, rtol=1e-4, atol=1e-5)
    # Both implementations save the same softmax (padding rows of the Triton one aside).
    torch.testing.assert_close(probs[:, 0, :5, :5], cpu_probs[:, 0, :5, :5], rtol=1e-4, atol=1e-6)
    dout = torch.randn(q.shape)
    got = ops._frame_group_attention_backward_triton(q, k, v, probs, dout, 5, 0.05)
    want = fga_bwd_op(q, k, v, cpu_probs, dout, 5, 0.05)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_cuda_impl_falls_back_to_eager_beyond_the_tile_and_says_so(monkeypatch, caplog):
    # backend="auto" on CUDA reaches the Triton implementation; a window that does not
    # fit the tile must still work (eager) and log why. Called directly so it runs anywhere.
    monkeypatch.setattr(ops, "_announced_eager_fallbacks", set())
    q, k, v = _qkv((1, 1, 2, 30, 4))  # 5 * 30 = 150 tokens > 128
    bias = torch.zeros(30, 30)
    with caplog.at_level("WARNING", logger="kernels"):
        out = ops._window_attention_triton(q, k, v, bias, 5, 0.5)
    assert "exceeds the Triton tile" in caplog.text
    torch.testing.assert_close(out, window_attention_reference(q, k, v, bias, 5, 0.5))
    dout = torch.randn(out.shape)
    grads, dbias = ops._window_attention_backward_triton(q, k, v, bias, dout, 5, 0.5, True)
    want = ops._window_reference_backward(q, k, v, bias, dout, 5, 0.5, True)
    assert torch.equal(grads, want[0]) and torch.equal(dbias, want[1])


# --------------------------------------------------------------------------- logging happens where a backend runs


def test_compiled_call_logs_the_backend_that_ran(monkeypatch, caplog):
    monkeypatch.setattr(_checks, "_announced", set())
    q, k, v = _qkv((1, 1, 4, 3, 2))
    fn = torch.compile(lambda q, k, v: kernels.frame_group_attention(q, k, v, 2), backend="aot_eager",
                       fullgraph=True)
    with caplog.at_level(logging.INFO, logger="kernels"):
        out = fn(q, k, v)
    assert "frame_group_attention: using the eager backend on cpu" in caplog.text
    torch.testing.assert_close(out, frame_group_attention_reference(q, k, v, 2, 6 ** -0.5))


# --------------------------------------------------------------------------- one autograd wiring


def test_every_backend_but_eager_runs_through_the_custom_ops():
    """backend='triton' on CPU (the interpreter) and 'auto' take the same custom op, and so
    the same registered autograd, as CUDA: there is no second backward path to keep in step."""
    q, k, v = _qkv((1, 1, 3, 3, 4), requires_grad=True)
    for backend in ("triton", "auto"):
        out = kernels.window_attention(q, k, v, torch.zeros(3, 3), 2, backend=backend)
        assert "amanet_window_attention" in type(out.grad_fn).__name__, backend
        out = kernels.frame_group_attention(q, k, v, 2, backend=backend)
        assert "amanet_frame_group_attention" in type(out.grad_fn).__name__, backend
