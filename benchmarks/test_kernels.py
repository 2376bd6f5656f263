"""Kernel benchmarks: both attention ops, forward and forward+backward, Triton
against its peers on the same inputs (the model's permuted layout).

    pytest benchmarks/test_kernels.py --benchmark-only            # GPU: the model's per-block shapes
    pytest benchmarks/test_kernels.py --benchmark-only -k frame   # one op

Peers (one benchmark group per case, so ratios read off the group table and the
"peer ratios" summary that benchmarks/conftest.py prints and saves):
  triton   kernels.* with backend="triton"                      (CUDA only)
  eager    the eager reference (backend="eager")
  sdpa, flex, compile   described in benchmarks/peers.py, where they are defined

On CPU the shapes are small (the CPU peers only, minutes in total); on CUDA they
are the model's own per-block problems (read off build_model by
benchmarks/model_shapes.py). Compile/autotune time is kept out of the timings by warm-up
calls before timing. Peak memory: torch.cuda.max_memory_allocated around one
extra call (CUDA); on CPU it is not measured (None, see extra_info["note"]).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import torch

from kernels import frame_group_attention, window_attention
from benchmarks.peers import compiled_reference, flex_window, sdpa_frame_group, sdpa_window
from kernels.reference import frame_group_attention_reference, window_attention_reference

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
MODES = ("fwd", "fwd+bwd")
WINDOW_PEERS = ("triton", "eager", "sdpa", "flex", "compile")
GROUP_PEERS = ("triton", "eager", "sdpa", "compile")
ROUNDS = 20 if CUDA else 15
ITERATIONS = 5 if CUDA else 1
WARMUP_CALLS = 3


@dataclass(frozen=True)
class Case:
    op: str  # "window" or "frame_group"
    B: int
    H: int
    T: int
    J: int
    D: int
    size: int  # window (τ) or group (g)
    dtype: torch.dtype

    @property
    def id(self) -> str:
        dt = str(self.dtype).removeprefix("torch.")
        knob = "tau" if self.op == "window" else "g"
        return f"{self.op}-{knob}{self.size}-B{self.B}H{self.H}T{self.T}J{self.J}D{self.D}-{dt}"

    def min_bytes(self, mode: str) -> int | None:
        """Compulsory forward traffic (read q, k, v once, write out once): the
        denominator of the GB/s column; None for forward+backward."""
        if mode != "fwd":
            return None
        elems = self.B * self.H * self.T * self.J * self.D
        out_elems = elems * (self.size if self.op == "window" else 1)
        return (3 * elems + out_elems) * torch.finfo(self.dtype).bits // 8


if CUDA:  # the problems AMANet really runs: NTU-60, 16 clips x 2 persons, T=300 (benchmarks/model_shapes.py)
    from benchmarks.model_shapes import WINDOW, attention_calls, unique_cases

    CASES = [Case("window" if c.op == WINDOW else "frame_group", *c.shape, c.size, torch.bfloat16)
             for c in unique_cases(attention_calls("amanet", "ntu60", clips=16, frames=300), "ntu60")]
else:  # small enough for a shared CPU; fp32 (CPU half matmuls are not representative)
    CASES = [Case("window", 2, 4, 32, 25, 24, tau, torch.float32) for tau in (5, 3, 1)] + [
        Case("frame_group", 2, 1, 60, 25, 96, 5, torch.float32)
    ]


# ----------------------------------------------------------------------------- peers
# Defined once in benchmarks/peers.py (python -m benchmarks.gpu_suite times the same peers).


@functools.lru_cache(maxsize=None)
def _compiled_reference(op: str):
    return compiled_reference(op)


def build_peer(case: Case, peer: str):
    """Returns fn(q, k, v, bias) -> out, or calls pytest.skip with the reason."""
    if peer == "triton" and not CUDA:
        pytest.skip("Triton peer needs CUDA (the CPU interpreter is a test tool, not a benchmark)")
    if peer == "flex" and not CUDA:
        pytest.skip("FlexAttention has no CPU backward; GPU only")
    if case.op == "window":
        scale = case.D**-0.5
        w = case.size
        return {
            "triton": lambda q, k, v, b: window_attention(q, k, v, b, w, backend="triton"),
            "eager": lambda q, k, v, b: window_attention(q, k, v, b, w, backend="eager"),
            "sdpa": lambda q, k, v, b: sdpa_window(q, k, v, b, w, scale),
            "flex": lambda q, k, v, b: flex_window(q, k, v, b, w, scale),
            "compile": lambda q, k, v, b: _compiled_reference("window")(q, k, v, b, w, scale),
        }[peer]
    scale = (case.J * case.D) ** -0.5
    g = case.size
    return {
        "triton": lambda q, k, v, b: frame_group_attention(q, k, v, g, backend="triton"),
        "eager": lambda q, k, v, b: frame_group_attention(q, k, v, g, backend="eager"),
        "sdpa": lambda q, k, v, b: sdpa_frame_group(q, k, v, g, scale),
        "compile": lambda q, k, v, b: _compiled_reference("frame_group")(q, k, v, g, scale),
    }[peer]


# ----------------------------------------------------------------------------- harness


def make_inputs(case: Case):
    """q, k, v as the model passes them: x.view(B, H, D, T, J).permute(0, 1, 3, 4, 2)."""
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def activation():
        x = torch.randn(case.B, case.H, case.D, case.T, case.J, generator=gen, device=DEVICE, dtype=case.dtype)
        return x.permute(0, 1, 3, 4, 2).requires_grad_()

    q, k, v = activation(), activation(), activation()
    bias = None
    if case.op == "window":
        bias = (0.1 * torch.randn(case.H, case.J, case.J, generator=gen, device=DEVICE)).to(case.dtype)
        bias.requires_grad_()
    return q, k, v, bias


def make_step(fn, mode: str, inputs):
    q, k, v, bias = inputs
    leaves = [x for x in (q, k, v, bias) if x is not None]
    sync = torch.cuda.synchronize if CUDA else (lambda: None)
    if mode == "fwd":

        def step():
            with torch.no_grad():
                out = fn(q, k, v, bias)
            sync()
            return out

    else:
        with torch.no_grad():
            out = fn(q, k, v, bias)
        # Same logical values for every peer (randn_like would follow each peer's output layout).
        gen = torch.Generator(device=out.device).manual_seed(1)
        grad_out = torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)

        def step():
            out = fn(q, k, v, bias)
            grads = torch.autograd.grad(out, leaves, grad_out)
            sync()
            return grads

    return step


def peak_memory_mib(step) -> tuple[float | None, float | None, str | None]:
    """(peak MiB during one step, MiB above what was allocated before, note)."""
    if not CUDA:
        return None, None, "peak memory not measured on CPU (no allocator statistics)"
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    peak = torch.cuda.max_memory_allocated()
    return peak / 2**20, (peak - before) / 2**20, None


def run_case(benchmark, case: Case, peer: str, mode: str) -> None:
    fn = build_peer(case, peer)
    inputs = make_inputs(case)
    step = make_step(fn, mode, inputs)
    for call in range(WARMUP_CALLS):  # compile, autotune, allocator warm-up: not timed
        if peer == "flex" and call == 0:
            try:
                step()
            except Exception as error:  # FlexAttention's shape support varies by release
                first_line = (str(error).strip().splitlines() or [""])[0][:200]
                pytest.skip(f"FlexAttention cannot run this case on torch {torch.__version__}: "
                            f"{type(error).__name__}: {first_line}")
        else:
            step()
    peak, over_inputs, note = peak_memory_mib(step)
    benchmark.group = f"{case.id} {mode} {DEVICE}"
    benchmark.extra_info.update(
        peer=peer,
        op=case.op,
        mode=mode,
        device=torch.cuda.get_device_name(0) if CUDA else "cpu",
        dtype=str(case.dtype).removeprefix("torch."),
        shape=[case.B, case.H, case.T, case.J, case.D],
        **({"window": case.size} if case.op == "window" else {"group": case.size}),
        peak_mem_MiB=peak,
        peak_over_inputs_MiB=over_inputs,
        min_bytes=case.min_bytes(mode),
    )
    if note:
        benchmark.extra_info["note"] = note
    benchmark.pedantic(step, rounds=ROUNDS, iterations=ITERATIONS, warmup_rounds=1)


WINDOW_CASES = [c for c in CASES if c.op == "window"]
GROUP_CASES = [c for c in CASES if c.op == "frame_group"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("peer", WINDOW_PEERS)
@pytest.mark.parametrize("case", WINDOW_CASES, ids=[c.id for c in WINDOW_CASES])
def test_window_attention(benchmark, case: Case, peer: str, mode: str) -> None:
    run_case(benchmark, case, peer, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("peer", GROUP_PEERS)
@pytest.mark.parametrize("case", GROUP_CASES, ids=[c.id for c in GROUP_CASES])
def test_frame_group_attention(benchmark, case: Case, peer: str, mode: str) -> None:
    run_case(benchmark, case, peer, mode)


# ----------------------------------------------------------------------------- peer sanity
# A benchmark of a wrong peer measures nothing: every peer must agree with the
# eager reference on a small input (plain tests; --benchmark-only skips them).


@pytest.mark.parametrize("window", [5, 3, 1])
def test_window_peers_agree_with_reference(window):
    case = Case("window", 1, 2, 7, 5, 4, window, torch.float32)
    q, k, v, bias = make_inputs(case)
    scale = case.D**-0.5
    ref = window_attention_reference(q, k, v, bias, window, scale)
    torch.testing.assert_close(sdpa_window(q, k, v, bias, window, scale), ref, rtol=1e-4, atol=1e-5)
    # forward+backward as timed: same grad_out, grads of q, k, v and bias
    ref_grads = make_step(lambda q, k, v, b: window_attention_reference(q, k, v, b, window, scale), "fwd+bwd",
                          (q, k, v, bias))()
    sdpa_grads = make_step(lambda q, k, v, b: sdpa_window(q, k, v, b, window, scale), "fwd+bwd", (q, k, v, bias))()
    for name, got, want in zip(("q", "k", "v", "bias"), sdpa_grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=lambda m: f"d{name}: {m}")


@pytest.mark.skipif(not CUDA, reason="FlexAttention runs on CUDA here")
@pytest.mark.parametrize("window", [5, 1])
def test_flex_peer_agrees_with_reference(window):
    case = Case("window", 1, 2, 7, 5, 16, window, torch.float32)
    q, k, v, bias = make_inputs(case)
    scale = case.D**-0.5
    ref = window_attention_reference(q, k, v, bias, window, scale)
    torch.testing.assert_close(flex_window(q, k, v, bias, window, scale), ref, rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("T", [10, 7])
def test_frame_group_sdpa_peer_agrees_with_reference(T):
    case = Case("frame_group", 1, 2, T, 3, 4, 5, torch.float32)
    q, k, v, _ = make_inputs(case)
    scale = (case.J * case.D) ** -0.5
    ref = frame_group_attention_reference(q, k, v, 5, scale)
    torch.testing.assert_close(sdpa_frame_group(q, k, v, 5, scale), ref, rtol=1e-4, atol=1e-5)
    ref_grads = make_step(lambda q, k, v, b: frame_group_attention_reference(q, k, v, 5, scale), "fwd+bwd",
                          (q, k, v, None))()
    sdpa_grads = make_step(lambda q, k, v, b: sdpa_frame_group(q, k, v, 5, scale), "fwd+bwd", (q, k, v, None))()
    for name, got, want in zip("qkv", sdpa_grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=lambda m: f"d{name}: {m}")


def test_summary_reads_ratios_off_a_group():
    from benchmarks.conftest import summarize

    records = [
        {"group": "case A", "median_s": 2.0, "min_s": 1.0, "extra_info": {"peer": "eager", "min_bytes": 4e9}},
        {"group": "case A", "median_s": 0.5, "min_s": 0.5, "extra_info": {"peer": "triton", "min_bytes": 4e9}},
        {"group": "case A", "median_s": 1.0, "min_s": 1.0, "extra_info": {"peer": "sdpa"}},
        {"group": "other", "median_s": 1.0, "extra_info": {}},  # no peer: not part of the table
    ]
    (entry,) = summarize(records)
    rows = {row["peer"]: row for row in entry["peers"]}
    assert [row["peer"] for row in entry["peers"]] == ["triton", "sdpa", "eager"]  # fastest first
    assert rows["triton"]["speedup_vs_eager"] == 4.0 and rows["triton"]["speedup_vs_eager_by_min"] == 2.0
    assert rows["sdpa"]["time_vs_triton"] == 2.0
    assert rows["triton"]["GB_per_s_at_min_traffic"] == 8.0
    assert rows["sdpa"]["GB_per_s_at_min_traffic"] is None
