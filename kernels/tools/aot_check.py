"""Ahead-of-time GPU builds of every Triton kernel config, with a resource report.

Why: CI and most sessions have no GPU, and the Triton interpreter accepts code the
GPU compiler rejects (dot tiles below 16, non-power-of-two ranges) while saying
nothing about registers, spills or shared memory. Triton can lower a kernel all the
way to a cubin for a chosen GPU architecture on a CPU-only machine; this module does
that for every `KernelSpec` kernels/tools/specs.py enumerates, reads the resources the cubin
needs (ptxas -v log + `cuobjdump --dump-resource-usage`), and computes the
theoretical occupancy on sm_80 (A100), sm_86 (RTX 3090) and sm_90 (H100).

    python -m kernels.tools.aot_check [--targets 80,86,90] [--json PATH] [--markdown PATH]
                                [--filter SUBSTR] [--jobs 2] [--specs MODULE:FUNC ...]

Exit status 0 when every (config, target) compiles, does not spill and fits the
target's per-block shared memory; 1 otherwise (failures are listed); 2 on bad usage.

Compilation never runs under TRITON_INTERPRET=1: kernels are imported afresh in
worker processes whose environment has the flag removed, and the Triton cache points
at a temporary directory that is deleted afterwards (nothing is reused across runs).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import importlib
import io
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from .specs import KernelSpec, specialize_like_jit  # noqa: F401  (specialize_like_jit: re-exported)

DEFAULT_SPEC_SOURCES: tuple[str, ...] = (
    "kernels.tools.specs:window_specs",
    "kernels.tools.specs:frame_group_specs",
)
DEFAULT_TARGETS: tuple[int, ...] = (80, 86, 90)
WARP_SIZE = 32
KIB = 1024


# --------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class TargetLimits:
    """Per-SM hardware limits that decide whether and how densely a kernel fits."""

    arch: int
    example_gpu: str
    max_warps_per_sm: int
    max_blocks_per_sm: int
    smem_per_sm: int  # largest shared-memory carve-out per SM, bytes
    smem_per_block_optin: int  # largest static+dynamic shared memory one block may request
    regs_per_sm: int = 65536
    regs_per_block: int = 65536
    max_regs_per_thread: int = 255
    reg_alloc_unit: int = 256  # registers are allocated per warp in chunks of 256
    register_sub_partitions: int = 4  # each SM quarter has its own register file slice
    smem_alloc_unit: int = 128
    smem_reserved_per_block: int = 1 * KIB  # the driver reserves 1 KiB per block (sm_80+)


TARGETS: dict[int, TargetLimits] = {
    80: TargetLimits(80, "A100", max_warps_per_sm=64, max_blocks_per_sm=32,
                     smem_per_sm=164 * KIB, smem_per_block_optin=163 * KIB),
    86: TargetLimits(86, "RTX 3090", max_warps_per_sm=48, max_blocks_per_sm=16,
                     smem_per_sm=100 * KIB, smem_per_block_optin=99 * KIB),
    90: TargetLimits(90, "H100", max_warps_per_sm=64, max_blocks_per_sm=32,
                     smem_per_sm=228 * KIB, smem_per_block_optin=227 * KIB),
}


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def occupancy(limits: TargetLimits, regs_per_thread: int, smem_per_block: int,
              num_warps: int) -> dict[str, Any]:
    """Theoretical occupancy the way the CUDA occupancy calculator computes it.

    Registers go to warps in 256-register chunks and each of the 4 SM sub-partitions
    holds whole warps; shared memory per block includes the driver's 1 KiB reservation
    and is rounded to 128 bytes; the result is the tightest of the register, shared
    memory, warp-slot and block-slot limits.
    """
    if num_warps < 1:
        raise ValueError(f"num_warps must be >= 1, got {num_warps}")
    regs_per_warp = _round_up(max(regs_per_thread, 1) * WARP_SIZE, limits.reg_alloc_unit)
    regs_checked_per_block = regs_per_warp * _round_up(num_warps, limits.register_sub_partitions)
    if regs_per_thread > limits.max_regs_per_thread or regs_checked_per_block > limits.regs_per_block:
        by_regs = 0
    else:
        warps_per_partition = (limits.regs_per_sm // limits.register_sub_partitions) // regs_per_warp
        by_regs = warps_per_partition * limits.register_sub_partitions // num_warps
    smem_alloc = _round_up(smem_per_block + limits.smem_reserved_per_block, limits.smem_alloc_unit)
    by_smem = limits.smem_per_sm // smem_alloc if smem_per_block <= limits.smem_per_block_optin else 0
    by_warps = limits.max_warps_per_sm // num_warps
    limits_by = {"registers": by_regs, "shared": by_smem, "warps": by_warps,
                 "blocks": limits.max_blocks_per_sm}
    blocks = min(limits_by.values())
    warps = blocks * num_warps
    # Name every limit that binds; at full occupancy nothing is holding the kernel back.
    limiter = "full" if warps == limits.max_warps_per_sm else "+".join(
        k for k, v in limits_by.items() if v == blocks)
    return {"blocks_per_sm": blocks, "warps_per_sm": warps,
            "occupancy": warps / limits.max_warps_per_sm, "limiter": limiter}


# --------------------------------------------------------------------------- parsing
_CUOBJDUMP_FUNCTION = re.compile(r"^\s*Function\s+(\S+?):?\s*$")
_CUOBJDUMP_FIELD = re.compile(r"([A-Z_]+(?:\[\d+\])?):(\d+)")
_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILLS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_cuobjdump_resources(text: str) -> dict[str, dict[str, int]]:
    """`cuobjdump --dump-resource-usage` output -> {function: {REG, SHARED, LOCAL, STACK, ...}}."""
    functions: dict[str, dict[str, int]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _CUOBJDUMP_FUNCTION.match(line)
        if match:
            current = match.group(1)
            continue
        if current is not None and "REG:" in line:
            functions[current] = {key: int(val) for key, val in _CUOBJDUMP_FIELD.findall(line)}
            current = None
    return functions


def parse_ptxas_log(text: str) -> dict[str, int]:
    """ptxas -v log of one entry function -> registers, stack frame, spill bytes."""
    out: dict[str, int] = {}
    regs = _PTXAS_REGS.search(text)
    if regs:
        out["registers"] = int(regs.group(1))
    spills = _PTXAS_SPILLS.search(text)
    if spills:
        out["stack_frame"], out["spill_stores"], out["spill_loads"] = map(int, spills.groups())
    return out


# --------------------------------------------------------------------------- spec loading
def parse_spec_source(source: str) -> tuple[str, str]:
    module, sep, func = source.partition(":")
    if not sep or not module or not func:
        raise ValueError(f"--specs expects MODULE:FUNCTION (e.g. kernels.tools.specs:window_specs), got {source!r}")
    return module, func


def load_specs(sources: Sequence[str]) -> list[KernelSpec]:
    """Import each MODULE:FUNCTION and collect its KernelSpecs, checking the contract."""
    specs: list[KernelSpec] = []
    for source in sources:
        module_name, func_name = parse_spec_source(source)
        module = importlib.import_module(module_name)
        func = getattr(module, func_name, None)
        if func is None:
            raise LookupError(f"{module_name} has no {func_name}(): the module must expose it "
                              f"(see kernels/tools/specs.py)")
        produced = list(func())
        if not produced:
            raise ValueError(f"{source} returned no KernelSpec: nothing to build")
        for spec in produced:
            if not isinstance(spec, KernelSpec):
                raise TypeError(f"{source} must return KernelSpec objects, got {type(spec).__name__}")
        specs.extend(produced)
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"KernelSpec names must be unique; repeated: {duplicates}")
    return specs


def _require_jit_function(spec: KernelSpec) -> Any:
    from triton.runtime.jit import JITFunction

    if isinstance(spec.fn, JITFunction):
        return spec.fn
    kind = type(spec.fn).__name__
    hint = (" (the module was imported with TRITON_INTERPRET=1; aot_check must import kernels "
            "in a process without it)") if kind == "InterpretedFunction" else ""
    raise TypeError(f"{spec.name}: fn must be a @triton.jit JITFunction, got {kind}{hint}")


def full_signature(spec: KernelSpec, arg_names: Sequence[str]) -> dict[str, str]:
    """The JIT's own signature form: every parameter, constexprs marked "constexpr"."""
    unknown = sorted((set(spec.signature) | set(spec.constexprs)) - set(arg_names))
    if unknown:
        raise ValueError(f"{spec.name}: signature/constexprs name unknown parameters {unknown}; "
                         f"the kernel takes {list(arg_names)}")
    both = sorted(set(spec.signature) & set(spec.constexprs))
    if both:
        raise ValueError(f"{spec.name}: {both} appear in both signature and constexprs")
    missing = [a for a in arg_names if a not in spec.signature and a not in spec.constexprs]
    if missing:
        raise ValueError(f"{spec.name}: no type or constexpr value for parameters {missing}")
    return {a: "constexpr" if a in spec.constexprs else spec.signature[a] for a in arg_names}


