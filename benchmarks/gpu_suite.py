"""One call that checks and measures everything GPU-side (docs/gpu_suite.md):

    python -m benchmarks.gpu_suite [--out DIR] [--smoke] [--budget-s S] ...

Sections, each with a share of one wall-clock budget (default 450 s, so the
run ends inside 8 minutes with start-up); whatever a section cannot fit is
recorded as skipped, with the reason:
  environment   GPU, driver, CUDA, torch, triton, git commit
  kernel_tests  pytest tests/kernels on the GPU; any failure OR SKIP fails the suite
  ops           both attention ops at the model's real per-block shapes (read off
                build_model), forward and forward+backward, Triton vs the eager
                reference, SDPA and FlexAttention on unfolded windows and
                torch.compile of the reference; ratios vs eager and vs the best peer
  train         one SGD training step of MS-G3D and AMANet at the paper's setting
                (16 clips x 2 persons, T=300; NTU-60 and Kinetics graphs): samples/s
                and peak memory for eager/compile x fp32/bf16 x Triton/eager kernels
Results: one folder (results.json, results.md, kernel_tests.log) under
benchmarks/results/<UTC stamp>_<device>/ or --out DIR, written atomically.
Exit status: 0 when every kernel test ran and passed and no Triton result was
wrong or crashed, 1 otherwise, 2 on bad usage.

--smoke runs the same code paths on the CPU at tiny shapes (CI keeps it from rotting).
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from benchmarks import suite_support as sup
from benchmarks.model_shapes import FRAME_GROUP, WINDOW, AttentionCase, attention_calls, unique_cases

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SECTIONS = ("kernel_tests", "ops", "train")
SECTION_WEIGHTS = {"kernel_tests": 140.0, "ops": 120.0, "train": 190.0}
WINDOW_PEERS = ("triton", "eager", "sdpa", "flex", "compile")
GROUP_PEERS = ("triton", "eager", "sdpa", "compile")
COMPILING_PEERS = ("flex", "compile")
OWN_PEERS = ("triton", "eager")  # the project's code: a crash is an error; a third-party peer's is a skip
# Relative L2 error vs the eager reference above which a peer "disagrees" (bf16 rounds at 2^-8).
AGREEMENT = {torch.float32: 2e-3, torch.float16: 2e-2, torch.bfloat16: 3e-2}
# Kernel tests on CUDA: at least one passed test must match each of these.
REQUIRED_KERNEL_TESTS = (r"bf16|bfloat16",)
# Ahead-of-time builds for sm_80/86/90 need no GPU (CI runs them) and take minutes of CPU:
# on a briefly lent GPU they would eat the kernel tests' share of the budget.
NOT_ON_GPU = {"tests/kernels/test_aot.py": "ahead-of-time builds need no GPU; CI runs them (--all-kernel-tests runs them here)"}
# The model-level check that the Triton and eager backends agree (logits and every gradient,
# one at the real block width): on the GPU it is the compiled kernels inside the real model.
MODEL_BACKEND_TESTS = ("tests/model/test_backends.py::test_eager_and_triton_backends_match_logits_and_grads",
                       "tests/model/test_backends.py::test_backends_match_at_the_real_block_width")
# Tests of CPU-only behaviour carry this marker: deselected on the GPU (and counted), so
# that every skip left there is a GPU check that did not happen.
CPU_ONLY_MARK = "cpu_only"


@dataclass
class Settings:
    """Everything that differs between a GPU run and --smoke."""

    smoke: bool
    device: torch.device
    datasets: tuple[str, ...]
    clips: int
    persons: int
    frames: int
    channels: tuple[int, ...] | None   # None: the model's own widths
    op_dtype: torch.dtype
    kernel_test_args: tuple[str, ...]
    compile_backend: str
    max_op_compiles: int
    max_train_compiles: int
    train_precisions: tuple[str, ...]
    train_backends: tuple[str, ...]
    warmup_ms: float
    rep_ms: float
    train_timed_s: float               # aim for this much timed training per config
    op_item_limit_s: float
    op_compile_limit_s: float
    train_item_limit_s: float
    train_compile_limit_s: float
    compile_start_min_s: float         # do not start a model compile with less left in the section
    sections: tuple[str, ...] = SECTIONS
    kernel_tests_not_run: dict[str, str] = field(default_factory=dict)  # path -> why it is left out here

    def model_overrides(self) -> dict[str, Any]:
        return {} if self.channels is None else {"channels": self.channels}


def make_settings(args: argparse.Namespace) -> Settings:
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        return Settings(
            smoke=True, device=device, datasets=tuple(args.datasets), clips=1, persons=2, frames=8,
            channels=(12, 24, 48), op_dtype=torch.float32,
            # One test that must pass and the bf16 ones, which skip off CUDA: exercises the
            # runner, the report parser and the skip bookkeeping in seconds.
            kernel_test_args=("tests/kernels/test_window_attention.py", "-k", "bad_window or bf16"),
            compile_backend="aot_eager",  # traces like inductor, but no C++ build: seconds, not a minute
            max_op_compiles=args.max_op_compiles if args.max_op_compiles is not None else 1,
            max_train_compiles=args.max_train_compiles if args.max_train_compiles is not None else 0,
            train_precisions=("fp32", "bf16"), train_backends=("eager", "triton"),
            warmup_ms=0.0, rep_ms=20.0, train_timed_s=0.2,
            op_item_limit_s=30.0, op_compile_limit_s=60.0, train_item_limit_s=30.0,
            train_compile_limit_s=120.0, compile_start_min_s=0.0, sections=tuple(args.sections),
        )
    not_run = {} if args.all_kernel_tests else dict(NOT_ON_GPU)
    return Settings(
        smoke=False, device=device, datasets=tuple(args.datasets), clips=16, persons=2, frames=300,
        channels=None, op_dtype=torch.bfloat16, kernel_tests_not_run=not_run,
        kernel_test_args=("tests/kernels", *MODEL_BACKEND_TESTS, "-m", f"not {CPU_ONLY_MARK}",
                          *(f"--ignore={path}" for path in not_run)),
        compile_backend="inductor",
        max_op_compiles=args.max_op_compiles if args.max_op_compiles is not None else 6,
        max_train_compiles=args.max_train_compiles if args.max_train_compiles is not None else 3,
        train_precisions=("bf16", "fp32"), train_backends=("triton", "eager"),
        warmup_ms=10.0, rep_ms=60.0, train_timed_s=1.5,
        op_item_limit_s=30.0, op_compile_limit_s=90.0, train_item_limit_s=45.0,
        train_compile_limit_s=180.0, compile_start_min_s=60.0, sections=tuple(args.sections),
    )


class Run:
    """Collects results, prints progress, and writes the folder after every section."""

    def __init__(self, settings: Settings, folder: sup.ResultsFolder, budget: sup.Budget,
                 argv: Sequence[str] = ()) -> None:
        self.s, self.folder, self.budget = settings, folder, budget
        self.started = sup.utc_stamp()
        self.data: dict[str, Any] = {
            "suite": "amanet-fast benchmarks.gpu_suite",
            "format": 1,
            "mode": "smoke" if settings.smoke else "gpu",
            "complete": False,
            "started_utc": self.started,
            "budget_s": round(budget.end - budget.start, 1),
            "command": shlex.join(["python", "-m", "benchmarks.gpu_suite", *argv]),
            "sections": {},
            "skipped": [],
            "errors": [],
        }
        self.kernel_log = ""
        self.cuda_broken: str | None = None  # set when an error leaves the CUDA context unusable

    def note_error(self, error: BaseException) -> None:
        if sup.breaks_cuda_context(error) and self.cuda_broken is None:
            self.cuda_broken = sup.first_line(error, 160)

    def log(self, message: str) -> None:
        print(f"[{self.budget.elapsed():7.1f}s] {message}", flush=True)

    def skip(self, section: str, item: str, reason: str) -> dict[str, Any]:
        self.data["skipped"].append({"section": section, "item": item, "reason": reason})
        self.log(f"skip {section} {item}: {reason}")
        return {"status": "skipped", "reason": reason}

    def error(self, section: str, item: str, reason: str) -> dict[str, Any]:
        self.data["errors"].append({"section": section, "item": item, "reason": reason})
        self.log(f"ERROR {section} {item}: {reason}")
        return {"status": "error", "reason": reason}

    def save(self) -> None:
        from benchmarks.suite_report import render_markdown

        self.data["verdict"] = verdict(self.data)
        files: dict[str, str | dict] = {"results.json": self.data, "results.md": render_markdown(self.data)}
        if self.kernel_log:
            files["kernel_tests.log"] = self.kernel_log
        self.folder.write(files)


def verdict(data: dict[str, Any]) -> dict[str, Any]:
    """pass = the kernel tests ran and passed (when requested) and nothing errored."""
    reasons = []
    tests = data["sections"].get("kernel_tests")
    if tests and tests.get("status") == "failed":
        reasons += [f"kernel tests: {r}" for r in tests["verdict_reasons"]]
    reasons += [f"{e['section']} {e['item']}: {e['reason']}" for e in data["errors"]]
    if reasons:
        return {"status": "fail", "reasons": reasons}
    if not data.get("complete"):  # written after each section: no verdict before the last one
        return {"status": "incomplete", "reasons": ["the run has not finished (or was killed)"]}
    return {"status": "pass", "reasons": []}


# ----------------------------------------------------------------------------- kernel tests


def section_kernel_tests(run: Run, deadline: sup.Deadline) -> None:
    s = run.s
    started = time.monotonic()
    on_cuda = s.device.type == "cuda"
    run.log(f"kernel tests: pytest {' '.join(s.kernel_test_args)} (limit {deadline.left():.0f} s)")
    outcome, output, cmd = sup.run_kernel_tests(s.kernel_test_args, timeout_s=deadline.left(), on_cuda=on_cuda,
                                                workdir=run.folder.staging)
    ok, reasons = sup.kernel_tests_verdict(outcome, on_cuda=on_cuda,
                                           required=REQUIRED_KERNEL_TESTS if on_cuda else ())
    run.kernel_log = output
    run.data["sections"]["kernel_tests"] = {
        "status": "passed" if ok else "failed",
        "rule": ("on CUDA every kernel test must run and pass: a skip fails the suite" if on_cuda else
                 "off CUDA (--smoke) skips are expected and reported; failures fail"),
        "command": shlex.join(["python", *cmd[1:]]),
        "budget_s": round(deadline.left() + time.monotonic() - started, 1),
        "wall_s": round(time.monotonic() - started, 1),
        "timed_out": outcome.timed_out,
        "returncode": outcome.returncode,
        "counts": outcome.counts(),
        "failed": outcome.failed + outcome.errors,
        "skipped": [{"test": name, "reason": reason} for name, reason in outcome.skipped],
        "verdict_reasons": reasons,
        "not_run_here": s.kernel_tests_not_run,
        "deselected": outcome.deselected,
    }
    run.log(f"kernel tests {'passed' if ok else 'FAILED'}: {outcome.counts()}" + ("" if ok else f" {reasons}"))


# ----------------------------------------------------------------------------- attention ops


@dataclass
class OpInputs:
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    bias: torch.Tensor | None

    def leaves(self) -> list[torch.Tensor]:
        return [x for x in (self.q, self.k, self.v, self.bias) if x is not None and x.requires_grad]


def make_op_inputs(case: AttentionCase, dtype: torch.dtype, device: torch.device) -> OpInputs:
    """q, k, v as the model passes them: free (B, H, T, J, D) views of one fused
    (B, 3*H*D, T, J) qkv activation (docs/design.md §2 layout), each a leaf."""
    B, H, T, J, D = case.shape
    gen = torch.Generator(device=device).manual_seed(0)
    qkv = torch.randn(B, 3, H, D, T, J, generator=gen, device=device, dtype=dtype)
    q, k, v = (qkv[:, i].permute(0, 1, 3, 4, 2).detach().requires_grad_() for i in range(3))
    bias = None
    if case.op == WINDOW:
        bias = (0.1 * torch.randn(*case.bias_shape, generator=gen, device=device)).to(dtype)
        bias.requires_grad_(case.bias_requires_grad)
    return OpInputs(q, k, v, bias)


def op_scale(case: AttentionCase) -> float:
    B, H, T, J, D = case.shape
    return D ** -0.5 if case.op == WINDOW else (J * D) ** -0.5


def peer_fn(case: AttentionCase, peer: str, compile_backend: str) -> Callable[[OpInputs], torch.Tensor]:
    import kernels
    from benchmarks import peers

    scale, size = op_scale(case), case.size
    if case.op == WINDOW:
        if peer in ("triton", "eager"):
            return lambda x: kernels.window_attention(x.q, x.k, x.v, x.bias, size, backend=peer)
        if peer == "sdpa":
            return lambda x: peers.sdpa_window(x.q, x.k, x.v, x.bias, size, scale)
        if peer == "flex":
            return lambda x: peers.flex_window(x.q, x.k, x.v, x.bias, size, scale)
        compiled = peers.compiled_reference("window", compile_backend)
        return lambda x: compiled(x.q, x.k, x.v, x.bias, size, scale)
    if peer in ("triton", "eager"):
        return lambda x: kernels.frame_group_attention(x.q, x.k, x.v, size, backend=peer)
    if peer == "sdpa":
        return lambda x: peers.sdpa_frame_group(x.q, x.k, x.v, size, scale)
    compiled = peers.compiled_reference("frame_group", compile_backend)
    return lambda x: compiled(x.q, x.k, x.v, size, scale)


def op_memory_estimate(case: AttentionCase, peer: str, mode: str, dtype: torch.dtype) -> int:
    """Bytes a peer needs beyond its inputs, roughly (upper-bound flavoured): the
    output (and input grads for fwd+bwd), plus for the unfolding peers the
    unfolded q/k/v and fp32 scores/probabilities (and their grads)."""
    B, H, T, J, D = case.shape
    elt = torch.finfo(dtype).bits // 8
    n_in = B * H * T * J * D
    window = case.size if case.op == WINDOW else 1
    total = n_in * window * elt * (2 if mode == "fwd+bwd" else 1) + (3 * n_in * elt if mode == "fwd+bwd" else 0)
    if peer != "triton" and case.op == WINDOW:
        scores = B * H * T * (window * J) ** 2 * 4
        total += 3 * n_in * window * elt * (2 if mode == "fwd+bwd" else 1) + scores * (3 if mode == "fwd+bwd" else 2)
    elif peer != "triton":
        total += 3 * n_in * elt * 2
    return total


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    diff = (got.float() - want.float()).norm().item()
    scale = want.float().norm().item()
    return diff / scale if scale > 0 else diff


@dataclass
class Reference:
    out: torch.Tensor
    grads: list[torch.Tensor] | None
    grad_out: torch.Tensor


def eager_reference(case: AttentionCase, x: OpInputs, mode: str) -> Reference:
    fn = peer_fn(case, "eager", "inductor")
    if mode == "fwd":
        with torch.no_grad():
            out = fn(x)
        return Reference(out, None, torch.empty(0))
    out = fn(x)
    gen = torch.Generator(device=out.device).manual_seed(1)
    grad_out = torch.randn(out.shape, generator=gen, device=out.device, dtype=out.dtype)
    grads = list(torch.autograd.grad(out, x.leaves(), grad_out))
    return Reference(out.detach(), grads, grad_out)


def make_op_step(fn: Callable[[OpInputs], torch.Tensor], x: OpInputs, mode: str, ref: Reference) -> Callable:
    if mode == "fwd":
        def step():
            with torch.no_grad():
                return fn(x)
    else:
        leaves = x.leaves()

        def step():
            return torch.autograd.grad(fn(x), leaves, ref.grad_out)
    return step


def compare(result: Any, ref: Reference, mode: str) -> float:
    if mode == "fwd":
        return rel_err(result, ref.out)
    return max(rel_err(g, w) for g, w in zip(result, ref.grads))


def measure_peer(run: Run, case: AttentionCase, peer: str, mode: str, x: OpInputs, ref: Reference) -> dict[str, Any]:
    s = run.s
    fn = peer_fn(case, peer, s.compile_backend)
    step = make_op_step(fn, x, mode, ref)
    t0 = time.perf_counter()
    result = step()  # compiles/JITs here: not timed below
    sup.synchronize(s.device)
    first_call_s = time.perf_counter() - t0
    err = compare(result, ref, mode)
    del result
    peak_extra = None
    if s.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(s.device)
        before = torch.cuda.memory_allocated(s.device)
        step()
        sup.synchronize(s.device)
        peak_extra = (torch.cuda.max_memory_allocated(s.device) - before) / 2**20
    timing = sup.bench_ms(step, s.device, warmup_ms=s.warmup_ms, rep_ms=s.rep_ms)
    agrees = err <= AGREEMENT[s.op_dtype]
    entry = {"status": "ok", **{k: round(v, 5) for k, v in timing.items()}, "first_call_s": round(first_call_s, 3),
             "peak_extra_MiB": None if peak_extra is None else round(peak_extra, 1),
             "rel_err_vs_eager": err, "agrees": agrees}
    return entry


def section_ops(run: Run, deadline: sup.Deadline) -> None:
    s = run.s
    started = time.monotonic()
    sec: dict[str, Any] = {"status": "running", "dtype": str(s.op_dtype).removeprefix("torch."),
                           "batch": f"{s.clips} clips x {s.persons} persons = {s.clips * s.persons}",
                           "frames": s.frames, "compile_backend": s.compile_backend,
                           "max_op_compiles": s.max_op_compiles,
                           "timer": "triton.testing.do_bench (CUDA events), median of the repetitions" if
                           s.device.type == "cuda" else "time.perf_counter per call, median",
                           "cases": [], "results": []}
    run.data["sections"]["ops"] = sec
    cases: list[AttentionCase] = []
    for dataset in s.datasets:
        calls = attention_calls("amanet", dataset, clips=s.clips, frames=s.frames, persons=s.persons,
                                **s.model_overrides())
        cases += unique_cases(calls, dataset)
    if not cases:
        run.error("ops", "shapes", "build_model('amanet') made no attention call (did the ops move?)")
    sec["cases"] = [c.as_dict() for c in cases]
    compiles = 0
    # Pass 1: the peers that need no compile, every case and mode.
    for case in cases:
        for mode in ("fwd", "fwd+bwd"):
            peers = [p for p in (WINDOW_PEERS if case.op == WINDOW else GROUP_PEERS) if p not in COMPILING_PEERS]
            compiles = _run_case(run, sec, case, mode, peers, deadline, compiles)
    # Pass 2: flex / compile, as many builds as the cap allows, where they matter most:
    # forward+backward before forward, cases by their eager share of a training step.
    eager_fb = {r["case"]: r["ms"] for r in sec["results"]
                if r["peer"] == "eager" and r["mode"] == "fwd+bwd" and r["status"] == "ok"}
    by_weight = sorted(cases, key=lambda c: -c.calls_per_forward * eager_fb.get(c.id, 0.0))
    for mode in ("fwd+bwd", "fwd"):
        for case in by_weight:
            if case.op == FRAME_GROUP:
                sec["results"].append(dict(case=case.id, mode=mode, peer="flex", **run.skip(
                    "ops", f"{case.id} {mode} flex", "not benchmarked: the suite runs FlexAttention on the "
                    "window op only (a frame token's J*D features would be its head dim)")))
            peers = [p for p in (WINDOW_PEERS if case.op == WINDOW else GROUP_PEERS) if p in COMPILING_PEERS]
            compiles = _run_case(run, sec, case, mode, peers, deadline, compiles)
    sec["ratios"] = op_ratios(sec["results"])
    sec["per_step"] = per_step_attention(cases, sec["results"])
    sec["status"] = "done"
    sec["wall_s"] = round(time.monotonic() - started, 1)


def _run_case(run: Run, sec: dict, case: AttentionCase, mode: str, peers: list[str], deadline: sup.Deadline,
              compiles: int) -> int:
    s = run.s
    item = f"{case.id} {mode}"

    def record(peer: str, entry: dict[str, Any]) -> None:
        sec["results"].append(dict(case=case.id, mode=mode, peer=peer, **entry))

    # Peers that cannot run are recorded without building inputs for them.
    runnable = []
    for peer in peers:
        name = f"{item} {peer}"
        why = _peer_unavailable(s, peer)
        if why is None and run.cuda_broken:
            why = f"CUDA context unusable after an earlier error ({run.cuda_broken})"
        if why is None and peer in COMPILING_PEERS and compiles + len(
                [p for p in runnable if p in COMPILING_PEERS]) >= s.max_op_compiles:
            why = f"compile cap reached (--max-op-compiles {s.max_op_compiles})"
        if why is None and deadline.left() <= 0:
            why = "ops section time budget used up"
        if why:
            record(peer, run.skip("ops", name, why))
        else:
            runnable.append(peer)
    if not runnable:
        return compiles
    try:
        with sup.time_limit(min(s.op_item_limit_s, deadline.left())):
            x = make_op_inputs(case, s.op_dtype, s.device)
            ref = eager_reference(case, x, mode)
    except BaseException as error:  # noqa: BLE001 - OOM / budget: every peer of the case is skipped
        if isinstance(error, KeyboardInterrupt):
            raise
        reason = _skip_reason(error)
        run.note_error(error)
        sup.release_memory()
        for peer in runnable:
            record(peer, run.skip("ops", f"{item} {peer}", f"inputs/eager reference: {reason}"))
        return compiles
    for peer in runnable:
        name = f"{item} {peer}"
        if run.cuda_broken:
            record(peer, run.skip("ops", name, f"CUDA context unusable after an earlier error ({run.cuda_broken})"))
            continue
        need = op_memory_estimate(case, peer, mode, s.op_dtype)
        free = sup.free_memory_bytes(s.device)
        if free is not None and need > 0.9 * free:
            record(peer, run.skip("ops", name, f"estimated {need / 2**30:.1f} GiB > 90% of "
                                               f"{free / 2**30:.1f} GiB free"))
            continue
        if deadline.left() <= 0:
            record(peer, run.skip("ops", name, "ops section time budget used up"))
            continue
        if peer in COMPILING_PEERS:
            compiles += 1
            torch._dynamo.reset()  # each compile starts clean: no recompile limit, no stale graphs
        limit = s.op_compile_limit_s if peer in COMPILING_PEERS else s.op_item_limit_s
        try:
            with sup.time_limit(min(limit, deadline.left())):
                entry = measure_peer(run, case, peer, mode, x, ref)
        except BaseException as error:  # noqa: BLE001 - sorted below: skip, error or re-raise
            if isinstance(error, KeyboardInterrupt):
                raise
            reason = _skip_reason(error)
            run.note_error(error)
            sup.release_memory()
            if peer in OWN_PEERS and sup.budget_exceeded_in(error) is None and not sup.is_out_of_memory(error):
                record(peer, run.error("ops", name, reason))  # the project's own op crashed at a model shape
            else:
                record(peer, run.skip("ops", name, reason))
            continue
        if not entry["agrees"]:
            note = (f"disagrees with the eager reference: relative error {entry['rel_err_vs_eager']:.2e} > "
                    f"{AGREEMENT[s.op_dtype]:.0e}")
            entry["note"] = note
            if peer == "triton":
                run.error("ops", name, note)
        record(peer, entry)
        run.log(f"ops {name}: {entry['ms']:.4f} ms (rel err {entry['rel_err_vs_eager']:.1e}, "
                f"first call {entry['first_call_s']:.1f} s)")
    del x, ref
    sup.release_memory()
    return compiles


def _peer_unavailable(s: Settings, peer: str) -> str | None:
    if s.device.type == "cuda":
        return None
    if peer == "triton":
        return "Triton needs CUDA (its CPU interpreter is a correctness tool: tests/kernels run it)"
    if peer == "flex":
        return "FlexAttention has no CPU backward; GPU only"
    return None


def _skip_reason(error: BaseException) -> str:
    budget = sup.budget_exceeded_in(error)
    if budget is not None:
        return f"time budget: {budget}"
    if sup.is_out_of_memory(error):
        return f"out of memory: {sup.first_line(error, 160)}"
    return sup.first_line(error)


def op_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (case, mode): every measured peer's time, its speed-up vs eager, and
    Triton's speed-up vs the best other peer."""
    table: dict[tuple[str, str], dict[str, float]] = {}
    for r in results:
        if r.get("status") == "ok":
            table.setdefault((r["case"], r["mode"]), {})[r["peer"]] = r["ms"]
    rows = []
    for (case, mode), times in table.items():
        eager = times.get("eager")
        row: dict[str, Any] = {"case": case, "mode": mode, "ms": times,
                               "speedup_vs_eager": {p: eager / t for p, t in times.items()} if eager else {}}
        others = {p: t for p, t in times.items() if p != "triton"}
        if "triton" in times and others:
            best = min(others, key=others.get)
            row.update(best_peer=best, triton_vs_best_peer=others[best] / times["triton"])
        rows.append(row)
    return rows


