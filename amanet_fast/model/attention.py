"""AMANet's attention modules: SFEM (eq. 10), TFEM = FF (eq. 12) -> JF (eq. 11)
-> MS-TCN (Fig. 5), and STFEM (eq. 14).

Activations stay (N, C, T, V). q, k, v come from one fused 1x1 conv and reach
the kernels as free views (N, H, T, V, D) of it — no copies — because the
Triton kernels take arbitrary strides and a copy would double their traffic.

Widths: SFEM and FF attend at the module's full width (SFEM's residual is V
itself, eq. 10, so V must have the output width); STFEM attends at a reduced
width (`stfem_ratio` of its input, default 1/4) because its (1, τ, 1)
collapse conv costs τ times the width — with full width the STFEM rows of
Table 6 would be far above the paper's parameter counts. Heads: width //
head_dim (24), at least 1, shrunk to a divisor of the width.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import kernels

from ..graphs import normalize_adjacency
from .msg3d import MultiScaleTemporalConv, TemporalConvBN

__all__ = ["resolve_heads", "SFEM", "FrameFeatures", "JointFeatures", "TFEM", "STFEM"]


def resolve_heads(width: int, heads: int | None, head_dim: int) -> int:
    """Explicit `heads` must divide the width; otherwise width // head_dim, shrunk to a divisor."""
    if heads is not None:
        if width % heads:
            raise ValueError(f"heads={heads} does not divide an attention width of {width}")
        return heads
    h = max(1, width // head_dim)
    while width % h:
        h -= 1
    return h


def _split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3E, T, V) -> three free (N, H, T, V, D) views (docs/design.md §2 layout)."""
    n, c3, t, v = qkv.shape
    width = c3 // 3
    # unbind, not three selects: its backward stacks the three gradients into one tensor, where
    # each select's backward would zero-fill a full-size one and autograd would then sum three.
    parts = qkv.view(n, 3, heads, width // heads, t, v).unbind(1)
    return tuple(p.permute(0, 1, 3, 4, 2) for p in parts)  # type: ignore[return-value]


def _merge_heads(out: torch.Tensor) -> torch.Tensor:
    """(N, H, T, V, D) -> (N, H*D, T, V)."""
    n, h, t, v, d = out.shape
    return out.permute(0, 1, 4, 2, 3).reshape(n, h * d, t, v)


class SFEM(nn.Module):
    """Per-frame J x J attention biased by α·Â: relu(BN(Attn(Q,K,V) Θ) + V)."""

    def __init__(self, in_channels: int, out_channels: int, adjacency: np.ndarray, alpha: float,
                 heads: int | None, head_dim: int, backend: str) -> None:
        super().__init__()
        self.heads = resolve_heads(out_channels, heads, head_dim)
        self.out_channels, self.backend = out_channels, backend
        self.qkv = nn.Conv2d(in_channels, 3 * out_channels, 1)
        self.theta = nn.Conv2d(out_channels, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels)
        a_hat = normalize_adjacency(adjacency + np.eye(len(adjacency)))
        self.register_buffer("bias", torch.tensor(alpha * a_hat, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)
        q, k, v = _split_heads(qkv, self.heads)
        out = kernels.window_attention(q, k, v, self.bias.to(q.dtype), 1, backend=self.backend)
        out = _merge_heads(out.squeeze(3))
        return F.relu(self.bn(self.theta(out)) + qkv[:, 2 * self.out_channels:])


class FrameFeatures(nn.Module):
    """FF: each frame is one token of J*C features, attention inside groups of g frames;
    relu(BN(Attn Θ) + x)."""

    def __init__(self, channels: int, group: int, backend: str) -> None:
        super().__init__()
        if group < 1:
            raise ValueError(f"group must be >= 1, got {group}")
        self.group, self.backend = group, backend
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.theta = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One head: the frame's whole J*C vector is the token (paper, FF).
        q, k, v = _split_heads(self.qkv(x), 1)
        out = _merge_heads(kernels.frame_group_attention(q, k, v, self.group, backend=self.backend))
        return F.relu(self.bn(self.theta(out)) + x)


class JointFeatures(nn.Module):
    """JF: per-joint T x T attention over the whole sequence, residual, then an (R x 1)
    temporal conv carrying the block's stride and channel change, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, kernel_size: int,
                 heads: int | None, head_dim: int) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"jf_kernel must be >= 1, got {kernel_size}")
        self.heads = resolve_heads(in_channels, heads, head_dim)
        self.qkv = nn.Conv2d(in_channels, 3 * in_channels, 1)
        # Even R has no centered padding: pad the extra frame at the end.
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel_size, 1), stride=(stride, 1))
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        h, d = self.heads, c // self.heads
        parts = self.qkv(x).view(n, 3, h, d, t, v).unbind(1)  # unbind: see _split_heads
        # 4D (N, H*V, T, D) copies on purpose: SDPA's fused kernels want the feature axis
        # contiguous anyway, and inductor (torch 2.13) returns a wrongly shaped result for
        # 5D SDPA inputs with these permuted strides (tests/model/test_backends.py).
        q, k, val = (p.permute(0, 1, 4, 3, 2).reshape(n, h * v, t, d) for p in parts)
        if q.device.type == "cpu" and q.dtype == torch.bfloat16:
            # ATen's CPU flash-attention backward is 4-9x slower in bf16 than in fp32 at JF's
            # shapes (T x T scores, head dim 24) on AVX-512 BF16; the fp32 pass costs less than that.
            # CPU autocast lists SDPA as a bf16 op, so it has to be switched off around the call.
            with torch.autocast("cpu", enabled=False):
                out = F.scaled_dot_product_attention(q.float(), k.float(), val.float()).to(q.dtype)
        else:
            out = F.scaled_dot_product_attention(q, k, val)
        out = out.view(n, h, v, t, d)
        y = x + out.permute(0, 1, 4, 3, 2).reshape(n, c, t, v)
        y = F.pad(y, (0, 0, *self.pad))
        return F.relu(self.bn(self.conv(y)))


