"""Windowed spatio-temporal attention (STFEM, eq. 14; window=1 is SFEM's
per-frame joint attention, eq. 10): Triton kernels, launcher, autograd.Function
and the thin public function, side by side.

Design (SPEC §2.1, §2.3). Every launch config builds for sm_80, sm_86 and
sm_90 with zero register spills (`python -m kernels.aot_check --filter window`);
the layout below is what that took.
- One program owns one window: its `window*J <= 128` keys fit one tile, so the
  softmax is single-pass (no online rescaling). Queries are walked BLOCK_M (16
  or 32) at a time against all keys. Tokens are padded to a power of two; only
  PADDING tokens (index >= window*J) are masked. Frames past T load as zeros and
  stay unmasked, exactly like zero-padding then unfolding.
- q, k, v (and the output gradient) are read through their own strides: the
  model passes a permuted view and copying it would double the memory traffic.
- The head dim is walked in chunks of BLOCK_D (HEAD_DIM_CHUNK: 16 for fp16/bf16,
  8 for fp32) by a runtime loop: scores accumulate over chunks, outputs and
  gradients are produced chunk by chunk. Nothing of size keys x D lives in
  registers (k and v are re-read per query block, from L1/L2), and one build
  serves every D above the chunk.
- The bias is gathered directly into the (queries x keys) score tile, in fp32
  for every input dtype (4-8 values per thread at these tile sizes).
- fp32 inputs run their dots as 3xTF32 on tensor cores (FP32_DOT_PRECISION;
  ~fp32 accurate); the dbias one-hot folds use a two-term tf32 split (the
  one-hot is exact in tf32). fp16/bf16 feed tensor cores with fp32
  accumulation; P and dS are rounded to the input dtype before their matmuls
  (as in flash attention).
- Backward recomputes P per window (nothing of size T*window^2*J^2 is stored),
  delta = rowsum(P*dP) in-kernel, dS = P*(dP - delta). It works on the
  transposed scores (keys as rows). No keys x D accumulator lives in registers;
  two loop orders (constexpr CHUNKS_OUTER, chosen per window size):
  * windows of <= 64 tokens (1-2 query blocks of 32): per query block, S^T and
    dP^T over the D chunks, P and dS^T, then per D chunk dV += P^T dO,
    dK += dS^T Q and dQ = dS K are read-modify-written straight into the fp32
    gradient rows;
  * 128-token windows (8 query blocks of 16): D chunks outside, query blocks
    inside; each query block recomputes S^T, dP^T (all chunks), P and dS^T and
    adds its dV/dK chunk into (keys x BLOCK_D) accumulators, written once per
    window; dQ chunks are read-modify-written per block. This trades recomputed
    score FLOPs (tensor cores) for ~8x less L2 traffic on the dK/dV rows.
  The read of a read-modify-write is a predicated load, not a branch (the
  branch cost registers).
- Each frame lies in up to `window` windows, so dq/dk/dv sum over windows. The
  sum is DETERMINISTIC and atomic-free: the backward runs `window` launches
  ("phases"); phase r handles anchors t = r, r+window, ... whose windows are
  disjoint, so each program read-modify-writes fp32 rows nobody else touches in
  that launch; within a program, successive query blocks update the same dK/dV
  elements from the same thread (same layout), in program order. Phase 0's
  first query block of each window plain-stores (no zero fill).
- dbias folds dS^T onto key joints (one-hot^T @ dS^T, joints x queries), then
  onto query joints, into a (J, J) accumulator kept over a block of anchors per
  program; the per-program partials are summed by torch afterwards
  (deterministic). Compiled out when bias needs no grad.
- Loops in the backward are marked disable_licm: hoisting loop-invariant
  address tensors out of them is what pushed the builds over 255 registers.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ._checks import announce, check_bias, check_positive_int, check_qkv, choose_backend, resolve_scale
from .aot_spec import KernelSpec
from .reference import window_attention_reference

OP = "window_attention"
MAX_WINDOW_TOKENS = 128  # a window's keys must fit one tile (single-pass softmax)
# The head dim is walked in chunks (runtime loop): one build serves every D above
# the chunk, and no keys x D tile stays in registers. fp32 runs its dots as 3xTF32
# on tensor cores, whose split operands double the live registers: chunk 8 (tf32
# mma takes K = 8).
HEAD_DIM_CHUNK = {torch.float32: 8, torch.float16: 16, torch.bfloat16: 16}
# fp32 inputs: 3xTF32 dots on tensor cores (~fp32 accurate: operands split into
# tf32 head + remainder). "ieee" dots are FMA loops that hold whole operand rows
# per thread: the AOT builds spilled up to ~55 KB per thread. The interpreter
# ignores the setting (exact fp32).
FP32_DOT_PRECISION = "tf32x3"
LOG2E = tl.constexpr(1.4426950408889634)

logger = logging.getLogger("kernels")

# Backward: aim for at least this many programs per phase launch so a GPU is
# full, while each program folds dbias over as many anchors as that allows
# (fewer, larger partials). Tests lower it to exercise multi-anchor programs.
TARGET_PROGRAMS_PER_PHASE = 1024


# --------------------------------------------------------------------------- kernels


@triton.jit
def _token_layout(first_token, J, window, BLOCK: tl.constexpr):
    """Tokens first_token .. first_token+BLOCK-1 of a window: token i is joint i % J
    of the window's (i // J)-th frame; tokens from window*J on pad the tile."""
    token = first_token + tl.arange(0, BLOCK)
    step = token // J
    joint = token - step * J
    return step, joint, token < window * J


