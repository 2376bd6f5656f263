"""CPU runtime defaults (issue 14): bf16 detection, the allocator setting's effect on page
faults, amp=off staying exact fp32, and benchmarks.cpu_step at tiny shapes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from amanet_fast import build_model
from amanet_fast.training import hardware
from amanet_fast.training.loop import Run, resolve_precision

ROOT = Path(__file__).resolve().parents[2]


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 avx2 {flags}\n\n")
    return path


@pytest.mark.parametrize("flags,native", [("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True),
                                          ("avx512f avx512_vnni", False), ("", False)])
def test_bf16_detection_reads_cpu_flags(tmp_path, flags, native):
    ok, evidence = hardware.cpu_bf16_native(_cpuinfo(tmp_path, flags))
    assert ok is native
    assert ("bf16" in evidence) if native else ("no amx_bf16" in evidence)


def test_bf16_detection_without_cpuinfo(tmp_path):
    ok, evidence = hardware.cpu_bf16_native(tmp_path / "missing")
    assert ok is False and "no /proc/cpuinfo" in evidence


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_on_cpu_follows_the_hardware(monkeypatch, native):
    monkeypatch.setattr(hardware, "cpu_bf16_native", lambda *a: (native, "test"))
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu).dtype == (torch.bfloat16 if native else None)
    assert resolve_precision("off", cpu).dtype is None  # explicit settings win over detection
    assert resolve_precision("bf16", cpu).dtype == torch.bfloat16


def test_default_threads_share_the_cores():
    cores = hardware.default_threads(1)
    assert cores >= 1 and hardware.default_threads(cores * 4) == 1


_FAULTS = """
import json, resource, sys, torch
from amanet_fast.training import hardware
if sys.argv[1] == "on":
    hardware.configure_allocator()
torch.set_num_threads(1)
def churn():  # tensors of the sizes a training step frees and re-allocates (above glibc's 32 MiB mmap cap)
    for n in (40, 80, 40):
        torch.empty(n << 18).fill_(1.0)  # n MiB of fp32, every page touched