def pointer_alignment_attrs(signature: dict[str, str], spec: KernelSpec) -> dict[tuple[int, ...], list]:
    """Divisibility hints the runtime JIT would derive for 16-byte aligned tensors.

    At launch Triton marks a pointer argument (and an integer divisible by 16) with
    tt.divisibility=16, which enables vectorized memory access and changes register
    use. torch allocations are 16-byte aligned, so every pointer gets the hint; integer
    arguments only when the spec lists them in meta["divisible_by_16"].
    """
    divisible_ints = set(spec.meta.get("divisible_by_16", ()))
    attrs: dict[tuple[int, ...], list] = {}
    for index, (name, ty) in enumerate(signature.items()):
        if ty.startswith("*") or name in divisible_ints:
            attrs[(index,)] = [["tt.divisibility", 16]]
    return attrs


# --------------------------------------------------------------------------- worker side
_WORKER_SPECS: dict[str, KernelSpec] = {}


def _exit_when_orphaned(parent_pid: int) -> None:
    # A killed parent (CI timeout, Ctrl-C) must not leave workers compiling for minutes.
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def _worker_init(spec_sources: Sequence[str], parent_pid: int) -> None:
    if os.environ.get("TRITON_INTERPRET"):
        raise RuntimeError("aot_check worker started with TRITON_INTERPRET set")
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), daemon=True).start()
    warnings.filterwarnings("ignore", message="TRITON_DEFAULT_FP_FUSION")
    _WORKER_SPECS.update({s.name: s for s in load_specs(spec_sources)})


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    # ptxas failures carry the whole PTX; keep the message and the ptxas stderr only.
    text = text.split("Repro command:")[0].strip()
    return text if len(text) <= 2000 else text[:2000] + " ..."


