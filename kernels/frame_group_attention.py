"""Grouped frame attention (TFEM's Frame Features, eq. 12): Triton kernels,
launcher, autograd.Function and the thin public function, side by side.

Each frame is one token of F = J*D features and attends only to the frames of
its own group of `g` consecutive frames, so a (b, h, group) triple is a
self-contained problem: one program per triple, no atomics, no cross-program
softmax. F is huge (2400..9600) and g tiny (3..8), so the op is bandwidth
bound; the kernels stream feature chunks of BLOCK_F and keep the g x g score
matrix in registers.

Forward (2 sweeps over F): sweep 1 accumulates S = Q K^T, softmax in fp32,
sweep 2 writes O = P V. P (g x g per group, ~0.1 % of the traffic) is saved
for backward, which therefore never re-reads Q and K to rebuild it.
Backward (3 sweeps): sweep 1 accumulates dP = dO V^T, then
dS = P * (dP - rowsum(P * dP)); sweep 2 writes dQ = s dS K, sweep 3
dK = s dS^T Q and dV = P^T dO, chunk by chunk. Traffic: forward 3 reads + 1 write, backward
5 reads + 3 writes of a (B, H, T, J, D) tensor.

g is below tl.dot's minimum of 16, and padding to 16 would triple the
register tiles, so products are broadcast-multiply + tl.sum with the key axis
unrolled (tl.static_range over the exact group size).

The feature axis is walked in the order that is contiguous in memory (j-major
or d-major, whichever stride of q is smaller): the sums over features do not
depend on the order, and the model's permuted view has stride 1 along J.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
from torch.autograd.function import once_differentiable
import triton.language as tl

from ._checks import announce, check_positive_int, check_qkv, choose_backend, resolve_scale
from .aot_spec import KernelSpec
from .reference import frame_group_attention_reference

OP = "frame_group_attention"

# Largest group the Triton kernels take: the g x g scores and the unrolled key
# loop live in registers. The model uses g <= 8.
MAX_TRITON_GROUP = 8


# --------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------


@triton.jit
def _feature_offsets(f, INNER, s_inner, s_outer):
    # Flat feature index (inner-major) -> element offset for one tensor.
    return (f % INNER) * s_inner + (f // INNER) * s_outer


@triton.jit
def _fga_fwd_kernel(
    Q, K, V, O, P,
    s_qb, s_qh, s_qt, s_qi, s_qo,
    s_kb, s_kh, s_kt, s_ki, s_ko,
    s_vb, s_vh, s_vt, s_vi, s_vo,
    s_ob, s_oh, s_ot, s_oi, s_oo,
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
    q_base = Q + b * s_qb + h * s_qh + t0.to(tl.int64) * s_qt
    k_base = K + b * s_kb + h * s_kh + t0.to(tl.int64) * s_kt
    v_base = V + b * s_vb + h * s_vh + t0.to(tl.int64) * s_vt
    o_base = O + b * s_ob + h * s_oh + t0.to(tl.int64) * s_ot

    # Sweep 1: S = Q K^T over all features, fp32.
    s = tl.zeros((BLOCK_G, BLOCK_G), dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        f_ok = f < F
        q = tl.load(
            q_base + rows[:, None] * s_qt + _feature_offsets(f, INNER, s_qi, s_qo)[None, :],
            mask=row_ok[:, None] & f_ok[None, :], other=0.0,
        ).to(tl.float32)
        k_off = _feature_offsets(f, INNER, s_ki, s_ko)
        for c in tl.static_range(GROUP):
            k_row = tl.load(k_base + c * s_kt + k_off, mask=f < tl.where(t0 + c < T, F, 0), other=0.0).to(tl.float32)
            s_col = tl.sum(q * k_row[None, :], axis=1)
            s = tl.where(cols[None, :] == c, s + s_col[:, None], s)  # accumulate over chunks

    # Softmax over the keys that exist (the last group may be short).
    key_ok = (cols < GROUP) & (t0 + cols < T)
    s = tl.where(key_ok[None, :], s * scale, float("-inf"))
    s = s - tl.max(s, axis=1)[:, None]
    e = tl.exp(s)
    p = e / tl.sum(e, axis=1)[:, None]

    # Saved for backward: P of this group, (BLOCK_G, BLOCK_G) fp32, row-major.
    p_base = P + (pid_bh.to(tl.int64) * tl.num_programs(0) + pid_g) * (BLOCK_G * BLOCK_G)
    tl.store(p_base + rows[:, None] * BLOCK_G + cols[None, :], p)
    # Sweep 2 reads P back one column at a time (L1/L2 hits): an in-register
    # column extraction from a (BLOCK_G, BLOCK_G) tile costs far more registers.
    tl.debug_barrier()

    # Sweep 2: O = P V.
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        f_ok = f < F
        v_off = _feature_offsets(f, INNER, s_vi, s_vo)
        acc = tl.zeros((BLOCK_G, BLOCK_F), dtype=tl.float32)
        for c in tl.static_range(GROUP):
            v_row = tl.load(v_base + c * s_vt + v_off, mask=f < tl.where(t0 + c < T, F, 0), other=0.0).to(tl.float32)
            p_col = tl.load(p_base + rows * BLOCK_G + c)
            acc += p_col[:, None] * v_row[None, :]
        tl.store(
            o_base + rows[:, None] * s_ot + _feature_offsets(f, INNER, s_oi, s_oo)[None, :],
            acc.to(O.dtype.element_ty),
            mask=row_ok[:, None] & f_ok[None, :],
        )


@triton.jit
def _fga_bwd_kernel(
    Q, K, V, DO, P, DS, DQ, DK, DV,
    s_qb, s_qh, s_qt, s_qi, s_qo,
    s_kb, s_kh, s_kt, s_ki, s_ko,
    s_vb, s_vh, s_vt, s_vi, s_vo,
    s_dob, s_doh, s_dot, s_doi, s_doo,
    s_dqb, s_dqh, s_dqt, s_dqi, s_dqo,
    s_dkb, s_dkh, s_dkt, s_dki, s_dko,
    s_dvb, s_dvh, s_dvt, s_dvi, s_dvo,
    H, T, INNER, F, scale,
    GROUP: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_F: tl.constexpr,
):
    pid_g = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    t0 = pid_g * GROUP
    t0_64 = t0.to(tl.int64)

    rows = tl.arange(0, BLOCK_G)
    cols = tl.arange(0, BLOCK_G)
    row_ok = (rows < GROUP) & (t0 + rows < T)
    q_base = Q + b * s_qb + h * s_qh + t0_64 * s_qt
    k_base = K + b * s_kb + h * s_kh + t0_64 * s_kt
    v_base = V + b * s_vb + h * s_vh + t0_64 * s_vt
    do_base = DO + b * s_dob + h * s_doh + t0_64 * s_dot
    dq_base = DQ + b * s_dqb + h * s_dqh + t0_64 * s_dqt
    dk_base = DK + b * s_dkb + h * s_dkh + t0_64 * s_dkt
    dv_base = DV + b * s_dvb + h * s_dvh + t0_64 * s_dvt

    p_base = P + (pid_bh.to(tl.int64) * tl.num_programs(0) + pid_g) * (BLOCK_G * BLOCK_G)
    p = tl.load(p_base + rows[:, None] * BLOCK_G + cols[None, :])

    # Sweep 1: dP = dO V^T.
    dp = tl.zeros((BLOCK_G, BLOCK_G), dtype=tl.float32)
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        f_ok = f < F
        do = tl.load(
            do_base + rows[:, None] * s_dot + _feature_offsets(f, INNER, s_doi, s_doo)[None, :],
            mask=row_ok[:, None] & f_ok[None, :], other=0.0,
        ).to(tl.float32)
        v_off = _feature_offsets(f, INNER, s_vi, s_vo)
        for c in tl.static_range(GROUP):
            v_row = tl.load(v_base + c * s_vt + v_off, mask=f < tl.where(t0 + c < T, F, 0), other=0.0).to(tl.float32)
            dp_col = tl.sum(do * v_row[None, :], axis=1)
            dp = tl.where(cols[None, :] == c, dp + dp_col[:, None], dp)  # accumulate over chunks

    # Softmax backward; P is exactly 0 on missing keys, so dS is too. Scale
    # folded in once here: dQ = scale * dS K, dK = scale * dS^T Q.
    delta = tl.sum(p * dp, axis=1)
    ds = p * (dp - delta[:, None]) * scale
    # dS goes to a per-group scratch and, like P, is read back by column.
    ds_base = DS + (pid_bh.to(tl.int64) * tl.num_programs(0) + pid_g) * (BLOCK_G * BLOCK_G)
    tl.store(ds_base + rows[:, None] * BLOCK_G + cols[None, :], ds)
    tl.debug_barrier()

    # Sweep 2: dQ = dS K. Sweep 3: dK = dS^T Q and dV = P^T dO. Each tensor is
    # still read once; splitting keeps fewer tiles live (no spills at g=8).
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        k_off = _feature_offsets(f, INNER, s_ki, s_ko)
        dq = tl.zeros((BLOCK_G, BLOCK_F), dtype=tl.float32)
        for c in tl.static_range(GROUP):
            k_row = tl.load(k_base + c * s_kt + k_off, mask=f < tl.where(t0 + c < T, F, 0), other=0.0)
            ds_col = tl.load(ds_base + rows * BLOCK_G + c)
            dq += ds_col[:, None] * k_row.to(tl.float32)[None, :]
        tl.store(
            dq_base + rows[:, None] * s_dqt + _feature_offsets(f, INNER, s_dqi, s_dqo)[None, :],
            dq.to(DQ.dtype.element_ty),
            mask=row_ok[:, None] & (f < F)[None, :],
        )
    for f0 in range(0, F, BLOCK_F):
        f = f0 + tl.arange(0, BLOCK_F)
        tile_ok = row_ok[:, None] & (f < F)[None, :]
        q = tl.load(
            q_base + rows[:, None] * s_qt + _feature_offsets(f, INNER, s_qi, s_qo)[None, :],
            mask=tile_ok, other=0.0,
        ).to(tl.float32)
        do = tl.load(
            do_base + rows[:, None] * s_dot + _feature_offsets(f, INNER, s_doi, s_doo)[None, :],
            mask=tile_ok, other=0.0,
        ).to(tl.float32)
        dk_off = _feature_offsets(f, INNER, s_dki, s_dko)
        dv_off = _feature_offsets(f, INNER, s_dvi, s_dvo)
        for c in tl.static_range(GROUP):
            c_ok = f < tl.where(t0 + c < T, F, 0)  # row c exists and f < F
            ds_col = tl.load(ds_base + rows * BLOCK_G + c)
            p_col = tl.load(p_base + rows * BLOCK_G + c)
            dk_row = tl.sum(ds_col[:, None] * q, axis=0)
            dv_row = tl.sum(p_col[:, None] * do, axis=0)
            tl.store(dk_base + c * s_dkt + dk_off, dk_row.to(DK.dtype.element_ty), mask=c_ok)
            tl.store(dv_base + c * s_dvt + dv_off, dv_row.to(DV.dtype.element_ty), mask=c_ok)


# --------------------------------------------------------------------------
# Launch configuration (pure: the AOT build enumerates the same choices)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchConfig:
    group: int  # exact group size the kernel unrolls over (constexpr GROUP)
    block_g: int  # group padded to a power of two
    block_f: int  # features per chunk
    num_warps: int
    num_stages: int = 1


# (register tile = BLOCK_G * BLOCK_F fp32 elements, num_warps) per group size,
# picked from the ahead-of-time builds (python -m kernels.aot_check, see
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


def launch_config(group: int, num_features: int, *, backward: bool) -> LaunchConfig:
    """Config for one group size and feature count (F = J*D): BLOCK_F fills the
    group's register tile, capped at F (small F gets 4 warps: fewer lanes idle)."""
    if not 1 <= group <= MAX_TRITON_GROUP:
        raise ValueError(f"{OP}: launch_config needs 1 <= group <= {MAX_TRITON_GROUP}, got {group}")
    block_g = triton.next_power_of_2(group)
    tile, warps = (_BWD_CONFIG if backward else _FWD_CONFIG)[group]
    block_f = max(16, min(tile // block_g, triton.next_power_of_2(num_features)))
    if block_g * block_f < tile:
        warps = 4
    return LaunchConfig(group=group, block_g=block_g, block_f=block_f, num_warps=warps)


def effective_group(group: int, num_frames: int) -> int:
    """A group longer than the clip is one group of the whole clip."""
    return min(group, num_frames)


def _feature_axes(x: torch.Tensor) -> tuple[int, int]:
    """(inner, outer) dims of the flat feature index for q's layout: walk
    features along whichever of J, D has the smaller stride."""
    return (3, 4) if abs(x.stride(3)) <= abs(x.stride(4)) else (4, 3)


def _strides(x: torch.Tensor, inner: int, outer: int) -> tuple[int, int, int, int, int]:
    return (x.stride(0), x.stride(1), x.stride(2), x.stride(inner), x.stride(outer))


def _grid(B: int, H: int, T: int, group: int) -> tuple[int, int]:
    return (triton.cdiv(T, group), B * H)


def _check_triton_group(group: int) -> None:
    if group > MAX_TRITON_GROUP:
        raise ValueError(
            f"{OP}: the Triton backend takes group <= {MAX_TRITON_GROUP} (the g x g scores live in "
            f"registers), got group {group}; use backend='eager' for longer groups"
        )


def fga_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: int, scale: float):
    """Launch the forward kernel; returns (out, P) with P the saved softmax."""
    B, H, T, J, D = q.shape
    group = effective_group(group, T)
    _check_triton_group(group)
    F = J * D
    cfg = launch_config(group, F, backward=False)
    inner, outer = _feature_axes(q)
    grid = _grid(B, H, T, group)
    out = torch.empty_like(q)  # same layout as q: the model's permuted view stays free
    p = torch.empty((grid[1], grid[0], cfg.block_g, cfg.block_g), device=q.device, dtype=torch.float32)
    _fga_fwd_kernel[grid](
        q, k, v, out, p,
        *_strides(q, inner, outer), *_strides(k, inner, outer),
        *_strides(v, inner, outer), *_strides(out, inner, outer),
        H, T, q.shape[inner], F, scale,
        GROUP=cfg.group, BLOCK_G=cfg.block_g, BLOCK_F=cfg.block_f,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out, p


def fga_backward(q, k, v, p, grad_out, group: int, scale: float):
    """Launch the backward kernel; returns (dq, dk, dv) in the input dtype."""
    B, H, T, J, D = q.shape
    group = effective_group(group, T)
    F = J * D
    cfg = launch_config(group, F, backward=True)
    inner, outer = _feature_axes(q)
    grid = _grid(B, H, T, group)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    ds_scratch = torch.empty_like(p)
    _fga_bwd_kernel[grid](
        q, k, v, grad_out, p, ds_scratch, dq, dk, dv,
        *_strides(q, inner, outer), *_strides(k, inner, outer), *_strides(v, inner, outer),
        *_strides(grad_out, inner, outer), *_strides(dq, inner, outer),
        *_strides(dk, inner, outer), *_strides(dv, inner, outer),
        H, T, q.shape[inner], F, scale,
        GROUP=cfg.group, BLOCK_G=cfg.block_g, BLOCK_F=cfg.block_f,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return dq, dk, dv


class FrameGroupAttentionFunction(torch.autograd.Function):
    """Triton forward and backward; saves q, k, v (no copies) and the g x g P."""

    @staticmethod
    def forward(ctx, q, k, v, group, scale):  # type: ignore[override]
        out, p = fga_forward(q, k, v, group, scale)
        ctx.save_for_backward(q, k, v, p)
        ctx.group, ctx.scale = group, scale
        return out

    @staticmethod
    @once_differentiable  # the kernels are not differentiable: double backward must raise, not return zeros
    def backward(ctx, grad_out):  # type: ignore[override]
        q, k, v, p = ctx.saved_tensors
        dq, dk, dv = fga_backward(q, k, v, p, grad_out, ctx.group, ctx.scale)
        return dq, dk, dv, None, None


def frame_group_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    group: int,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention between the frames of each group of `group` consecutive frames.

    q, k, v: (B, H, T, J, D), any strides; each frame is one token of J*D
    features. The last group may be shorter (no padding tokens). Returns
    (B, H, T, J, D) in q's dtype.
    """
    check_qkv(OP, q, k, v)
    group = check_positive_int(OP, "group", group)
    J, D = q.shape[3], q.shape[4]
    scale = resolve_scale(OP, scale, (J * D) ** -0.5)
    chosen = choose_backend(OP, backend, q)
    if chosen == "triton":
        _check_triton_group(effective_group(group, q.shape[2]))
    if backend == "eager":
        if not torch.compiler.is_compiling():
            announce(OP, "eager", q.device.type)
        return frame_group_attention_reference(q, k, v, group, scale)
    if q.is_cuda or backend == "auto":
        # The custom op (kernels/ops.py): Triton on CUDA, the reference elsewhere;
        # opaque to torch.compile.
        return torch.ops.amanet.frame_group_attention(q, k, v, group, scale)[0]
    if not torch.compiler.is_compiling():
        announce(OP, "triton", q.device.type)
    return FrameGroupAttentionFunction.apply(q, k, v, group, scale)


# --------------------------------------------------------------------------
# Ahead-of-time build enumeration
# --------------------------------------------------------------------------

_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# Groups and feature counts the model launches: TFEM groups of 3/5/8 frames
# (all of 1..MAX_TRITON_GROUP are listed: the launcher accepts each); one head
# of F = C * J features, C in 96/192/384 and J in 18 (OpenPose), 20 (NW-UCLA),
# 25 (NTU).
AOT_GROUPS = tuple(range(1, MAX_TRITON_GROUP + 1))
AOT_FEATURE_COUNTS = tuple(c * j for c in (96, 192, 384) for j in (18, 20, 25))


def _kernel_signature(kind: str, tdt: str) -> dict[str, str]:
    """Triton types of every non-constexpr argument, in the kernel's order."""
    if kind == "fwd":
        pointers, prefixes = ["Q", "K", "V", "O", "P"], ["q", "k", "v", "o"]
    else:
        pointers = ["Q", "K", "V", "DO", "P", "DS", "DQ", "DK", "DV"]
        prefixes = ["q", "k", "v", "do", "dq", "dk", "dv"]
    signature = {name: ("*fp32" if name in ("P", "DS") else f"*{tdt}") for name in pointers}
    for prefix in prefixes:
        for suffix in ("b", "h", "t", "i", "o"):
            signature[f"s_{prefix}{suffix}"] = "i32"
    signature.update({"H": "i32", "T": "i32", "INNER": "i32", "F": "i32", "scale": "fp32"})
    return signature


def aot_specs() -> list[KernelSpec]:
    """Every (kernel, dtype, config) the launcher picks for g in AOT_GROUPS and
    F in AOT_FEATURE_COUNTS (deduplicated: most F share the tile-limited BLOCK_F)."""
    specs: list[KernelSpec] = []
    for kind, fn in (("fwd", _fga_fwd_kernel), ("bwd", _fga_bwd_kernel)):
        configs = sorted(
            {launch_config(g, f, backward=kind == "bwd") for g in AOT_GROUPS for f in AOT_FEATURE_COUNTS},
            key=lambda c: (c.group, c.block_f),
        )
        for torch_dtype, tdt in _TRITON_DTYPE.items():
            for cfg in configs:
                specs.append(
                    KernelSpec(
                        name=f"frame_group_{kind}[{tdt},g={cfg.group},BLOCK_F={cfg.block_f},w={cfg.num_warps}]",
                        fn=fn,
                        signature=_kernel_signature(kind, tdt),
                        constexprs={"GROUP": cfg.group, "BLOCK_G": cfg.block_g, "BLOCK_F": cfg.block_f},
                        num_warps=cfg.num_warps,
                        num_stages=cfg.num_stages,
                        meta={"dtype": tdt, "group": cfg.group, "block_g": cfg.block_g, "block_f": cfg.block_f},
                    )
                )
    return specs
