"""MS-GCN and G3D compute conv-then-aggregate without permute/unfold copies (issue 14); this
checks them in float64 against MS-G3D's own order (aggregate, concat scales, 1x1 conv, unfold
windows), written out here as the executable reference, at the real widths and graph scales."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from amanet_fast.graphs import get_layout
from amanet_fast.model.msg3d import G3DPathway, MultiScaleGraphConv


def _ref_msgcn(m: MultiScaleGraphConv, x: torch.Tensor) -> torch.Tensor:
    n, c, t, v = x.shape
    a = (m.A_scales + m.A_res).view(m.num_scales, v, v)
    support = torch.einsum("kvu,nctu->nkctv", a, x).reshape(n, m.num_scales * c, t, v)
    return m.mlp(support)


def _ref_g3d(m: G3DPathway, x: torch.Tensor) -> torch.Tensor:
    n, c, _, v = x.shape
    tau, pad = m.window, (m.window - 1) // 2
    windows = F.pad(x, (0, 0, pad, pad)).unfold(2, tau, m.stride)  # (N, C, T', V, τ)
    t_out = windows.shape[2]
    windows = windows.transpose(3, 4).reshape(n, c, t_out, tau * v)
    a = (m.A_scales + m.A_res).view(m.num_scales, tau * v, tau * v)
    support = torch.einsum("kvu,nctu->nkctv", a, windows).reshape(n, m.num_scales * c, t_out, tau * v)
    out = m.mlp(support).view(n, m.embed_channels, t_out, tau, v)
    return m.bn(m.collapse(out).squeeze(3))


def _randomize(m: nn.Module) -> nn.Module:
    """Non-trivial biases, BN affine and A_res so that a misplaced term cannot cancel out."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias") or "bn" in name or name.startswith("mlp.1") or "A_res" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    return m


def _check(m: nn.Module, ref, x: torch.Tensor, train: bool) -> None:
    m = _randomize(m.double()).train(train)
    if not train:  # eval mode uses running stats: give them non-trivial values
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    out = m(x1)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), [x1, *m.parameters()])
    out_ref = ref(m, x2)  # BN running stats were updated once more: compare outputs/grads only
    grads_ref = torch.autograd.grad((out_ref * g).sum(), [x2, *m.parameters()])
    assert out.shape == out_ref.shape and out.is_contiguous()
    torch.testing.assert_close(out, out_ref, rtol=1e-9, atol=1e-9)
    for (name, _), gr, gref in zip([("input", None), *m.named_parameters()], grads, grads_ref):
        torch.testing.assert_close(gr, gref, rtol=1e-8, atol=1e-9, msg=lambda s, n=name: f"grad of {n}: {s}")


NTU = get_layout("ntu25").adjacency()


@pytest.mark.parametrize("c_in,c_out", [(96, 96), (12, 96)], ids=["conv-first", "widening"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_msgcn_matches_msg3d_order(c_in, c_out, train):
    torch.manual_seed(0)
    m = MultiScaleGraphConv(13, c_in, c_out, NTU)
    _check(m, _ref_msgcn, torch.randn(2, c_in, 6, 25, dtype=torch.float64), train)


@pytest.mark.parametrize("window,stride", [(3, 1), (5, 1), (5, 2), (3, 2)])
@pytest.mark.parametrize("embed_to_out", [False, True], ids=["conv-first", "widening"])
def test_g3d_matches_msg3d_order(window, stride, embed_to_out):
    torch.manual_seed(0)
    c_in = 12 if embed_to_out else 96
    m = G3DPathway(c_in, 96 if embed_to_out else 192, NTU, 6, window, stride, embed_to_out)
    _check(m, _ref_g3d, torch.randn(2, c_in, 7, 25, dtype=torch.float64), train=True)


def test_g3d_eval_mode_and_odd_length():
    torch.manual_seed(0)
    m = G3DPathway(48, 48, NTU, 6, 5, 2, False)
    _check(m, _ref_g3d, torch.randn(1, 48, 9, 25, dtype=torch.float64), train=False)


@pytest.mark.parametrize("arch,person", [("amanet", 1), ("msg3d", 2)])
def test_whole_model_gradients_match_msg3d_order(monkeypatch, arch, person):
    """Inside the full network (shared block inputs, DP, one-person view layouts) every parameter
    gradient equals that of MS-G3D's order: a module-level check alone once missed a wrong one."""
    from amanet_fast import build_model

    torch.manual_seed(0)
    model = build_model(arch, "ntu60", channels=(6, 12, 12), num_gcn_scales=2, num_g3d_scales=2,
                        num_person=person, kernel_backend="eager").double().eval()
    x = torch.randn(2, 3, 4, 25, person, dtype=torch.float64)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    fast = grads()
    monkeypatch.setattr(MultiScaleGraphConv, "forward", _ref_msgcn)
    monkeypatch.setattr(G3DPathway, "forward", _ref_g3d)
    ref = grads()
    for name, g in ref.items():
        torch.testing.assert_close(fast[name], g, rtol=1e-7, atol=1e-12, msg=lambda s, n=name: f"grad of {n}: {s}")