def per_step_attention(cases: list[AttentionCase], results: list[dict[str, Any]]) -> dict[str, Any]:
    """Attention time of one training step (forward+backward of every call the
    model makes), per dataset and peer; only for peers measured on every case."""
    fb = {(r["case"], r["peer"]): r["ms"] for r in results if r.get("status") == "ok" and r["mode"] == "fwd+bwd"}
    out: dict[str, Any] = {}
    for dataset in sorted({c.dataset for c in cases}):
        ds_cases = [c for c in cases if c.dataset == dataset]
        peers = sorted({p for (_, p) in fb})
        out[dataset] = {p: sum(c.calls_per_forward * fb[(c.id, p)] for c in ds_cases)
                        for p in peers if all((c.id, p) in fb for c in ds_cases)}
    return out


# ----------------------------------------------------------------------------- training step


@dataclass(frozen=True)
class TrainConfig:
    arch: str
    dataset: str
    compiled: bool
    precision: str           # "fp32" or "bf16" (autocast)
    backend: str | None      # attention kernels of AMANet; None for MS-G3D (it has none)

    @property
    def id(self) -> str:
        return "/".join([self.arch, self.dataset, "compile" if self.compiled else "eager", self.precision,
                         f"kernels={self.backend}" if self.backend else "kernels=-"])


