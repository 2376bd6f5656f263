"""window_attention: the eager reference against a literal float64 loop over the
spec, then the Triton kernels (interpreter on CPU, compiled on CUDA) against the
eager reference, forward and every gradient (q, k, v, bias).

Interpreter runs cost ~0.5 s per forward+backward, so shapes are tiny and the
cases are a hand-picked covering set rather than a full cross product.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import pytest
import torch

from kernels import window, window_attention
from kernels.tools import specs as aot_specs
from kernels.reference import window_attention_reference

wa_module = window  # the Triton op module (kernels/window.py)

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}


# --------------------------------------------------------------------------- helpers


def naive_window_attention(q, k, v, bias, window, scale):
    """docs/design.md §2.1 written out literally: one window at a time, frames past T as
    explicit zero rows, bias looked up per (query joint, key joint)."""
    B, H, T, J, D = q.shape
    joint_of_token = torch.arange(window * J) % J
    zeros = q.new_zeros(J, D)
    outs = []
    for b in range(B):
        for h in range(H):
            bias_h = bias if bias.dim() == 2 else bias[h]
            bias_tile = bias_h[joint_of_token[:, None], joint_of_token[None, :]]
            for t in range(T):
                def window_tokens(x):
                    return torch.cat([x[b, h, f] if f < T else zeros for f in range(t, t + window)])

                qw, kw, vw = window_tokens(q), window_tokens(k), window_tokens(v)
                scores = qw @ kw.T * scale + bias_tile
                outs.append(torch.softmax(scores, dim=-1) @ vw)
    return torch.stack(outs).view(B, H, T, window, J, D)


def max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """Largest absolute error relative to the largest magnitude of the expected tensor."""
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def model_layout(x: torch.Tensor, H: int) -> torch.Tensor:
    """(N, H*D, T, V) activations -> the (B, H, T, J, D) view the model passes: no copy."""
    N, C, T, V = x.shape
    return x.view(N, H, C // H, T, V).permute(0, 1, 3, 4, 2)


@dataclass(frozen=True)
class Case:
    window: int
    T: int
    J: int
    D: int
    H: int = 2
    B: int = 1
    per_head_bias: bool = True
    layout: str = "model"  # "model" (permuted view), "contiguous", "strided" (non-dense, T/J not mergeable)
    dtype: torch.dtype = torch.float32
    bias_dtype: torch.dtype = torch.float32

    def __str__(self) -> str:
        bias = "headbias" if self.per_head_bias else "sharedbias"
        dtype = str(self.dtype).removeprefix("torch.")
        return f"w{self.window}-T{self.T}-J{self.J}-D{self.D}-H{self.H}-{bias}-{self.layout}-{dtype}"


def make_inputs(case: Case, seed: int = 0, device: str = DEVICE):
    gen = torch.Generator().manual_seed(seed)
    B, H, T, J, D = case.B, case.H, case.T, case.J, case.D

    def one() -> torch.Tensor:
        if case.layout == "model":
            x = model_layout(torch.randn(B, H * D, T, J, generator=gen), H)
        elif case.layout == "strided":
            # Slice of a wider tensor: D stride 2 and stride(T) != J * stride(J), so frame
            # and joint do not merge into one token axis (the kernel's non-AFFINE path).
            x = torch.randn(B, H, T, J + 3, 2 * D, generator=gen)[:, :, :, :J, ::2]
        else:
            x = torch.randn(B, H, T, J, D, generator=gen)
        return x.to(device=device, dtype=case.dtype)

    q, k, v = one(), one(), one()
    bias_shape = (H, J, J) if case.per_head_bias else (J, J)
    bias = torch.randn(bias_shape, generator=gen).to(device=device, dtype=case.bias_dtype)
    return q, k, v, bias


def forward_and_grads(fn, q, k, v, bias, dout, need=(True, True, True, True)):
    leaves = [t.detach().requires_grad_(flag) for t, flag in zip((q, k, v, bias), need)]
    out = fn(*leaves)
    out.backward(dout)
    return out.detach(), [leaf.grad for leaf in leaves]


# --------------------------------------------------------------------------- reference vs naive loop


@pytest.mark.parametrize(
    "window,T,per_head_bias",
    [(1, 3, True), (3, 2, False), (3, 4, True), (5, 2, True)],
    ids=["w1", "w3-T<w-shared", "w3-perhead", "w5-T<w"],
)
def test_reference_matches_naive_loop_float64(window, T, per_head_bias):
    case = Case(window=window, T=T, J=4, D=3, H=2, B=2, per_head_bias=per_head_bias, layout="contiguous",
                dtype=torch.float64, bias_dtype=torch.float64)
    q, k, v, bias = make_inputs(case, seed=window * 10 + T, device="cpu")
    dout = torch.randn(case.B, case.H, T, window, case.J, case.D, dtype=torch.float64)
    scale = 0.7
    out_naive, grads_naive = forward_and_grads(
        lambda *a: naive_window_attention(*a, window, scale), q, k, v, bias, dout)
    out_ref, grads_ref = forward_and_grads(
        lambda *a: window_attention_reference(*a, window, scale), q, k, v, bias, dout)
    assert out_ref.dtype == torch.float64 and out_ref.shape == (case.B, case.H, T, window, case.J, case.D)
    torch.testing.assert_close(out_ref, out_naive, rtol=1e-12, atol=1e-12)
    for name, g_ref, g_naive in zip("q k v bias".split(), grads_ref, grads_naive):
        torch.testing.assert_close(g_ref, g_naive, rtol=1e-12, atol=1e-12, msg=lambda m: f"d{name}: {m}")


def test_zero_frames_take_softmax_mass_not_masked():
    # The last anchor's window holds one real frame and window-1 zero frames: with a
    # zero bias, the real keys of frame T-1 share the mass with (window-1)*J zero keys.
    B, H, T, J, D, window = 1, 1, 2, 3, 2, 3
    q = torch.zeros(B, H, T, J, D, dtype=torch.float64)
    k = torch.zeros_like(q)
    v = torch.ones_like(q)
    out = window_attention_reference(q, k, v, torch.zeros(J, J, dtype=torch.float64), window, 1.0)
    # Uniform attention over window*J keys of which J (last anchor) or 2J (first) are ones.
    assert torch.allclose(out[0, 0, T - 1], torch.full((window, J, D), J / (window * J), dtype=torch.float64))
    assert torch.allclose(out[0, 0, 0], torch.full((window, J, D), 2 * J / (window * J), dtype=torch.float64))


# --------------------------------------------------------------------------- Triton vs eager

TRITON_CASES = [
    # fp32: the exact path (ieee dots on GPU), tolerance 1e-4
    Case(window=1, T=3, J=18, D=24),
    Case(window=3, T=2, J=25, D=5, per_head_bias=False),  # T < window, odd D
    Case(window=5, T=3, J=25, D=24, layout="contiguous"),  # 125 tokens -> 128 tile, T < window
    Case(window=5, T=2, J=18, D=48, per_head_bias=False),  # two head-dim chunks
    Case(window=3, T=4, J=18, D=5, layout="strided", B=2, H=1),  # non-dense strides, B > 1
    # fp16 (bias fp32 as the model keeps it, or fp16), tolerance 2e-2
    Case(window=3, T=5, J=18, D=24, dtype=torch.float16),
    Case(window=5, T=3, J=25, D=5, dtype=torch.float16, per_head_bias=False),
    Case(window=1, T=2, J=25, D=16, dtype=torch.float16, layout="contiguous", bias_dtype=torch.float16),
    # window 1 normally takes the frame-local backward; 40 joints span two query blocks,
    # which only the sliding path handles
    Case(window=1, T=3, J=40, D=8, H=1, dtype=torch.float16),
]


def _assert_triton_matches_eager(case: Case, need=(True, True, True, True), seed: int = 1):
    q, k, v, bias = make_inputs(case, seed=seed)
    # The kernels' AFFINE (merged frame/joint) path serves model and contiguous layouts.
    assert wa_module._tokens_affine(q, 2) == (case.layout != "strided")
    scale = case.D ** -0.5
    dout = torch.randn(case.B, case.H, case.T, case.window, case.J, case.D, generator=torch.Generator().manual_seed(seed + 1))
    dout = dout.to(device=q.device, dtype=case.dtype)
    out_t, grads_t = forward_and_grads(
        lambda *a: window_attention(*a, case.window, backend="triton"), q, k, v, bias, dout, need)
    out_e, grads_e = forward_and_grads(
        lambda *a: window_attention(*a, case.window, scale=scale, backend="eager"), q, k, v, bias, dout, need)
    tol = TOLERANCE[case.dtype]
    assert out_t.dtype == case.dtype and out_t.shape == out_e.shape
    errors = {"out": max_rel_err(out_t, out_e)}
    for name, g_t, g_e, flag in zip(("dq", "dk", "dv", "dbias"), grads_t, grads_e, need):
        if not flag:
            assert g_t is None
            continue
        assert g_t is not None and g_t.dtype == g_e.dtype and g_t.shape == g_e.shape, name
        errors[name] = max_rel_err(g_t, g_e)
    bad = {name: err for name, err in errors.items() if not err <= tol}
    assert not bad, f"{case}: relative errors above {tol}: {bad} (all: {errors})"
    return errors


@pytest.mark.parametrize("case", TRITON_CASES, ids=str)
def test_triton_matches_eager(case: Case):
    _assert_triton_matches_eager(case)


@pytest.mark.skipif(not CUDA, reason="bf16 tl.dot is not supported by the Triton CPU interpreter (it multiplies bit patterns); checked on CUDA only")
@pytest.mark.parametrize("case", [Case(window=5, T=7, J=25, D=24, dtype=torch.bfloat16),
                                  Case(window=1, T=4, J=20, D=96, dtype=torch.bfloat16, per_head_bias=False)], ids=str)
def test_triton_matches_eager_bf16(case: Case):
    _assert_triton_matches_eager(case)


def _force_chunks(monkeypatch, min_chunk_per_warmup: int) -> None:
    """Programs of MIN_CHUNK_PER_WARMUP * (window - 1) anchors (at least 1), whatever T:
    many chunk boundaries at tiny T."""
    monkeypatch.setattr(wa_module, "TARGET_BWD_PROGRAMS", 10**9)
    monkeypatch.setattr(wa_module, "MIN_CHUNK_PER_WARMUP", min_chunk_per_warmup)


# Backward programs own chunks of consecutive anchors and run window-1 warm-up anchors
# before their first stored frame; these cross chunk boundaries at the model's J and
# head dims (D=24: STFEM's head dim; D=12: two fp32 head-dim passes).
CHUNK_CASES = [
    # (case, MIN_CHUNK_PER_WARMUP, expected chunk length)
    (Case(window=5, T=7, J=25, D=24, H=1, dtype=torch.float16), 1, 4),  # T % chunk != 0, chunk < window
    (Case(window=3, T=5, J=25, D=12, H=1, per_head_bias=False, layout="strided"), 1, 2),  # 3 chunks, non-affine
    (Case(window=3, T=4, J=25, D=12, H=2, layout="contiguous"), 1, 2),  # per-head bias, H > 1: 2 programs/head
    (Case(window=1, T=3, J=25, D=24, H=1, per_head_bias=False, dtype=torch.float16), 0, 1),  # one frame per program
    (Case(window=5, T=2, J=25, D=12, H=1, dtype=torch.float16, per_head_bias=False), 1, 4),  # T < window
]


@pytest.mark.parametrize("case,min_chunk,chunk", CHUNK_CASES, ids=[str(c[0]) for c in CHUNK_CASES])
def test_triton_backward_across_chunk_boundaries(monkeypatch, case: Case, min_chunk: int, chunk: int):
    _force_chunks(monkeypatch, min_chunk)
    assert wa_module.anchors_per_program(case.T, case.B * case.H, case.window) == chunk
    _assert_triton_matches_eager(case)


def test_backward_path_choice():
    # Window 1 with the frame in one query block: frame-local (one pass, no slots);
    # otherwise the sliding path.
    assert wa_module.launch_config(torch.float32, 1, 25, 24).bwd_frame_local
    assert wa_module.launch_config(torch.bfloat16, 1, 18, 96).bwd_frame_local
    assert not wa_module.launch_config(torch.float16, 1, 40, 8).bwd_frame_local
    assert not wa_module.launch_config(torch.float16, 3, 10, 8).bwd_frame_local  # 30 tokens, one block, window 3
    assert wa_module.resweep_frame_bytes(torch.bfloat16, 1, 25, 96) == 0


def test_backward_chunk_length_rule():
    # Fill rule: B*H = 256 heads need 4 programs each to reach 1024 programs.
    assert wa_module.anchors_per_program(300, 256, 1) == 75
    # Several head-dim passes: the re-read working set (chunk + window - 1 frames) is capped...
    frame = wa_module.resweep_frame_bytes(torch.bfloat16, 3, 25, 24)
    assert frame == (3 + 3) * 25 * 24 * 2
    chunk = wa_module.anchors_per_program(300, 256, 3, frame)
    assert (chunk + 2) * frame <= wa_module.RESWEEP_BYTES_PER_PROGRAM < (chunk + 3) * frame
    # ...but the warm-up bound wins: at least MIN_CHUNK_PER_WARMUP * (window - 1) anchors.
    assert wa_module.anchors_per_program(300, 256, 5, 10**9) == wa_module.MIN_CHUNK_PER_WARMUP * 4
    # One head-dim pass reads every frame once: no cap.
    assert wa_module.resweep_frame_bytes(torch.float16, 5, 25, 16) == 0
    assert wa_module.anchors_per_program(300, 2048, 5) == 300  # 2048 heads fill the GPU alone


class _StoreSpy:
    """Records every element address a Triton program stores to (interpreter only)."""

    def __init__(self, monkeypatch):
        from triton.runtime import interpreter

        self.addresses: list = []
        real = interpreter.InterpreterBuilder.create_masked_store

        def spy(builder, ptrs, value, mask, cache_policy):
            self.addresses.append(ptrs.data[mask.data].copy())
            return real(builder, ptrs, value, mask, cache_policy)

        monkeypatch.setattr(interpreter.InterpreterBuilder, "create_masked_store", spy)

    def counts(self, x: torch.Tensor) -> torch.Tensor:
        """How many times each element of x was stored."""
        import numpy as np

        written = np.concatenate(self.addresses) if self.addresses else np.zeros(0, np.uint64)
        offsets = (written.astype(np.int64) - x.data_ptr()) // x.element_size()
        index = torch.zeros(x.shape, dtype=torch.int64)
        for dim, (size, stride) in enumerate(zip(x.shape, x.stride())):
            shape = [1] * x.dim()
            shape[dim] = size
            index = index + (torch.arange(size) * stride).view(shape)
        # Histogram of stored element offsets, looked up at every element of x.
        lo, hi = int(index.min()), int(index.max())
        inside = torch.from_numpy(offsets[(offsets >= lo) & (offsets <= hi)])
        hist = torch.bincount(inside - lo, minlength=hi - lo + 1)
        return hist[index - lo]


@pytest.mark.cpu_only  # python -m benchmarks.gpu_suite deselects it on the GPU (a skip there would fail it)
@pytest.mark.skipif(CUDA, reason="counts stores through the Triton CPU interpreter")
def test_triton_backward_writes_each_gradient_once(monkeypatch):
    # One launch; dq, dk, dv are the tensors that launch writes, in q's dtype (no fp32
    # intermediates, no conversion pass), and every element is stored exactly once
    # although each frame lies in `window` windows spread over three programs.
    _force_chunks(monkeypatch, 1)
    case = Case(window=3, T=5, J=18, D=8, H=1, dtype=torch.float16)
    q, k, v, bias = make_inputs(case, seed=6)
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v, bias)]
    out = window_attention(*leaves, case.window, backend="triton")
    calls = []
    monkeypatch.setattr(wa_module, "window_bwd_kernel",
                        _RecordingKernel(wa_module.window_bwd_kernel, calls))
    spy = _StoreSpy(monkeypatch)
    # autograd.grad returns the op's own tensors (.grad may be re-laid-out by AccumulateGrad).
    grads = torch.autograd.grad(out, leaves, torch.randn_like(out))[:3]
    assert len(calls) == 1
    launched = calls[0][5:8]  # dq, dk, dv arguments
    for grad, arg in zip(grads, launched):
        assert grad.dtype == torch.float16 and arg.data_ptr() == grad.data_ptr()
        assert torch.equal(spy.counts(grad), torch.ones(grad.shape, dtype=torch.int64))
    # The only fp32 tensors of the launch: the bias and one (J, J) dbias partial per
    # program (3 programs of 2 anchors for T=5).
    fp32_shapes = [tuple(a.shape) for a in calls[0] if a.dtype == torch.float32]
    assert fp32_shapes == [(case.H, case.J, case.J), (3, 32, 32)]


def test_triton_bias_without_grad_and_bias_only_grad():
    case = Case(window=3, T=3, J=20, D=16)
    _assert_triton_matches_eager(case, need=(True, True, True, False))  # dbias kernel variant compiled out
    _assert_triton_matches_eager(case, need=(False, False, False, True))


def test_triton_backward_is_deterministic():
    case = Case(window=3, T=4, J=18, D=8)
    q, k, v, bias = make_inputs(case, seed=3)
    dout = torch.randn(case.B, case.H, case.T, case.window, case.J, case.D, device=q.device)
    runs = [forward_and_grads(lambda *a: window_attention(*a, 3, backend="triton"), q, k, v, bias, dout)[1]
            for _ in range(2)]
    for first, second in zip(*runs):
        assert torch.equal(first, second)


def test_triton_output_layout_and_expanded_grad():
    # Output is stored (B, H, D, window, T, J) so STFEM's collapse input (N, H*D*window, T, V)
    # is a view; an expanded (stride-0) output gradient, as from out.sum(), is read through
    # its strides.
    case = Case(window=3, T=2, J=18, D=8)
    q, k, v, bias = make_inputs(case, seed=4)
    q.requires_grad_(True)
    out = window_attention(q, k, v, bias, case.window, backend="triton")
    B, H, T, W, J, D = out.shape
    collapse_input = out.permute(0, 1, 5, 3, 2, 4).reshape(B, H * D * W, T, J)
    assert collapse_input.is_contiguous() and collapse_input.data_ptr() == out.data_ptr()
    out.sum().backward()
    q_ref = q.detach().requires_grad_(True)
    window_attention(q_ref, k, v, bias, case.window, backend="eager").sum().backward()
    assert max_rel_err(q.grad, q_ref.grad) <= TOLERANCE[torch.float32]


class _RecordingKernel:
    """Stands in for a Triton kernel: records the tensors each launch receives, then launches the real one."""

    def __init__(self, kernel, calls: list):
        self.kernel, self.calls, self.fn = kernel, calls, kernel.fn

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append([a for a in args if isinstance(a, torch.Tensor)])
            return self.kernel[grid](*args, **kwargs)
        return launch


def test_triton_kernels_read_inputs_without_copies(monkeypatch):
    # docs/design.md §2: the model's permuted q/k/v views (and the output gradient) must reach the
    # kernels as they are; a .contiguous() would double the memory traffic.
    fwd_calls, bwd_calls = [], []
    monkeypatch.setattr(wa_module, "window_fwd_kernel",
                        _RecordingKernel(wa_module.window_fwd_kernel, fwd_calls))
    monkeypatch.setattr(wa_module, "window_bwd_kernel",
                        _RecordingKernel(wa_module.window_bwd_kernel, bwd_calls))
    case = Case(window=3, T=3, J=18, D=8)
    q, k, v, bias = make_inputs(case, seed=5)
    assert not q.is_contiguous()  # the model layout is a permuted view
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
    out = window_attention(*leaves, bias, case.window, backend="triton")
    B, H, T, W, J, D = out.shape
    dout = torch.randn(B, H, D, W, T, J, device=out.device).permute(0, 1, 4, 3, 5, 2)  # as STFEM's collapse gives it
    out.backward(dout)
    assert len(fwd_calls) == 1 and len(bwd_calls) == 1

    def same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.data_ptr() == b.data_ptr() and a.stride() == b.stride() and a.shape == b.shape

    for call in fwd_calls + bwd_calls:
        assert all(same_view(got, want) for got, want in zip(call[:3], leaves))
    assert all(same_view(call[4], dout) for call in bwd_calls)


# --------------------------------------------------------------------------- argument errors


def _small_inputs():
    q = torch.randn(1, 2, 3, 4, 5)
    return q, q.clone(), q.clone(), torch.randn(4, 4)


@pytest.mark.parametrize(
    "mutate,error,match",
    [
        (lambda q, k, v, b: (q, k, v, torch.randn(3, 4, 4)), ValueError, "bias must have shape"),
        (lambda q, k, v, b: (q, k, v, torch.randn(4, 5)), ValueError, "bias must have shape"),
        (lambda q, k, v, b: (q, k, v, torch.zeros(4, 4, dtype=torch.int64)), TypeError, "bias must be a floating"),
        (lambda q, k, v, b: (q, k.double(), v, b), TypeError, "share one dtype"),
        (lambda q, k, v, b: (q, k, v[:, :, :2], b), ValueError, "share one shape"),
        (lambda q, k, v, b: (q, k.to("meta"), v, b), ValueError, "one device"),
        (lambda q, k, v, b: (q, k, v, b.to("meta")), ValueError, "bias is on"),
        (lambda q, k, v, b: (q[0], k[0], v[0], b), ValueError, r"\(B, H, T, J, D\)"),
    ],
    ids=["bias-3d-wrong-H", "bias-not-square", "bias-int", "mixed-dtypes", "mixed-shapes",
         "mixed-devices", "bias-device", "rank"],
)
def test_argument_errors(mutate, error, match):
    args = mutate(*_small_inputs())
    with pytest.raises(error, match=match):
        window_attention(*args, 3)


@pytest.mark.parametrize("window,error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)])
def test_bad_window(window, error):
    with pytest.raises(error, match="window"):
        window_attention(*_small_inputs(), window)


def test_bad_backend_and_scale():
    with pytest.raises(ValueError, match="backend"):
        window_attention(*_small_inputs(), 3, backend="cuda")
    with pytest.raises(ValueError, match="scale"):
        window_attention(*_small_inputs(), 3, scale=0.0)


def test_window_larger_than_tile_is_refused_by_triton():
    q = torch.randn(1, 1, 2, 30, 8, device=DEVICE)  # 5 * 30 = 150 tokens > 128
    with pytest.raises(ValueError, match="backend='eager'"):
        window_attention(q, q, q, torch.zeros(30, 30, device=DEVICE), 5, backend="triton")


# --------------------------------------------------------------------------- AOT spec contract


def test_aot_specs_cover_every_launch_config():
    specs = aot_specs.window_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    by_key = {}
    for spec in specs:
        params = inspect.signature(spec.fn.fn).parameters.values()  # JITFunction or InterpretedFunction
        declared_constexprs = {p.name for p in params if "constexpr" in str(p.annotation)}
        # Every parameter is typed exactly once; specialized unit strides become constexpr 1.
        assert set(spec.signature) | set(spec.constexprs) == {p.name for p in params}, spec.name
        assert not set(spec.signature) & set(spec.constexprs), spec.name
        assert declared_constexprs <= set(spec.constexprs), spec.name
        assert set(spec.signature.values()) <= {"*fp32", "*fp16", "*bf16", "i32", "fp32"}, spec.name
        if spec.meta["layout"] == "model":
            assert spec.constexprs["stride_qj"] == 1 and "stride_qt" in spec.signature  # model layout
            assert spec.constexprs.get("AFFINE", True)
        else:
            assert "stride_qj" in spec.signature  # arbitrary strides stay runtime values
            assert not spec.constexprs.get("AFFINE", False)
        key = {k: v for k, v in spec.constexprs.items() if k in declared_constexprs}
        by_key[(spec.fn.__name__, spec.meta["dtype"], tuple(sorted(key.items())), spec.num_warps)] = spec
    for dtype, label in ((torch.float32, "fp32"), (torch.float16, "fp16"), (torch.bfloat16, "bf16")):
        for tau in (1, 3, 5):
            for J in (18, 20, 25):
                for D in (8, 16, 24, 32, 48, 64, 96):
                    cfg = wa_module.launch_config(dtype, tau, J, D)
                    for affine in (True, False):
                        wanted = [("window_fwd_kernel", cfg.fwd_constexprs(affine), cfg.fwd_num_warps)]
                        wanted += [("window_bwd_kernel", cfg.bwd_constexprs(flag), cfg.bwd_num_warps)
                                   for flag in (True, False)]
                        for kernel, constexprs, num_warps in wanted:
                            key = (kernel, label, tuple(sorted(constexprs.items())), num_warps)
                            assert key in by_key, key
                            spec = by_key[key]
                            want_q = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16"}[label]
                            assert spec.signature["q_ptr"] == want_q and spec.signature["bias_ptr"] == "*fp32"
                            if kernel.endswith("bwd_kernel"):  # gradients are stored in the input dtype
                                assert spec.signature["dq_ptr"] == want_q
