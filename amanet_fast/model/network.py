"""The backbone shared by MS-G3D and AMANet: input BN, three blocks, pooled head.

With every AMANet switch off this is MS-G3D exactly (parameter count
included); each switch adds or replaces one module so that every ablation
row of the paper is one configuration (see `ablations.py`).
"""
from __future__ import annotations

import logging
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .dp import DataPreprocessing
from .msg3d import MultiScaleGraphConv, MultiScaleTemporalConv, MultiWindowG3D

logger = logging.getLogger("amanet_fast.model")

__all__ = ["Block", "SkeletonNet"]


class Block(nn.Module):
    """x = relu(G3D-pathway(x) + factorized-pathway(x)); x = MS-TCN(x).

    Factorized pathway: [SFEM] -> MS-GCN -> (TFEM | MS-TCN, MS-TCN), or with
    order="tfem_sfem": MS-GCN -> TFEM -> SFEM. G3D pathway: [STFEM] -> MS-G3D.
    A disabled MS-GCN (or MS-G3D) is replaced by the SFEM (STFEM) in its place.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, first: bool,
                 adjacency: np.ndarray, o: ModelConfig, backend: str) -> None:
        super().__init__()
        if o.sfem or o.tfem or o.stfem:  # MS-G3D alone does not need the kernels package
            from .attention import SFEM, STFEM, TFEM

        # MS-G3D's first block lifts channels in its graph conv; later ones in the MS-TCN.
        mid = out_channels if first else in_channels
        heads = dict(heads=o.heads, head_dim=o.head_dim, backend=backend)
        alpha, beta = float(o.alpha), float(o.beta)
        jf_kernel = o.jf_kernel if o.jf_kernel is not None else o.group
        factorized: list[nn.Module] = []
        sfem_first = o.sfem and o.order == "sfem_tfem"
        if o.msgcn:
            if sfem_first:
                factorized.append(SFEM(in_channels, in_channels, adjacency, alpha, **heads))
            factorized.append(MultiScaleGraphConv(o.num_gcn_scales, in_channels, mid, adjacency))
        elif o.sfem:
            factorized.append(SFEM(in_channels, mid, adjacency, alpha, **heads))
        else:
            raise ValueError("a block needs a spatial module: enable msgcn or sfem")
        if o.tfem:
            factorized.append(TFEM(mid, out_channels, stride, o.group, o.tfem_ff, o.tfem_jf, jf_kernel, **heads))
        else:
            factorized.append(MultiScaleTemporalConv(mid, out_channels, stride=stride))
            factorized.append(MultiScaleTemporalConv(out_channels, out_channels, activation=False))
        if o.sfem and o.msgcn and o.order == "tfem_sfem":
            factorized.append(SFEM(out_channels, out_channels, adjacency, alpha, **heads))
        self.factorized = nn.Sequential(*factorized)

        g3d: list[nn.Module] = []
        if o.g3d:
            if o.stfem:
                g3d.append(STFEM(in_channels, in_channels, 1, adjacency, beta, o.windows, float(o.stfem_ratio),
                                 bias=o.stfem_bias, **heads))
            g3d.append(MultiWindowG3D(in_channels, out_channels, adjacency, o.num_g3d_scales, o.windows, stride,
                                      embed_to_out=first))
        elif o.stfem:
            g3d.append(STFEM(in_channels, out_channels, stride, adjacency, beta, o.windows, float(o.stfem_ratio),
                             bias=o.stfem_bias, **heads))
        self.g3d = nn.Sequential(*g3d) if g3d else None
        self.tcn = MultiScaleTemporalConv(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.factorized(x)
        if self.g3d is not None:
            out = out + self.g3d(x)
        return self.tcn(F.relu(out))


class SkeletonNet(nn.Module):
    """(N, C, T, V, M) skeletons -> (N, num_class) logits.

    Persons fold into the batch after the input BN; the head averages over
    frames and joints, then over persons, then one Linear (no dropout, as MS-G3D).
    Inputs with fewer persons than `num_person` are zero-padded, the prepared
    data's own convention for an absent body.
    """

    def __init__(self, cfg: ModelConfig, kernel_backend: str = "auto") -> None:
        super().__init__()
        channels, strides = cfg.channels, cfg.strides
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"channels {channels} and strides {strides} must be non-empty and of equal length")
        self.config, self.kernel_backend = cfg, kernel_backend
        self.layout, self.num_class, self.in_channels, self.num_person = (cfg.layout, cfg.num_class,
                                                                          cfg.in_channels, cfg.num_person)
        self.dp = None
        if cfg.dp:
            # The score channel is a confidence only on the joint stream (bone differences it).
            self.dp = DataPreprocessing(cfg.layout, cfg.dp_mode, float(cfg.dp_scale), cfg.coord_dims,
                                        cfg.in_channels,
                                        confidence=cfg.stream == "joint" and cfg.in_channels > cfg.coord_dims)
        model_in = self.dp.out_channels if self.dp is not None else cfg.in_channels
        self.data_bn = nn.BatchNorm1d(cfg.num_person * cfg.layout.num_joints * model_in)
        adjacency = cfg.layout.adjacency()
        blocks, c_in = [], model_in
        for i, (c_out, stride) in enumerate(zip(channels, strides)):
            blocks.append(Block(c_in, c_out, stride, i == 0, adjacency, cfg, kernel_backend))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(c_in, cfg.num_class)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"input must be (N, C, T, V, M), got shape {tuple(x.shape)}")
        n, c, t, v, m = x.shape
        if c != self.in_channels or v != self.layout.num_joints or not 1 <= m <= self.num_person or t < 1:
            raise ValueError(
                f"input must be (N, C={self.in_channels}, T>=1, V={self.layout.num_joints}, "
                f"M<= {self.num_person}), got {tuple(x.shape)}"
            )
        if m < self.num_person:
            x = F.pad(x, (0, self.num_person - m))
            m = self.num_person
        if self.dp is not None:
            x = self.dp(x)
            c = x.shape[1]
        # BN per (person, joint, channel) over (N, T), MS-G3D's data_bn layout.
        x = x.permute(0, 4, 3, 1, 2).reshape(n, m * v * c, t)
        x = self.data_bn(x)
        x = x.view(n, m, v, c, t).permute(0, 1, 3, 4, 2).reshape(n * m, c, t, v)
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=(2, 3)).view(n, m, -1).mean(dim=1)
        return self.fc(x)
