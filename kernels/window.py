"""Windowed spatio-temporal attention (STFEM eq. 14; window 1 is SFEM eq. 10) in Triton:
the forward and backward kernels, their launch configuration, the output layouts and
the launchers kernels/ops.py registers as the custom ops' CUDA implementations.

The algorithm and the reasons behind each tile choice: docs/kernels.md ("Design of the
window kernels"); the maths: docs/design.md §2.1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl


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


# Backward grid: one program per (b, h, chunk of consecutive anchors). Aim for at
# least this many programs so a GPU is full (one program per SM fits at the
# backward's register count, so this is several waves on a 132-SM H100)...
TARGET_BWD_PROGRAMS = 1024
# ...but give each program at least this many times window-1 anchors: the warm-up
# anchors a program recomputes and does not store cost (window-1)/chunk of the work.
MIN_CHUNK_PER_WARMUP = 4
# When D takes several head-dim chunks, each chunk pass re-reads the program's
# frames (q, k, v and the window's dout rows). Keep that working set within this
# many bytes, so the re-reads hit L2 with one program per SM resident: 132 x 192 KiB
# is half an H100's 50 MB L2, 108 x 192 KiB half an A100's 40 MB. (A 6 MB RTX 3090
# L2 cannot hold it: there the passes re-read from DRAM; docs/kernel_resources.md.)
RESWEEP_BYTES_PER_PROGRAM = 192 * 1024


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
def window_fwd_kernel(
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
        o_rows = _token_offsets(0, q_step, q_joint, m * BLOCK_M, stride_os, stride_oj, BLOCK_M, False)
        for c in range(0, num_chunks):
            d = c * BLOCK_D + tl.arange(0, BLOCK_D)
            d_ok = d < D
            v = tl.load(v_base + v_rows[:, None] + d[None, :] * stride_vd,
                        mask=k_in_seq[:, None] & d_ok[None, :], other=0.0)
            out = tl.dot(p, v, input_precision=DOT_PRECISION)
            tl.store(o_base + o_rows[:, None] + d[None, :] * stride_od, out.to(out_ptr.dtype.element_ty),
                     mask=q_is_token[:, None] & d_ok[None, :])


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


@triton.jit
def _slot_layout(first_token, t, J, window, T, BLOCK: tl.constexpr):
    """Tokens first_token .. first_token+BLOCK-1 of the window anchored at t, in SLOT
    order: token r = slot*J + joint holds frame f with f % window == slot, i.e. frame
    t + step with step = (slot - t) mod window. A frame keeps its slot in every window
    that contains it, so per-slot gradient accumulators line up across anchors.
    Tokens from window*J on pad the tile."""
    token = first_token + tl.arange(0, BLOCK)
    slot = token // J
    joint = token - slot * J
    step = (slot + window - t % window) % window
    is_token = token < window * J
    return slot, step, joint, is_token, is_token & (t + step < T)


@triton.jit(do_not_specialize=["H", "T", "J", "D", "window", "anchors_per_program", "programs_per_head"])
def window_bwd_kernel(
    q_ptr, k_ptr, v_ptr, bias_ptr, dout_ptr, dq_ptr, dk_ptr, dv_ptr, dbias_partial_ptr,
    stride_qb, stride_qh, stride_qt, stride_qj, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_kj, stride_kd,
    stride_vb, stride_vh, stride_vt, stride_vj, stride_vd,
    stride_bias_h, stride_bias_r, stride_bias_c,
    stride_dob, stride_doh, stride_dot, stride_dos, stride_doj, stride_dod,
    stride_gb, stride_gh, stride_gt, stride_gj, stride_gd,
    H, T, J, D, window, scale, anchors_per_program, programs_per_head,
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, COMPUTE_DBIAS: tl.constexpr, FRAME_LOCAL: tl.constexpr,
):
    DTYPE: tl.constexpr = q_ptr.dtype.element_ty
    NUM_BLOCKS: tl.constexpr = BLOCK_N // BLOCK_M
    # Neighbouring programs own neighbouring anchor chunks of one (b, h): their
    # warm-up frames are read while the neighbour has them in L2.
    pid = tl.program_id(0)
    chunk = pid % programs_per_head
    bh = pid // programs_per_head
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    # This program stores frames [t0, t1). Frame f sums over anchors f-window+1 .. f,
    # so the sweep starts window-1 anchors early (warm-up: accumulated, never stored).
    t0 = chunk * anchors_per_program
    t1 = tl.minimum(t0 + anchors_per_program, T)
    first_anchor = tl.maximum(t0 - window + 1, 0)
    num_chunks = tl.cdiv(D, BLOCK_D)

    jj = tl.arange(0, BLOCK_J)
    q_base = q_ptr + b * stride_qb + h * stride_qh
    k_base = k_ptr + b * stride_kb + h * stride_kh
    v_base = v_ptr + b * stride_vb + h * stride_vh
    do_base = dout_ptr + b * stride_dob + h * stride_doh
    bias_base = bias_ptr + h * stride_bias_h
    g_offset = b * stride_gb + h * stride_gh
    # Token index of every element of the (query block, query, d) dQ accumulator.
    acc_token = (tl.arange(0, NUM_BLOCKS) * BLOCK_M)[:, None] + tl.arange(0, BLOCK_M)[None, :]
    acc_slot = acc_token // J
    acc_joint = acc_token - acc_slot * J
    # dbias^T accumulator (key joint x query joint), summed over queries and anchors.
    dbias_t = tl.zeros((BLOCK_J, BLOCK_J), dtype=tl.float32)

    if FRAME_LOCAL:
        # window == 1 and one query block holds the frame (BLOCK_M == BLOCK_N): every
        # frame is its own window, so its gradients are complete after one P/dS^T
        # recompute and are stored chunk by chunk (head-dim chunks inside; no slots,
        # no warm-up, no second pass over the frames).
        token = tl.arange(0, BLOCK_N)
        is_token = token < J
        joint = token % J  # padding tokens gather real (unused) bias entries, see _add_bias
        for t in tl.range(t0, t1, disable_licm=True):
            q_rows = t * stride_qt + token * stride_qj
            k_rows = t * stride_kt + token * stride_kj
            v_rows = t * stride_vt + token * stride_vj
            do_rows = token * stride_doj
            do_anchor = do_base + tl.cast(t, tl.int64) * stride_dot
            p, ds = _probs_and_logit_grads_t(
                q_base, q_rows, is_token, is_token, k_base, k_rows, is_token, is_token, v_base, v_rows,
                do_anchor, do_rows, bias_base, stride_bias_c, stride_bias_r, joint, joint,
                stride_qd, stride_kd, stride_vd, stride_dod, D, num_chunks, scale,
                BLOCK_N, BLOCK_M, BLOCK_D, DOT_PRECISION)
            if COMPUTE_DBIAS:
                dbias_t = _fold_dbias_t(dbias_t, ds, joint, joint, BLOCK_J, BLOCK_M, DTYPE)
            p = p.to(DTYPE)
            ds = (ds * scale).to(DTYPE)
            g_frame = g_offset + tl.cast(t, tl.int64) * stride_gt
            for c in tl.range(0, num_chunks, disable_licm=True):
                d = c * BLOCK_D + tl.arange(0, BLOCK_D)
                mask = is_token[:, None] & (d < D)[None, :]
                g_offsets = g_frame + token[:, None] * stride_gj + d[None, :] * stride_gd
                do = tl.load(do_anchor + do_rows[:, None] + d[None, :] * stride_dod, mask=mask, other=0.0)
                tl.store(dv_ptr + g_offsets, tl.dot(p, do, input_precision=DOT_PRECISION).to(DTYPE), mask=mask)
                q = tl.load(q_base + q_rows[:, None] + d[None, :] * stride_qd, mask=mask, other=0.0)
                tl.store(dk_ptr + g_offsets, tl.dot(ds, q, input_precision=DOT_PRECISION).to(DTYPE), mask=mask)
                k = tl.load(k_base + k_rows[:, None] + d[None, :] * stride_kd, mask=mask, other=0.0)
                tl.store(dq_ptr + g_offsets, tl.dot(tl.trans(ds), k, input_precision=DOT_PRECISION).to(DTYPE),
                         mask=mask)
    else:
        # Head-dim chunks outermost: the gradient accumulators hold one BLOCK_D column
        # chunk of every token of the window (keys x BLOCK_D for dK/dV, the same tokens as
        # (query block, query, BLOCK_D) for dQ) across the whole anchor sweep. The chunk
        # passes re-read the program's frames (from L2: docs/kernel_resources.md, "Bytes moved").
        for c in tl.range(0, num_chunks, disable_licm=True):
            dc = c * BLOCK_D + tl.arange(0, BLOCK_D)
            dc_ok = dc < D
            dk = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
            dv = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
            dq = tl.zeros((NUM_BLOCKS, BLOCK_M, BLOCK_D), dtype=tl.float32)
            for t in tl.range(first_anchor, t1, disable_licm=True):
                k_slot, k_step, k_joint, k_is_token, k_in_seq = _slot_layout(0, t, J, window, T, BLOCK_N)
                k_rows = (t + k_step) * stride_kt + k_joint * stride_kj
                v_rows = (t + k_step) * stride_vt + k_joint * stride_vj
                do_anchor = do_base + tl.cast(t, tl.int64) * stride_dot
                kv_mask_c = k_in_seq[:, None] & dc_ok[None, :]
                for m in tl.range(0, NUM_BLOCKS, disable_licm=True):
                    q_slot, q_step, q_joint, q_is_token, q_in_seq = _slot_layout(m * BLOCK_M, t, J, window, T, BLOCK_M)
                    q_rows = (t + q_step) * stride_qt + q_joint * stride_qj
                    # The query's output position in this window is its step.
                    do_rows = q_step * stride_dos + q_joint * stride_doj
                    p, ds = _probs_and_logit_grads_t(
                        q_base, q_rows, q_in_seq, q_is_token, k_base, k_rows, k_in_seq, k_is_token, v_base, v_rows,
                        do_anchor, do_rows, bias_base, stride_bias_c, stride_bias_r, k_joint, q_joint,
                        stride_qd, stride_kd, stride_vd, stride_dod, D, num_chunks, scale,
                        BLOCK_N, BLOCK_M, BLOCK_D, DOT_PRECISION)
                    if COMPUTE_DBIAS:
                        if (c == 0) & (t >= t0):  # warm-up anchors belong to the previous program
                            dbias_t = _fold_dbias_t(dbias_t, ds, k_joint, q_joint, BLOCK_J, BLOCK_M, DTYPE)
                    ds = (ds * scale).to(DTYPE)
                    do = tl.load(do_anchor + do_rows[:, None] + dc[None, :] * stride_dod,
                                 mask=q_is_token[:, None] & dc_ok[None, :], other=0.0)
                    dv = tl.dot(p.to(DTYPE), do, dv, input_precision=DOT_PRECISION)
                    q = tl.load(q_base + q_rows[:, None] + dc[None, :] * stride_qd,
                                mask=q_in_seq[:, None] & dc_ok[None, :], other=0.0)
                    dk = tl.dot(ds, q, dk, input_precision=DOT_PRECISION)
                    k = tl.load(k_base + k_rows[:, None] + dc[None, :] * stride_kd, mask=kv_mask_c, other=0.0)
                    dq_m = tl.dot(tl.trans(ds), k, input_precision=DOT_PRECISION)
                    # A register tile cannot be indexed by a runtime block: select block m.
                    is_m = (tl.arange(0, NUM_BLOCKS) == m)[:, None, None]
                    dq = tl.where(is_m, dq + dq_m[None, :, :], dq)
                # Frame t has now had all of its windows (anchors t-window+1 .. t): store its
                # slot once, in the input dtype, then free the slot for frame t + window.
                done_slot = t % window
                if t >= t0:
                    g_frame = g_offset + tl.cast(t, tl.int64) * stride_gt
                    kv_store = (k_slot == done_slot)[:, None] & dc_ok[None, :]
                    kv_offsets = g_frame + k_joint[:, None] * stride_gj + dc[None, :] * stride_gd
                    tl.store(dk_ptr + kv_offsets, dk.to(DTYPE), mask=kv_store)
                    tl.store(dv_ptr + kv_offsets, dv.to(DTYPE), mask=kv_store)
                    q_store = (acc_slot == done_slot)[:, :, None] & dc_ok[None, None, :]
                    q_offsets = g_frame + acc_joint[:, :, None] * stride_gj + dc[None, None, :] * stride_gd
                    tl.store(dq_ptr + q_offsets, dq.to(DTYPE), mask=q_store)
                dk = tl.where((k_slot == done_slot)[:, None], 0.0, dk)
                dv = tl.where((k_slot == done_slot)[:, None], 0.0, dv)
                dq = tl.where((acc_slot == done_slot)[:, :, None], 0.0, dq)

    if COMPUTE_DBIAS:
        tl.store(dbias_partial_ptr + pid.to(tl.int64) * (BLOCK_J * BLOCK_J)
                 + jj[None, :] * BLOCK_J + jj[:, None], dbias_t)


# --------------------------------------------------------------------------- launch config


@dataclass(frozen=True)
class WindowLaunchConfig:
    window: int
    block_n: int  # tokens per window (keys), padded to a power of two
    fwd_block_m: int  # queries per inner step: bounds the live score tile at block_n x block_m
    bwd_block_m: int
    block_j: int  # joints, padded (dbias fold)
    block_d: int  # head-dim chunk: D padded to a power of two, at most the dtype's chunk
    dot_precision: str
    fwd_num_warps: int
    bwd_num_warps: int
    num_stages: int

    def fwd_constexprs(self, affine: bool) -> dict[str, object]:
        return {"BLOCK_N": self.block_n, "BLOCK_M": self.fwd_block_m, "BLOCK_J": self.block_j,
                "BLOCK_D": self.block_d, "DOT_PRECISION": self.dot_precision, "AFFINE": bool(affine)}

    @property
    def bwd_frame_local(self) -> bool:
        """Window 1 with the frame in one query block: the backward's one-pass path."""
        return self.window == 1 and self.bwd_block_m == self.block_n

    def bwd_constexprs(self, compute_dbias: bool) -> dict[str, object]:
        # The backward reads tokens in slot order, which is never one affine run.
        return {"BLOCK_N": self.block_n, "BLOCK_M": self.bwd_block_m, "BLOCK_J": self.block_j,
                "BLOCK_D": self.block_d, "DOT_PRECISION": self.dot_precision,
                "COMPUTE_DBIAS": bool(compute_dbias), "FRAME_LOCAL": self.bwd_frame_local}


