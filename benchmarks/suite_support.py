"""Plumbing of `python -m benchmarks.gpu_suite` that has nothing to do with
attention or models: time budgets, out-of-memory handling, timing, the
kernel-test verdict, the environment record and the atomic results folder.
Kept apart so tests can exercise each rule without running the suite."""
from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from amanet_fast.atomic import write_json_atomic, write_text_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- time budget


class BudgetExceeded(BaseException):
    """Raised by `time_limit` when an item outruns its share of the budget.

    A BaseException, like KeyboardInterrupt, so library code that catches
    Exception (inductor, dynamo) lets it through instead of wrapping it."""


class Budget:
    """A wall-clock budget for the whole run, shared out to sections by weight:
    a section gets remaining * weight / (its weight + the weights of the sections
    after it), so time an early section leaves unused flows to later ones."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.end = self.start + total_s

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return max(0.0, self.end - self.clock())

    def section(self, weight: float, later_weights: float) -> "Deadline":
        share = self.left() * weight / (weight + later_weights) if weight > 0 else 0.0
        return Deadline(self.clock() + share, self.clock)


@dataclass
class Deadline:
    end: float
    clock: Callable[[], float] = time.monotonic

    def left(self) -> float:
        return max(0.0, self.end - self.clock())


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the body with BudgetExceeded after `seconds` (SIGALRM; Python
    code only notices between bytecodes, so a single long native call finishes
    first). Off the main thread or without SIGALRM the body runs unbounded."""
    if seconds <= 0:
        raise BudgetExceeded("no time left in this section")
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def _alarm(signum, frame):
        raise BudgetExceeded(f"exceeded its {seconds:.0f} s time limit")

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def budget_exceeded_in(error: BaseException) -> BudgetExceeded | None:
    """The BudgetExceeded behind `error`, also when a library re-raised it wrapped."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, BudgetExceeded):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# ----------------------------------------------------------------------------- out of memory


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


_STICKY_CUDA_ERRORS = ("illegal memory access", "device-side assert", "unspecified launch failure",
                       "misaligned address", "illegal instruction")


def breaks_cuda_context(error: BaseException) -> bool:
    """Errors after which every later CUDA call in this process fails too."""
    text = str(error)
    return any(marker in text for marker in _STICKY_CUDA_ERRORS)


def release_memory() -> None:
    """Give cached GPU blocks back (after an OOM or a large case). On the CPU
    reference counting already freed the tensors; a full gc pass would only cost time."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


_memory_fraction: float | None = None  # set by limit_memory: the allocator's cap as a share of the card