def _cubin_resources(cubin: bytes, kernel_name: str) -> dict[str, int]:
    from triton import knobs

    with tempfile.TemporaryDirectory(prefix="aot_cubin_") as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        done = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", str(path)],
                              capture_output=True, text=True, check=True)
    functions = parse_cuobjdump_resources(done.stdout)
    if kernel_name not in functions:
        raise RuntimeError(f"cuobjdump lists {sorted(functions)} but not kernel {kernel_name!r}")
    return functions[kernel_name]


def compile_one(spec_name: str, arch: int) -> dict[str, Any]:
    """Build one spec for one target in this (worker) process and measure it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    spec = _WORKER_SPECS.get(spec_name)
    if spec is None:
        return {"name": spec_name, "arch": arch, "ok": False, "compile_s": 0.0,
                "error": f"the worker's spec sources did not produce {spec_name!r}: the spec list must be "
                         f"deterministic (or a kernel source file changed during the run)"}
    row: dict[str, Any] = {"name": spec.name, "arch": arch, "kernel": None,
                           "num_warps": spec.num_warps, "num_stages": spec.num_stages,
                           "meta": {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                                    for k, v in spec.meta.items()},
                           "constexprs": {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                                          for k, v in spec.constexprs.items()}}
    start = time.perf_counter()
    log = io.StringIO()
    try:
        fn = _require_jit_function(spec)
        row["kernel"] = fn.__name__
        row["source_key"] = fn.cache_key[:16]  # Triton's hash of the kernel and the jit functions it calls
        signature = full_signature(spec, fn.arg_names)
        source = ASTSource(fn, signature, dict(spec.constexprs), pointer_alignment_attrs(signature, spec))
        with contextlib.redirect_stdout(log):  # TRITON_DUMP_PTXAS_LOG prints the ptxas -v log
            compiled = triton.compile(source, target=GPUTarget("cuda", arch, WARP_SIZE),
                                      options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})
        cubin_name = compiled.metadata.name
        resources = _cubin_resources(compiled.asm["cubin"], cubin_name)
        ptxas = parse_ptxas_log(log.getvalue())
        if "REG" not in resources:
            raise RuntimeError(f"cuobjdump reported no register count for {cubin_name}: {resources}")
    except Exception as exc:  # every failure is reported per (spec, target), never swallowed
        row.update(ok=False, error=_short_error(exc), compile_s=round(time.perf_counter() - start, 3))
        return row
    row.update(
        ok=True, error=None, compile_s=round(time.perf_counter() - start, 3),
        registers=resources["REG"],
        ptxas_registers=ptxas.get("registers"),
        shared_static=resources.get("SHARED", 0),
        shared_dynamic=int(compiled.metadata.shared),
        local_bytes=resources.get("LOCAL", 0),
        stack_bytes=resources.get("STACK", 0),
        spill_stores=ptxas.get("spill_stores"),
        spill_loads=ptxas.get("spill_loads"),
        ptxas_log_found=bool(ptxas),
    )
    return row


# --------------------------------------------------------------------------- verdicts
def evaluate(row: dict[str, Any]) -> dict[str, Any]:
    """Attach occupancy and the list of problems that make this build unacceptable."""
    problems: list[str] = []
    if not row.get("ok"):
        row["problems"] = [f"compile failed: {row.get('error')}"]
        return row
    limits = TARGETS[row["arch"]]
    smem = row["shared_static"] + row["shared_dynamic"]
    row["shared_bytes"] = smem
    row.update(occupancy(limits, row["registers"], smem, row["num_warps"]))
    if (row.get("spill_stores") or 0) > 0 or (row.get("spill_loads") or 0) > 0:
        problems.append(f"spills registers ({row['spill_stores']} B stored, {row['spill_loads']} B loaded)")
    if row["local_bytes"] > 0 or row["stack_bytes"] > 0:
        problems.append(f"uses local memory (LOCAL {row['local_bytes']} B, STACK {row['stack_bytes']} B)")
    if smem > limits.smem_per_block_optin:
        problems.append(f"needs {smem / KIB:.1f} KiB shared memory, sm_{limits.arch} allows "
                        f"{limits.smem_per_block_optin // KIB} KiB per block")
    elif row["blocks_per_sm"] == 0:
        problems.append(f"cannot be resident on sm_{limits.arch} (limited by {row['limiter']})")
    row["problems"] = problems
    return row


# --------------------------------------------------------------------------- orchestration
@contextlib.contextmanager
def _compile_environment(cache_dir: str) -> Iterator[None]:
    """Environment inherited by the spawned workers: no interpreter, private cache, ptxas log."""
    wanted = {"TRITON_INTERPRET": None, "TRITON_CACHE_DIR": cache_dir, "TRITON_DUMP_PTXAS_LOG": "1"}
    saved = {key: os.environ.get(key) for key in wanted}
    try:
        for key, value in wanted.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class SpecCollectionError(RuntimeError):
    """A spec source could not be imported or broke the KernelSpec contract."""


def _list_spec_names(spec_sources: Sequence[str]) -> list[str]:
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(_spec_names_in_fresh_process, list(spec_sources)).result(timeout=600)
        except Exception as exc:
            raise SpecCollectionError(f"{type(exc).__name__}: {exc}") from exc


def _list_spec_names_with_environment(spec_sources: Sequence[str]) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="aot_triton_cache_") as cache_dir, _compile_environment(cache_dir):
        return _list_spec_names(spec_sources)


def _spec_names_in_fresh_process(spec_sources: list[str]) -> list[str]:
    return [s.name for s in load_specs(spec_sources)]


def _tool_versions() -> dict[str, str]:
    """The CUDA tools that produced the numbers (ptxas for sm_8x, ptxas-blackwell for sm_90)."""
    from triton import knobs

    versions = {}
    for name, tool in (("ptxas", knobs.nvidia.ptxas), ("ptxas-blackwell", knobs.nvidia.ptxas_blackwell),
                       ("cuobjdump", knobs.nvidia.cuobjdump)):
        try:
            out = subprocess.run([tool.path, "--version"], capture_output=True, text=True, check=True).stdout
            versions[name] = out.strip().splitlines()[-1]
        except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
            versions[name] = f"unavailable: {exc}"
    return versions


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so workers are stopped and the temporary cache removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate_pool(pool: cf.ProcessPoolExecutor) -> None:
    # The executor has no public way to stop running tasks; its worker table is stable since 3.8.
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)


def split_selection(entry: str) -> tuple[str, int | None]:
    """"NAME" selects a spec on every target, "NAME@sm_90" on one target only."""
    name, sep, arch = entry.rpartition("@sm_")
    if sep and arch.isdigit() and int(arch) in TARGETS:
        return name, int(arch)
    return entry, None


def run_check(spec_sources: Sequence[str] = DEFAULT_SPEC_SOURCES, targets: Sequence[int] = DEFAULT_TARGETS,
              name_filter: str | None = None, jobs: int = 2, progress: bool = True,
              only_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Compile every selected (spec, target) pair in `jobs` worker processes.

    Selection: names containing `name_filter` and, when given, listed in `only_names`
    ("NAME" or "NAME@sm_XX"; a listed name the spec sources do not produce is an error,
    not a silent skip).
    """
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise ValueError(f"targets must be among {sorted(TARGETS)}, got {unknown}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    wanted: dict[str, set[int]] | None = None
    if only_names is not None:
        wanted = {}
        for entry in only_names:
            name, arch = split_selection(entry)
            wanted.setdefault(name, set()).update(targets if arch is None else {arch})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aot_triton_cache_", ignore_cleanup_errors=True) as cache_dir, \
            _compile_environment(cache_dir), _sigterm_as_exit():
        names = _list_spec_names(spec_sources)
        if wanted is not None:
            missing = sorted(set(wanted) - set(names))
            if missing:
                raise SpecCollectionError(f"requested spec names not produced by {list(spec_sources)}: {missing}")
        selected = [n for n in names if (name_filter is None or name_filter in n)
                    and (wanted is None or n in wanted)]
        pairs = [(n, t) for n in selected for t in targets if wanted is None or t in wanted[n]]
        rows: list[dict[str, Any]] = []
        context = multiprocessing.get_context("spawn")
        pool = cf.ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init,
                                      initargs=(list(spec_sources), os.getpid()))
        try:
            futures = {pool.submit(compile_one, n, t): (n, t) for n, t in pairs}
            for done_count, future in enumerate(cf.as_completed(futures), 1):
                name, arch = futures[future]
                try:
                    row = future.result()
                except Exception as exc:  # a crashed worker still yields a failed row
                    row = {"name": name, "arch": arch, "ok": False, "error": _short_error(exc)}
                rows.append(evaluate(row))
                if progress:
                    status = "ok" if not row["problems"] else "FAIL: " + row["problems"][0].splitlines()[0][:120]
                    print(f"[{done_count}/{len(pairs)}] sm_{arch} {name}: {status} "
                          f"({row.get('compile_s', 0):.1f}s)", file=sys.stderr, flush=True)
        except BaseException:
            _terminate_pool(pool)
            raise
        pool.shutdown(wait=True)
    order = {(n, t): i for i, (n, t) in enumerate(pairs)}
    rows.sort(key=lambda r: order[(r["name"], r["arch"])])
    import triton

    return {
        "triton_version": triton.__version__,
        "tools": _tool_versions(),
        "spec_sources": list(spec_sources),
        "targets": {f"sm_{t}": asdict(TARGETS[t]) for t in targets},
        "filter": name_filter,
        "only_names": None if only_names is None else sorted(only_names),
        "complete": name_filter is None and only_names is None,
        "jobs": jobs,
        "num_specs": len({n for n, _ in pairs}),
        "num_builds": len(pairs),
        "wall_s": round(time.perf_counter() - started, 2),
        "sum_compile_s": round(sum(r.get("compile_s", 0.0) for r in rows), 2),
        "failures": sum(1 for r in rows if r["problems"]),
        "results": rows,
    }


