"""One optimizer step (forward + backward + SGD) of MS-G3D vs AMANet.

CPU: small shapes, eager (the peers a CPU-only machine can run).
CUDA: the paper's shapes (NTU-60, T=300, V=25, M=2, 16 clips per GPU as in the
paper's 2-GPU runs), bf16 autocast, eager and torch.compile side by side.
Peak memory goes into benchmark.extra_info (CUDA: allocator high-water mark of
the step; CPU: the process' peak RSS, which is a whole-process figure).
"""
from __future__ import annotations

import resource
import sys

import pytest
import torch
import torch.nn.functional as F

from amanet_fast import build_model

from amanet_fast.model.build import ARCHS  # noqa: E402
CPU_SHAPE = dict(batch=4, frames=16, channels=(12, 24, 48))  # small: seconds per round on a laptop core
CUDA_SHAPE = dict(batch=16, frames=300, channels=(96, 192, 384))  # paper: batch 32 over 2 GPUs, T=300

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="paper-shape step needs a CUDA GPU (CPU peers run at small shapes)")


def _make_step(arch: str, device: torch.device, batch: int, frames: int, channels: tuple[int, ...],
               compiled: bool, amp: torch.dtype | None):
    torch.manual_seed(0)
    model = build_model(arch, "ntu60", channels=channels).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    fwd = torch.compile(model) if compiled else model
    x = torch.randn(batch, 3, frames, 25, 2, device=device)
    y = torch.randint(0, 60, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            logits = fwd(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    n_params = sum(p.numel() for p in model.parameters())
    return step, n_params


def _cpu_peak_rss_mib() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


@pytest.fixture
def one_thread():
    """CPU peers run single-threaded: on a small shared box, 2 intra-op threads over-subscribe and time
    varies by 10x between runs (measured); one thread gives repeatable numbers."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield 1
    torch.set_num_threads(before)


@pytest.mark.parametrize("arch", ARCHS)
def test_train_step_cpu_small(benchmark, arch, one_thread):
    s = CPU_SHAPE
    step, n_params = _make_step(arch, torch.device("cpu"), s["batch"], s["frames"], s["channels"], False, None)
    step()  # warm-up (allocations, first-call overheads)
    benchmark.group = f"train-step cpu B{s['batch']} T{s['frames']} C{s['channels'][0]}"
    benchmark.extra_info.update(
        op="train_step", mode="fwd+bwd+sgd", peer=arch, arch=arch,  # both eager: the ratio table compares archs by name
        shape=f"N={s['batch']} C=3 T={s['frames']} V=25 M=2", channels=list(s["channels"]), dtype="fp32",
        device="cpu", threads=one_thread, params=n_params,
    )
    benchmark.pedantic(step, rounds=3, iterations=1)
    benchmark.extra_info["peak_mem_MiB"] = _cpu_peak_rss_mib()
    benchmark.extra_info["peak_mem_kind"] = "process peak RSS"


@requires_cuda
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compile"])
@pytest.mark.parametrize("arch", ARCHS)
def test_train_step_cuda_paper(benchmark, arch, compiled):
    s = CUDA_SHAPE
    device = torch.device("cuda")
    step, n_params = _make_step(arch, device, s["batch"], s["frames"], s["channels"], compiled, torch.bfloat16)
    for _ in range(3):  # warm-up; includes compilation for the compiled peer
        step()
    torch.cuda.reset_peak_memory_stats(device)
    benchmark.group = f"train-step cuda {arch} B{s['batch']} T{s['frames']} bf16"
    benchmark.extra_info.update(
        op="train_step", mode="fwd+bwd+sgd", peer="compile" if compiled else "eager", arch=arch,
        shape=f"N={s['batch']} C=3 T={s['frames']} V=25 M=2", channels=list(s["channels"]), dtype="bf16 autocast",
        device=torch.cuda.get_device_name(device), params=n_params,
    )
    benchmark.pedantic(step, rounds=10, iterations=1)
    benchmark.extra_info["peak_mem_MiB"] = torch.cuda.max_memory_allocated(device) / 2**20
    benchmark.extra_info["peak_mem_kind"] = "CUDA allocator high-water mark during the timed steps"