class TFEM(nn.Module):
    """Temporal pathway replacing MS-G3D's two MS-TCNs: FF -> JF -> MS-TCN (Fig. 5a).

    JF carries the stride and channel change; without JF the MS-TCN does. The final
    MS-TCN has no activation: the block applies ReLU to the sum of pathways.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, group: int, use_ff: bool,
                 use_jf: bool, jf_kernel: int, heads: int | None, head_dim: int, backend: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if use_ff:
            layers.append(FrameFeatures(in_channels, group, backend))
        if use_jf:
            layers.append(JointFeatures(in_channels, out_channels, stride, jf_kernel, heads, head_dim))
            layers.append(MultiScaleTemporalConv(out_channels, out_channels, activation=False))
        else:
            layers.append(MultiScaleTemporalConv(in_channels, out_channels, stride=stride, activation=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class STFEMWindow(nn.Module):
    """One window size τ: attention over the τ·V tokens of frames t..t+τ-1 biased by
    β·tile(Â) (or eq. 13's β·tile(A), `stfem_bias_matrix`), then a (1, τ, 1) conv collapsing the window (the Θ of eq. 14)."""

    def __init__(self, in_channels: int, embed: int, out_channels: int, window: int, stride: int,
                 heads: int, backend: str) -> None:
        super().__init__()
        self.window, self.stride, self.heads, self.backend = window, stride, heads, backend
        self.qkv = nn.Conv2d(in_channels, 3 * embed, 1)
        # Same weights as Conv3d(embed, out, (1, τ, 1)); a 1x1 conv over (embed, τ) channels
        # avoids materializing a 5D copy in (N, C, T, τ, V) order.
        self.collapse = nn.Conv2d(embed * window, out_channels, 1)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        q, k, v = _split_heads(self.qkv(x), self.heads)
        out = kernels.window_attention(q, k, v, bias.to(q.dtype), self.window, backend=self.backend)
        n, h, t, tau, j, d = out.shape
        # (N, H*D*τ, T, V): a free view of the Triton output, which is stored (B, H, D, τ, T, J)
        # (the eager reference's layout copies here).
        out = out.permute(0, 1, 5, 3, 2, 4).reshape(n, h * d * tau, t, j)
        # Anchors 0, s, 2s, ... (window attention has no stride): the 1x1 conv strides over
        # T instead of slicing first, which would make the view non-contiguous (a copy).
        return F.conv2d(out, self.collapse.weight, self.collapse.bias, stride=(self.stride, 1))


STFEM_BIASES = ("a_hat", "adjacency")


def stfem_bias_matrix(adjacency: np.ndarray, kind: str) -> np.ndarray:
    """The (V, V) block that `window_attention` tiles τ x τ into STFEM's bias (before β).

    "a_hat" (default): Â = D^-1/2 (A + I) D^-1/2, the normalized graph SFEM uses
    (eq. 10) -- the reading that keeps both modules' biases on one scale.
    "adjacency": eq. 13 literally, A_τ = tile(A) with A the binary adjacency,
    no self-loops (a joint's bias to itself, in any frame of the window, is 0).
    """
    if kind == "a_hat":
        return normalize_adjacency(adjacency + np.eye(len(adjacency)))
    if kind == "adjacency":
        return (np.asarray(adjacency) != 0).astype(np.float64) * (1 - np.eye(len(adjacency)))
    raise ValueError(f"stfem_bias must be one of {STFEM_BIASES}, got {kind!r}")


class STFEM(nn.Module):
    """Windowed spatio-temporal attention summed over τ ∈ windows: relu(BN(Σ_τ ...) + res)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, adjacency: np.ndarray, beta: float,
                 windows: tuple[int, ...], ratio: float, heads: int | None, head_dim: int,
                 backend: str, bias: str = "a_hat") -> None:
        super().__init__()
        # Narrow raw inputs (3..16 channels) keep their width; wider ones attend at `ratio` of it.
        embed = in_channels if in_channels <= 16 else max(1, round(in_channels * ratio))
        h = resolve_heads(embed, heads, head_dim)
        self.windows = nn.ModuleList(
            STFEMWindow(in_channels, embed, out_channels, w, stride, h, backend) for w in windows
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.residual: nn.Module = (nn.Identity() if in_channels == out_channels and stride == 1
                                    else TemporalConvBN(in_channels, out_channels, 1, stride))
        block = stfem_bias_matrix(adjacency, bias)
        self.register_buffer("bias", torch.tensor(beta * block, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.windows[0](x, self.bias)
        for w in self.windows[1:]:
            out = out + w(x, self.bias)
        return F.relu(self.bn(out) + self.residual(x))