def heaviest_configs(previous: dict[str, Any], current_names: Sequence[str]) -> list[str]:
    """(spec, target) selections a quick check should rebuild: those closest to the limits.

    From a previous complete report, per (kernel, target): the config with the most
    registers, the one with the most shared memory and, if any config failed there, the
    failing one that compiled fastest (it keeps the check red until the kernel is fixed,
    at the lowest cost); plus every current name the report does not know (on every
    target). The full matrix stays the reference; this subset is what a CI budget of a
    few minutes affords. Entries are "NAME@sm_XX" or, for new names, "NAME".
    """
    if not previous.get("complete"):
        raise ValueError("heaviest_configs needs a report of a complete run (no --filter/--only-names)")
    present = set(current_names)
    known = {r["name"] for r in previous["results"]}
    chosen = {n for n in current_names if n not in known}
    built: dict[tuple[str, int], list[dict[str, Any]]] = {}
    failed: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in previous["results"]:
        if row["name"] not in present:
            continue
        key = (row.get("kernel") or row["name"], row["arch"])
        if row.get("problems"):
            failed.setdefault(key, []).append(row)
        if row.get("ok"):
            built.setdefault(key, []).append(row)
    for rows in built.values():
        # Ties (e.g. several configs at the 255-register ceiling) go to the cheaper build.
        for pick in (max(rows, key=lambda r: (r["registers"], r["shared_bytes"], -(r.get("compile_s") or 0.0))),
                     max(rows, key=lambda r: (r["shared_bytes"], r["registers"], -(r.get("compile_s") or 0.0)))):
            chosen.add(f"{pick['name']}@sm_{pick['arch']}")
    for rows in failed.values():
        pick = min(rows, key=lambda r: r.get("compile_s") or 0.0)
        chosen.add(f"{pick['name']}@sm_{pick['arch']}")
    return sorted(chosen)


