"""Both Triton kernels at the shapes the model runs, and a seeded random-shape fuzz.

Shapes: every (H, J, D, window) and (H, J, D, group) that `build_model("amanet", d)`
passes to the kernels for d in MODEL_DATASETS, recorded by running each model
once (eager backend, tiny T) with the kernel functions spied on. B = 1 and T
tiny keep the interpreter affordable; H, J, D are the model's. Each shape runs
in fp32 with the model's shared (J, J) bias and in fp16 with a per-head bias, so
every shape sees both dtypes and both dbias reductions.

Fuzz: random B, H, T (odd, below the window, partial last groups), J, D, group,
layouts (the model's permuted view, transposed storage, non-contiguous slices)
and bias kinds against the literal float64 loops of the op test modules.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from unittest import mock

import pytest
import torch

import kernels
from kernels import frame_group, window
from amanet_fast import build_model
from tests.kernels.test_frame_group_attention import naive_frame_group_attention
from tests.kernels.test_window_attention import naive_window_attention

wa_module = window
fga_module = frame_group

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODEL_DATASETS = ("ntu60", "kinetics", "ucla")
# Largest error relative to the largest reference magnitude, per dtype.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2}


@dataclass(frozen=True, order=True)
class KernelShape:
    op: str  # "window" or "group"
    H: int
    J: int
    D: int
    size: int  # window or group

    def __str__(self) -> str:
        return f"{self.op}{self.size}-H{self.H}-J{self.J}-D{self.D}"


@functools.lru_cache(maxsize=None)
def model_kernel_shapes() -> tuple[KernelShape, ...]:
    """Every distinct kernel call of the real AMANet configs, read off the calls themselves."""
    seen: set[KernelShape] = set()
    real_wa, real_fga = kernels.window_attention, kernels.frame_group_attention

    def spy_wa(q, k, v, bias, window, **kw):
        seen.add(KernelShape("window", q.shape[1], q.shape[3], q.shape[4], window))
        return real_wa(q, k, v, bias, window, **kw)

    def spy_fga(q, k, v, group, **kw):
        seen.add(KernelShape("group", q.shape[1], q.shape[3], q.shape[4], group))
        return real_fga(q, k, v, group, **kw)

    with mock.patch.object(kernels, "window_attention", spy_wa), \
            mock.patch.object(kernels, "frame_group_attention", spy_fga), torch.no_grad():
        for dataset in MODEL_DATASETS:
            torch.manual_seed(0)
            model = build_model("amanet", dataset, kernel_backend="eager", num_person=1).eval()
            V = model.layout.num_joints
            model(torch.randn(1, model.in_channels, 4, V, 1))
    return tuple(sorted(seen))


def _window_shapes() -> list[KernelShape]:
    return [s for s in model_kernel_shapes() if s.op == "window"]


def _group_shapes() -> list[KernelShape]:
    return [s for s in model_kernel_shapes() if s.op == "group"]


def max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def _model_view(B: int, H: int, T: int, J: int, D: int, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """The (B, H, T, J, D) view of (N, H*D, T, V) activations the model passes (no copy)."""
    return torch.randn(B, H * D, T, J, generator=gen).view(B, H, D, T, J).permute(0, 1, 3, 4, 2).to(DEVICE, dtype)


def _run(fn, inputs, dout):
    leaves = [x.detach().requires_grad_() for x in inputs]
    out = fn(*leaves)
    out.backward(dout)
    return out.detach(), [x.grad for x in leaves]


def _compare(name: str, got, want, tol: float) -> None:
    (out_g, grads_g), (out_w, grads_w) = got, want
    errors = {"out": max_rel_err(out_g, out_w)}
    for label, g, w in zip(("dq", "dk", "dv", "dbias"), grads_g, grads_w):
        assert g is not None and g.shape == w.shape and g.dtype == w.dtype, (name, label)
        errors[label] = max_rel_err(g, w)
    bad = {k: e for k, e in errors.items() if not e <= tol}
    assert not bad, f"{name}: relative errors above {tol}: {bad} (all: {errors})"


# --------------------------------------------------------------------------- shape inventory


def test_model_shapes_cover_every_kernel_path():
    """The recorded shapes are the model's (so a change of widths, heads or windows shows
    up here) and they reach every window size and both backward loop orders."""
    shapes = model_kernel_shapes()
    assert {s.J for s in shapes} == {25, 18, 20}
    assert {s.size for s in _window_shapes()} == {1, 3, 5}
    assert _group_shapes() and {s.H for s in _group_shapes()} == {1}  # FF: the frame's whole J*C is one token
    # Backward paths: window 1 is frame-local, windows 3 and 5 slide along T; each with one
    # head-dim pass (fp16, D = 12) and several (fp32 always, fp16 at D = 24).
    paths = set()
    for dtype in (torch.float32, torch.float16):
        for s in _window_shapes():
            cfg = wa_module.launch_config(dtype, s.size, s.J, s.D)
            paths.add((s.size, cfg.bwd_frame_local, -(-s.D // cfg.block_d) == 1))
    assert paths == {(w, w == 1, one_pass) for w in (1, 3, 5) for one_pass in (False, True)}
    # Every FF shape spans several feature chunks (the case that was wrong before).
    for s in _group_shapes():
        assert s.J * s.D > fga_module.launch_config(s.size, s.J * s.D, backward=False).block_f


# --------------------------------------------------------------------------- window_attention at the model's shapes


def _window_case(shape: KernelShape, dtype: torch.dtype, per_head_bias: bool, T: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (_model_view(1, shape.H, T, shape.J, shape.D, gen, dtype) for _ in range(3))
    bias_shape = (shape.H, shape.J, shape.J) if per_head_bias else (shape.J, shape.J)
    bias = (0.8 * torch.rand(bias_shape, generator=gen)).to(DEVICE)  # fp32, as the model keeps it
    B, H, _, J, D = q.shape
    dout = torch.randn(B, H, D, T, shape.size, J, generator=gen).permute(0, 1, 3, 4, 5, 2).to(DEVICE, dtype)
    inputs = (q, k, v, bias)
    got = _run(lambda *a: kernels.window_attention(*a, shape.size, backend="triton"), inputs, dout)
    want = _run(lambda *a: kernels.window_attention(*a, shape.size, backend="eager"), inputs, dout)
    _compare(f"{shape}-{dtype}", got, want, TOLERANCE[dtype])


@pytest.mark.parametrize("shape", _window_shapes(), ids=str)
def test_window_attention_model_shape_fp32_shared_bias(shape: KernelShape):
    _window_case(shape, torch.float32, per_head_bias=False)


@pytest.mark.parametrize("shape", _window_shapes(), ids=str)
def test_window_attention_model_shape_fp16_per_head_bias(shape: KernelShape):
    # One anchor (half the interpreter time): fp16 changes loads, stores and dot inputs,
    # not the anchor/phase logic the fp32 run checks at T = 2.
    _window_case(shape, torch.float16, per_head_bias=True, T=1)


# --------------------------------------------------------------------------- frame_group_attention at the model's shapes


def _group_case(H: int, J: int, D: int, group: int, T: int, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (_model_view(1, H, T, J, D, gen, dtype) for _ in range(3))
    dout = _model_view(1, H, T, J, D, gen, dtype)
    got = _run(lambda *a: kernels.frame_group_attention(*a, group, backend="triton"), (q, k, v), dout)
    want = _run(lambda *a: kernels.frame_group_attention(*a, group, backend="eager"), (q, k, v), dout)
    _compare(f"g{group}-H{H}-J{J}-D{D}-T{T}-{dtype}", got, want, TOLERANCE[dtype])


@pytest.mark.parametrize("shape", _group_shapes(), ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_frame_group_attention_model_shape(shape: KernelShape, dtype: torch.dtype):
    # fp32: one full group and a short last group of one frame; fp16: one full group
    # (a clip shorter than the group would run a smaller group's launch config).
    T = shape.size + 1 if dtype == torch.float32 else shape.size
    _group_case(shape.H, shape.J, shape.D, shape.size, T, dtype)


@pytest.mark.parametrize("group", [3, 4, 6, 7, 8])
def test_frame_group_attention_every_group_size_at_a_model_width(group: int):
    """Each group size has its own launch config (tile, warps, chunk width): run each at the
    model's narrowest FF width, a full group plus a short one, fp32 (fp16 alternates)."""
    shape = min(_group_shapes(), key=lambda s: s.J * s.D)
    dtype = torch.float16 if group % 2 else torch.float32
    _group_case(shape.H, shape.J, shape.D, group, group + 2, dtype, seed=group)