@triton.jit
def _token_offsets(t, step, joint, first_token, stride_t, stride_j, BLOCK: tl.constexpr, AFFINE: tl.constexpr):
    """Memory offsets of tokens first_token.. of the window anchored at t.
    AFFINE (stride_t == J * stride_j, true of the model's layout and of contiguous
    tensors): written as t*stride_t + token*stride_j so that, with the JIT's
    unit-stride specialization, the compiler sees tokens as contiguous and
    coalesces along them; otherwise frame*stride_t + joint*stride_j."""
    if AFFINE:
        offsets = t * stride_t + (first_token + tl.arange(0, BLOCK)) * stride_j
    else:
        offsets = (t + step) * stride_t + joint * stride_j
    return offsets


@triton.jit
def _add_bias(acc, bias_ptr, stride_row_joint, stride_col_joint, row_joint, col_joint, inv_scale):
    """acc[r, c] += bias[row_joint[r], col_joint[c]] / scale, gathered directly
    (exact fp32 for every input dtype). Joints are token % J, always in range, so
    padding tokens read real (unused) entries and need no mask. With query blocks
    of 16 the tile is 4-8 values per thread; the former bias-rows @ one-hot
    product held a rows x joints tile plus its split halves, which cost more."""
    offsets = row_joint[:, None] * stride_row_joint + col_joint[None, :] * stride_col_joint
    return acc + tl.load(bias_ptr + offsets) * inv_scale


@triton.jit
def _one_hot_dot_fp32(one_hot, x, acc):
    """acc + one_hot @ x for a boolean one-hot matrix and fp32 x, ~fp32 exact on tensor
    cores in two tf32 products: one_hot is exact in tf32, x splits into its tf32
    head (low 13 mantissa bits cleared, exact) and the fp32 remainder, whose tf32
    rounding error is ~2^-22 of x. Cheaper in registers than tf32x3 (which also
    splits the one-hot operand) and than an fp32 FMA dot (which holds whole
    operand rows per thread)."""
    head = (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    lhs = one_hot.to(tl.float32)
    acc = tl.dot(lhs, head, acc, input_precision="tf32")
    return tl.dot(lhs, x - head, acc, input_precision="tf32")


@triton.jit
def _dot_one_hot_fp32(x, one_hot, acc):
    """acc + x @ one_hot: the mirror image of _one_hot_dot_fp32."""
    head = (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)
    rhs = one_hot.to(tl.float32)
    acc = tl.dot(head, rhs, acc, input_precision="tf32")
    return tl.dot(x - head, rhs, acc, input_precision="tf32")


@triton.jit(do_not_specialize=["H", "T", "J", "D", "window"])
def _window_attention_fwd_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr,
    stride_qb, stride_qh, stride_qt, stride_qj, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kj, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vj, stride_vd,
    stride_bias_h, stride_bias_r, stride_bias_c,
    stride_ob, stride_oh, stride_ot, stride_os, stride_oj, stride_od,
    H, T, J, D, window, scale,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, AFFINE: tl.constexpr,
):
    DTYPE: tl.constexpr = q_ptr.dtype.element_ty
    # Anchor t varies fastest so neighbouring programs share frames in L2.
    pid = tl.program_id(0)
    t = pid % T
    bh = pid // T
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    # The window's keys form one tile; queries go BLOCK_M at a time and the head dim
    # BLOCK_D at a time (runtime loops: nothing of size keys x D stays in registers).
    k_step, k_joint, k_is_token = _token_layout(0, J, window, BLOCK_N)
    k_in_seq = k_is_token & (t + k_step < T)  # frames past T: zero keys, still unmasked
    k_rows = _token_offsets(t, k_step, k_joint, 0, stride_kt, stride_kj, BLOCK_N, AFFINE)
    v_rows = _token_offsets(t, k_step, k_joint, 0, stride_vt, stride_vj, BLOCK_N, AFFINE)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    o_base = out_ptr + b * stride_ob + h * stride_oh + t.to(tl.int64) * stride_ot
    bias_base = bias_ptr + h * stride_bias_h
    num_chunks = tl.cdiv(D, BLOCK_D)

    for m in range(0, tl.cdiv(window * J, BLOCK_M)):  # runtime count: no unrolling
        q_step, q_joint, q_is_token = _token_layout(m * BLOCK_M, J, window, BLOCK_M)
        q_in_seq = q_is_token & (t + q_step < T)
        q_rows = _token_offsets(t, q_step, q_joint, m * BLOCK_M, stride_qt, stride_qj, BLOCK_M, AFFINE)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc = _add_bias(acc, bias_base, stride_bias_r, stride_bias_c, q_joint, k_joint, 1.0 / scale)
        for c in range(0, num_chunks):
            d = c * BLOCK_D + tl.arange(0, BLOCK_D)
            d_ok = d < D
            q = tl.load(q_base + q_rows[:, None] + d[None, :] * stride_qd,
                        mask=q_in_seq[:, None] & d_ok[None, :], other=0.0)
            k = tl.load(k_base + k_rows[:, None] + d[None, :] * stride_kd,
                        mask=k_in_seq[:, None] & d_ok[None, :], other=0.0)
            acc = tl.dot(q, tl.trans(k), acc, input_precision=DOT_PRECISION)
        # Softmax over keys (base 2: exp2 is the native instruction); padding keys get no mass.
        logits = tl.where(k_is_token[None, :], acc * (scale * LOG2E), float("-inf"))
        p = tl.exp2(logits - tl.max(logits, axis=1)[:, None])
        p = (p * (1.0 / tl.sum(p, axis=1))[:, None]).to(DTYPE)
        o_rows = _token_offsets(0, q_step, q_joint, m * BLOCK_M, stride_os, stride_oj, BLOCK_M, True)
        for c in range(0, num_chunks):
            d = c * BLOCK_D + tl.arange(0, BLOCK_D)
            d_ok = d < D
            v = tl.load(v_base + v_rows[:, None] + d[None, :] * stride_vd,
                        mask=k_in_seq[:, None] & d_ok[None, :], other=0.0)
            out = tl.dot(p, v, input_precision=DOT_PRECISION)
            tl.store(o_base + o_rows[:, None] + d[None, :] * stride_od, out.to(out_ptr.dtype.element_ty),
                     mask=q_is_token[:, None] & d_ok[None, :])