# --------------------------------------------------------------------------- reporting
def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "-"
    if not row.get("ok"):
        return "BUILD FAILED"
    text = (f"{row['registers']} reg, {row['shared_bytes'] / KIB:.1f} KiB, "
            f"{row['occupancy'] * 100:.0f}% ({row['limiter']})")
    return text + (" **" + "; ".join(row["problems"]) + "**" if row["problems"] else "")


def format_table(report: dict[str, Any], markdown: bool = False) -> str:
    """One line per spec, one column per target: regs/thread, shared/block, occupancy (limiter)."""
    targets = [int(t.removeprefix("sm_")) for t in report["targets"]]
    by_key = {(r["name"], r["arch"]): r for r in report["results"]}
    names = list(dict.fromkeys(r["name"] for r in report["results"]))
    header = ["kernel config", "warps", "stages"] + [f"sm_{t} ({TARGETS[t].example_gpu})" for t in targets]
    lines = []
    for name in names:
        first = next(r for r in report["results"] if r["name"] == name)
        lines.append([name, str(first.get("num_warps", "-")), str(first.get("num_stages", "-"))]
                     + [_cell(by_key.get((name, t))) for t in targets])
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(cells) + " |" for cells in lines]
        return "\n".join(out)
    widths = [max(len(c[i]) for c in [header] + lines) for i in range(len(header))]
    render = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([render(header), render(["-" * w for w in widths])] + [render(c) for c in lines])


