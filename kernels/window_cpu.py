"""Window attention on the CPU by frame offset: the eager path STFEM trains with off CUDA.

Same op as `reference.window_attention_reference` (docs/kernels.md, "Window attention on
the CPU"). Anchor t's window holds frames t..t+τ-1; the score between frame f's joint i and
frame f+d's joint j is the same in every window that holds both frames, so the raw scores are
computed once per (frame, offset d), d in -(τ-1)..τ-1: 2τ-1 batched J x J products per frame
instead of the reference's τ² per anchor, with no unfolded (τ-fold) copies of q, k, v and
no (τJ)² score matrix per anchor. Each window's softmax is rebuilt from per-offset row
maxima and row sums (the flash-attention rescaling), so it is exact, not an approximation.

Frames live on the leading axis, (T, B*H, J, D), so every offset's key/value frames are a
contiguous slice, viewed as (frames*B*H, J, D) for `bmm` with no copy. Everything runs in
float32 (float64 stays float64): at these J x J sizes bf16 products were not faster (measured,
docs/kernels.md). Three more measured choices (single thread, AVX-512): scores are kept in log2
units (exp2 costs a third of exp), the products whose output width is D run on zero-padded
columns (see _MIN_WIDTH), and the output is stored (B, T, J, H, D, τ), which STFEM's collapse
conv reads as a free channels-last view.
"""
from __future__ import annotations

import math

import torch

__all__ = ["window_attention_cpu", "window_attention_cpu_backward"]

_LOG2E = 1.0 / math.log(2.0)
# MKL's batched sgemm at J = 20 takes ~2.5x longer for 6 output columns than for 16, and 1.25x for
# 12 (thread CPU time): the q/k/v/G buffers carry zero columns up to 16 and the products whose
# output width is D use them; the products that contract over D read the first D columns only.
_MIN_WIDTH = 16


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _padded_frames(T: int, window: int) -> int:
    return T + 3 * (window - 1)


def _frames_first(x: torch.Tensor, window: int, dtype: torch.dtype, width: int, fill: float = 0.0) -> torch.Tensor:
    """(B, H, T, J, D) -> (T + 3(τ-1), B*H, J, width), frame f at index f + τ-1, columns past D zero
    (column D = `fill`). The padding frames (indices reached by query frames up to T+τ-2 and their
    offsets) are left unset: the products only ever read real frames (_Offsets.both_real/key_real;
    checked by filling them with NaN)."""
    B, H, T, J, D = x.shape
    out = x.new_empty((_padded_frames(T, window), B * H, J, width), dtype=dtype)
    body = out[window - 1:window - 1 + T]
    body.view(T, B, H, J, width)[..., :D].copy_(x.permute(2, 0, 1, 3, 4))
    if width > D:
        body[..., D:].zero_()
        body[..., D] = fill
    return out


def _max_over_keys(s: torch.Tensor, out: torch.Tensor) -> None:
    """out (R, 1, J) = s (R, n, J).amax(1), as a tree of elementwise maxima over halves of the key axis:
    each step reads contiguous (query-minor) rows, 5x cheaper than ATen's amax over a 20-long axis
    (either axis). Odd counts overlap the halves by one row, which a max does not mind."""
    n = s.shape[1]
    while n > 2:
        k = n - n // 2
        s = torch.maximum(s[:, :k], s[:, n - k:n])
        n = k
    if n == 2:
        torch.maximum(s[:, :1], s[:, 1:2], out=out)
    else:
        out.copy_(s[:, :1])


