"""Ahead-of-time GPU builds (kernels.tools.aot_check) on a CPU-only machine.

The toy kernels below exercise the machinery itself: one clean tl.dot kernel that
must build everywhere, two that the interpreter would run but the GPU compiler
rejects, one that spills registers, and one whose shared memory fits sm_80/sm_90
but not the 99 KiB per block of sm_86. The last test builds every project kernel
config for sm_80/86/90 and fails on any build error, spill or shared-memory excess.

Compilation runs in a subprocess without TRITON_INTERPRET (conftest sets it for
this process), with a throw-away Triton cache.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import triton
import triton.language as tl

from kernels.tools.aot_check import (
    TARGETS,
    format_table,
    heaviest_configs,
    occupancy,
    parse_cuobjdump_resources,
    parse_ptxas_log,
    pointer_alignment_attrs,
    specialize_like_jit,
    split_selection,
)
from kernels.tools.specs import KernelSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY_SOURCE = "tests.kernels.test_aot:toy_specs"
FULL_REPORT = REPO_ROOT / "docs" / "kernel_resources.json"


# --------------------------------------------------------------------------- toy kernels
@triton.jit
def toy_dot_kernel(a_ptr, b_ptr, c_ptr, stride_row, BLOCK: tl.constexpr):
    rows = tl.arange(0, BLOCK)
    offsets = rows[:, None] * stride_row + rows[None, :]
    a = tl.load(a_ptr + offsets)
    b = tl.load(b_ptr + offsets)
    tl.store(c_ptr + offsets, tl.dot(a, b).to(c_ptr.dtype.element_ty))


@triton.jit
def toy_arange_kernel(out_ptr, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    tl.store(out_ptr + offsets, offsets)


@triton.jit
def toy_spill_kernel(a_ptr, c_ptr, BLOCK: tl.constexpr):
    # Three live BLOCK x BLOCK fp32 tiles held by a single warp: far beyond 255 registers.
    rows = tl.arange(0, BLOCK)
    offsets = rows[:, None] * BLOCK + rows[None, :]
    x = tl.load(a_ptr + offsets)
    y = tl.load(a_ptr + offsets + BLOCK * BLOCK)
    z = tl.load(a_ptr + offsets + 2 * BLOCK * BLOCK)
    tl.store(c_ptr + offsets, x * y + z)
    tl.store(c_ptr + offsets + BLOCK * BLOCK, z * y + x)
    tl.store(c_ptr + offsets + 2 * BLOCK * BLOCK, z * x + y)


@triton.jit
def toy_wide_dot_kernel(a_ptr, b_ptr, c_ptr, M: tl.constexpr, K: tl.constexpr, N: tl.constexpr):
    # (M x K) @ (K x N) fp16 operands staged in shared memory: 128 KiB at 64 x 512 x 64.
    rm = tl.arange(0, M)
    rk = tl.arange(0, K)
    rn = tl.arange(0, N)
    a = tl.load(a_ptr + rm[:, None] * K + rk[None, :])
    b = tl.load(b_ptr + rk[:, None] * N + rn[None, :])
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], tl.dot(a, b))


def toy_specs() -> list[KernelSpec]:
    """Spec source for the subprocess: `--specs tests.kernels.test_aot:toy_specs`."""
    specs = []
    for dtype in ("fp32", "fp16", "bf16"):
        specs.append(KernelSpec(
            name=f"good_dot[{dtype}]", fn=toy_dot_kernel,
            signature={"a_ptr": f"*{dtype}", "b_ptr": f"*{dtype}", "c_ptr": f"*{dtype}", "stride_row": "i32"},
            constexprs={"BLOCK": 32}, num_warps=4, meta={"dtype": dtype}))
    # What the JIT builds when the launcher passes a row stride of 32 (divisible by 16).
    specs.append(replace(specialize_like_jit(specs[1], {"stride_row": 32}), name="good_dot[fp16,stride=32]"))
    specs += [
        KernelSpec(name="broken_dot8[fp16]", fn=toy_dot_kernel,
                   signature={"a_ptr": "*fp16", "b_ptr": "*fp16", "c_ptr": "*fp16", "stride_row": "i32"},
                   constexprs={"BLOCK": 8}),
        KernelSpec(name="broken_arange25", fn=toy_arange_kernel, signature={"out_ptr": "*i32"},
                   constexprs={"BLOCK": 25}),
        KernelSpec(name="spilling[fp32]", fn=toy_spill_kernel, signature={"a_ptr": "*fp32", "c_ptr": "*fp32"},
                   constexprs={"BLOCK": 64}, num_warps=1),
        KernelSpec(name="smem128k[fp16]", fn=toy_wide_dot_kernel,
                   signature={"a_ptr": "*fp16", "b_ptr": "*fp16", "c_ptr": "*fp32"},
                   constexprs={"M": 64, "K": 512, "N": 64}, num_warps=4),
    ]
    return specs


# --------------------------------------------------------------------------- helpers
def run_aot_check(tmp_path: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict, float]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TMPDIR"] = str(tmp_path)  # a timed-out (killed) run leaves its Triton cache here, not in /tmp
    report_path = tmp_path / "report.json"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kernels.tools.aot_check", "--quiet", "--json", str(report_path),
                           *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    assert report_path.exists(), f"aot_check wrote no report (rc={done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done, json.loads(report_path.read_text()), wall


def rows_by(report: dict) -> dict[tuple[str, int], dict]:
    return {(r["name"], r["arch"]): r for r in report["results"]}


# --------------------------------------------------------------------------- pure-python parts
def test_occupancy_matches_cuda_calculator_rules() -> None:
    h100, rtx3090 = TARGETS[90], TARGETS[86]
    full = occupancy(h100, regs_per_thread=32, smem_per_block=0, num_warps=4)
    assert (full["warps_per_sm"], full["occupancy"]) == (64, 1.0)
    # 128 regs/thread: 4096 regs per warp -> 16 warps fit in the 64K register file.
    by_regs = occupancy(h100, regs_per_thread=128, smem_per_block=0, num_warps=8)
    assert (by_regs["blocks_per_sm"], by_regs["limiter"], by_regs["occupancy"]) == (2, "registers", 0.25)
    assert full["limiter"] == "full"
    # 33 regs round up to 1280 per warp (256 granularity): 12 warps per sub-partition.
    rounded = occupancy(h100, regs_per_thread=33, smem_per_block=0, num_warps=4)
    assert rounded["warps_per_sm"] == 48
    # sm_86: 48 KiB + 1 KiB reserved per block -> 2 blocks in 100 KiB.
    by_smem = occupancy(rtx3090, regs_per_thread=32, smem_per_block=48 * 1024, num_warps=4)
    assert (by_smem["blocks_per_sm"], by_smem["limiter"]) == (2, "shared")
    assert occupancy(rtx3090, 32, 0, 4)["occupancy"] == 1.0  # 12 blocks x 4 warps = 48 warps
    too_big = occupancy(rtx3090, regs_per_thread=32, smem_per_block=100 * 1024, num_warps=4)
    assert too_big["blocks_per_sm"] == 0
    with pytest.raises(ValueError, match="num_warps"):
        occupancy(h100, 32, 0, 0)


def test_parsers_read_real_tool_output() -> None:
    cuobjdump = """
