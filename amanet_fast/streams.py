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

__all__ = ["STREAMS", "bone", "fused", "to_stream", "present"]

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
        return wt @ x  # (V, V) @ (..., V, M): one batched GEMM, same sum as einsum "vu,...um->...vm"
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"fused needs a floating-point array, got {x.dtype}")
    # `@` runs as BLAS GEMMs; np.einsum without optimize loops in C and was 12-16x slower here.
    return (w.astype(x.dtype) @ x).astype(x.dtype, copy=False)


def present(x: ArrayT, coord_dims: int, confidence: bool) -> ArrayT:
    """Where a joint counts as observed; channel axis fourth from last ((C, T, V, M) or (N, C, T, V, M)).

    docs/design.md §3.2: for coordinates alone "missing" is decided per person and frame
    -- a body with every coordinate of every joint exactly 0 in that frame is
    absent (padding, no detection) -- never per joint, because an exactly-zero
    joint is real data (after NTU pre-normalization the spine-mid joint of the
    first body is (0, 0, 0) in every frame; NW-UCLA's frame-0 spine too). With
    `confidence`, channel `coord_dims` is a detection score (OpenPose/COCO) and
    a joint with score 0 is missing. Returns a bool array/tensor of x's rank
    with the channel axis kept as 1 (and, without confidence, the joint axis too),
    so it broadcasts over both.
    """
    ch = x.ndim - 4
    if confidence:
        if x.shape[ch] <= coord_dims:
            raise ValueError(f"confidence needs a score channel after the {coord_dims} coordinates, "
                             f"got {x.shape[ch]} channels")
        score = x[(slice(None),) * ch + (slice(coord_dims, coord_dims + 1),)]
        return score != 0
    coords = x[(slice(None),) * ch + (slice(0, coord_dims),)]
    if isinstance(coords, torch.Tensor):
        return (coords != 0).any(dim=ch, keepdim=True).any(dim=-2, keepdim=True)
    return np.any(coords != 0, axis=(ch, x.ndim - 2), keepdims=True)


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
