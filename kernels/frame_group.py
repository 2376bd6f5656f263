"""Grouped frame attention (TFEM's Frame Features, eq. 12) in Triton: the forward and
backward kernels, their launch configuration and the launchers kernels/ops.py registers
as the custom ops' CUDA implementations.

The algorithm (feature sweeps, the saved g x g softmax, why no tl.dot): docs/kernels.md
("Design of the frame-group kernels"); the maths: docs/design.md §2.2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

OP = "frame_group_attention"

# Largest group the Triton kernels take: the g x g scores and the unrolled key
# loop live in registers. The model uses g <= 8.
MAX_TRITON_GROUP = 8


# --------------------------------------------------------------------------- kernels


@triton.jit
def _feature_offsets(f, INNER, stride_inner, stride_outer):
    # Flat feature index (inner-major) -> element offset for one tensor.
    return (f % INNER) * stride_inner + (f // INNER) * stride_outer


@triton.jit
def _group_start(ptr, b, h, t0, stride_b, stride_h, stride_t):
    # Clip b, head h, the group's first frame; int64 so that large tensors do not overflow.
    return ptr + b * stride_b + h * stride_h + t0.to(tl.int64) * stride_t


@triton.jit
def _group_scratch(ptr, pid_bh, pid_g, BLOCK_G: tl.constexpr):
    # This program's (BLOCK_G, BLOCK_G) fp32 tile of a per-group scratch (P or dS), row-major.
    return ptr + (pid_bh.to(tl.int64) * tl.num_programs(0) + pid_g) * (BLOCK_G * BLOCK_G)


@triton.jit
def frame_group_fwd_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, probs_ptr,
    stride_qb, stride_qh, stride_qt, stride_qi, stride_qo,
    stride_kb, stride_kh, stride_kt, stride_ki, stride_ko,
    stride_vb, stride_vh, stride_vt, stride_vi, stride_vo,
    stride_ob, stride_oh, stride_ot, stride_oi, stride_oo,
    H, T, INNER, F, scale,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_F: tl.constexpr,
):
    pid_g = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    t0 = pid_g * GROUP

    rows = tl.arange(0, BLOCK_G)
    cols = tl.arange(0, BLOCK_G)
    row_ok = (rows < GROUP) & (t0 + rows < T)
    q_base = _group_start(q_ptr, b, h, t0, stride_qb, stride_qh, stride_qt)
    k_base = _group_start(k_ptr, b, h, t0, stride_kb, stride_kh, stride_kt)
    v_base = _group_start(v_ptr, b, h, t0, stride_vb, stride_vh, stride_vt)
    o_base = _group_start(out_ptr, b, h, t0, stride_ob, stride_oh, stride_ot)

    # Sweep 1: S = Q K^T over all features, fp32.
    s = tl.zeros((BLOCK_G, BLOCK_G), dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        f_ok = f < F
        q = tl.load(
            q_base + rows[:, None] * stride_qt + _feature_offsets(f, INNER, stride_qi, stride_qo)[None, :],
            mask=row_ok[:, None] & f_ok[None, :], other=0.0,
        ).to(tl.float32)
        k_off = _feature_offsets(f, INNER, stride_ki, stride_ko)
        for c in tl.static_range(GROUP):
            k_row = tl.load(k_base + c * stride_kt + k_off, mask=f < tl.where(t0 + c < T, F, 0), other=0.0).to(tl.float32)
            s_col = tl.sum(q * k_row[None, :], axis=1)
            s = tl.where(cols[None, :] == c, s + s_col[:, None], s)  # accumulate over chunks

    # Softmax over the keys that exist (the last group may be short).
    key_ok = (cols < GROUP) & (t0 + cols < T)
    s = tl.where(key_ok[None, :], s * scale, float("-inf"))
    s = s - tl.max(s, axis=1)[:, None]
    e = tl.exp(s)
    p = e / tl.sum(e, axis=1)[:, None]

    # Saved for backward: P of this group.
    p_base = _group_scratch(probs_ptr, pid_bh, pid_g, BLOCK_G)
    tl.store(p_base + rows[:, None] * BLOCK_G + cols[None, :], p)
    # Sweep 2 reads P back one column at a time (L1/L2 hits): an in-register
    # column extraction from a (BLOCK_G, BLOCK_G) tile costs far more registers.
    tl.debug_barrier()

    # Sweep 2: O = P V.
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        f_ok = f < F
        v_off = _feature_offsets(f, INNER, stride_vi, stride_vo)
        acc = tl.zeros((BLOCK_G, BLOCK_F), dtype=tl.float32)
        for c in tl.static_range(GROUP):
            v_row = tl.load(v_base + c * stride_vt + v_off, mask=f < tl.where(t0 + c < T, F, 0), other=0.0).to(tl.float32)
            p_col = tl.load(p_base + rows * BLOCK_G + c)
            acc += p_col[:, None] * v_row[None, :]
        tl.store(
            o_base + rows[:, None] * stride_ot + _feature_offsets(f, INNER, stride_oi, stride_oo)[None, :],
            acc.to(out_ptr.dtype.element_ty),
            mask=row_ok[:, None] & f_ok[None, :],
        )


@triton.jit
def frame_group_bwd_kernel(
    q_ptr, k_ptr, v_ptr, dout_ptr, probs_ptr, ds_ptr, dq_ptr, dk_ptr, dv_ptr,
    stride_qb, stride_qh, stride_qt, stride_qi, stride_qo,
    stride_kb, stride_kh, stride_kt, stride_ki, stride_ko,
    stride_vb, stride_vh, stride_vt, stride_vi, stride_vo,
    stride_dob, stride_doh, stride_dot, stride_doi, stride_doo,
    stride_dqb, stride_dqh, stride_dqt, stride_dqi, stride_dqo,
    stride_dkb, stride_dkh, stride_dkt, stride_dki, stride_dko,
    stride_dvb, stride_dvh, stride_dvt, stride_dvi, stride_dvo,
    H, T, INNER, F, scale,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_F: tl.constexpr,
):
    pid_g = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    t0 = pid_g * GROUP

    rows = tl.arange(0, BLOCK_G)
    cols = tl.arange(0, BLOCK_G)
    row_ok = (rows < GROUP) & (t0 + rows < T)
    q_base = _group_start(q_ptr, b, h, t0, stride_qb, stride_qh, stride_qt)
    k_base = _group_start(k_ptr, b, h, t0, stride_kb, stride_kh, stride_kt)
    v_base = _group_start(v_ptr, b, h, t0, stride_vb, stride_vh, stride_vt)
    do_base = _group_start(dout_ptr, b, h, t0, stride_dob, stride_doh, stride_dot)
    dq_base = _group_start(dq_ptr, b, h, t0, stride_dqb, stride_dqh, stride_dqt)
    dk_base = _group_start(dk_ptr, b, h, t0, stride_dkb, stride_dkh, stride_dkt)
    dv_base = _group_start(dv_ptr, b, h, t0, stride_dvb, stride_dvh, stride_dvt)

    p_base = _group_scratch(probs_ptr, pid_bh, pid_g, BLOCK_G)
    p = tl.load(p_base + rows[:, None] * BLOCK_G + cols[None, :])

    # Sweep 1: dP = dO V^T.
    dp = tl.zeros((BLOCK_G, BLOCK_G), dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        f_ok = f < F
        do = tl.load(
            do_base + rows[:, None] * stride_dot + _feature_offsets(f, INNER, stride_doi, stride_doo)[None, :],
            mask=row_ok[:, None] & f_ok[None, :], other=0.0,
        ).to(tl.float32)
        v_off = _feature_offsets(f, INNER, stride_vi, stride_vo)
        for c in tl.static_range(GROUP):
            v_row = tl.load(v_base + c * stride_vt + v_off, mask=f < tl.where(t0 + c < T, F, 0), other=0.0).to(tl.float32)
            dp_col = tl.sum(do * v_row[None, :], axis=1)
            dp = tl.where(cols[None, :] == c, dp + dp_col[:, None], dp)  # accumulate over chunks

    # Softmax backward; P is exactly 0 on missing keys, so dS is too. Scale
    # folded in once here: dQ = scale * dS K, dK = scale * dS^T Q.
    delta = tl.sum(p * dp, axis=1)
    ds = p * (dp - delta[:, None]) * scale
    # dS goes to a per-group scratch and, like P, is read back by column.
    ds_base = _group_scratch(ds_ptr, pid_bh, pid_g, BLOCK_G)
    tl.store(ds_base + rows[:, None] * BLOCK_G + cols[None, :], ds)
    tl.debug_barrier()

    # Sweep 2: dQ = dS K. Sweep 3: dK = dS^T Q and dV = P^T dO. Each tensor is
    # still read once; splitting keeps fewer tiles live (no spills at g=8).
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        k_off = _feature_offsets(f, INNER, stride_ki, stride_ko)
        dq = tl.zeros((BLOCK_G, BLOCK_F), dtype=tl.float32)
        for c in tl.static_range(GROUP):
            k_row = tl.load(k_base + c * stride_kt + k_off, mask=f < tl.where(t0 + c < T, F, 0), other=0.0)
            ds_col = tl.load(ds_base + rows * BLOCK_G + c)
            dq += ds_col[:, None] * k_row.to(tl.float32)[None, :]
        tl.store(
            dq_base + rows[:, None] * stride_dqt + _feature_offsets(f, INNER, stride_dqi, stride_dqo)[None, :],
            dq.to(dq_ptr.dtype.element_ty),
            mask=row_ok[:, None] & (f < F)[None, :],
        )
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        tile_ok = row_ok[:, None] & (f < F)[None, :]
        q = tl.load(
            q_base + rows[:, None] * stride_qt + _feature_offsets(f, INNER, stride_qi, stride_qo)[None, :],
            mask=tile_ok, other=0.0,
        ).to(tl.float32)
        do = tl.load(
            do_base + rows[:, None] * stride_dot + _feature_offsets(f, INNER, stride_doi, stride_doo)[None, :],
            mask=tile_ok, other=0.0,
        ).to(tl.float32)
        dk_off = _feature_offsets(f, INNER, stride_dki, stride_dko)
        dv_off = _feature_offsets(f, INNER, stride_dvi, stride_dvo)
        for c in tl.static_range(GROUP):
            c_ok = f < tl.where(t0 + c < T, F, 0)  # row c exists and f < F
            ds_col = tl.load(ds_base + rows * BLOCK_G + c)
            p_col = tl.load(p_base + rows * BLOCK_G + c)
            dk_row = tl.sum(ds_col[:, None] * q, axis=0)
            dv_row = tl.sum(p_col[:, None] * do, axis=0)
            tl.store(dk_base + c * stride_dkt + dk_off, dk_row.to(dk_ptr.dtype.element_ty), mask=c_ok)
            tl.store(dv_base + c * stride_dvt + dv_off, dv_row.to(dv_ptr.dtype.element_ty), mask=c_ok)


# --------------------------------------------------------------------------- launch config


@dataclass(frozen=True)
class FrameGroupLaunchConfig:
    group: int  # exact group size the kernel unrolls over (constexpr GROUP)
    block_g: int  # group padded to a power of two
    block_f: int  # features per chunk
    num_warps: int
    num_stages: int = 1


# (register tile = BLOCK_G * BLOCK_F fp32 elements, num_warps) per group size,
# picked from the ahead-of-time builds (python -m kernels.tools.aot_check, see
# docs/kernels.md): the largest tile that builds without spills or stack for
# fp32/fp16/bf16 on sm_80, sm_86 and sm_90. ptxas is erratic here: e.g. the
# backward at g=7 spills on sm_86 with (2048, 4) but not with (1024, 4); the
# forward spills a few bytes with (4096, 8) at g=4 (sm_90) and g=8 (sm_86) and
# with (2048, 8) at g=7 (sm_90, fp16/bf16); once the backward accumulated dP over
# chunks (not just kept the last one), g=6 with (2048, 4) spilled 12 B on sm_86
# (fp16/bf16) while (1024, 4), (2048, 8) and (4096, 8) build clean.
_FWD_CONFIG = {g: (2048, 8) for g in range(1, MAX_TRITON_GROUP + 1)} | {7: (1024, 8)}
_BWD_CONFIG = {1: (4096, 8), 2: (4096, 8), 3: (4096, 8), 4: (4096, 8), 5: (4096, 8),
               6: (4096, 8), 7: (1024, 4), 8: (2048, 4)}  # fmt: skip


def launch_config(group: int, num_features: int, *, backward: bool) -> FrameGroupLaunchConfig:
    """Config for one group size and feature count (F = J*D): BLOCK_F fills the
    group's register tile, capped at F (small F gets 4 warps: fewer lanes idle)."""
    if not 1 <= group <= MAX_TRITON_GROUP:
        raise ValueError(f"{OP}: launch_config needs 1 <= group <= {MAX_TRITON_GROUP}, got {group}")
    block_g = triton.next_power_of_2(group)
    tile, warps = (_BWD_CONFIG if backward else _FWD_CONFIG)[group]
    block_f = max(16, min(tile // block_g, triton.next_power_of_2(num_features)))
    if block_g * block_f < tile:
        warps = 4
    return FrameGroupLaunchConfig(group=group, block_g=block_g, block_f=block_f, num_warps=warps)


def effective_group(group: int, num_frames: int) -> int:
    """A group longer than the clip is one group of the whole clip."""
    return min(group, num_frames)


def _feature_axes(x: torch.Tensor) -> tuple[int, int]:
    """(inner, outer) dims of the flat feature index for q's layout: walk
    features along whichever of J, D has the smaller stride."""
    return (3, 4) if abs(x.stride(3)) <= abs(x.stride(4)) else (4, 3)


def _strides(x: torch.Tensor, inner: int, outer: int) -> tuple[int, int, int, int, int]:
    return (x.stride(0), x.stride(1), x.stride(2), x.stride(inner), x.stride(outer))


def launch_grid(B: int, H: int, T: int, group: int) -> tuple[int, int]:
    return (triton.cdiv(T, group), B * H)


def check_triton_group(group: int) -> None:
    if group > MAX_TRITON_GROUP:
        raise ValueError(
            f"{OP}: the Triton backend takes group <= {MAX_TRITON_GROUP} (the g x g scores live in "
            f"registers), got group {group}; use backend='eager' for longer groups"
        )


def frame_group_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int, scale: float):
    """Launch the forward kernel; returns (out, probs): probs is the saved softmax, (B*H, groups, BLOCK_G, BLOCK_G) fp32."""
    B, H, T, J, D = q.shape
    group = effective_group(group, T)
    check_triton_group(group)
    F = J * D
    cfg = launch_config(group, F, backward=False)
    inner, outer = _feature_axes(q)
    grid = launch_grid(B, H, T, group)
    out = torch.empty_like(q)  # same layout as q: the model's permuted view stays free
    probs = torch.empty((grid[1], grid[0], cfg.block_g, cfg.block_g), device=q.device, dtype=torch.float32)
    frame_group_fwd_kernel[grid](
        q, k, v, out, probs,
        *_strides(q, inner, outer), *_strides(k, inner, outer),
        *_strides(v, inner, outer), *_strides(out, inner, outer),
        H, T, q.shape[inner], F, scale,
        GROUP=cfg.group, BLOCK_G=cfg.block_g, BLOCK_F=cfg.block_f,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out, probs


def frame_group_backward(q, k, v, probs, dout, group: int, scale: float):
    """Launch the backward kernel (probs: frame_group_forward's); returns (dq, dk, dv) in the input dtype."""
    B, H, T, J, D = q.shape
    group = effective_group(group, T)
    F = J * D
    cfg = launch_config(group, F, backward=True)
    inner, outer = _feature_axes(q)
    grid = launch_grid(B, H, T, group)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    ds_scratch = torch.empty_like(probs)
    frame_group_bwd_kernel[grid](
        q, k, v, dout, probs, ds_scratch, dq, dk, dv,
        *_strides(q, inner, outer), *_strides(k, inner, outer), *_strides(v, inner, outer),
        *_strides(dout, inner, outer), *_strides(dq, inner, outer),
        *_strides(dk, inner, outer), *_strides(dv, inner, outer),
        H, T, q.shape[inner], F, scale,
        GROUP=cfg.group, BLOCK_G=cfg.block_g, BLOCK_F=cfg.block_f,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return dq, dk, dv
