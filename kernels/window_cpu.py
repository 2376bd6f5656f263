"""Window attention on the CPU by frame offset: the eager path STFEM trains with off CUDA.

Same op as `reference.window_attention_reference` (docs/kernels.md, "Window attention on
the CPU"). Anchor t's window holds frames t..t+τ-1; the score between frame f's joint i and
frame f+d's joint j is the same in every window that holds both frames, so the raw scores are
computed once per (frame, offset d), d in -(τ-1)..τ-1: 2τ-1 batched J x J products per frame
instead of the reference's τ² per anchor, with no unfolded (τ-fold) copies of q, k, v and
no (τJ)² score matrix per anchor. Each window's softmax is rebuilt from per-offset row
maxima and row sums (the flash-attention rescaling), so it is exact, not an approximation.

Frames live on the leading axis, (T, B*H, J, D), so every offset's key/value frames are a
contiguous slice, viewed as (frames*B*H, J, D) for `bmm` with no copy. Matmuls run in the
input dtype when it is bfloat16 (the CPU's native bf16 rate); softmax statistics, and all
accumulation across offsets, run in float32.
"""
from __future__ import annotations

import torch

__all__ = ["window_attention_cpu", "window_attention_cpu_backward"]


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _matmul_dtype(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float64,) else torch.float32


def _padded_frames(T: int, window: int) -> int:
    return T + 3 * (window - 1)