@triton.jit
def _add_rows(ptrs, value, mask, accumulate):
    """Read-modify-write without atomics: within one phase no other program
    touches these rows (the phase's windows are disjoint), and within a program
    the same thread owns an element in every query block (same layout)."""
    # Predicated load, no branch (the branchy form cost registers). The flag is
    # broadcast explicitly: the interpreter rejects a tensor & scalar-bool mask.
    add = (tl.zeros(value.shape, tl.int32) + accumulate.to(tl.int32)) != 0
    value += tl.load(ptrs, mask=mask & add, other=0.0)
    tl.store(ptrs, value, mask=mask)


@triton.jit
def _probs_and_logit_grads_t(
    q_base, q_rows, q_in_seq, q_is_token, k_base, k_rows, k_in_seq, k_is_token, v_base, v_rows,
    do_anchor, do_rows, bias_base, stride_bias_c, stride_bias_r, k_joint, q_joint,
    stride_qd, stride_kd, stride_vd, stride_dod, D, num_chunks, scale,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Recompute P^T and dS^T (keys x queries, fp32) of one query block of one
    window: S^T and dP^T over head-dim chunks, softmax down the key axis,
    delta = rowsum(P * dP) per query, dS^T = P^T * (dP^T - delta)."""
    s = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    s = _add_bias(s, bias_base, stride_bias_c, stride_bias_r, k_joint, q_joint, 1.0 / scale)
    dp = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    for c in tl.range(0, num_chunks, disable_licm=True):
        d = c * BLOCK_D + tl.arange(0, BLOCK_D)
        d_ok = d < D
        kv_mask = k_in_seq[:, None] & d_ok[None, :]
        k = tl.load(k_base + k_rows[:, None] + d[None, :] * stride_kd, mask=kv_mask, other=0.0)
        q = tl.load(q_base + q_rows[:, None] + d[None, :] * stride_qd,
                    mask=q_in_seq[:, None] & d_ok[None, :], other=0.0)
        s = tl.dot(k, tl.trans(q), s, input_precision=DOT_PRECISION)
        v = tl.load(v_base + v_rows[:, None] + d[None, :] * stride_vd, mask=kv_mask, other=0.0)
        # Every token of the window has an output gradient, frames past T included.
        do = tl.load(do_anchor + do_rows[:, None] + d[None, :] * stride_dod,
                     mask=q_is_token[:, None] & d_ok[None, :], other=0.0)
        dp = tl.dot(v, tl.trans(do), dp, input_precision=DOT_PRECISION)
    logits = tl.where(k_is_token[:, None], s * (scale * LOG2E), float("-inf"))
    p = tl.exp2(logits - tl.max(logits, axis=0)[None, :])
    p = p * (1.0 / tl.sum(p, axis=0))[None, :]
    delta = tl.sum(p * dp, axis=0)  # one value per query
    ds = p * (dp - delta[None, :])  # dS^T: gradient of the logits, i.e. of the tiled bias
    return p, ds


@triton.jit
def _fold_dbias_t(dbias_t, ds, k_joint, q_joint, BLOCK_J: tl.constexpr, BLOCK_M: tl.constexpr,
                  DTYPE: tl.constexpr):
    """dbias^T += dS^T folded onto key joints first (one-hot^T @ dS^T: joints x
    queries), then onto query joints: only a joints x joints accumulator stays
    live. Padding query columns of dS are exactly 0 (their dO is 0)."""
    jj = tl.arange(0, BLOCK_J)
    k_one_hot_t = jj[:, None] == k_joint[None, :]
    if DTYPE == tl.float32:
        by_key_joint = _one_hot_dot_fp32(k_one_hot_t, ds, tl.zeros((BLOCK_J, BLOCK_M), dtype=tl.float32))
    else:
        # Half inputs fold the hi + lo halves of dS on tensor cores (~fp32 accurate).
        ds_hi = ds.to(DTYPE)
        by_key_joint = tl.dot(k_one_hot_t.to(DTYPE), ds_hi)
        by_key_joint = tl.dot(k_one_hot_t.to(DTYPE), (ds - ds_hi.to(tl.float32)).to(DTYPE), by_key_joint)
    return _dot_one_hot_fp32(by_key_joint, q_joint[:, None] == jj[None, :], dbias_t)


@triton.jit(do_not_specialize=["H", "T", "J", "D", "window", "phase", "anchors_per_program",
                               "programs_per_head", "accumulate"])
def _window_attention_bwd_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, dout_ptr, dq_ptr, dk_ptr, dv_ptr, dbias_partial_ptr,
    stride_qb, stride_qh, stride_qt, stride_qj, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kj, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vj, stride_vd,
    stride_bias_h, stride_bias_r, stride_bias_c,
    stride_dob, stride_doh, stride_dot, stride_dos, stride_doj, stride_dod,
    stride_gb, stride_gh, stride_gt, stride_gj, stride_gd,
    H, T, J, D, window, scale, phase, anchors_per_program, programs_per_head, accumulate,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, AFFINE: tl.constexpr, COMPUTE_DBIAS: tl.constexpr,
    CHUNKS_OUTER: tl.constexpr,
):
    DTYPE: tl.constexpr = q_ptr.dtype.element_ty
    pid = tl.program_id(0)
    chunk = pid % programs_per_head
    bh = pid // programs_per_head
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    # This phase's anchors are phase, phase + window, ...: their windows are disjoint.
    num_anchors = tl.cdiv(T - phase, window)
    first = chunk * anchors_per_program
    last = tl.minimum(first + anchors_per_program, num_anchors)
    num_chunks = tl.cdiv(D, BLOCK_D)

    jj = tl.arange(0, BLOCK_J)
    k_step, k_joint, k_is_token = _token_layout(0, J, window, BLOCK_N)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    do_base = dout_ptr + b * stride_dob + h * stride_doh
    g_base = b * stride_gb + h * stride_gh
    bias_base = bias_ptr + h * stride_bias_h
    # dbias^T accumulator (key joint x query joint), summed over queries and anchors.
    dbias_t = tl.zeros((BLOCK_J, BLOCK_J), dtype=tl.float32)

    for anchor in tl.range(first, last, disable_licm=True):
        t = phase + anchor * window
        k_in_seq = k_is_token & (t + k_step < T)
        k_rows = _token_offsets(t, k_step, k_joint, 0, stride_kt, stride_kj, BLOCK_N, AFFINE)
        v_rows = _token_offsets(t, k_step, k_joint, 0, stride_vt, stride_vj, BLOCK_N, AFFINE)
        kg_rows = _token_offsets(t, k_step, k_joint, 0, stride_gt, stride_gj, BLOCK_N, True)
        do_anchor = do_base + t.to(tl.int64) * stride_dot
        if CHUNKS_OUTER:
            # Keys are rows here (S^T, P^T, dP^T, dS^T): softmax runs down the columns,
            # dV = P^T dO and dK = dS^T Q need no transpose, only dQ = (dS^T)^T K does.
            # Head-dim chunks are the outer loop: for chunk c, every query block
            # recomputes S^T and dP^T (over all chunks), P and dS^T, adds its dV/dK
            # contribution to (keys x BLOCK_D) fp32 accumulators and read-modify-writes
            # its dQ chunk; the dK/dV chunk rows are read-modify-written once per window.
            # Recomputing the scores per chunk costs tensor-core FLOPs; the alternative
            # (dK/dV rows read-modify-written per query block) cost ~8x more L2 traffic.
            for c in tl.range(0, num_chunks, disable_licm=True):
                dc = c * BLOCK_D + tl.arange(0, BLOCK_D)
                dc_ok = dc < D
                kv_mask_c = k_in_seq[:, None] & dc_ok[None, :]
                dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
                dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
                for m in tl.range(0, tl.cdiv(window * J, BLOCK_M), disable_licm=True):  # runtime count: no unrolling
                    q_step, q_joint, q_is_token = _token_layout(m * BLOCK_M, J, window, BLOCK_M)
                    q_in_seq = q_is_token & (t + q_step < T)
                    q_rows = _token_offsets(t, q_step, q_joint, m * BLOCK_M, stride_qt, stride_qj, BLOCK_M, AFFINE)
                    do_rows = _token_offsets(0, q_step, q_joint, m * BLOCK_M, stride_dos, stride_doj, BLOCK_M, AFFINE)
                    p, ds = _probs_and_logit_grads_t(
                        q_base, q_rows, q_in_seq, q_is_token, k_base, k_rows, k_in_seq, k_is_token, v_base, v_rows,
                        do_anchor, do_rows, bias_base, stride_bias_c, stride_bias_r, k_joint, q_joint,
                        stride_qd, stride_kd, stride_vd, stride_dod, D, num_chunks, scale,
                        BLOCK_N, BLOCK_M, BLOCK_D, DOT_PRECISION)
                    if COMPUTE_DBIAS:
                        if c == 0:
                            dbias_t = _fold_dbias_t(dbias_t, ds, k_joint, q_joint, BLOCK_J, BLOCK_M, DTYPE)
                    ds = (ds * scale).to(DTYPE)
                    q_mask = q_in_seq[:, None] & dc_ok[None, :]
                    do = tl.load(do_anchor + do_rows[:, None] + dc[None, :] * stride_dod,
                                 mask=q_is_token[:, None] & dc_ok[None, :], other=0.0)
                    dv = tl.dot(p.to(DTYPE), do, dv, input_precision=DOT_PRECISION)
                    q = tl.load(q_base + q_rows[:, None] + dc[None, :] * stride_qd, mask=q_mask, other=0.0)
                    dk = tl.dot(ds, q, dk, input_precision=DOT_PRECISION)
                    k = tl.load(k_base + k_rows[:, None] + dc[None, :] * stride_kd, mask=kv_mask_c, other=0.0)
                    qg_rows = _token_offsets(t, q_step, q_joint, m * BLOCK_M, stride_gt, stride_gj, BLOCK_M, True)
                    _add_rows(dq_ptr + g_base + qg_rows[:, None] + dc[None, :] * stride_gd,
                              tl.dot(tl.trans(ds), k, input_precision=DOT_PRECISION), q_mask, accumulate != 0)
                g_offsets = g_base + kg_rows[:, None] + dc[None, :] * stride_gd
                _add_rows(dv_ptr + g_offsets, dv, kv_mask_c, accumulate != 0)
                _add_rows(dk_ptr + g_offsets, dk, kv_mask_c, accumulate != 0)
        else:
            # Keys are rows here (S^T, P^T, dP^T, dS^T): softmax runs down the columns,
            # dV = P^T dO and dK = dS^T Q need no transpose, only dQ = (dS^T)^T K does.
            # Per query block: (1) S^T and dP^T over head-dim chunks, (2) P and dS^T,
            # (3) per head-dim chunk, the dQ, dK, dV contributions read-modify-written
            # to the fp32 gradient rows. No keys x D accumulator lives in registers.
            for m in tl.range(0, tl.cdiv(window * J, BLOCK_M), disable_licm=True):  # runtime count: no unrolling
                q_step, q_joint, q_is_token = _token_layout(m * BLOCK_M, J, window, BLOCK_M)
                q_in_seq = q_is_token & (t + q_step < T)
                q_rows = _token_offsets(t, q_step, q_joint, m * BLOCK_M, stride_qt, stride_qj, BLOCK_M, AFFINE)
                do_rows = _token_offsets(0, q_step, q_joint, m * BLOCK_M, stride_dos, stride_doj, BLOCK_M, AFFINE)
                p, ds = _probs_and_logit_grads_t(
                    q_base, q_rows, q_in_seq, q_is_token, k_base, k_rows, k_in_seq, k_is_token, v_base, v_rows,
                    do_anchor, do_rows, bias_base, stride_bias_c, stride_bias_r, k_joint, q_joint,
                    stride_qd, stride_kd, stride_vd, stride_dod, D, num_chunks, scale,
                    BLOCK_N, BLOCK_M, BLOCK_D, DOT_PRECISION)
                p = p.to(DTYPE)
                if COMPUTE_DBIAS:
                    dbias_t = _fold_dbias_t(dbias_t, ds, k_joint, q_joint, BLOCK_J, BLOCK_M, DTYPE)
                ds = (ds * scale).to(DTYPE)
                kv_accumulate = (accumulate != 0) | (m > 0)  # phase 0's first query block stores
                q_accumulate = accumulate != 0  # query blocks own disjoint dq rows
                qg_rows = _token_offsets(t, q_step, q_joint, m * BLOCK_M, stride_gt, stride_gj, BLOCK_M, True)
                for c in tl.range(0, num_chunks, disable_licm=True):
                    d = c * BLOCK_D + tl.arange(0, BLOCK_D)
                    d_ok = d < D
                    kv_mask = k_in_seq[:, None] & d_ok[None, :]
                    g_offsets = g_base + kg_rows[:, None] + d[None, :] * stride_gd
                    do = tl.load(do_anchor + do_rows[:, None] + d[None, :] * stride_dod,
                                 mask=q_is_token[:, None] & d_ok[None, :], other=0.0)
                    _add_rows(dv_ptr + g_offsets, tl.dot(p, do, input_precision=DOT_PRECISION), kv_mask, kv_accumulate)
                    q_mask = q_in_seq[:, None] & d_ok[None, :]
                    q = tl.load(q_base + q_rows[:, None] + d[None, :] * stride_qd, mask=q_mask, other=0.0)
                    _add_rows(dk_ptr + g_offsets, tl.dot(ds, q, input_precision=DOT_PRECISION), kv_mask, kv_accumulate)
                    k = tl.load(k_base + k_rows[:, None] + d[None, :] * stride_kd, mask=kv_mask, other=0.0)
                    _add_rows(dq_ptr + g_base + qg_rows[:, None] + d[None, :] * stride_gd,
                              tl.dot(tl.trans(ds), k, input_precision=DOT_PRECISION), q_mask, q_accumulate)

    if COMPUTE_DBIAS:
        tl.store(dbias_partial_ptr + pid.to(tl.int64) * (BLOCK_J * BLOCK_J)
                 + jj[None, :] * BLOCK_J + jj[:, None], dbias_t)


# --------------------------------------------------------------------------- launch config


@dataclass(frozen=True)
class WindowLaunchConfig:
    block_n: int  # tokens per window (keys), padded to a power of two
    fwd_block_m: int  # queries per inner step: bounds the live score tile at block_n x block_m
    bwd_block_m: int
    bwd_chunks_outer: bool  # backward loop order, see the module docstring
    block_j: int  # joints, padded (dbias fold)
    block_d: int  # head-dim chunk: D padded to a power of two, at most the dtype's chunk
    dot_precision: str
    fwd_num_warps: int
    bwd_num_warps: int
    num_stages: int

    def _constexprs(self, block_m: int, affine: bool) -> dict[str, object]:
        return {
            "BLOCK_N": self.block_n,
            "BLOCK_M": block_m,
            "BLOCK_J": self.block_j,
            "BLOCK_D": self.block_d,
            "DOT_PRECISION": self.dot_precision,
            "AFFINE": bool(affine),
        }

    def fwd_constexprs(self, affine: bool) -> dict[str, object]:
        return self._constexprs(self.fwd_block_m, affine)

    def bwd_constexprs(self, affine: bool, compute_dbias: bool) -> dict[str, object]:
        return {**self._constexprs(self.bwd_block_m, affine), "COMPUTE_DBIAS": bool(compute_dbias),
                "CHUNKS_OUTER": self.bwd_chunks_outer}


def _pow2_at_least_16(n: int) -> int:
    # tl.dot needs every dimension >= 16 on GPU (K >= 8 for tf32, see HEAD_DIM_CHUNK).
    return max(16, triton.next_power_of_2(n))


def _launch_config(dtype: torch.dtype, window: int, J: int, D: int) -> WindowLaunchConfig:
    """Pure function of the problem: the launcher and aot_specs() both use it,
    so every config the launcher can pick is one the AOT check builds.

    The tile sizes come from the AOT builds (sm_80, sm_86, sm_90; ptxas spills at
    the margin are not monotonic in the tile sizes, so these are measured, not
    derived): every config below builds with zero spills on all three."""
    block_n = _pow2_at_least_16(window * J)
    if block_n > MAX_WINDOW_TOKENS:
        raise ValueError(
            f"{OP}: window*J = {window * J} tokens exceeds the {MAX_WINDOW_TOKENS}-token tile of the "
            f"Triton kernel; use backend='eager'"
        )
    exact = dtype == torch.float32
    return WindowLaunchConfig(
        block_n=block_n,
        fwd_block_m=16,
        # 128-key windows: 16 queries keep the backward's score/dS tiles small; smaller
        # windows afford 32 (fewer read-modify-writes of the dK/dV rows).
        bwd_block_m=16 if block_n >= 128 else 32,
        # 128-key windows have 8 query blocks: head-dim chunks go outside them so the
        # dK/dV rows are read-modify-written once per window, not once per block.
        bwd_chunks_outer=block_n >= 128,
        block_j=_pow2_at_least_16(J),
        block_d=min(HEAD_DIM_CHUNK[dtype], _pow2_at_least_16(D)),
        dot_precision=FP32_DOT_PRECISION if exact else "tf32",  # ignored by tl.dot for fp16/bf16 operands
        fwd_num_warps=8 if block_n >= 128 else 4,
        bwd_num_warps=8,
        num_stages=1,
    )


def triton_supports(window: int, J: int) -> bool:
    """Whether one window fits the kernel's single tile."""
    return _pow2_at_least_16(window * J) <= MAX_WINDOW_TOKENS


def _anchors_per_program(num_anchors: int, batch_heads: int) -> int:
    programs_per_head = max(1, triton.cdiv(TARGET_PROGRAMS_PER_PHASE, batch_heads))
    return max(1, triton.cdiv(num_anchors, programs_per_head))


# --------------------------------------------------------------------------- launchers


def _bias_fp32(bias: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """The kernel reads bias as fp32 (J*J*H elements: converting it is free and
    keeps one kernel per q dtype); a shared (J, J) bias gets head stride 0."""
    bias32 = bias.to(torch.float32)
    if bias32.dim() == 2:
        return bias32, (0, bias32.stride(0), bias32.stride(1))
    return bias32, (bias32.stride(0), bias32.stride(1), bias32.stride(2))


def _tokens_affine(x: torch.Tensor, frame_dim: int) -> bool:
    """Whether (frame, joint) merge into one token axis: stride(frame) == J * stride(joint)
    (a single frame merges trivially)."""
    return x.shape[frame_dim] == 1 or x.stride(frame_dim) == x.shape[frame_dim + 1] * x.stride(frame_dim + 1)


def _window_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int, scale: float
) -> torch.Tensor:
    B, H, T, J, D = q.shape
    cfg = _launch_config(q.dtype, window, J, D)
    bias32, bias_strides = _bias_fp32(bias)
    # Channel-major storage (B, H, D, T, window, J) viewed as (B, H, T, window, J, D):
    # the model's (N, C, T, window, V) view of it is free and stores are coalesced.
    out = torch.empty((B, H, D, T, window, J), device=q.device, dtype=q.dtype).permute(0, 1, 3, 4, 5, 2)
    affine = all(_tokens_affine(x, 2) for x in (q, k, v))
    grid = (T * B * H,)
    _window_attention_fwd_kernel[grid](
        q, k, v, bias32, out,
        *q.stride(), *k.stride(), *v.stride(), *bias_strides, *out.stride(),
        H, T, J, D, window, scale,
        **cfg.fwd_constexprs(affine), num_warps=cfg.fwd_num_warps, num_stages=cfg.num_stages,
    )
    return out


def _window_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    dout: torch.Tensor,
    window: int,
    scale: float,
    compute_dbias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    B, H, T, J, D = q.shape
    cfg = _launch_config(q.dtype, window, J, D)
    bias32, bias_strides = _bias_fp32(bias)
    # fp32 accumulators for dq, dk, dv in one buffer, channel-major like the
    # model's activations; no zero fill (phase 0 stores every frame once).
    grads = torch.empty((3, B, H, D, T, J), device=q.device, dtype=torch.float32).permute(0, 1, 2, 4, 5, 3)
    dq32, dk32, dv32 = grads.unbind(0)
    num_anchors = triton.cdiv(T, window)  # phase 0 has the most anchors
    anchors_per_program = _anchors_per_program(num_anchors, B * H) if compute_dbias else 1
    programs_per_head = triton.cdiv(num_anchors, anchors_per_program)
    if compute_dbias:
        partials = torch.empty(
            (window, B, H, programs_per_head, cfg.block_j, cfg.block_j), device=q.device, dtype=torch.float32
        )
    else:
        partials = torch.empty((window, 1), device=q.device, dtype=torch.float32)  # never written
    affine = all(_tokens_affine(x, 2) for x in (q, k, v)) and _tokens_affine(dout, 3)
    grid = (programs_per_head * B * H,)
    for phase in range(window):
        _window_attention_bwd_kernel[grid](
            q, k, v, bias32, dout, dq32, dk32, dv32, partials[phase],
            *q.stride(), *k.stride(), *v.stride(), *bias_strides, *dout.stride(), *dq32.stride(),
            H, T, J, D, window, scale, phase, anchors_per_program, programs_per_head, int(phase > 0),
            **cfg.bwd_constexprs(affine, compute_dbias), num_warps=cfg.bwd_num_warps, num_stages=cfg.num_stages,
        )
    if q.dtype == torch.float32:
        dq, dk, dv = dq32, dk32, dv32
    else:
        dq, dk, dv = grads.to(q.dtype).unbind(0)
    dbias = None
    if compute_dbias:
        per_head = partials[..., :J, :J].sum(dim=(0, 1, 3))  # (H, J, J)
        dbias = (per_head if bias.dim() == 3 else per_head.sum(0)).to(bias.dtype)
    return dq, dk, dv, dbias


class WindowAttentionFunction(torch.autograd.Function):
    """Triton forward and backward; saves only the inputs (P is recomputed)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, window, scale):  # type: ignore[override]
        ctx.save_for_backward(q, k, v, bias)
        ctx.window, ctx.scale = window, scale
        return _window_forward(q, k, v, bias, window, scale)

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        q, k, v, bias = ctx.saved_tensors
        need_q, need_k, need_v, need_bias = ctx.needs_input_grad[:4]
        dq, dk, dv, dbias = _window_backward(q, k, v, bias, dout, ctx.window, ctx.scale, need_bias)
        return (dq if need_q else None, dk if need_k else None, dv if need_v else None, dbias, None, None)


# --------------------------------------------------------------------------- AOT specs

_AOT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_AOT_WINDOWS = (1, 3, 5)
_AOT_JOINTS = (18, 20, 25)
_AOT_HEAD_DIMS = (8, 16, 24, 32, 48, 64, 96)
_TRITON_PTR = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}
# Pointers not listed here carry the q/k/v dtype.
_FP32_POINTERS = {"bias_ptr", "dq_ptr", "dk_ptr", "dv_ptr", "dbias_partial_ptr"}
_FLOAT_SCALARS = {"scale"}


def _kernel_params(kernel) -> list[tuple[str, bool]]:
    """(name, is_constexpr) of a kernel's parameters, read from the Python function
    so it works for a JITFunction and for the interpreter's InterpretedFunction."""
    params = inspect.signature(kernel.fn).parameters.values()
    return [(p.name, p.annotation is tl.constexpr or "constexpr" in str(p.annotation)) for p in params]


def _signature(fn, dtype: torch.dtype) -> dict[str, str]:
    """Triton types of every non-constexpr argument, in the kernel's order."""
    signature = {}
    for name, is_constexpr in _kernel_params(fn):
        if is_constexpr:
            continue
        if name.endswith("_ptr"):
            signature[name] = "*fp32" if name in _FP32_POINTERS else _TRITON_PTR[dtype]
        elif name in _FLOAT_SCALARS:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    return signature


def _model_layout_ints(kernel_label: str, window: int, J: int, D: int, heads: int = 4, T: int = 300) -> dict[str, int]:
    """Stride values the launcher passes for the model's layout (q, k, v and the
    output gradient channel-major, as the model's (N, C, T, V) activations give
    them), so the AOT build sees the JIT's unit-stride/divisibility specialization."""
    def qkv_strides():
        return torch.empty((2, heads * D, T, J), device="meta").view(2, heads, D, T, J).permute(0, 1, 3, 4, 2).stride()

    out_strides = torch.empty((2, heads, D, T, window, J), device="meta").permute(0, 1, 3, 4, 5, 2).stride()
    ints = {}
    for name in "qkv":
        ints.update(zip((f"stride_{name}{a}" for a in "bhtjd"), qkv_strides()))
    ints.update(zip(("stride_bias_h", "stride_bias_r", "stride_bias_c"), (J * J, J, 1)))
    if kernel_label.endswith("fwd"):
        ints.update(zip((f"stride_o{a}" for a in "bhtsjd"), out_strides))
    else:
        ints.update(zip((f"stride_do{a}" for a in "bhtsjd"), out_strides))
        grad_strides = torch.empty((3, 2, heads, D, T, J), device="meta").permute(0, 1, 2, 4, 5, 3)[0].stride()
        ints.update(zip((f"stride_g{a}" for a in "bhtjd"), grad_strides))
    return ints


def _jit_specialization(ints: dict[str, int]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the JIT specializes on for these integer arguments: the ones equal to 1
    (they become constexprs) and the ones divisible by 16 (tt.divisibility)."""
    return (tuple(sorted(n for n, v in ints.items() if v == 1)),
            tuple(sorted(n for n, v in ints.items() if v % 16 == 0)))


def aot_specs() -> list[KernelSpec]:
    """Every (kernel, dtype, config) the launcher can pick for windows {1,3,5},
    J {18,20,25}, D {8..96}: the input of the ahead-of-time build check.
    AFFINE=True builds carry the JIT specialization of the model's layout (unit
    joint strides, strides divisible by 16); one config serves many (window, J, D)
    whose strides specialize differently, so each distinct specialization is its
    own build, named after its first shape. AFFINE=False is the arbitrary-strides
    path, unspecialized."""
    from .aot_check import specialize_like_jit  # only needed here; keeps the op import light

    specs: dict[tuple, KernelSpec] = {}
    dtype_names = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
    for dtype in _AOT_DTYPES:
        for window in _AOT_WINDOWS:
            for J in _AOT_JOINTS:
                for D in _AOT_HEAD_DIMS:
                    cfg = _launch_config(dtype, window, J, D)
                    variants = []
                    for affine in (True, False):
                        variants.append(("window_attention_fwd", _window_attention_fwd_kernel,
                                         cfg.fwd_constexprs(affine), cfg.fwd_num_warps))
                        for compute_dbias in (True, False):
                            variants.append(("window_attention_bwd", _window_attention_bwd_kernel,
                                             cfg.bwd_constexprs(affine, compute_dbias), cfg.bwd_num_warps))
                    for label, fn, constexprs, num_warps in variants:
                        ints = _model_layout_ints(label, window, J, D) if constexprs["AFFINE"] else {}
                        jit_key = _jit_specialization(ints) if ints else None
                        key = (label, dtype, tuple(sorted(constexprs.items())), num_warps, cfg.num_stages, jit_key)
                        if key in specs:
                            specs[key].meta["shapes"].append((window, J, D))
                            continue
                        knobs = ",".join(f"{k}={v}" for k, v in constexprs.items())
                        layout = f",model=w{window}J{J}D{D}" if ints else ""
                        spec = KernelSpec(
                            name=f"{label}[{dtype_names[dtype]},{knobs},warps={num_warps}{layout}]",
                            fn=fn,
                            signature=_signature(fn, dtype),
                            constexprs=dict(constexprs),
                            num_warps=num_warps,
                            num_stages=cfg.num_stages,
                            meta={"op": OP, "dtype": dtype_names[dtype], "shapes": [(window, J, D)]},
                        )
                        if ints:
                            spec = specialize_like_jit(spec, ints)
                        specs[key] = spec
    return list(specs.values())


# --------------------------------------------------------------------------- public op


def window_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    window: int,
    *,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Attention over every window of `window` consecutive frames.

    q, k, v: (B, H, T, J, D), any strides. bias: (J, J) or (H, J, J), added to
    every (frame, frame) block of the window's scores. Frames past T are zeros
    that still take softmax mass. Returns (B, H, T, window, J, D) in q's dtype
    (the Triton path stores it channel-major: a permuted view of a
    (B, H, D, T, window, J) buffer).
    """
    check_qkv(OP, q, k, v)
    check_bias(OP, bias, q)
    window = check_positive_int(OP, "window", window)
    scale = resolve_scale(OP, scale, q.shape[-1] ** -0.5)
    chosen = choose_backend(OP, backend, q)
    if backend == "triton" and not triton_supports(window, q.shape[3]):
        _launch_config(q.dtype, window, q.shape[3], q.shape[-1])  # raises the explanatory ValueError
    if backend == "eager":
        if not torch.compiler.is_compiling():
            announce(OP, "eager", q.device.type)
        return window_attention_reference(q, k, v, bias, window, scale)
    if q.is_cuda or backend == "auto":
        # The custom op (kernels/ops.py): Triton on CUDA (the reference past the tile,
        # said once), the reference elsewhere; opaque to torch.compile.
        return torch.ops.amanet.window_attention(q, k, v, bias, window, scale)
    if not torch.compiler.is_compiling():
        announce(OP, "triton", q.device.type)
    return WindowAttentionFunction.apply(q, k, v, bias, window, scale)