def _pow2_at_least_16(n: int) -> int:
    # tl.dot needs every dimension >= 16 on GPU (K >= 8 for tf32, see HEAD_DIM_CHUNK).
    return max(16, triton.next_power_of_2(n))


def launch_config(dtype: torch.dtype, window: int, J: int, D: int) -> WindowLaunchConfig:
    """Pure function of the problem: the launcher and kernels/tools/specs.py both use it,
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
        window=window,
        block_n=block_n,
        fwd_block_m=16,
        # 128-key windows: 16 queries keep the backward's score/dS tiles small; smaller
        # windows afford 32 (fewer recomputations of the keys' side per window).
        bwd_block_m=min(16 if block_n >= 128 else 32, block_n),
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


def resweep_frame_bytes(dtype: torch.dtype, window: int, J: int, D: int) -> int:
    """Bytes one more anchor adds to a backward program's working set (one frame of
    q, k, v and the anchor's window rows of dout), or 0 when a single pass reads
    every frame once (D is one head-dim chunk, or the frame-local window-1 path)."""
    cfg = launch_config(dtype, window, J, D)
    if cfg.bwd_frame_local or triton.cdiv(D, cfg.block_d) == 1:
        return 0
    return (3 + window) * J * D * torch.finfo(dtype).bits // 8


def anchors_per_program(T: int, batch_heads: int, window: int, frame_bytes: int = 0) -> int:
    """Backward chunk length L: as many programs per (b, h) as it takes to reach
    TARGET_BWD_PROGRAMS; with several head-dim chunks at most what keeps the
    re-read working set, (L + window - 1) frames, within RESWEEP_BYTES_PER_PROGRAM;
    and never below MIN_CHUNK_PER_WARMUP * (window - 1) anchors, which bounds the
    redundant warm-up to 1/MIN_CHUNK_PER_WARMUP of the work (it wins over the
    L2 cap where both cannot hold)."""
    programs_per_head = max(1, triton.cdiv(TARGET_BWD_PROGRAMS, batch_heads))
    chunk = triton.cdiv(T, programs_per_head)
    if frame_bytes:
        chunk = min(chunk, RESWEEP_BYTES_PER_PROGRAM // frame_bytes - (window - 1))
    return max(1, chunk, MIN_CHUNK_PER_WARMUP * (window - 1))


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


def empty_output(q: torch.Tensor, window: int) -> torch.Tensor:
    """The forward's output, (B, H, T, window, J, D), stored as (B, H, D, window, T, J):
    STFEM's collapse reads it as the free view (N, H*D*window, T, J), and the
    stores along J are contiguous. Also valid on the meta device (fake tensors)."""
    B, H, T, J, D = q.shape
    return torch.empty((B, H, D, window, T, J), device=q.device, dtype=q.dtype).permute(0, 1, 4, 3, 5, 2)


def empty_grads(q: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """dq, dk, dv as one (3, B, H, T, J, D) tensor in q's dtype, stored channel-major
    (3, B, H, D, T, J) like the model's activations (the inverse permute back to
    (N, C, T, V) is free). One buffer, so a caller that must return the three
    gradients as one tensor (the custom op) needs no copy."""
    B, H, T, J, D = q.shape
    device = q.device if device is None else device
    return torch.empty((3, B, H, D, T, J), device=device, dtype=q.dtype).permute(0, 1, 2, 4, 5, 3)


def window_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int, scale: float
) -> torch.Tensor:
    """One launch, one program per (b, h, anchor); returns empty_output's layout."""
    B, H, T, J, D = q.shape
    cfg = launch_config(q.dtype, window, J, D)
    bias32, bias_strides = _bias_fp32(bias)
    out = empty_output(q, window)
    affine = all(_tokens_affine(x, 2) for x in (q, k, v))
    grid = (T * B * H,)
    window_fwd_kernel[grid](
        q, k, v, bias32, out,
        *q.stride(), *k.stride(), *v.stride(), *bias_strides, *out.stride(),
        H, T, J, D, window, scale,
        **cfg.fwd_constexprs(affine), num_warps=cfg.fwd_num_warps, num_stages=cfg.num_stages,
    )
    return out