def train_matrix(s: Settings) -> list[TrainConfig]:
    """Priority order: every eager-mode config first (cheap), then compiled ones
    (about a minute each to warm up) until the compile cap."""
    configs = []
    for compiled in (False, True):
        for dataset in s.datasets:
            for precision in s.train_precisions:
                for arch in ("amanet", "msg3d"):
                    backends = s.train_backends if arch == "amanet" else (None,)
                    configs += [TrainConfig(arch, dataset, compiled, precision, b) for b in backends]
    return configs


def measure_train(s: Settings, cfg: TrainConfig) -> dict[str, Any]:
    from amanet_fast import build_model
    from amanet_fast.graphs import get_layout

    device = s.device
    torch.manual_seed(0)
    overrides = dict(s.model_overrides())
    if cfg.backend:
        overrides["kernel_backend"] = cfg.backend
    model = build_model(cfg.arch, cfg.dataset, **overrides).to(device)
    model.train()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    fwd = torch.compile(model, backend=s.compile_backend) if cfg.compiled else model
    mcfg = model.config
    joints = get_layout(mcfg.layout).num_joints
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(s.clips, mcfg.in_channels, s.frames, joints, s.persons, generator=gen, device=device)
    y = torch.randint(0, mcfg.num_class, (s.clips,), generator=gen, device=device)
    amp = cfg.precision == "bf16"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = fwd(x)
        F.cross_entropy(logits.float(), y).backward()
        opt.step()

    breaks_before, graphs_before = _dynamo_counts()
    t0 = time.perf_counter()
    step()
    sup.synchronize(device)
    first_step_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    step()
    sup.synchronize(device)
    warm_step_s = time.perf_counter() - t0
    steps = max(2 if s.smoke else 3, min(20, math.ceil(s.train_timed_s / max(warm_step_s, 1e-3))))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        elapsed_s = start.elapsed_time(end) / 1e3
        peak_gib = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        elapsed_s = time.perf_counter() - t0
        peak_gib = None
    entry = {"status": "ok", "ms_per_step": round(elapsed_s / steps * 1e3, 3),
             "samples_per_s": round(s.clips * steps / elapsed_s, 2), "steps_timed": steps,
             "first_step_s": round(first_step_s, 2), "peak_GiB": None if peak_gib is None else round(peak_gib, 3),
             "params": params}
    if cfg.compiled:
        breaks, graphs = _dynamo_counts()
        entry.update(graph_breaks=breaks - breaks_before, graphs=graphs - graphs_before)
    return entry