def format_summary(report: dict[str, Any]) -> str:
    """Markdown: per kernel function and target, the range of registers and occupancy."""
    targets = [int(t.removeprefix("sm_")) for t in report["targets"]]
    kernels = list(dict.fromkeys(r.get("kernel") or "?" for r in report["results"]))
    out = ["| kernel | " + " | ".join(f"sm_{t}" for t in targets) + " |", "|" + "---|" * (len(targets) + 1)]
    for kernel in kernels:
        cells = []
        for arch in targets:
            rows = [r for r in report["results"] if (r.get("kernel") or "?") == kernel and r["arch"] == arch]
            built = [r for r in rows if r.get("ok")]
            failing = sum(1 for r in rows if r["problems"])
            if not built:
                cells.append(f"{len(rows)} configs, none built")
                continue
            regs = [r["registers"] for r in built]
            occ = [r["occupancy"] * 100 for r in built]
            smem = max(r["shared_bytes"] for r in built) / KIB
            cells.append(f"{len(rows)} configs: {min(regs)}-{max(regs)} reg, occupancy {min(occ):.0f}-{max(occ):.0f}%, "
                         f"shared <= {smem:.0f} KiB, {failing} failing")
        out.append(f"| `{kernel}` | " + " | ".join(cells) + " |")
    return "\n".join(out)