Resource usage:
 Common:
  GLOBAL:0
 Function toy:
  REG:32 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:576 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    assert parse_cuobjdump_resources(cuobjdump)["toy"] == {
        "REG": 32, "STACK": 0, "SHARED": 1024, "LOCAL": 0, "CONSTANT[0]": 576,
        "TEXTURE": 0, "SURFACE": 0, "SAMPLER": 0}
    ptxas = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'spill' for 'sm_86'
ptxas info    : Function properties for spill
    2072 bytes stack frame, 2588 bytes spill stores, 3536 bytes spill loads
ptxas info    : Used 128 registers, used 1 barriers, 2072 bytes cumulative stack size, 384 bytes cmem[0]
"""
    assert parse_ptxas_log(ptxas) == {"registers": 128, "stack_frame": 2072, "spill_stores": 2588,
                                      "spill_loads": 3536}
    assert parse_ptxas_log("ptxas-blackwell info    : Used 63 registers, used 1 barriers") == {"registers": 63}


def test_specialize_like_jit_agrees_with_the_jit_itself() -> None:
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend

    base = toy_specs()[1]  # good_dot[fp16]: stride_row is its only integer argument
    for value in (1, 7, 16, 48, 7500, 2**33):
        kind, attr = native_specialize_impl(BaseBackend, value, False, True, True)
        spec = specialize_like_jit(base, {"stride_row": value})
        if kind == "constexpr":
            assert spec.constexprs["stride_row"] == 1 and "stride_row" not in spec.signature
        else:
            assert spec.signature["stride_row"] == kind
            assert ("stride_row" in spec.meta["divisible_by_16"]) == (attr == "D")
            signature = {**spec.signature, "BLOCK": "constexpr"}
            attrs = pointer_alignment_attrs(signature, spec)
            assert ((3,) in attrs) == (attr == "D") and (0,) in attrs
    with pytest.raises(ValueError, match="not a runtime argument"):
        specialize_like_jit(base, {"BLOCK": 1})
    with pytest.raises(TypeError, match="integer argument"):
        specialize_like_jit(base, {"a_ptr": 1})


def test_heaviest_configs_picks_the_rows_nearest_the_limits() -> None:
    def row(name: str, kernel: str, arch: int, regs: int, smem: int, problems: list[str] | None = None,
            compile_s: float = 1.0) -> dict:
        return {"name": name, "kernel": kernel, "arch": arch, "ok": True, "registers": regs,
                "shared_bytes": smem, "problems": problems or [], "compile_s": compile_s}

    previous = {"complete": True, "results": [
        row("fwd_small", "fwd", 90, 40, 1024), row("fwd_big", "fwd", 90, 200, 2048),
        row("fwd_smem", "fwd", 90, 100, 90_000), row("fwd_small", "fwd", 86, 40, 1024),
        row("fwd_big", "fwd", 86, 150, 2048), row("fwd_smem", "fwd", 86, 160, 90_000),
        row("bwd_a", "bwd", 90, 90, 0), row("bwd_b", "bwd", 90, 80, 0, ["spills registers"], compile_s=9.0),
        row("bwd_c", "bwd", 90, 70, 0, ["spills registers"], compile_s=2.0),
        {"name": "bwd_broken", "kernel": "bwd", "arch": 86, "ok": False, "problems": ["compile failed"],
         "compile_s": 0.5},
    ]}
    current = ["fwd_small", "fwd_big", "fwd_smem", "bwd_a", "bwd_b", "bwd_c", "bwd_broken", "bwd_new"]
    assert heaviest_configs(previous, current) == [
        "bwd_a@sm_90", "bwd_broken@sm_86", "bwd_c@sm_90", "bwd_new", "fwd_big@sm_90", "fwd_smem@sm_86",
        "fwd_smem@sm_90"]
    # Names that no longer exist are not requested.
    assert "fwd_big@sm_90" not in heaviest_configs(previous, ["fwd_small", "fwd_smem"])
    with pytest.raises(ValueError, match="complete run"):
        heaviest_configs({**previous, "complete": False}, current)
    assert split_selection("k[a,b=1]@sm_86") == ("k[a,b=1]", 86)
    assert split_selection("k[a,b=1]") == ("k[a,b=1]", None)


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    for args, needle in ((["--targets", "75"], "--targets"), (["--specs", "no_colon"], "MODULE:FUNCTION"),
                         (["--jobs", "0"], "--jobs")):
        done = subprocess.run([sys.executable, "-m", "kernels.tools.aot_check", *args], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        assert needle in done.stderr


# --------------------------------------------------------------------------- real compiles
def test_toy_kernels_build_and_failures_are_caught(tmp_path: Path) -> None:
    done, report, wall = run_aot_check(tmp_path, "--specs", TOY_SOURCE, "--markdown", str(tmp_path / "t.md"),
                                       timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr  # the deliberately bad kernels must fail the run
    rows = rows_by(report)
    assert report["num_builds"] == len(toy_specs()) * 3 == len(report["results"])

    for dtype in ("fp32", "fp16", "bf16"):
        for arch in (80, 86, 90):
            row = rows[(f"good_dot[{dtype}]", arch)]
            assert row["ok"] and row["problems"] == [], row
            assert 0 < row["registers"] <= 255
            assert row["spill_stores"] == 0 and row["ptxas_log_found"]
            assert row["shared_dynamic"] > 0  # dot operands are staged in shared memory
            assert 0 < row["occupancy"] <= 1
    for arch in (80, 86, 90):
        assert rows[("good_dot[fp16,stride=32]", arch)]["problems"] == []

    for arch in (80, 86, 90):
        assert not rows[("broken_dot8[fp16]", arch)]["ok"]
        assert "K >= 16" in rows[("broken_dot8[fp16]", arch)]["error"]
        assert "power of 2" in rows[("broken_arange25", arch)]["error"]
        spill = rows[("spilling[fp32]", arch)]
        assert spill["ok"] and spill["spill_stores"] > 0
        assert any("spills registers" in p for p in spill["problems"])

    smem = {arch: rows[("smem128k[fp16]", arch)] for arch in (80, 86, 90)}
    assert smem[86]["shared_bytes"] >= 128 * 1024
    assert any("99 KiB per block" in p for p in smem[86]["problems"])
    assert smem[80]["problems"] == [] and smem[90]["problems"] == []

    failing = {(r["name"], r["arch"]) for r in report["results"] if r["problems"]}
    assert failing == {(n, a) for a in (80, 86, 90) for n in ("broken_dot8[fp16]", "broken_arange25",
                                                              "spilling[fp32]")} | {("smem128k[fp16]", 86)}
    assert "FAIL sm_86 smem128k[fp16]" in done.stdout
    table = (tmp_path / "t.md").read_text()
    assert "| good_dot[bf16] |" in table and "BUILD FAILED" in table
    assert format_table(report).count("\n") == len(toy_specs()) + 1


def test_filter_and_only_names_select_a_subset(tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("good_dot[fp16]@sm_90\ngood_dot[fp32]\nbroken_arange25@sm_80\n")
    done, report, _ = run_aot_check(tmp_path, "--specs", TOY_SOURCE, "--filter", "good_dot[fp16]", "--only-names",
                                    str(names), timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [(r["name"], r["arch"]) for r in report["results"]] == [("good_dot[fp16]", 90)]
    assert report["complete"] is False

    names.write_text("good_dot[fp16]\nno_such_kernel[fp16]\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-m", "kernels.tools.aot_check", "--specs", TOY_SOURCE, "--only-names",
                           str(names)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 2 and "no_such_kernel[fp16]" in done.stderr, done.stderr


def _assert_project_builds_clean(done: subprocess.CompletedProcess, report: dict, wall: float) -> None:
    print(f"AOT check: {report['num_builds']} builds in {wall:.1f} s "
          f"(sum of compile times {report['sum_compile_s']:.1f} s, jobs={report['jobs']})")
    assert report["num_builds"] > 0
    assert done.returncode == 0 and report["failures"] == 0, (
        "kernel configs that fail to build, spill or exceed shared memory:\n" + done.stdout[-8000:]
        + done.stderr[-2000:])


@pytest.mark.slow
def test_every_project_kernel_config_builds_for_sm80_sm86_sm90(tmp_path: Path) -> None:
    """Every config of both ops x sm_80/86/90 (315 builds, ~3.5 min with 2 processes here).

    AMANET_AOT_QUICK=1 builds only the configs nearest the limits in the committed full
    report (docs/kernel_resources.json) plus configs it does not know yet."""
    if os.environ.get("AMANET_AOT_QUICK") == "1":
        assert FULL_REPORT.exists(), (f"{FULL_REPORT} is missing: regenerate it with "
                                      f"`python -m kernels.tools.aot_check "
                                      f"--json docs/kernel_resources.json --markdown docs/kernel_resources.md`")
        done, report, wall = run_aot_check(tmp_path, "--heaviest-from", str(FULL_REPORT), timeout=900)
    else:
        done, report, wall = run_aot_check(tmp_path, timeout=1800)
        assert report["complete"]
    kernels = {r["kernel"] for r in report["results"]}
    assert len(kernels) >= 4, f"expected forward and backward kernels of both ops, got {kernels}"
    _assert_project_builds_clean(done, report, wall)