def _frames_first(x: torch.Tensor, window: int, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
    """(B, H, T, J, D) -> (T + 3(τ-1), B*H, J, D): τ-1 zero frames before, 2(τ-1) after (query
    frames reach T+τ-2 and their offsets τ-1 further; pairs outside any window get weight 0)."""
    B, H, T, J, D = x.shape
    out = x.new_zeros((_padded_frames(T, window), B * H, J, D), dtype=dtype)
    body = out[window - 1:window - 1 + T].view(T, B, H, J, D)
    body.copy_(x.permute(2, 0, 1, 3, 4))
    if scale != 1.0:
        body.mul_(scale)
    return out


class _Offsets:
    """Per-offset scores of one (q, k, v, bias): for each d the row max M_d, the unnormalized
    probabilities E_d = exp(S_d - M_d), their row sums r_d and E_d @ v_{f+d}. The forward keeps it
    for the backward, which then recomputes nothing."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int,
                 scale: float) -> None:
        B, H, T, J, D = q.shape
        self.B, self.H, self.T, self.J, self.D, self.window = B, H, T, J, D, window
        self.stat = _stat_dtype(q.dtype)
        self.mm = _matmul_dtype(q.dtype)
        self.nq = T + window - 1  # query frames: anchors' slots reach frame T+τ-2 (zero frames past T)
        self.q = _frames_first(q, window, self.mm, scale)
        self.k = _frames_first(k, window, self.mm)
        self.v = _frames_first(v, window, self.mm)
        self.bias = bias.to(self.stat)
        self.offsets = range(-(window - 1), window)
        n, nq, BH = len(self.offsets), self.nq, B * H
        self.row_max = q.new_empty((n, nq, BH, J), dtype=self.stat)
        self.row_sum = q.new_empty((n, nq, BH, J), dtype=self.stat)
        self.probs = q.new_empty((n, nq * BH, J, J), dtype=self.mm)
        self.mixed = q.new_empty((n, nq * BH, J, D), dtype=self.mm)
        queries = self.flat(self.queries())
        for i, d in enumerate(self.offsets):
            e = self.probs[i]
            keys = self.flat(self.keys(self.k, d)).transpose(1, 2)
            if self.bias.dim() == 2 and self.mm == self.stat:
                torch.baddbmm(self.bias, queries, keys, out=e)  # + bias in the product's own pass
            else:
                s = torch.bmm(queries, keys).to(self.stat).view(nq, B, H, J, J).add_(self.bias)
                e.copy_(s.view_as(e))
            m = self.row_max[i].view(-1, J, 1)
            torch.amax(e, dim=-1, keepdim=True, out=m)
            e.sub_(m).exp_()
            torch.sum(e, dim=-1, out=self.row_sum[i].view(-1, J))
            torch.bmm(e, self.flat(self.keys(self.v, d)), out=self.mixed[i])

    def queries(self) -> torch.Tensor:
        return self.q[self.window - 1:self.window - 1 + self.nq]

    def keys(self, x: torch.Tensor, d: int) -> torch.Tensor:
        start = self.window - 1 + d
        return x[start:start + self.nq]

    @staticmethod
    def flat(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *x.shape[-2:])

    def mixed_at(self, offs: slice, slot: int) -> torch.Tensor:
        """E_d @ v of offsets `offs` for the query frames slot..slot+T-1: (τ, T, B*H, J, D)."""
        mixed = self.mixed.view(len(self.offsets), self.nq, self.B * self.H, self.J, self.D)
        return mixed[offs, slot:slot + self.T]

    def slot_weights(self, slot: int) -> tuple[torch.Tensor, slice]:
        """c (τ, T, B*H, J): window (t, slot)'s softmax factor for offsets d = dd - slot, dd = 0..τ-1,
        applied to E_d of query frame f = t + slot; and the matching slice of the offset axis."""
        w, T = self.window, self.T
        offs = slice(w - 1 - slot, 2 * w - 1 - slot)
        m = self.row_max[offs, slot:slot + T]
        top = m.amax(0)
        c = (m - top).exp_()
        z = (c * self.row_sum[offs, slot:slot + T]).sum(0)
        return c.div_(z), offs


def window_attention_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, window: int,
                         scale: float, *, keep: list | None = None) -> torch.Tensor:
    """out (B, H, T, window, J, D) in q's dtype, equal to window_attention_reference.
    `keep`: a list that receives the per-offset state for window_attention_cpu_backward."""
    ctx = _Offsets(q, k, v, bias, window, scale)
    B, H, T, J, D = q.shape
    out = q.new_empty((window, T, B * H, J, D), dtype=ctx.stat)
    for slot in range(window):
        c, offs = ctx.slot_weights(slot)
        torch.sum(c[..., None] * ctx.mixed_at(offs, slot), dim=0, out=out[slot])
    if keep is not None:
        keep.append(ctx)
    return out.view(window, T, B, H, J, D).permute(2, 3, 1, 0, 4, 5).to(q.dtype)


def window_attention_cpu_backward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dout: torch.Tensor, window: int,
    scale: float, compute_dbias: bool, *, state: "_Offsets | None" = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """dq, dk, dv (q's shape and dtype) and dbias (bias's shape) of window_attention_cpu;
    `state`: what the forward kept (else recomputed).

    With P the window softmax and dO the output gradient: dS = P ⊙ (dO·vᵀ - δ), δ = rowsum(dO ⊙ O).
    Written per offset, P = c · E_d, so dS_d = E_d ⊙ (G_d·vᵀ - g_d) with G_d = Σ_slot c·dO and
    g_d = Σ_slot c·δ gathered over the windows that hold the pair of frames.
    """
    ctx = state if state is not None else _Offsets(q, k, v, bias, window, scale)
    B, H, T, J, D = q.shape
    BH, nq, w = B * H, ctx.nq, window
    n = len(ctx.offsets)
    g_out = q.new_zeros((n, nq, BH, J, D), dtype=ctx.stat)  # G_d
    g_dot = q.new_zeros((n, nq, BH, J), dtype=ctx.stat)  # g_d
    for slot in range(w):
        c, offs = ctx.slot_weights(slot)
        d_o = dout[:, :, :, slot].permute(2, 0, 1, 3, 4).reshape(T, BH, J, D).to(ctx.stat)
        delta = (c[..., None] * ctx.mixed_at(offs, slot)).sum(0).mul_(d_o).sum(-1)  # rowsum(dO ⊙ O)
        g_out[offs, slot:slot + T] += c[..., None] * d_o
        g_dot[offs, slot:slot + T] += c * delta
    dq, dk, dv = (q.new_zeros((_padded_frames(T, w), BH, J, D), dtype=ctx.stat) for _ in range(3))
    dbias = q.new_zeros((H, J, J), dtype=ctx.stat) if compute_dbias else None
    q_rows = ctx.flat(ctx.queries())
    for i, d in enumerate(ctx.offsets):
        keys, values = ctx.flat(ctx.keys(ctx.k, d)), ctx.flat(ctx.keys(ctx.v, d))
        gd = ctx.flat(g_out[i]).to(ctx.mm)
        ds = torch.bmm(gd, values.transpose(1, 2)).to(ctx.stat).view(nq, BH, J, J)
        ds.sub_(g_dot[i][..., None]).mul_(ctx.probs[i].view(nq, BH, J, J))
        if dbias is not None:
            dbias += ds.view(nq, B, H, J, J).sum(dim=(0, 1))
        ds_mm = ctx.flat(ds.to(ctx.mm))
        dq[w - 1:w - 1 + nq] += torch.bmm(ds_mm, keys).view(nq, BH, J, D)
        dk[w - 1 + d:w - 1 + d + nq] += torch.bmm(ds_mm.transpose(1, 2), q_rows).view(nq, BH, J, D)
        dv[w - 1 + d:w - 1 + d + nq] += torch.bmm(ctx.probs[i].transpose(1, 2), gd).view(nq, BH, J, D)
    dq.mul_(scale)

    def unpadded(x: torch.Tensor) -> torch.Tensor:
        return x[w - 1:w - 1 + T].view(T, B, H, J, D).permute(1, 2, 0, 3, 4).to(q.dtype)

    if dbias is not None:
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
        ctx.state = kept[0]  # probabilities and per-offset statistics: the backward recomputes nothing
        return out

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        q, k, v, bias = ctx.saved_tensors
        need_bias = ctx.needs_input_grad[3]
        dq, dk, dv, dbias = window_attention_cpu_backward(q, k, v, bias, dout, ctx.window, ctx.scale, need_bias,
                                                          state=ctx.state)
        ctx.state = None
        return dq, dk, dv, dbias, None, None
