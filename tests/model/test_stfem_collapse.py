"""STFEM's window collapse: it reads the window-attention output without a copy (the
Triton output's layout makes (N, H*D*τ, T, V) a view), and striding the collapse conv
over T equals taking anchors 0, s, 2s, ... first."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernels
from amanet_fast.model import attention
from amanet_fast.model.attention import STFEMWindow, _split_heads


@pytest.mark.parametrize("stride", [1, 2])
def test_collapse_matches_slicing_then_conv(stride):
    torch.manual_seed(0)
    m = STFEMWindow(in_channels=8, embed=8, out_channels=6, window=3, stride=stride, heads=2, backend="eager")
    x, bias = torch.randn(2, 8, 7, 5), torch.randn(5, 5)
    got = m(x, bias)
    q, k, v = _split_heads(m.qkv(x), 2)
    out = kernels.window_attention(q, k, v, bias, 3, backend="eager")[:, :, ::stride]
    n, h, t, tau, j, d = out.shape
    want = m.collapse(out.permute(0, 1, 5, 3, 2, 4).reshape(n, h * d * tau, t, j))
    assert got.shape == (2, 6, len(range(0, 7, stride)), 5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_collapse_reads_the_triton_output_as_a_view(monkeypatch):
    outputs, conv_inputs = [], []
    real_wa, real_conv = kernels.window_attention, F.conv2d

    def spy_wa(*args, **kwargs):
        outputs.append(real_wa(*args, **kwargs))
        return outputs[-1]

    def spy_conv(inp, *args, **kwargs):
        conv_inputs.append(inp)
        return real_conv(inp, *args, **kwargs)

    monkeypatch.setattr(kernels, "window_attention", spy_wa)
    monkeypatch.setattr(attention.F, "conv2d", spy_conv)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the Triton interpreter
    m = STFEMWindow(in_channels=8, embed=8, out_channels=6, window=3, stride=2, heads=2, backend="triton").to(device)
    m(torch.randn(1, 8, 3, 5, device=device), torch.randn(5, 5, device=device))
    assert len(outputs) == 1 and len(conv_inputs) == 2  # the qkv projection, then the collapse
    collapse_input = conv_inputs[-1]
    assert collapse_input.data_ptr() == outputs[0].data_ptr() and collapse_input.is_contiguous()