def _dynamo_counts() -> tuple[int, int]:
    """(graph breaks, graphs compiled) so far in this process, from dynamo's counters."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]


def section_train(run: Run, deadline: sup.Deadline) -> None:
    s = run.s
    started = time.monotonic()
    sec: dict[str, Any] = {"status": "running", "clips_per_step": s.clips, "persons": s.persons, "frames": s.frames,
                           "channels": list(s.channels) if s.channels else "model default (96, 192, 384)",
                           "optimizer": "SGD momentum 0.9 nesterov, weight decay 5e-4",
                           "compile_backend": s.compile_backend, "max_train_compiles": s.max_train_compiles,
                           "timer": "CUDA events around the timed steps" if s.device.type == "cuda" else
                           "time.perf_counter around the timed steps", "results": []}
    run.data["sections"]["train"] = sec
    if s.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as training runs on CUDA (amanet_fast/training/loop.py)
        sec["cudnn_benchmark"] = True
    compiles = 0
    for cfg in train_matrix(s):
        name = cfg.id

        def record(entry: dict[str, Any]) -> None:
            sec["results"].append(dict(config=name, arch=cfg.arch, dataset=cfg.dataset,
                                       mode="compile" if cfg.compiled else "eager", precision=cfg.precision,
                                       kernels=cfg.backend or "-", **entry))

        if run.cuda_broken:
            record(run.skip("train", name, f"CUDA context unusable after an earlier error ({run.cuda_broken})"))
            continue
        if cfg.backend == "triton" and s.device.type != "cuda":
            record(run.skip("train", name, "Triton kernels need CUDA (the CPU interpreter takes minutes per "
                                           "model step)"))
            continue
        if cfg.compiled and compiles >= s.max_train_compiles:
            record(run.skip("train", name, f"compile cap reached (--max-train-compiles {s.max_train_compiles})"))
            continue
        if cfg.compiled and deadline.left() < s.compile_start_min_s:
            record(run.skip("train", name, f"not started: {deadline.left():.0f} s left in the section, a model "
                                           f"compile is budgeted {s.compile_start_min_s:.0f} s"))
            continue
        if deadline.left() <= 0:
            record(run.skip("train", name, "train section time budget used up"))
            continue
        if cfg.compiled:
            compiles += 1
            torch._dynamo.reset()
        limit = s.train_compile_limit_s if cfg.compiled else s.train_item_limit_s
        try:
            with sup.time_limit(min(limit, deadline.left())):
                entry = measure_train(s, cfg)
        except BaseException as error:  # noqa: BLE001 - OOM/budget skip; anything else is an error
            if isinstance(error, KeyboardInterrupt):
                raise
            reason = _skip_reason(error)
            run.note_error(error)
            oom_or_budget = sup.is_out_of_memory(error) or sup.budget_exceeded_in(error) is not None
            sup.release_memory()
            if oom_or_budget:
                record(run.skip("train", name, reason))
            else:
                record(run.error("train", name, reason))
            continue
        finally:
            sup.release_memory()
        record(entry)
        run.log(f"train {name}: {entry['ms_per_step']:.1f} ms/step, {entry['samples_per_s']:.1f} samples/s, "
                f"peak {entry['peak_GiB'] if entry['peak_GiB'] is not None else '-'} GiB, first step {entry['first_step_s']:.1f} s")
    sec["ratios"] = train_ratios(sec["results"])
    sec["status"] = "done"
    sec["wall_s"] = round(time.monotonic() - started, 1)


def train_ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Speed-up of each config over its arch's plain baseline (eager mode, fp32,
    eager kernels) and AMANet's step time over MS-G3D's in the same mode/precision."""
    ok = {r["config"]: r for r in results if r.get("status") == "ok"}
    rows = []
    for r in ok.values():
        base_id = TrainConfig(r["arch"], r["dataset"], False, "fp32", "eager" if r["arch"] == "amanet" else None).id
        msg3d_id = TrainConfig("msg3d", r["dataset"], r["mode"] == "compile", r["precision"], None).id
        row = {"config": r["config"], "ms_per_step": r["ms_per_step"]}
        if base_id in ok:
            row["speedup_vs_baseline"] = ok[base_id]["ms_per_step"] / r["ms_per_step"]
            row["baseline"] = base_id
        if r["arch"] == "amanet" and msg3d_id in ok:
            row["time_vs_msg3d"] = r["ms_per_step"] / ok[msg3d_id]["ms_per_step"]
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmarks.gpu_suite", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (new or empty); default benchmarks/results/<UTC stamp>_<device>/")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, same code paths (CI)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-clock budget for all sections (default 450 on a GPU, 150 with --smoke)")
    p.add_argument("--sections", type=_sections, default=SECTIONS,
                   help=f"comma-separated subset of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--datasets", type=_datasets, default=("ntu60", "kinetics"),
                   help="comma-separated graphs for ops and train (default ntu60,kinetics)")
    p.add_argument("--max-op-compiles", type=_non_negative, default=None,
                   help="cap on torch.compile / FlexAttention builds in the ops section (default 6; smoke 1)")
    p.add_argument("--max-train-compiles", type=_non_negative, default=None,
                   help="cap on compiled training-step configs (default 3; smoke 0)")
    p.add_argument("--all-kernel-tests", action="store_true",
                   help="also run the kernel tests that need no GPU (the ahead-of-time builds, minutes of CPU)")
    p.add_argument("--memory-limit-gib", type=float, default=None,
                   help="let the CUDA allocator use at most this much (emulates a smaller card, e.g. 24)")
    return p