class _Offsets:
    """Per-offset scores of one (q, k, v, bias), in log2 units: for each d the row max M_d, the
    unnormalized probabilities E_d = 2^(S_d - M_d), their row sums r_d and E_d @ v_{f+d}. E_d is stored
    transposed, (key, query), so the reductions over keys run across contiguous query rows. The forward
    keeps it (and its own output, for the backward's δ), so the backward recomputes nothing."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int,
                 scale: float) -> None:
        B, H, T, J, D = q.shape
        self.B, self.H, self.T, self.J, self.D, self.window, self.scale = B, H, T, J, D, window, scale
        # One compute dtype: fp32 (fp64 stays fp64). bf16 products measured 6% slower at these J x J sizes
        # (docs/kernels.md), and would round the scores.
        self.dtype = _stat_dtype(q.dtype)
        self.width = max(D, _MIN_WIDTH)
        self.nq = T + window - 1  # query frames: anchors' slots reach frame T+τ-2 (zero frames past T)
        self.q, self.k = (_frames_first(x, window, self.dtype, self.width) for x in (q, k))
        # With a spare column, v's column D is -1 and G_d's holds g_d: the backward's G_d·vᵀ - g_d is then
        # one product over D+1 columns (no broadcast subtraction pass); E_d @ v's column D (-r_d) is unused.
        self.spare = self.width > D
        self.v = _frames_first(v, window, self.dtype, self.width, fill=-1.0 if self.spare else 0.0)
        self.offsets = range(-(window - 1), window)
        n, nq, BH = len(self.offsets), self.nq, B * H
        self.row_max = q.new_empty((n, nq, BH, J), dtype=self.dtype)
        self.row_sum = q.new_empty((n, nq, BH, J), dtype=self.dtype)
        self.probs = q.new_empty((n, nq * BH, J, J), dtype=self.dtype)  # E_dᵀ: (key, query)
        self.mixed = q.new_empty((n, nq * BH, J, self.width), dtype=self.dtype)
        self.out: torch.Tensor | None = None  # (τ, T, B*H, J, width), set by window_attention_cpu
        self._weights: dict[int, tuple[torch.Tensor, slice]] = {}  # slot_weights, shared with the backward
        # Where the query or the key frame is a zero frame (outside 0..T-1) the score is the bias alone:
        # those rows share one (H or 1, J, J) block of max, probabilities and sums, and only the rows
        # with a real key frame need E_d @ v. Products run on real-frame rows only (6-21% fewer at
        # T = 26..52, τ = 3..5).
        bias2 = bias.to(self.dtype).transpose(-1, -2) * _LOG2E  # (key, query), like E_dᵀ
        self.const_max = bias2.amax(-2, keepdim=True)
        self.const_probs = (bias2 - self.const_max).exp2_()
        const_sum = self.const_probs.sum(-2)
        self.row_max.view(n, nq, B, H, J)[:] = self.const_max[..., 0, :]  # real rows are overwritten below
        self.row_sum.view(n, nq, B, H, J)[:] = const_sum
        queries = self.flat(self.queries())[..., :D]
        for i, d in enumerate(self.offsets):
            lo, hi = self.both_real(d)
            klo, khi = self.key_real(d)
            e = self.probs[i].view(nq, B, H, J, J)
            mixed = self.mixed[i].view(nq, BH, J, self.width)
            row_max, row_sum = self.row_max[i].view(nq, B, H, J), self.row_sum[i].view(nq, B, H, J)
            for start, stop in ((0, lo), (hi, nq)):
                if stop > start:
                    e[start:stop] = self.const_probs
            for start, stop in ((0, klo), (khi, nq)):
                if stop > start:
                    mixed[start:stop].zero_()
            if hi > lo:
                e[lo:hi] = bias2
                keys = self.flat(self.keys(self.k, d)[lo:hi])[..., :D]
                s = self.flat(e[lo:hi]).baddbmm_(keys, queries[lo * BH:hi * BH].transpose(1, 2), alpha=scale * _LOG2E)
                m = row_max[lo:hi].view(-1, 1, J)
                _max_over_keys(s, m)
                s.sub_(m).exp2_()
                torch.sum(s, dim=1, out=row_sum[lo:hi].view(-1, J))
            if khi > klo:
                torch.bmm(self.flat(e[klo:khi]).transpose(1, 2), self.flat(self.keys(self.v, d)[klo:khi]),
                          out=self.flat(mixed[klo:khi]))

    def both_real(self, d: int) -> tuple[int, int]:
        """Query frames f (a range of 0..nq-1) whose frame and key frame f+d both lie in 0..T-1."""
        lo, hi = max(0, -d), min(self.T, self.T - d)
        return lo, max(lo, hi)

    def key_real(self, d: int) -> tuple[int, int]:
        """Query frames f whose key frame f+d lies in 0..T-1."""
        lo, hi = max(0, -d), min(self.nq, self.T - d)
        return lo, max(lo, hi)

    def queries(self) -> torch.Tensor:
        return self.q[self.window - 1:self.window - 1 + self.nq]

    def keys(self, x: torch.Tensor, d: int) -> torch.Tensor:
        start = self.window - 1 + d
        return x[start:start + self.nq]

    @staticmethod
    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *x.shape[-2:])

    def mixed_at(self, offs: slice, slot: int) -> torch.Tensor:
        """E_d @ v of offsets `offs` for the query frames slot..slot+T-1: (τ, T, B*H, J, width)."""
        mixed = self.mixed.view(len(self.offsets), self.nq, self.B * self.H, self.J, self.width)
        return mixed[offs, slot:slot + self.T]

    def slot_weights(self, slot: int) -> tuple[torch.Tensor, slice]:
        """c (τ, T, B*H, J): window (t, slot)'s softmax factor for offsets d = dd - slot, dd = 0..τ-1,
        applied to E_d of query frame f = t + slot; and the matching slice of the offset axis."""
        if slot in self._weights:
            return self._weights[slot]
        w, T = self.window, self.T
        offs = slice(w - 1 - slot, 2 * w - 1 - slot)
        m = self.row_max[offs, slot:slot + T]
        top = m.amax(0)
        c = (m - top).exp2_()
        z = (c * self.row_sum[offs, slot:slot + T]).sum(0)
        self._weights[slot] = c.div_(z), offs
        return self._weights[slot]


def window_attention_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int,
                         scale: float, *, keep: list | None = None) -> torch.Tensor:
    """out (B, H, T, window, J, D) in q's dtype, equal to window_attention_reference: a permuted view
    of a (B, T, J, H, D, window) buffer, so STFEM's (N, H*D*window, T, J) collapse input is a
    channels-last view (no copy before its channels-last conv).
    `keep`: a list that receives the per-offset state for window_attention_cpu_backward."""
    ctx = _Offsets(q, k, v, bias, window, scale)
    B, H, T, J, D = q.shape
    out = q.new_empty((window, T, B * H, J, ctx.width), dtype=ctx.dtype)
    result = q.new_empty((B, T, J, H, D, window))
    for slot in range(window):
        c, offs = ctx.slot_weights(slot)
        c = c[..., None]
        mixed = ctx.mixed_at(offs, slot)
        # Accumulated in place: no (τ, T, B*H, J, width) product temporary.
        acc = torch.mul(mixed[0], c[0], out=out[slot])
        for dd in range(1, window):
            acc.addcmul_(mixed[dd], c[dd])
        # Cast into the output slot by slot, while this slot's sum is still in cache.
        result[..., slot].copy_(acc.view(T, B, H, J, ctx.width)[..., :D].permute(1, 0, 3, 2, 4))
    ctx.out = out
    if keep is not None:
        keep.append(ctx)
    return result.permute(0, 3, 1, 5, 2, 4)


def window_attention_cpu_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dout: torch.Tensor, window: int,
    scale: float, compute_dbias: bool, *, state: "_Offsets | None" = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """dq, dk, dv (q's shape and dtype) and dbias (bias's shape) of window_attention_cpu;
    `state`: what the forward kept (else recomputed).

    With P the window softmax and dO the output gradient: dS = P ⊙ (dO·vᵀ - δ), δ = rowsum(dO ⊙ O).
    Written per offset, P = c · E_d, so dS_d = E_d ⊙ (G_d·vᵀ - g_d) with G_d = Σ_slot c·dO and
    g_d = Σ_slot c·δ gathered over the windows that hold the pair of frames. dS is the gradient of
    the natural-unit scores (P does not depend on the log2 units the forward kept them in).
    """
    if state is None:
        kept: list = []
        window_attention_cpu(q, k, v, bias, window, scale, keep=kept)
        state = kept[0]
    ctx = state
    assert ctx.out is not None
    B, H, T, J, D = q.shape
    BH, nq, w, W = B * H, ctx.nq, window, ctx.width
    n = len(ctx.offsets)
    # dO per slot, frames first, zero columns past D: one cast-and-permute copy.
    d_o = q.new_zeros((w, T, BH, J, W), dtype=ctx.dtype)
    d_o.view(w, T, B, H, J, W)[..., :D].copy_(dout.permute(3, 2, 0, 1, 4, 5))
    # rowsum(dO ⊙ O), (τ, T, B*H, J): the sum over the 16-wide rows as a matrix-vector product (a
    # reduction over a short contiguous axis is several times slower in ATen). dO's column D is 0.
    delta = q.new_empty((w, T, BH, J), dtype=ctx.dtype)
    torch.mv(torch.mul(d_o, ctx.out).view(-1, W), d_o.new_ones(W), out=delta.view(-1))
    g_out = q.new_zeros((n, nq, BH, J, W), dtype=ctx.dtype)  # G_d
    # g_d: G_d's spare column D when there is one (see _Offsets.spare), which dO·c leaves at 0.
    g_dot = g_out[..., D] if ctx.spare else q.new_zeros((n, nq, BH, J), dtype=ctx.dtype)
    for slot in range(w):
        c, offs = ctx.slot_weights(slot)
        g_out[offs, slot:slot + T].addcmul_(c[..., None], d_o[slot])
        g_dot[offs, slot:slot + T].addcmul_(c, delta[slot])
    dq, dk, dv = (q.new_zeros((_padded_frames(T, w), BH, J, W), dtype=ctx.dtype) for _ in range(3))
    dbias = q.new_zeros((H, J, J), dtype=ctx.dtype) if compute_dbias else None  # transposed, like E_dᵀ
    q_rows = ctx.flat(ctx.queries())
    probs = ctx.probs.view(n, nq, BH, J, J)
    for i, d in enumerate(ctx.offsets):
        # Rows without a real key frame: dq gets dS·0, dk and dv land on dropped zero frames; only
        # dbias sees them, through dS = -E_c·g_d (E_c the bias-only block).
        lo, hi = ctx.both_real(d)
        klo, khi = ctx.key_real(d)
        if dbias is not None and (klo > 0 or khi < nq):
            outside = (g_dot[i, :klo].sum(0) + g_dot[i, khi:].sum(0)).view(B, H, J).sum(0)
            dbias -= ctx.const_probs * outside[:, None, :]
        if khi == klo:
            continue
        keys, values = ctx.flat(ctx.keys(ctx.k, d)[lo:hi]), ctx.flat(ctx.keys(ctx.v, d)[klo:khi])
        gd = ctx.flat(g_out[i, klo:khi])
        if ctx.spare:  # column D: v = -1, G = g_d
            ds = torch.bmm(values[..., :D + 1], gd[..., :D + 1].transpose(1, 2)).view(khi - klo, BH, J, J)  # dSᵀ
        else:
            ds = torch.bmm(values[..., :D], gd[..., :D].transpose(1, 2)).view(khi - klo, BH, J, J)
            ds.sub_(g_dot[i, klo:khi, :, None, :])
        ds.mul_(probs[i, klo:khi])
        if dbias is not None:
            dbias += ds.view(khi - klo, B, H, J, J).sum(dim=(0, 1))
        ctx.flat(dv[w - 1 + d + klo:w - 1 + d + khi]).baddbmm_(ctx.flat(probs[i, klo:khi]), gd)
        if hi > lo:
            ds = ctx.flat(ds[lo - klo:hi - klo])
            # Accumulated in place (frames-first slices are contiguous): no product temporaries.
            ctx.flat(dq[w - 1 + lo:w - 1 + hi]).baddbmm_(ds.transpose(1, 2), keys, alpha=scale)
            ctx.flat(dk[w - 1 + d + lo:w - 1 + d + hi]).baddbmm_(ds, q_rows[lo * BH:hi * BH], alpha=scale)

    def unpadded(x: torch.Tensor) -> torch.Tensor:
        return x[w - 1:w - 1 + T].view(T, B, H, J, W)[..., :D].permute(1, 2, 0, 3, 4).to(q.dtype)

    if dbias is not None:
        dbias = dbias.transpose(-1, -2)
        dbias = (dbias if bias.dim() == 3 else dbias.sum(0)).to(bias.dtype)
    return unpadded(dq), unpadded(dk), unpadded(dv), dbias


class WindowAttentionCPU(torch.autograd.Function):
    """Autograd wiring of the offset formulation (the eager backend's training path for window > 1)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, window: int, scale: float):  # type: ignore[override]
        ctx.save_for_backward(q, k, v, bias)
        ctx.window, ctx.scale = window, scale
        kept: list = []
        out = window_attention_cpu(q, k, v, bias, window, scale, keep=kept)
        ctx.state = kept[0]  # probabilities, per-offset statistics, output: the backward recomputes nothing
        return out

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        q, k, v, bias = ctx.saved_tensors
        need_bias = ctx.needs_input_grad[3]
        dq, dk, dv, dbias = window_attention_cpu_backward(q, k, v, bias, dout, ctx.window, ctx.scale, need_bias,
                                                          state=ctx.state)
        ctx.state = None
        return dq, dk, dv, dbias, None, None