def free_memory_bytes(device: torch.device) -> int | None:
    """What the allocator can still get: free device memory plus its own cached
    blocks, capped by a per-process fraction if one was set; None on CPU."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    fraction = _memory_fraction
    if fraction is not None:
        free = min(free, int(fraction * total) - torch.cuda.memory_allocated(device))
    return max(0, free)


def limit_memory(device: torch.device, limit_gib: float) -> float:
    """Make the caching allocator fail past `limit_gib` (emulates a smaller card). Returns the fraction."""
    global _memory_fraction
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, limit_gib * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    _memory_fraction = fraction
    return fraction


def first_line(error: BaseException, limit: int = 240) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text[:limit]}"


# ----------------------------------------------------------------------------- timing


def bench_ms(fn: Callable[[], Any], device: torch.device, *, warmup_ms: float, rep_ms: float,
             min_reps: int = 3, max_reps: int = 200) -> dict[str, float]:
    """Median and 20/80th percentiles of fn's time in ms, after warm-up.

    CUDA: triton.testing.do_bench (CUDA events, L2 flushed between calls).
    CPU: perf_counter around each call; at least `min_reps` calls."""
    if device.type == "cuda":
        import triton.testing

        p50, p20, p80 = triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
        return {"ms": float(p50), "p20_ms": float(p20), "p80_ms": float(p80)}
    start = time.perf_counter()
    while (time.perf_counter() - start) * 1e3 < warmup_ms:
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or ((time.perf_counter() - start) * 1e3 < rep_ms and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    qs = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return {"ms": statistics.median(times), "p20_ms": qs[1], "p80_ms": qs[7], "reps": len(times)}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- kernel tests


@dataclass
class KernelTestOutcome:
    """What one pytest run of the kernel tests produced (parsed from its JUnit XML)."""

    returncode: int | None
    timed_out: bool = False
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (test, reason)
    xfailed: list[str] = field(default_factory=list)
    junit_found: bool = True
    deselected: int = 0  # by -m / -k (pytest's summary line; JUnit does not list them)

    def counts(self) -> dict[str, int]:
        return {"passed": len(self.passed), "failed": len(self.failed), "errors": len(self.errors),
                "skipped": len(self.skipped), "xfailed": len(self.xfailed)}


def parse_junit(path: Path, returncode: int | None, timed_out: bool = False) -> KernelTestOutcome:
    outcome = KernelTestOutcome(returncode=returncode, timed_out=timed_out)
    if not path.is_file():
        outcome.junit_found = False
        return outcome
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        outcome.junit_found = False
        return outcome
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None:
            outcome.failed.append(name)
        elif case.find("error") is not None:
            outcome.errors.append(name)
        elif (skip := case.find("skipped")) is not None:
            if skip.get("type") == "pytest.xfail":
                outcome.xfailed.append(name)
            else:
                outcome.skipped.append((name, skip.get("message") or (skip.text or "").strip()))
        else:
            outcome.passed.append(name)
    return outcome


def kernel_tests_verdict(outcome: KernelTestOutcome, *, on_cuda: bool,
                         required: Sequence[str] = ()) -> tuple[bool, list[str]]:
    """(passed, reasons). On CUDA the kernel tests must run, every one of them:
    a skip there means a GPU-only check (bf16, model-size shapes) did not happen,
    so it fails the suite like a failing test. Each regex in `required` must match
    at least one passed test (e.g. bf16 cases must have run). Off CUDA (--smoke)
    skips are expected (bf16 cannot run in the interpreter) and only reported."""
    reasons: list[str] = []
    if outcome.timed_out:
        reasons.append("kernel tests did not finish within their time budget")
    if not outcome.junit_found:
        reasons.append(f"no test report was produced (pytest exit status {outcome.returncode})")
    else:
        total = sum(outcome.counts().values())
        if total == 0:
            reasons.append("no kernel test was collected")
        if outcome.failed:
            reasons.append(f"{len(outcome.failed)} failed: " + ", ".join(outcome.failed[:10]))
        if outcome.errors:
            reasons.append(f"{len(outcome.errors)} errors: " + ", ".join(outcome.errors[:10]))
        if on_cuda and outcome.skipped:
            listed = "; ".join(f"{name} ({reason})" for name, reason in outcome.skipped[:10])
            reasons.append(f"{len(outcome.skipped)} skipped on CUDA (a skip is a failure here): {listed}")
        if on_cuda:
            for pattern in required:
                if not any(re.search(pattern, name) for name in outcome.passed):
                    reasons.append(f"no passed kernel test matches {pattern!r}")
        if not reasons and outcome.returncode not in (0, None):
            reasons.append(f"pytest exited with status {outcome.returncode}")
    return not reasons, reasons


def run_kernel_tests(args: Sequence[str], *, timeout_s: float, on_cuda: bool, workdir: Path,
                     log_limit: int = 60_000) -> tuple[KernelTestOutcome, str, list[str]]:
    """Run pytest in a subprocess (its own process group, killed at the deadline).
    Returns the outcome, the tail of its output and the command line."""
    junit = workdir / "kernel_tests.junit.xml"
    cmd = [sys.executable, "-m", "pytest", *args, "-q", "-rA",
           "-p", "no:cacheprovider", f"--junitxml={junit}"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if on_cuda:
        env.pop("TRITON_INTERPRET", None)  # compiled kernels on the GPU, never the interpreter
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)  # pytest and whatever it started, nothing else
        output, _ = proc.communicate()
    outcome = parse_junit(junit, proc.returncode, timed_out)
    junit.unlink(missing_ok=True)
    output = output or ""
    deselected = re.findall(r"(\d+) deselected", output)
    outcome.deselected = int(deselected[-1]) if deselected else 0
    if len(output) > log_limit:
        output = f"[... {len(output) - log_limit} characters cut ...]\n" + output[-log_limit:]
    return outcome, output, cmd


# ----------------------------------------------------------------------------- environment


def _run(cmd: Sequence[str], timeout: float = 10.0) -> str | None:
    try:
        done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_commit() -> dict[str, Any]:
    commit = _run(["git", "rev-parse", "HEAD"])
    if commit is None:  # a copy of the tree without .git (e.g. a device machine)
        commit = os.environ.get("AMANET_GIT_COMMIT") or None
        return {"commit": commit, "dirty": None,
                "source": "AMANET_GIT_COMMIT" if commit else "unknown: no git repository here"}
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(status) if status is not None else None, "source": "git"}


def environment(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
        "git": git_commit(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device=props.name,
            capability=f"sm_{props.major}{props.minor}",
            sm_count=props.multi_processor_count,
            gpu_memory_GiB=round(props.total_memory / 2**30, 1),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
        smi = _run(["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,power.limit",
                    "--format=csv,noheader", "-i", str(device.index or 0)])
        if smi:
            driver, clock, power = (part.strip() for part in (smi.split(",") + ["", ""])[:3])
            info.update(driver=driver, max_sm_clock=clock, power_limit=power)
        else:
            info["driver"] = None
            info["driver_note"] = "nvidia-smi not available"
    return info


def device_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "unknown"


def utc_stamp() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# ----------------------------------------------------------------------------- results folder


class ResultsFolder:
    """One results folder written atomically: files go to `<final>.partial/`
    (each file itself replaced atomically after every section, so a run killed
    at its limit still leaves what it measured) and the folder is renamed to
    `<final>` when the run ends."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.staging = final.with_name(final.name + ".partial")
        if self.staging.exists():
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)

    def write(self, files: dict[str, str | dict]) -> None:
        for name, content in files.items():
            if isinstance(content, dict):
                write_json_atomic(self.staging / name, content)
            else:
                write_text_atomic(self.staging / name, content)

    def commit(self) -> Path:
        if self.final.is_dir() and not any(self.final.iterdir()):
            try:
                os.replace(self.staging, self.final)  # rename(2) may replace an empty folder
            except OSError:  # e.g. the empty folder is a mount point: move the files one by one
                for item in self.staging.iterdir():
                    os.replace(item, self.final / item.name)
                self.staging.rmdir()
        else:
            os.replace(self.staging, self.final)
        return self.final


def check_out_dir(path: Path) -> str | None:
    """None if `path` can receive a results folder, else what is wrong with it."""
    if path.exists() and not path.is_dir():
        return "expected a directory path, found a file"
    if path.is_dir() and any(path.iterdir()):
        return "expected a new or empty directory (results are never mixed into an existing folder)"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        return f"{parent} is not writable"
    return None