def format_failures(report: dict[str, Any]) -> str:
    return "\n".join(f"FAIL sm_{r['arch']} {r['name']}: {p}" for r in report["results"] for p in r["problems"])


GENERATED_BEGIN = "<!-- BEGIN GENERATED by `python -m kernels.tools.aot_check --markdown` -->"
GENERATED_END = "<!-- END GENERATED -->"


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """Replace only the generated block, keeping the hand-written analysis around it."""
    block = "\n".join([
        GENERATED_BEGIN,
        f"Triton {report['triton_version']}; {report['num_builds']} builds of {report['num_specs']} kernel "
        f"configs for {', '.join(report['targets'])}" + ("" if report.get("complete", True) else " (a subset)") + ", "
        f"{report['failures']} failing; wall {report['wall_s']:.0f} s with {report['jobs']} "
        f"processes (sum of compile times {report['sum_compile_s']:.0f} s).",
        "",
        "Tools: " + (", ".join(f"{k} {v}" for k, v in report["tools"].items()) if report.get("tools")
                     else "not recorded") + ".",
        "",
        format_summary(report),
        "",
        "Per config. Cells: registers/thread, shared memory/block (static + dynamic), theoretical "
        "occupancy (what limits it).",
        "",
        format_table(report, markdown=True),
        GENERATED_END,
    ])
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if GENERATED_BEGIN in existing and GENERATED_END in existing:
        head, rest = existing.split(GENERATED_BEGIN, 1)
        tail = rest.split(GENERATED_END, 1)[1]
        text = head + block + tail
    else:
        text = (existing.rstrip() + "\n\n" if existing else "# Kernel resources\n\n") + block + "\n"
    atomic_write(path, text)


