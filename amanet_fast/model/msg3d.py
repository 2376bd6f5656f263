"""MS-G3D building blocks (Liu et al., CVPR 2020): MS-GCN, MS-TCN and G3D.

Layer structure, bias flags and BatchNorm placement follow MS-G3D's public
code so that the parameter count of the baseline matches it exactly (SPEC
§3.1); the code itself is written from those facts. All modules take and
return activations shaped (N, C, T, V).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..graphs import k_adjacency_stack, spatio_temporal_adjacency

__all__ = [
    "conv_bn",
    "TemporalConvBN",
    "MultiScaleGraphConv",
    "MultiScaleTemporalConv",
    "G3DPathway",
    "MultiWindowG3D",
]


def conv_bn(in_channels: int, out_channels: int, relu: bool = True) -> nn.Sequential:
    """1x1 conv (with bias) + BN (+ ReLU): MS-G3D's one-layer MLP."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1), nn.BatchNorm2d(out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _residual_adjacency(shape: tuple[int, ...]) -> nn.Parameter:
    # Tiny init: the learnable mask starts as a no-op correction of the fixed graph.
    return nn.Parameter(torch.empty(shape).uniform_(-1e-6, 1e-6))


class TemporalConvBN(nn.Module):
    """(k x 1) temporal conv with "same" padding for odd k, then BN."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1) -> None:
        super().__init__()
        pad = (kernel_size + (kernel_size - 1) * (dilation - 1) - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), padding=(pad, 0),
                              stride=(stride, 1), dilation=(dilation, 1))
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class MultiScaleGraphConv(nn.Module):
    """MS-GCN: disentangled k-hop aggregation for k = 0..K-1, scales concatenated, 1x1 conv+BN+ReLU."""

    def __init__(self, num_scales: int, in_channels: int, out_channels: int, adjacency: np.ndarray) -> None:
        super().__init__()
        self.num_scales = num_scales
        stack = torch.tensor(k_adjacency_stack(adjacency, num_scales), dtype=torch.float32)
        self.register_buffer("A_scales", stack, persistent=False)
        self.A_res = _residual_adjacency(tuple(stack.shape))
        self.mlp = conv_bn(in_channels * num_scales, out_channels)
        # Not widening: forward reshapes the weight (_scale_minor_weight), so its gradient comes back
        # NCHW; a channels-last copy would differ from it in the 1x1 dims' strides (DDP warns).
        self.mlp[0].channels_last_weight = out_channels > in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, relu = self.mlp
        if conv.out_channels > conv.in_channels // self.num_scales:
            # Widening (first block, 3 or 12 input channels): aggregating the few input channels
            # first is far cheaper than aggregating the wide conv output.
            return self.mlp(_aggregate_first(x, self._adjacency(x.dtype), 1))
        # conv-then-aggregate (same result: both are linear, the bias is added after aggregation).
        # Joints go before frames (one input-sized transpose) and the conv's output channels are
        # ordered (c_out, k), so each output channel's K scales x V joints are one contiguous
        # K*V-channel column per frame: the aggregation is a plain 1-tap conv (a matmul), and the
        # K-times larger scale-major support of MS-G3D's order is never permuted or copied.
        n, _, t, v = x.shape
        k, c_out = self.num_scales, conv.out_channels
        y = F.conv2d(x.transpose(2, 3).contiguous(), _scale_minor_weight(conv.weight, k))  # (N, C_out*K, V, T)
        a = self._adjacency(y.dtype)  # (K, V_out, V_in)
        z = F.conv1d(y.view(n * c_out, k * v, t), a.transpose(0, 1).reshape(v, k * v, 1))  # (N*C_out, V, T)
        z = z.view(n, c_out, v, t) + conv.bias.to(z.dtype).view(1, -1, 1, 1)
        # BN statistics do not depend on the order of (V, T); transpose back once, at the output size.
        return relu(bn(z)).transpose(2, 3).contiguous()

    def _adjacency(self, dtype: torch.dtype) -> torch.Tensor:
        a = self.A_scales.to(dtype) + self.A_res.to(dtype)
        return a.view(self.num_scales, a.shape[-1], a.shape[-1])


class MultiScaleTemporalConv(nn.Module):
    """MS-TCN: four dilated (3x1) branches, a max-pool branch and a strided 1x1 branch, plus residual."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 dilations: tuple[int, ...] = (1, 2, 3, 4), kernel_size: int = 3,
                 activation: bool = True) -> None:
        super().__init__()
        num_branches = len(dilations) + 2
        if out_channels % num_branches:
            raise ValueError(f"MS-TCN out_channels={out_channels} must be a multiple of {num_branches} branches")
        bc = out_channels // num_branches
        branches: list[nn.Module] = [
            nn.Sequential(conv_bn(in_channels, bc), TemporalConvBN(bc, bc, kernel_size, stride, d))
            for d in dilations
        ]
        branches.append(nn.Sequential(
            conv_bn(in_channels, bc),
            nn.MaxPool2d((3, 1), stride=(stride, 1), padding=(1, 0)),
            nn.BatchNorm2d(bc),
        ))
        branches.append(nn.Sequential(nn.Conv2d(in_channels, bc, 1, stride=(stride, 1)), nn.BatchNorm2d(bc)))
        self.branches = nn.ModuleList(branches)
        self.residual: nn.Module
        if in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = TemporalConvBN(in_channels, out_channels, 1, stride)
        # The last MS-TCN of a pathway leaves the ReLU to the sum of pathways.
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.act(out + self.residual(x))


