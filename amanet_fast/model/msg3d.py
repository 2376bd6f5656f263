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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        a = (self.A_scales.to(x.dtype) + self.A_res.to(x.dtype)).view(self.num_scales, v, v)
        # Scale-major channel order (k*C + c), as MS-G3D concatenates.
        support = torch.einsum("kvu,nctu->nkctv", a, x).reshape(n, self.num_scales * c, t, v)
        return self.mlp(support)


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
        self.collapse = nn.Conv3d(self.embed_channels, out_channels, kernel_size=(1, window, 1))
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, _, v = x.shape
        tau, pad = self.window, (self.window - 1) // 2
        # Windows centered on frames 0, s, 2s, ...; tokens window-major (frame s, joint v -> s*V + v).
        windows = F.pad(x, (0, 0, pad, pad)).unfold(2, tau, self.stride)  # (N, C, T', V, τ)
        t_out = windows.shape[2]
        windows = windows.transpose(3, 4).reshape(n, c, t_out, tau * v)
        tv = tau * v
        a = (self.A_scales.to(x.dtype) + self.A_res.to(x.dtype)).view(self.num_scales, tv, tv)
        support = torch.einsum("kvu,nctu->nkctv", a, windows).reshape(n, self.num_scales * c, t_out, tv)
        out = self.mlp(support).view(n, self.embed_channels, t_out, tau, v)
        return self.bn(self.collapse(out).squeeze(3))


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
