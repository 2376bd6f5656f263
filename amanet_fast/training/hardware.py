"""CPU runtime defaults that use the hardware (docs/design.md §6, issue 14).

Four levers, measured on the 2-core AVX-512 BF16 development machine with
`python -m benchmarks.cpu_step` (numbers in benchmarks/results/README.md):

- bf16 autocast where the CPU computes bf16 natively (AMX or AVX-512 BF16):
  oneDNN's bf16 convs and matmuls cut the thread CPU time of a full
  AMANet step by ~1.8x there. Elsewhere `amp: auto` stays fp32 (no native bf16 units).
- glibc's allocator: every freed block above the mmap threshold (dynamic,
  at most 32 MiB) goes back to the kernel and is page-faulted in again on
  the next step (195k-235k minor faults per step at N=4, T=64, paper widths).
  Disabling mmap for malloc and never trimming the heap makes glibc keep the
  memory like a caching allocator (~0 faults per step); RSS stays at the peak.
- channels-last conv weights together with bf16 (0.92 -> 0.85 s thread CPU
  per AMANet step at N=2, T=64): convs then run oneDNN's NHWC kernels. Not
  with fp32, so that `amp: off` is exactly the plain fp32 NCHW model.
- intra-op threads: the usable cores that other processes leave free, divided among the
  processes of this node; re-checked during training (threads.py, issue 22).

One more lives in the model (model/attention.py, JointFeatures): under CPU bf16 autocast JF's
T x T attention is computed in fp32, because ATen's bf16 flash-attention backward on the CPU is
several times slower than its fp32 one at those shapes (A/B in one process, autocast on,
2 threads: full NTU AMANet N=4 T=64 step 0.964 -> 0.883 s; demo model 1 thread 0.470 -> 0.422 s).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from . import threads as threads_mod

__all__ = ["CpuRuntime", "cpu_bf16_native", "configure_allocator", "default_threads", "apply_cpu_defaults",
           "prepare_model"]

logger = logging.getLogger("amanet_fast.training")

# glibc <malloc.h> parameter numbers.
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4
_TOP_PAD_BYTES = 64 << 20  # grow the heap in 64 MiB steps: fewer brk calls for step-sized tensors

_CPUINFO = Path("/proc/cpuinfo")
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_allocator_state: str | None = None


def _cpu_flags(cpuinfo: Path = _CPUINFO) -> set[str]:
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_bf16_native(cpuinfo: Path = _CPUINFO) -> tuple[bool, str]:
    """Whether this CPU does bf16 arithmetic in hardware, and the evidence (flag names or why not)."""
    flags = _cpu_flags(cpuinfo)
    found = [f for f in _BF16_FLAGS if f in flags]
    if found:
        return True, "cpu flags " + "+".join(found)
    if not flags:
        # No /proc/cpuinfo (macOS, Windows): ask ATen which kernels it dispatched to. Its
        # capability names the vector width only, so bf16 support stays unknown -> fp32.
        return False, f"no /proc/cpuinfo (ATen capability {torch.backends.cpu.get_cpu_capability()})"
    return False, "no amx_bf16 / avx512_bf16 cpu flag"


def configure_allocator() -> str:
    """Make glibc malloc keep freed memory instead of returning it to the kernel; idempotent.

    Returns what was done, for the log. A no-op (said so) on other C libraries or when
    AMANET_KEEP_MALLOC=1 asks to leave the allocator alone.
    """
    global _allocator_state
    if _allocator_state is not None:
        return _allocator_state
    if os.environ.get("AMANET_KEEP_MALLOC") == "1":
        _allocator_state = "glibc malloc unchanged (AMANET_KEEP_MALLOC=1)"
        return _allocator_state
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _allocator_state = f"allocator unchanged (libc {platform.libc_ver()[0] or 'unknown'}, not glibc)"
        return _allocator_state
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1), (_M_TOP_PAD, _TOP_PAD_BYTES))
    failed = [str(p) for p, v in settings if libc.mallopt(ctypes.c_int(p), ctypes.c_int(v)) != 1]
    if failed:
        _allocator_state = f"glibc mallopt failed for parameters {', '.join(failed)}: allocator partly unchanged"
        logger.warning(_allocator_state)
    else:
        _allocator_state = "glibc malloc keeps freed memory (mallopt: mmap off, trim off, top pad 64 MiB)"
    return _allocator_state


def default_threads(local_world_size: int = 1) -> int:
    """Intra-op threads per process: the usable cores shared among this node's processes."""
    return max(1, len(threads_mod.usable_cores()) // max(1, local_world_size))


@dataclass(frozen=True)
class CpuRuntime:
    threads: int
    threads_source: str
    allocator: str
    bf16_native: bool
    bf16_evidence: str
    adaptive: bool = False  # ThreadGovernor may change `threads` during training

    def describe(self) -> str:
        return (f"cpu runtime: {self.threads} intra-op threads ({self.threads_source}); {self.allocator}; "
                f"native bf16 {'yes' if self.bf16_native else 'no'} ({self.bf16_evidence})")


def _choose_threads(threads: int | None, local_world_size: int, device_type: str) -> tuple[int, str, bool]:
    """(threads, why, whether ThreadGovernor may change them)."""
    if threads:
        return int(threads), "runtime.threads; fixed", False
    cores = len(threads_mod.usable_cores())
    usable = f"{cores} usable core{'s' if cores != 1 else ''}"
    if local_world_size > 1:
        # Each rank would count the others as load; the ranks share the cores evenly instead.
        return default_threads(local_world_size), f"{usable} / {local_world_size} local processes; fixed", False
    if device_type != "cpu":
        return cores, f"{usable}; fixed, the model runs on {device_type}", False
    others = threads_mod.measure_other_load(threads_mod.LoadProbe())
    if others is None:
        return cores, f"{usable}; load of other processes unknown (no /proc/stat): fixed", False
    n = threads_mod.choose_threads(cores, others)
    measured = f"{usable}, {others:.1f} busy with other processes over {threads_mod.STARTUP_WINDOW_S} s"
    if cores == 1:
        return n, f"{measured}; fixed, nothing to choose", False
    return n, f"{measured}; re-checked when throughput collapses", True


def apply_cpu_defaults(threads: int | None, local_world_size: int = 1, device_type: str = "cpu") -> CpuRuntime:
    """Set the process-wide CPU defaults once at start-up and say what was set."""
    n, source, adaptive = _choose_threads(threads, local_world_size, device_type)
    torch.set_num_threads(n)
    native, evidence = cpu_bf16_native()
    return CpuRuntime(n, source, configure_allocator(), native, evidence, adaptive)


def prepare_model(model: torch.nn.Module, device: torch.device, autocast_dtype: torch.dtype | None) -> str:
    """Channels-last 2D conv weights for bf16 on the CPU (the convs then pick oneDNN's NHWC
    kernels); fp32 and CUDA models are left as built. Returns the memory format, for the log."""
    if device.type != "cpu" or autocast_dtype != torch.bfloat16:
        return "NCHW"
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=torch.channels_last)
    return "channels-last conv weights"