def window_backward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor,
    dout: torch.Tensor,
    window: int,
    scale: float,
    compute_dbias: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One launch; every element of dq, dk, dv is written exactly once, in q's dtype
    (no fp32 intermediate, no zero fill). dbias: one (J, J) partial per program,
    summed here in a fixed order (deterministic)."""
    B, H, T, J, D = q.shape
    cfg = launch_config(q.dtype, window, J, D)
    bias32, bias_strides = _bias_fp32(bias)
    dq, dk, dv = empty_grads(q).unbind(0)
    chunk = anchors_per_program(T, B * H, window, resweep_frame_bytes(q.dtype, window, J, D))
    programs_per_head = triton.cdiv(T, chunk)
    grid = (programs_per_head * B * H,)
    if compute_dbias:
        partials = torch.empty((grid[0], cfg.block_j, cfg.block_j), device=q.device, dtype=torch.float32)
    else:
        partials = torch.empty((1,), device=q.device, dtype=torch.float32)  # never written
    window_bwd_kernel[grid](
        q, k, v, bias32, dout, dq, dk, dv, partials,
        *q.stride(), *k.stride(), *v.stride(), *bias_strides, *dout.stride(), *dq.stride(),
        H, T, J, D, window, scale, chunk, programs_per_head,
        **cfg.bwd_constexprs(compute_dbias), num_warps=cfg.bwd_num_warps, num_stages=cfg.num_stages,
    )
    dbias = None
    if compute_dbias:
        per_head = partials.view(B, H, programs_per_head, cfg.block_j, cfg.block_j)[..., :J, :J].sum(dim=(0, 2))
        dbias = (per_head if bias.dim() == 3 else per_head.sum(0)).to(bias.dtype)
    return dq, dk, dv, dbias
