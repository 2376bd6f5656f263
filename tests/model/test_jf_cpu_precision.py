"""JF's whole-sequence attention runs in fp32 under CPU bf16 autocast (its bf16 backward is the slow
path on the CPU); the module's output keeps the autocast dtype and matches an fp32 forward closely."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import amanet_fast.model.attention as attention
from amanet_fast.model.attention import JointFeatures


def _spy(monkeypatch) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    real = F.scaled_dot_product_attention

    def recording(q, k, v, *args, **kwargs):
        out = real(q, k, v, *args, **kwargs)
        seen.append(out.dtype)  # the dtype SDPA actually computed in (autocast casts inputs itself)
        return out

    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", recording)
    return seen


def test_jf_attention_fp32_under_cpu_bf16_autocast(monkeypatch):
    torch.manual_seed(0)
    # Real NTU block-1 width (96 channels, head dim 24 -> 4 heads), 25 joints, short T.
    jf = JointFeatures(96, 96, stride=1, kernel_size=9, heads=None, head_dim=24).eval()
    x = torch.randn(2, 96, 12, 25)
    seen = _spy(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = jf(x)
    assert seen == [torch.float32]
    assert out.dtype == torch.bfloat16
    ref = jf(x)  # plain fp32 forward
    assert seen == [torch.float32, torch.float32]
    assert torch.allclose(out.float(), ref, atol=0.05, rtol=0.05)


def test_jf_backward_under_cpu_bf16_autocast_reaches_every_parameter():
    torch.manual_seed(0)
    jf = JointFeatures(48, 96, stride=2, kernel_size=9, heads=None, head_dim=24)
    x = torch.randn(2, 48, 10, 20, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = jf(x)
    out.float().square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, p in jf.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
