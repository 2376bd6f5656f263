"""Attention backends agree inside the model; torch.compile matches eager; q/k/v reach the kernels as views."""
from __future__ import annotations

import os

import pytest
import torch

import kernels
from amanet_fast import build_model

TINY = dict(channels=(6, 12, 12), num_gcn_scales=2, num_g3d_scales=2, num_person=1)


def _triton_available() -> bool:
    if torch.cuda.is_available():
        return True
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _device() -> torch.device:
    # On a GPU the Triton backend needs CUDA tensors; TF32 is switched off there (below) so
    # both backends compute convolutions and matmuls in full fp32 and the tolerances hold.
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture
def full_fp32_on_cuda():
    if not torch.cuda.is_available():
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _paired(backend_a: str, backend_b: str, **kw):
    torch.manual_seed(0)
    a = build_model("amanet", "ntu60", kernel_backend=backend_a, **{**TINY, **kw})
    b = build_model("amanet", "ntu60", kernel_backend=backend_b, **{**TINY, **kw})
    b.load_state_dict(a.state_dict())
    return a.to(_device()), b.to(_device())


@pytest.mark.skipif(not _triton_available(), reason="Triton backend needs CUDA or TRITON_INTERPRET=1")
def test_eager_and_triton_backends_match_logits_and_grads(full_fp32_on_cuda):
    # Eval-mode BN: with batch statistics of 2 samples the gradients are ill-conditioned and
    # both fp32 backends sit ~3e-4 (relative) from an fp64 run, which would hide real bugs.
    eager, triton_model = _paired("eager", "triton")
    eager.eval()
    triton_model.eval()
    x = torch.randn(2, 3, 4, 25, 1).to(_device())
    out_e, out_t = eager(x), triton_model(x)
    torch.testing.assert_close(out_t, out_e, rtol=1e-5, atol=1e-6)
    out_e.square().sum().backward()
    out_t.square().sum().backward()
    grads_e = dict(eager.named_parameters())
    for name, p in triton_model.named_parameters():
        ref = grads_e[name].grad
        scale = ref.abs().max().item() + 1e-6
        assert (p.grad - ref).abs().max().item() <= 1e-3 * scale, name


@pytest.mark.skipif(not _triton_available(), reason="Triton backend needs CUDA or TRITON_INTERPRET=1")
def test_backends_match_at_the_real_block_width(full_fp32_on_cuda):
    """Block 1 of the NTU-60 AMANet at its real width (96 channels: SFEM 4 heads x 24,
    STFEM 1 x 24 at windows 3 and 5, FF over 25 x 96 features), T = 6 (a full FF group and a
    short one): the Triton kernels must give the eager model's logits and gradients."""
    eager, triton_model = _paired("eager", "triton", channels=(96,), strides=(1,))
    eager.eval()
    triton_model.eval()
    x = torch.randn(1, 3, 6, 25, 1, generator=torch.Generator().manual_seed(1)).to(_device())
    out_e, out_t = eager(x), triton_model(x)
    torch.testing.assert_close(out_t, out_e, rtol=1e-4, atol=1e-5)
    out_e.square().sum().backward()
    out_t.square().sum().backward()
    grads_e = dict(eager.named_parameters())
    for name, p in triton_model.named_parameters():
        ref = grads_e[name].grad
        assert (p.grad - ref).abs().max().item() <= 1e-3 * (ref.abs().max().item() + 1e-6), name


def _small_full_amanet(**kw):
    # Every AMANet module on (DP, SFEM, TFEM with FF and JF, STFEM at windows 3 and 5) in one
    # block of tiny width: each traced twice below, so one block keeps this near half a minute.
    torch.manual_seed(0)
    model = build_model("amanet", "ntu60", channels=(6,), strides=(1,), num_gcn_scales=2, num_g3d_scales=2,
                        num_person=1, **kw)
    cfg = model.config
    assert cfg.dp and cfg.sfem and cfg.tfem and cfg.tfem_ff and cfg.tfem_jf and cfg.stfem
    return model.eval()


def test_full_amanet_traces_as_one_graph_and_compiled_grads_match():
    """The kernels are torch.library custom ops and nothing in the traced path logs, so
    dynamo sees one graph (it found 10 breaks in this model when the ops logged their backend),
    and AOT autograd traces the backward through the ops' fakes and backward ops."""
    model = _small_full_amanet()
    x = torch.randn(2, 3, 6, 25, 1, generator=torch.Generator().manual_seed(0))
    # backend="eager" inlines the reference instead: one graph as well.
    for candidate in (model, _small_full_amanet(kernel_backend="eager")):
        explanation = torch._dynamo.explain(candidate)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        assert explanation.graph_count == 1
        torch._dynamo.reset()
    expected = model(x)
    expected.square().sum().backward()
    want = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    # aot_eager: dynamo + AOT autograd, the whole trace, without inductor's minutes of C++
    # codegen; test_torch_compile_matches_eager covers inductor.
    got = torch.compile(model, backend="aot_eager", fullgraph=True)(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    got.square().sum().backward()
    for name, p in model.named_parameters():
        ref = want[name]
        assert (p.grad - ref).abs().max().item() <= 1e-4 * (ref.abs().max().item() + 1e-6), name


def test_qkv_reach_kernels_as_free_views(monkeypatch):
    """The model must not copy q/k/v before the kernels (docs/design.md §2): they share the conv output's storage."""
    seen = []
    real_wa, real_fga = kernels.window_attention, kernels.frame_group_attention

    def spy_wa(q, k, v, bias, window, **kw):
        seen.append(("window", q, k, v))
        return real_wa(q, k, v, bias, window, **kw)

    def spy_fga(q, k, v, group, **kw):
        seen.append(("group", q, k, v))
        return real_fga(q, k, v, group, **kw)

    monkeypatch.setattr(kernels, "window_attention", spy_wa)
    monkeypatch.setattr(kernels, "frame_group_attention", spy_fga)
    model = build_model("amanet", "ntu60", kernel_backend="eager", **TINY)
    model(torch.randn(1, 3, 5, 25, 1))
    assert {kind for kind, *_ in seen} == {"window", "group"}
    for _, q, k, v in seen:
        assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
        assert q.stride()[3] == 1  # joint axis contiguous: the (N, C, T, V) layout, permuted


@pytest.mark.slow
def test_torch_compile_matches_eager():
    """Inductor on CPU, fullgraph, float64 so that any difference beyond rounding is a real one
    (this caught inductor mis-shaping 5D SDPA inputs). The default backend: the kernels are
    custom ops, opaque nodes of the graph. One block keeps the cold compile near a minute."""
    torch.manual_seed(0)
    model = build_model("amanet", "ntu60", channels=(6,), strides=(1,), num_gcn_scales=2,
                        num_g3d_scales=2, num_person=1).eval().double()
    x = torch.randn(1, 3, 4, 25, 1, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        got = torch.compile(model, dynamic=False, fullgraph=True)(x)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)
