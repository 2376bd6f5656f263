"""The four input streams of AMANet's multi-scale dual-stream (MS-DS) ensemble.

Works on numpy arrays and torch tensors alike, with the joint axis second to
last — (C, T, V, M) samples or (N, C, T, V, M) batches — and returns the same
type, dtype and device, so the data pipeline and the model can share it.

"Fused" reading: the paper's "barycenter of multiple adjacent joint data ... the
generalized information (mean value) of this part" (Method, Overall framework;
Fig. 6) is implemented as each joint replaced by the unweighted mean of itself
and its 1-hop graph neighbours. This keeps the joint count (the same architecture
serves all four streams, as the paper's MS-DS requires). `bone_fused` is the bone
stream of the fused joints.

Bone: x[v] - x[parent(v)] over all channels, zero at the layout's root, as
MS-G3D's bone data (for Kinetics the score channel is differenced too, exactly
as MS-G3D's prepared bone files).
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from .graphs import SkeletonLayout, get_layout

__all__ = ["STREAMS", "bone", "fused", "to_stream"]

STREAMS: tuple[str, ...] = ("joint", "bone", "joint_fused", "bone_fused")

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _check(x, layout: SkeletonLayout) -> None:
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"x must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.ndim < 2 or x.shape[-2] != layout.num_joints:
        raise ValueError(
            f"x must have the joint axis second to last with {layout.num_joints} joints "
            f"({layout.name}), got shape {tuple(x.shape)}"
        )


def bone(x: ArrayT, layout: SkeletonLayout | str) -> ArrayT:
    """Bone vectors x[v] - x[parent(v)]; the root's bone is zero."""
    layout = get_layout(layout)
    _check(x, layout)
    if isinstance(x, torch.Tensor):
        parents = torch.as_tensor(layout.parents, dtype=torch.long, device=x.device)
        return x - x.index_select(x.ndim - 2, parents)
    return x - x[..., np.asarray(layout.parents), :]


def fused(x: ArrayT, layout: SkeletonLayout | str) -> ArrayT:
    """Each joint replaced by the mean of itself and its 1-hop neighbours (barycenter)."""
    layout = get_layout(layout)
    _check(x, layout)
    w = layout.neighbour_mean_matrix()
    if isinstance(x, torch.Tensor):
        if not x.is_floating_point():
            raise TypeError(f"fused needs a floating-point tensor, got {x.dtype}")
        wt = torch.as_tensor(w, dtype=x.dtype, device=x.device)
        return torch.einsum("vu,...um->...vm", wt, x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"fused needs a floating-point array, got {x.dtype}")
    return np.einsum("vu,...um->...vm", w.astype(x.dtype), x).astype(x.dtype, copy=False)


def to_stream(x: ArrayT, stream: str, layout: SkeletonLayout | str) -> ArrayT:
    """Joint data -> the named stream; "joint" returns x itself (no copy)."""
    layout = get_layout(layout)
    if stream == "joint":
        _check(x, layout)
        return x
    if stream == "bone":
        return bone(x, layout)
    if stream == "joint_fused":
        return fused(x, layout)
    if stream == "bone_fused":
        return bone(fused(x, layout), layout)
    raise ValueError(f"unknown stream {stream!r}; expected one of {STREAMS}")