# --------------------------------------------------------------------------- CLI
def _parse_targets(text: str) -> list[int]:
    try:
        targets = [int(t.strip().removeprefix("sm_")) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--targets expects e.g. 80,86,90, got {text!r}") from None
    unknown = [t for t in targets if t not in TARGETS]
    if not targets or unknown:
        raise argparse.ArgumentTypeError(f"--targets must be among {sorted(TARGETS)}, got {text!r}")
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.tools.aot_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=_parse_targets, default=list(DEFAULT_TARGETS),
                        help="comma-separated compute capabilities (default 80,86,90)")
    parser.add_argument("--json", type=Path, help="write the full report as JSON here")
    parser.add_argument("--markdown", type=Path, help="write/refresh the generated table in this Markdown file")
    parser.add_argument("--filter", help="only spec names containing this substring")
    parser.add_argument("--only-names", type=Path, metavar="FILE",
                        help="build only the specs listed in FILE, one per line: NAME or NAME@sm_XX")
    parser.add_argument("--heaviest-from", type=Path, metavar="REPORT_JSON",
                        help="build only the configs closest to the limits in this complete report, plus new ones")
    parser.add_argument("--jobs", type=int, default=2, help="compile processes (default 2)")
    parser.add_argument("--specs", action="append", metavar="MODULE:FUNC",
                        help="spec source(s); default: " + ", ".join(DEFAULT_SPEC_SOURCES))
    parser.add_argument("--quiet", action="store_true", help="no per-build progress lines")
    args = parser.parse_args(argv)
    sources = args.specs or list(DEFAULT_SPEC_SOURCES)
    try:
        for source in sources:
            parse_spec_source(source)
        if args.jobs < 1:
            raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    except ValueError as exc:
        parser.error(str(exc))
    only_names: list[str] | None = None
    if args.only_names is not None:
        try:
            only_names = [line.strip() for line in args.only_names.read_text().splitlines() if line.strip()]
        except OSError as exc:
            parser.error(f"--only-names: cannot read {args.only_names}: {exc}")
    if args.heaviest_from is not None:
        try:
            previous = json.loads(args.heaviest_from.read_text())
            current = _list_spec_names_with_environment(sources)
            heavy = heaviest_configs(previous, current)
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"--heaviest-from {args.heaviest_from}: {type(exc).__name__}: {exc}")
        except SpecCollectionError as exc:
            print(f"aot_check: cannot collect kernel specs: {exc}", file=sys.stderr)
            return 2
        only_names = heavy if only_names is None else [n for n in only_names if n in set(heavy)]
        print(f"--heaviest-from: {len(only_names)} (config, target) selections of {len(current)} configs",
              file=sys.stderr)
    try:
        report = run_check(sources, args.targets, args.filter, args.jobs, progress=not args.quiet,
                           only_names=only_names)
    except SpecCollectionError as exc:
        print(f"aot_check: cannot collect kernel specs: {exc}", file=sys.stderr)
        return 2
    if report["num_builds"] == 0:
        print(f"no kernel spec matches --filter {args.filter!r}", file=sys.stderr)
        return 2
    if args.json:  # first: the measurements survive whatever happens to the printing below
        atomic_write(args.json, json.dumps(report, indent=1, sort_keys=False) + "\n")
    if args.markdown:
        write_markdown(report, args.markdown)
    print(format_table(report))
    print(f"\n{report['num_builds']} builds ({report['num_specs']} configs, targets "
          f"{','.join(map(str, args.targets))}), {report['failures']} failing; wall {report['wall_s']:.1f} s, "
          f"jobs={report['jobs']}, sum of compile times {report['sum_compile_s']:.1f} s")
    if report["failures"]:
        print(format_failures(report))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