def _comma_subset(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(allowed)}, got {text!r}")
    return names


def _sections(text: str) -> tuple[str, ...]:
    return _comma_subset(text, SECTIONS)


def _datasets(text: str) -> tuple[str, ...]:
    from amanet_fast.model.build import DATASETS

    return _comma_subset(text, DATASETS)


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("error: no CUDA device: the suite needs one GPU (use --smoke for the CPU check of its code paths)",
              file=sys.stderr)
        return 2
    if args.budget_s is not None and args.budget_s <= 0:
        print(f"error: --budget-s: expected a positive number of seconds, got {args.budget_s}", file=sys.stderr)
        return 2
    if args.memory_limit_gib is not None and (args.memory_limit_gib <= 0 or args.smoke):
        print("error: --memory-limit-gib: expected a positive size in GiB, on a CUDA run (not with --smoke)",
              file=sys.stderr)
        return 2
    settings = make_settings(args)
    device_name = torch.cuda.get_device_name(settings.device) if settings.device.type == "cuda" else "cpu"
    out = args.out or RESULTS_DIR / f"{sup.utc_stamp()}_{sup.device_slug(device_name)}{'_smoke' if args.smoke else ''}"
    problem = sup.check_out_dir(out)
    if problem:
        print(f"error: --out {out}: {problem}", file=sys.stderr)
        return 2
    if args.smoke:
        torch.set_num_threads(1)  # CI boxes are small and shared: one intra-op thread is steadier
    budget = sup.Budget(args.budget_s or (150.0 if args.smoke else 450.0))
    run = Run(settings, sup.ResultsFolder(out), budget, argv)
    run.data["environment"] = sup.environment(settings.device)
    if args.memory_limit_gib is not None:
        fraction = sup.limit_memory(settings.device, args.memory_limit_gib)
        run.data["environment"]["memory_limit_GiB"] = args.memory_limit_gib
        run.data["environment"]["memory_fraction"] = round(fraction, 4)
    run.log(f"device {device_name}; budget {budget.left():.0f} s; results -> {out}")
    run.save()
    bodies = {"kernel_tests": section_kernel_tests, "ops": section_ops, "train": section_train}
    for i, name in enumerate(SECTIONS):
        if name not in settings.sections:
            run.data["sections"][name] = {"status": "not requested (--sections)"}
            continue
        later = sum(SECTION_WEIGHTS[n] for n in SECTIONS[i + 1:] if n in settings.sections)
        deadline = budget.section(SECTION_WEIGHTS[name], later)
        try:
            bodies[name](run, deadline)
        except Exception as error:  # noqa: BLE001 - a broken section must not lose the others' results
            run.data["sections"].setdefault(name, {})["status"] = "crashed"
            run.error(name, "section", sup.first_line(error))
        run.save()
    run.data["complete"] = True
    run.data["finished_utc"] = sup.utc_stamp()
    run.data["wall_s"] = round(budget.elapsed(), 1)
    run.save()
    final = run.folder.commit()
    status = run.data["verdict"]["status"]
    run.log(f"verdict: {status.upper()}" + "".join(f"\n  - {r}" for r in run.data["verdict"]["reasons"]))
    print(final, flush=True)
    return 0 if status == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