class G3DPathway(nn.Module):
    """One G3D window size: centered τ-frame windows as a τV-node graph, multi-scale
    aggregation, 1x1 conv+BN+ReLU, then a (1, τ, 1) conv collapsing the window, BN."""

    def __init__(self, in_channels: int, out_channels: int, adjacency: np.ndarray, num_scales: int,
                 window: int, stride: int, embed_to_out: bool) -> None:
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"G3D windows must be odd (centered), got {window}")
        self.window, self.stride, self.num_scales = window, stride, num_scales
        # MS-G3D's first block lifts the raw input straight to out_channels inside the
        # graph conv; later blocks keep in_channels until the collapse conv.
        self.embed_channels = out_channels if embed_to_out else in_channels
        stack = k_adjacency_stack(spatio_temporal_adjacency(adjacency, window), num_scales)
        stack_t = torch.tensor(stack, dtype=torch.float32)
        self.register_buffer("A_scales", stack_t, persistent=False)
        self.A_res = _residual_adjacency(tuple(stack_t.shape))
        self.mlp = conv_bn(in_channels * num_scales, self.embed_channels)
        self.mlp[0].channels_last_weight = self.embed_channels > in_channels  # as in MultiScaleGraphConv
        self.collapse = nn.Conv3d(self.embed_channels, out_channels, kernel_size=(1, window, 1))
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tau, pad = self.window, (self.window - 1) // 2
        a = (self.A_scales.to(x.dtype) + self.A_res.to(x.dtype)).view(self.num_scales, tau * x.shape[3], -1)
        if self.embed_channels > x.shape[1]:
            # Widening (first block): aggregate the few input channels first (MS-G3D's order).
            out = self.mlp(_aggregate_first(x, a, tau, self.stride))
            return self.bn(self.collapse(out.unflatten(3, (tau, -1))).squeeze(3))
        n, _, _, v = x.shape
        k, e = self.num_scales, self.embed_channels
        conv, bn, relu = self.mlp
        # conv-then-aggregate: the 1x1 conv runs once per frame instead of once per window token
        # (τ x fewer FLOPs); zero-padded frames stay zero because the bias is added afterwards.
        # Joints go before frames (an input-sized transpose), so the τV x τV window graph is a
        # τ-tap temporal conv from K*V channels (scale, joint) to τV channels (the window's tokens):
        # no unfold, no window-sized copy.
        xt = F.pad(x, (0, 0, pad, pad)).transpose(2, 3).contiguous()  # (N, C, V, T+2p)
        y = F.conv2d(xt, _scale_minor_weight(conv.weight, k))  # (N, E*K, V, T+2p)
        weight = a.view(k, tau * v, tau, v).permute(1, 0, 3, 2).reshape(tau * v, k * v, tau)
        z = F.conv1d(y.view(n * e, k * v, xt.shape[3]), weight, stride=self.stride)  # (N*E, τV, T')
        t_out = z.shape[2]
        z = relu(bn(z.view(n, e, tau * v, t_out) + conv.bias.to(z.dtype).view(1, -1, 1, 1)))
        # Collapse the window with the Conv3d itself on a (N, E, T', τ, V) view. Folding it into a
        # 1x1 conv over the (N, E*τ, V, T') layout gave wrong parameter gradients upstream inside
        # the full model (isolated module checks passed; tests/model/test_backends.py caught it),
        # so that copy-free variant is not used.
        out = self.collapse(z.view(n, e, tau, v, t_out).permute(0, 1, 4, 2, 3)).squeeze(3)
        return self.bn(out)


def _scale_minor_weight(weight: torch.Tensor, num_scales: int) -> torch.Tensor:
    """(C_out, K*C_in, 1, 1) conv weight over scale-major inputs -> (C_out*K, C_in, 1, 1), output
    channel o*K + k applying the k-th scale's slice, so aggregation can follow the conv."""
    c_out, kc = weight.shape[:2]
    return weight.view(c_out, num_scales, kc // num_scales).reshape(c_out * num_scales, kc // num_scales, 1, 1)


def _aggregate_first(x: torch.Tensor, a: torch.Tensor, window: int, stride: int = 1) -> torch.Tensor:
    """MS-G3D's order: (N, C, T, V) -> scale-major support (N, K*C, T', window*V) for the 1x1 conv."""
    n, c, _, v = x.shape
    k = a.shape[0]
    if window > 1:
        pad = (window - 1) // 2
        windows = F.pad(x, (0, 0, pad, pad)).unfold(2, window, stride)  # (N, C, T', V, τ)
        x = windows.transpose(3, 4).reshape(n, c, windows.shape[2], window * v)
    t_out, tv = x.shape[2], x.shape[3]
    return torch.einsum("kvu,nctu->nkctv", a, x).reshape(n, k * c, t_out, tv)


class MultiWindowG3D(nn.Module):
    """Sum of G3D pathways over window sizes (τ = 3 and 5 in MS-G3D); no activation."""

    def __init__(self, in_channels: int, out_channels: int, adjacency: np.ndarray, num_scales: int,
                 windows: tuple[int, ...], stride: int, embed_to_out: bool) -> None:
        super().__init__()
        self.pathways = nn.ModuleList(
            G3DPathway(in_channels, out_channels, adjacency, num_scales, w, stride, embed_to_out) for w in windows
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.pathways[0](x)
        for pathway in self.pathways[1:]:
            out = out + pathway(x)
        return out