# --------------------------------------------------------------------------- random-shape fuzz vs float64 loops


def _fuzz_tensor(rng: random.Random, gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """One of: contiguous, the model's permuted view, a random axis permutation of the
    storage, or a non-contiguous slice (strides 2 along T and D, an offset along J)."""
    B, H, T, J, D = shape
    kind = rng.choice(["contiguous", "model", "permuted", "sliced"])
    if kind == "contiguous":
        return torch.randn(shape, generator=gen)
    if kind == "model":
        return torch.randn(B, H * D, T, J, generator=gen).view(B, H, D, T, J).permute(0, 1, 3, 4, 2)
    if kind == "permuted":
        order = list(range(5))
        rng.shuffle(order)
        storage = torch.randn([shape[i] for i in order], generator=gen)
        return storage.permute([order.index(i) for i in range(5)])
    return torch.randn(B, H, 2 * T, J + 1, 2 * D, generator=gen)[:, :, ::2, 1:, 1::2]


FUZZ_SEEDS = range(6)


@pytest.mark.parametrize("seed", FUZZ_SEEDS)
def test_window_attention_fuzz_against_float64_loop(seed: int):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    window = (1, 3, 5)[seed % 3]
    J = rng.randint(2, 128 // window if window > 1 else 32)
    B, H, D = rng.randint(1, 2), rng.randint(1, 2), rng.randint(1, 20)
    # Odd, and below the window; (B, H, T) small for the costly multi-frame windows.
    T = rng.choice([1, 2, 3, 5] if window == 1 else [1, 2, 3])
    if window > 1 and B * H * T > 4:
        B = H = 1
    dtype = torch.float16 if seed % 3 == 2 else torch.float32
    shape = (B, H, T, J, D)
    q, k, v = (_fuzz_tensor(rng, gen, shape).to(DEVICE, dtype) for _ in range(3))
    bias = torch.randn((H, J, J) if seed % 2 else (J, J), generator=gen).to(DEVICE)
    dout = torch.randn(B, H, T, window, J, D, generator=gen).to(DEVICE, dtype)
    scale = D ** -0.5
    got = _run(lambda *a: kernels.window_attention(*a, window, backend="triton"), (q, k, v, bias), dout)
    want = _run(lambda *a: naive_window_attention(*a, window, scale),
                [x.cpu().double() for x in (q, k, v, bias)], dout.cpu().double())
    want = (want[0].to(DEVICE, dtype), [g.to(DEVICE, x.dtype) for g, x in zip(want[1], (q, k, v, bias))])
    _compare(f"seed{seed}-w{window}-{shape}-{dtype}", got, want, TOLERANCE[dtype])


@pytest.mark.parametrize("seed", FUZZ_SEEDS)
def test_frame_group_attention_fuzz_against_float64_loop(seed: int):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    group = rng.randint(1, fga_module.MAX_TRITON_GROUP)
    B, H, J, D = rng.randint(1, 2), rng.randint(1, 3), rng.randint(1, 25), rng.randint(1, 40)
    T = rng.choice([1, group - 1, group + 1, 2 * group + 1, 2 * group + 3]) or 1  # partial last groups
    dtype = torch.float16 if seed % 3 == 2 else torch.float32
    shape = (B, H, T, J, D)
    q, k, v = (_fuzz_tensor(rng, gen, shape).to(DEVICE, dtype) for _ in range(3))
    dout = _fuzz_tensor(rng, gen, shape).to(DEVICE, dtype)
    scale = (J * D) ** -0.5
    got = _run(lambda *a: kernels.frame_group_attention(*a, group, backend="triton"), (q, k, v), dout)
    want = _run(lambda *a: naive_frame_group_attention(*a, group, scale), [x.cpu().double() for x in (q, k, v)],
                dout.cpu().double())
    want = (want[0].to(DEVICE, dtype), [g.to(DEVICE, dtype) for g in want[1]])
    _compare(f"seed{seed}-g{group}-{shape}-{dtype}", got, want, TOLERANCE[dtype])
