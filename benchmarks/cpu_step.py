"""`python -m benchmarks.cpu_step`: one training step (forward, backward, SGD) with the trainer's
CPU defaults against plain fp32 eager NCHW, measured in the same run.

The allocator setting is process-wide, so each side runs in its own worker process (the
baseline with AMANET_KEEP_MALLOC=1, i.e. glibc as it comes); both build the same model from
the same seed and the parent alternates their rounds, so load drift on a shared machine hits
both alike. Reported per side: median samples/s over rounds with min-max, the median of the
per-round paired ratios, thread CPU time per step and minor page faults per step.

Beside the step it measures what the CPU allows: the throughput of one compute-bound op (a 1x1
conv, 512 -> 512 channels over 16 x 32 x 25 positions, oneDNN) in fp32 NCHW (the baseline's
layout), fp32 channels-last (oneDNN's best fp32) and bf16 channels-last, at the same thread
count. bf16 / best-fp32 is the most that a precision switch can give a compute-bound step on
this machine; a step ratio above it has to come from the baseline's slower paths (NCHW, the
allocator). The last line is `... ratio R.RRx`. Results go to
benchmarks/results/cpu_step_<time>_<arch>.json.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SIDES = ("defaults", "fp32", "no_stfem")  # worker roles
VERSUS = ("fp32", "no-stfem")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _channels(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 96,192,384, got {text!r}") from None
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected three positive widths like 96,192,384, got {text!r}")
    return values


def _scales(text: str) -> tuple[int, int]:
    try:
        gcn, g3d = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two scales like 8,4, got {text!r}") from None
    if min(gcn, g3d) < 1:
        raise argparse.ArgumentTypeError(f"expected two positive scales like 8,4, got {text!r}")
    return gcn, g3d


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """build_model overrides of the flags that change the network."""
    out: dict[str, Any] = {"channels": args.channels, "kernel_backend": "eager"}
    if args.worker == "no_stfem":
        out["stfem"] = False
    if args.persons is not None:
        out["num_person"] = args.persons
    if args.scales is not None:
        out["num_gcn_scales"], out["num_g3d_scales"] = args.scales
    return out


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmarks.cpu_step", description=__doc__.split("\n\n")[0])
    from amanet_fast.model.build import ARCHS

    p.add_argument("--arch", choices=ARCHS, default="amanet")
    p.add_argument("--dataset", choices=("ntu60", "ntu120", "kinetics", "ucla", "synthetic"), default="ntu60",
                   help="model config (classes, graph, scales); default ntu60")
    p.add_argument("--batch", type=_positive, default=4, help="clips per step (2 persons each)")
    p.add_argument("--frames", type=_positive, default=64)
    p.add_argument("--channels", type=_channels, default=(96, 192, 384), help="block widths (default: the paper's)")
    p.add_argument("--versus", choices=VERSUS, default="fp32",
                   help="the other side: fp32 = plain fp32 eager NCHW (default); no-stfem = the defaults "
                        "with AMANet's STFEM switched off (what STFEM costs per step)")
    p.add_argument("--window-reference", action="store_true",
                   help="both sides train STFEM's window attention through autograd of the eager reference "
                        "(the CPU path before kernels/window_cpu.py), for before/after comparisons")
    p.add_argument("--persons", type=_positive, default=None,
                   help="bodies per clip (default: the model's, 2; NW-UCLA's protocol uses 1)")
    p.add_argument("--scales", type=_scales, default=None,
                   help="MS-GCN and MS-G3D scales, e.g. 8,4 (default: the dataset's)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="intra-op threads for both sides (default: the trainer's default, usable cores)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the defaults side (as train.py --compile); its first step includes the compile")
    p.add_argument("--rounds", type=_positive, default=5, help="alternating A/B rounds")
    p.add_argument("--steps", type=_positive, default=1, help="timed steps per round")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    p.add_argument("--no-save", action="store_true", help="do not write a results file")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    return p


# ----------------------------------------------------------------------------- worker

PEAK_SHAPE = (16, 512, 32, 25)  # (N, C, T, V): C -> C 1x1 conv, a block-3-sized GEMM


def conv_peaks(reps: int = 7) -> dict[str, float]:
    """GFLOP/s of a C -> C 1x1 conv (median of `reps`) per precision and layout, at the current threads."""
    import torch
    import torch.nn.functional as F

    n, c, t, v = PEAK_SHAPE
    flops = 2 * n * t * v * c * c
    gen = torch.Generator().manual_seed(0)
    out: dict[str, float] = {}
    for name, dtype, fmt in (("fp32_nchw", torch.float32, torch.contiguous_format),
                             ("fp32_channels_last", torch.float32, torch.channels_last),
                             ("bf16_channels_last", torch.bfloat16, torch.channels_last)):
        x = torch.randn(n, c, t, v, generator=gen).to(dtype).contiguous(memory_format=fmt)
        w = torch.randn(c, c, 1, 1, generator=gen).to(dtype).contiguous(memory_format=fmt)
        times = []
        for i in range(reps + 2):
            t0 = time.perf_counter()
            F.conv2d(x, w)
            if i >= 2:  # two warm-ups: primitive creation, first touch
                times.append(time.perf_counter() - t0)
        out[name] = flops / statistics.median(times) / 1e9
    return out


def _worker(args: argparse.Namespace) -> None:
    """Build one side, then answer `run` lines on stdin with one JSON line of timings each."""
    import torch
    import torch.nn.functional as F

    from amanet_fast import build_model
    from amanet_fast.training import hardware
    from amanet_fast.training.loop import resolve_precision

    defaults = args.worker in ("defaults", "no_stfem")
    runtime = hardware.apply_cpu_defaults(args.threads)
    if args.window_reference:
        import kernels.api

        kernels.api.TRAIN_WINDOW_BY_OFFSETS = False
    device = torch.device("cpu")
    dtype = resolve_precision("auto" if defaults else "off", device).dtype
    torch.manual_seed(0)
    model = build_model(args.arch, args.dataset, **model_overrides(args))
    memory_format = hardware.prepare_model(model, device, dtype) if defaults else "NCHW"
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(args.batch, model.in_channels, args.frames, model.layout.num_joints, model.num_person,
                    generator=gen)
    y = torch.randint(0, model.num_class, (args.batch,), generator=gen)

    run_model = torch.compile(model) if defaults and args.compile else model

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = run_model(x)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    w0 = time.perf_counter()
    first_loss = step()  # warm-up: first-touch allocations, oneDNN primitive creation (and the compile)
    info = {"side": args.worker, "precision": "bf16 autocast" if dtype is not None else "fp32",
            "memory_format": memory_format, "compiled": run_model is not model,
            "first_step_s": time.perf_counter() - w0,
            "allocator": runtime.allocator, "threads": torch.get_num_threads(),
            "bf16_native": runtime.bf16_native, "bf16_evidence": runtime.bf16_evidence, "first_loss": first_loss,
            "params": sum(p.numel() for p in model.parameters())}
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() == "peaks":
            print(json.dumps(conv_peaks()), flush=True)
            continue
        if line.strip() != "run":
            break
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        c0, w0 = time.thread_time(), time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"wall_s": wall, "thread_cpu_s": cpu, "minflt": r1.ru_minflt - r0.ru_minflt,
                          "loss": loss}), flush=True)


# ----------------------------------------------------------------------------- parent

def _spawn(side: str, argv: Sequence[str]) -> subprocess.Popen:
    env = dict(os.environ)
    if side == "fp32":
        env["AMANET_KEEP_MALLOC"] = "1"  # the baseline keeps glibc's default allocator behaviour
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(root), *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.Popen([sys.executable, "-m", "benchmarks.cpu_step", *argv, "--worker", side], cwd=root,
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def _read(proc: subprocess.Popen, side: str) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{side} worker exited with code {proc.wait()} (its stderr is above)")
    return json.loads(line)


def _summary(rounds: list[dict[str, Any]], samples_per_round: int) -> dict[str, Any]:
    sps = [samples_per_round / r["wall_s"] for r in rounds]
    cpu_sps = [samples_per_round / r["thread_cpu_s"] for r in rounds]
    return {
        "samples_per_s_median": statistics.median(sps), "samples_per_s_min": min(sps),
        "samples_per_s_max": max(sps),
        "samples_per_thread_cpu_s_median": statistics.median(cpu_sps),
        "rounds": rounds,
    }


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    other = args.versus.replace("-", "_")
    sides = ("defaults", other)
    procs = {side: _spawn(side, argv) for side in sides}
    try:
        info = {side: _read(procs[side], side) for side in sides}
        rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for i in range(args.rounds):
            order = sides if i % 2 == 0 else sides[::-1]  # ABBA: neither side always runs second
            for side in order:
                assert procs[side].stdin is not None
                procs[side].stdin.write("run\n")
                procs[side].stdin.flush()
                rounds[side].append(_read(procs[side], side))
        assert procs["defaults"].stdin is not None
        procs["defaults"].stdin.write("peaks\n")
        procs["defaults"].stdin.flush()
        peaks = _read(procs["defaults"], "defaults")
    finally:
        for proc in procs.values():
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
            proc.wait()
    per_round = args.batch * args.steps
    result = {side: {**info[side], **_summary(rounds[side], per_round)} for side in sides}
    for side in sides:
        result[side]["minflt_per_step_median"] = statistics.median(r["minflt"] for r in rounds[side]) / args.steps
    paired = [b["wall_s"] / a["wall_s"] for a, b in zip(rounds["defaults"], rounds[other])]
    paired_cpu = [b["thread_cpu_s"] / a["thread_cpu_s"] for a, b in zip(rounds["defaults"], rounds[other])]
    return {
        "arch": args.arch, "dataset": args.dataset, "batch": args.batch, "frames": args.frames,
        "channels": list(args.channels), "rounds": args.rounds, "steps_per_round": args.steps,
        "compile": args.compile, "versus": other, "window_reference": args.window_reference,
        "sides": result,
        "ratio_of_medians": result["defaults"]["samples_per_s_median"] / result[other]["samples_per_s_median"],
        "paired_ratio_median": statistics.median(paired), "paired_ratio_min": min(paired),
        "paired_ratio_max": max(paired),
        "thread_cpu_ratio_median": statistics.median(paired_cpu),
        "conv_peak_gflops": peaks,
        "conv_peak_bf16_over_best_fp32": peaks["bf16_channels_last"] / max(peaks["fp32_nchw"],
                                                                             peaks["fp32_channels_last"]),
    }


def save(payload: dict[str, Any], directory: Path) -> Path:
    from amanet_fast.atomic import write_json_atomic

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return write_json_atomic(directory / f"cpu_step_{stamp}_{payload['arch']}.json", payload)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.versus == "no-stfem" and args.arch != "amanet":
        parser.error("--versus no-stfem: only AMANet has STFEM (use --arch amanet)")
    if args.worker:
        _worker(args)
        return 0
    from benchmarks.conftest import environment_info

    payload = run(args, argv)
    payload["environment"] = environment_info()
    payload["environment"]["torch_threads"] = payload["sides"]["defaults"]["threads"]
    payload["command"] = "python -m benchmarks.cpu_step " + " ".join(argv)
    other = payload["versus"]
    d, b = payload["sides"]["defaults"], payload["sides"][other]
    label = "fp32 eager" if other == "fp32" else "no STFEM"
    shape = f"{args.arch} N={args.batch} T={args.frames} C={','.join(map(str, args.channels))}"
    print(f"cpu_step {shape}: {args.rounds} alternating rounds of {args.steps} step(s), {d['threads']} threads")
    for side, s in (("defaults", d), (label, b)):
        compiled = f", torch.compile (first step {s['first_step_s']:.0f} s)" if s["compiled"] else ""
        print(f"  {side:<10} {s['precision']}, {s['memory_format']}{compiled}, {s['allocator']}")
        print(f"  {'':<10} {s['samples_per_s_median']:.3f} samples/s (min {s['samples_per_s_min']:.3f}, "
              f"max {s['samples_per_s_max']:.3f}); {s['samples_per_thread_cpu_s_median']:.3f} samples per "
              f"thread-CPU s; {s['minflt_per_step_median']:.0f} minor page faults/step")
    print(f"  paired per-round ratio: median {payload['paired_ratio_median']:.2f}x "
          f"(min {payload['paired_ratio_min']:.2f}, max {payload['paired_ratio_max']:.2f}); "
          f"thread-CPU ratio {payload['thread_cpu_ratio_median']:.2f}x")
    pk = payload["conv_peak_gflops"]
    print(f"  compute ceiling (1x1 conv {PEAK_SHAPE[1]}->{PEAK_SHAPE[1]}, oneDNN): fp32 NCHW {pk['fp32_nchw']:.0f}, "
          f"fp32 channels-last {pk['fp32_channels_last']:.0f}, bf16 channels-last {pk['bf16_channels_last']:.0f} "
          f"GFLOP/s; bf16 / best fp32 {payload['conv_peak_bf16_over_best_fp32']:.2f}x")
    if not args.no_save:
        print(f"  results written to {save(payload, Path(args.results_dir))}")
    if other == "no_stfem":
        print(f"cpu_step {shape}: with STFEM {d['samples_per_s_median']:.3f} samples/s, without "
              f"{b['samples_per_s_median']:.3f} samples/s: the STFEM step costs {1 / payload['ratio_of_medians']:.2f}x "
              f"(paired median {1 / payload['paired_ratio_median']:.2f}x)")
        return 0
    print(f"cpu_step {shape}: defaults {d['samples_per_s_median']:.3f} samples/s, fp32 eager "
          f"{b['samples_per_s_median']:.3f} samples/s, ratio {payload['ratio_of_medians']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