churn()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(json.dumps({"minflt": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0,
                  "state": hardware.configure_allocator()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting is Linux-only")
def test_allocator_setting_stops_page_fault_churn():
    def faults(mode: str) -> dict:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        env.pop("AMANET_KEEP_MALLOC", None)
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    off, on = faults("off"), faults("on")
    if "not glibc" in on["state"]:
        pytest.skip(on["state"])
    # 160 MiB touched after warm-up = ~41k 4-KiB pages: glibc's default faults them all in again.
    assert off["minflt"] > 20_000, off
    assert on["minflt"] < off["minflt"] / 20, (on, off)
    assert "keeps freed memory" in on["state"]


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, ctx) -> list[torch.Tensor]:
    with ctx:
        logits = model(x)
    F.cross_entropy(logits.float(), y).backward()
    return [logits.detach(), *(p.grad.detach().clone() for p in model.parameters())]


def test_amp_off_is_exact_fp32_nchw():
    """amp=off after the CPU defaults: the same bits as a plain fp32 NCHW model (real widths)."""
    torch.manual_seed(0)
    plain = build_model("amanet", "ntu60", kernel_backend="eager")
    torch.manual_seed(0)
    run_model = build_model("amanet", "ntu60", kernel_backend="eager")
    precision = resolve_precision("off", torch.device("cpu"))
    assert hardware.prepare_model(run_model, torch.device("cpu"), precision.dtype) == "NCHW"
    assert all(p.is_contiguous() for p in run_model.parameters())
    x = torch.randn(1, 3, 8, 25, 2)
    y = torch.tensor([3])
    run = SimpleNamespace(precision=precision, ctx=SimpleNamespace(device=torch.device("cpu")))
    ctx = Run.autocast(run)  # the trainer's own autocast decision for this precision
    for a, b in zip(_step(plain, x, y, nullcontext()), _step(run_model, x, y, ctx)):
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_bf16_defaults_train_a_step_with_sane_loss():
    """bf16 autocast + channels-last weights: finite loss close to fp32's, grads in fp32."""
    torch.manual_seed(0)
    ref = build_model("msg3d", "ntu60", channels=(24, 48, 96))
    torch.manual_seed(0)
    fast = build_model("msg3d", "ntu60", channels=(24, 48, 96))
    assert hardware.prepare_model(fast, torch.device("cpu"), torch.bfloat16) == "channels-last conv weights"
    x = torch.randn(2, 3, 16, 25, 2)
    y = torch.tensor([1, 7])
    out_ref = _step(ref, x, y, torch.autocast("cpu", enabled=False))
    out_fast = _step(fast, x, y, torch.autocast("cpu", dtype=torch.bfloat16))
    loss_ref = F.cross_entropy(out_ref[0], y)
    loss_fast = F.cross_entropy(out_fast[0].float(), y)
    assert torch.isfinite(loss_fast) and abs(float(loss_fast - loss_ref)) < 0.05 * float(loss_ref)
    assert all(g.dtype == torch.float32 for g in out_fast[1:])


@pytest.mark.slow
def test_cpu_step_benchmark_tiny(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.cpu_step", "--arch", "msg3d", "--batch", "1", "--frames", "4",
         "--channels", "6,12,24", "--rounds", "2", "--threads", "1", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    assert "samples/s" in last and last.endswith("x") and "ratio" in last
    (result,) = tmp_path.glob("cpu_step_*_msg3d.json")
    data = json.loads(result.read_text())
    assert data["sides"]["fp32"]["precision"] == "fp32" and data["sides"]["fp32"]["memory_format"] == "NCHW"
    assert "unchanged" in data["sides"]["fp32"]["allocator"]
    native = hardware.cpu_bf16_native()[0]
    assert data["sides"]["defaults"]["precision"] == ("bf16 autocast" if native else "fp32")
    assert len(data["sides"]["defaults"]["rounds"]) == 2 and data["ratio_of_medians"] > 0
    peaks = data["conv_peak_gflops"]
    assert set(peaks) == {"fp32_nchw", "fp32_channels_last", "bf16_channels_last"} and min(peaks.values()) > 0
    assert "compute ceiling" in out.stdout and data["conv_peak_bf16_over_best_fp32"] > 0
    # Same seed, same weights, same batch: both sides start from the same loss up to bf16 rounding.
    assert abs(data["sides"]["defaults"]["first_loss"] - data["sides"]["fp32"]["first_loss"]) < 0.1


@pytest.mark.slow
def test_cpu_step_versus_no_stfem(tmp_path):
    """--versus no-stfem: the same defaults on both sides, STFEM off on one; the last line is its cost."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.cpu_step", "--arch", "amanet", "--dataset", "ucla", "--batch", "1",
         "--frames", "6", "--channels", "6,12,24", "--scales", "2,2", "--persons", "1", "--rounds", "1",
         "--threads", "1", "--versus", "no-stfem", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "the STFEM step costs" in out.stdout.strip().splitlines()[-1]
    (result,) = tmp_path.glob("cpu_step_*_amanet.json")
    data = json.loads(result.read_text())
    with_stfem, without = data["sides"]["defaults"], data["sides"]["no_stfem"]
    assert data["versus"] == "no_stfem" and with_stfem["precision"] == without["precision"]
    assert with_stfem["params"] > without["params"]
    bad = subprocess.run([sys.executable, "-m", "benchmarks.cpu_step", "--arch", "msg3d", "--versus", "no-stfem"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert bad.returncode != 0 and "only AMANet has STFEM" in bad.stderr + bad.stdout


@pytest.mark.slow
def test_cpu_step_benchmark_compiled_side(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.cpu_step", "--arch", "msg3d", "--batch", "1", "--frames", "4",
         "--channels", "6,12,24", "--rounds", "1", "--threads", "1", "--compile", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    (result,) = tmp_path.glob("cpu_step_*_msg3d.json")
    data = json.loads(result.read_text())
    assert data["compile"] is True and data["sides"]["defaults"]["compiled"] is True
    assert data["sides"]["fp32"]["compiled"] is False  # the baseline stays plain eager
    assert "torch.compile (first step" in out.stdout


def test_cpu_step_bad_argument_is_one_line():
    out = subprocess.run([sys.executable, "-m", "benchmarks.cpu_step", "--channels", "96,x"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("error: argument --channels: expected")


@pytest.mark.parametrize("arch", ["amanet", "msg3d"])
def test_bf16_channels_last_grads_have_their_parameters_strides(arch):
    """DDP compares each gradient's strides with its parameter's and warned on every CPU run while a
    reshaped 1x1 weight was channels-last and its gradient NCHW (issue 20)."""
    torch.manual_seed(0)
    model = build_model(arch, "ntu60", channels=(6, 12, 24), num_gcn_scales=2, num_g3d_scales=2,
                        kernel_backend="eager")
    hardware.prepare_model(model, torch.device("cpu"), torch.bfloat16)
    _step(model, torch.randn(2, 3, 8, 25, 2), torch.tensor([1, 7]), torch.autocast("cpu", dtype=torch.bfloat16))
    bad = [(n, p.stride(), p.grad.stride()) for n, p in model.named_parameters()
           if p.grad is not None and p.grad.stride() != p.stride()]
    assert not bad, bad[:3]
