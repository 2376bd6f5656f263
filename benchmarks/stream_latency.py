"""`python -m benchmarks.stream_latency`: per-update latency of `amanet_fast.Stream` on this CPU.

One update = one frame pushed into a full window -> fused top-k probabilities (window assembly,
`model_input`, forward, softmax), timed around `Stream.push` (frame in, update out). Untrained
weights, written as a real checkpoint so the timed path is exactly the CLI's. Backends: eager
fp32, eager bf16 (CPU autocast) and ONNX Runtime (the graph of `python -m amanet_fast.export
onnx`, same window and `model_input`) when onnxruntime is installed. Models:

  small  AMANet 24,48,96 (graph scales 8/4, the ucla cpu_standard preset), ucla20, 1 person, window 52
  ntu60  AMANet 96,192,384 (the paper's), ntu25, 2 persons, window 300 (all prepared frames)

Reported per (model, threads, backend): p50, p99, min, max over `--updates` updates after
`--warmup`, the process CPU time per update (p50/p99: the cost without a
shared core), and the machine's load average beside them. Thread counts whose cores this process
may not use (`taskset`) are recorded as not measured, with the reason. Results go to
benchmarks/results/stream_latency_<time>.json (atomically).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_MS = {"small": 33.0}   # the target: p99 <= one frame at 30 fps

MODELS = {
    "small": dict(dataset="ucla", channels=(24, 48, 96), num_gcn_scales=8, num_g3d_scales=4, num_person=1,
                  window=52),
    "ntu60": dict(dataset="ntu60", channels=(96, 192, 384), num_person=2, window=300),
}
BACKENDS = ("fp32", "bf16", "onnx")


def _csv(kind, choices=None):
    def parse(text: str) -> list:
        items = [kind(t) for t in text.split(",") if t]
        if not items or (choices and any(i not in choices for i in items)):
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {choices or kind.__name__}")
        return items
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.stream_latency", description=__doc__.splitlines()[0])
    p.add_argument("--models", type=_csv(str, MODELS), default=list(MODELS))
    p.add_argument("--threads", type=_csv(int), default=[1, 2], help="intra-op thread counts (default 1,2)")
    p.add_argument("--backends", type=_csv(str, BACKENDS), default=list(BACKENDS))
    p.add_argument("--updates", type=int, default=200, help="timed updates per case, small model")
    p.add_argument("--ntu-updates", type=int, default=20, help="timed updates per case, NTU-60 model")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--no-save", action="store_true")
    return p


def write_checkpoint(name: str, directory: Path) -> Path:
    """An untrained model of MODELS[name] as a training checkpoint (what the stream CLI loads)."""
    import torch

    from amanet_fast import build_model
    from amanet_fast.training.checkpoint import model_record, save_checkpoint

    spec = dict(MODELS[name])
    dataset, window = spec.pop("dataset"), spec.pop("window")
    torch.manual_seed(0)
    model = build_model("amanet", dataset, in_channels=3, stream="joint", kernel_backend="eager", **spec)
    config = {"dataset": dataset, "data": {"stream": "joint", "clip_len": window},
              "model": {"arch": "amanet", "args": {k: list(v) if isinstance(v, tuple) else v
                                                   for k, v in spec.items()}}}
    classes = [f"class{i}" for i in range(model.num_class)]
    state = {"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": {}, "epoch": 0, "rng": {},
             "config": config, **model_record(model, model.config.layout, classes, ["x", "y", "z"])}
    return save_checkpoint(directory / f"{name}.pt", state)


def _frames(stream: Any, count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((stream.channels, stream.joints, stream.persons)).astype(np.float32)
            for _ in range(count)]


def _summary(timed: list[tuple[float, float]]) -> dict[str, Any]:
    a = np.asarray([w for w, _ in timed])
    cpu = np.asarray([c for _, c in timed])
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "min_ms": float(a.min()),
            "max_ms": float(a.max()), "updates": len(a),
            # CPU time of the process per update: what the update costs when the core is not shared
            "cpu_p50_ms": float(np.percentile(cpu, 50)), "cpu_p99_ms": float(np.percentile(cpu, 99))}


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(t: tuple[float, float]) -> tuple[float, float]:
    return (time.perf_counter() - t[0]) * 1e3, (time.process_time() - t[1]) * 1e3


def time_eager(stream: Any, updates: int, warmup: int) -> list[tuple[float, float]]:
    frames = _frames(stream, stream.window + warmup + updates)
    stream.every = 10 ** 9  # fill the window without predicting
    for f in frames[:stream.window]:
        stream.push(f)
    stream.every, stream.accepted = 1, 0
    out = []
    for i, f in enumerate(frames[stream.window:]):
        t0 = _clock()
        update = stream.push(f)
        ms = _since(t0)
        assert update is not None and update.frames == stream.window
        if i >= warmup:
            out.append(ms)
    return out


def time_onnx(stream: Any, onnx_path: Path, threads: int, updates: int, warmup: int) -> list[tuple[float, float]]:
    """The stream's window and model_input, the forward in ONNX Runtime."""
    import onnxruntime as ort

    from amanet_fast.predict import model_input

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    tm = stream.predictor.models[0]
    frames = _frames(stream, stream.window + warmup + updates)
    stream.every = 10 ** 9  # the window only: prediction is done here
    for f in frames[:stream.window]:
        stream.push(f)
    out = []
    for i, f in enumerate(frames[stream.window:]):
        t0 = _clock()
        stream.push(f)
        x = model_input(stream.frames(), tm)[None]
        logits = session.run(["logits"], {"x": x})[0][0].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        np.argsort(-p)[:5]
        ms = _since(t0)
        if i >= warmup:
            out.append(ms)
    return out


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from amanet_fast import Stream
    from amanet_fast.export import export_onnx

    allowed = len(os.sched_getaffinity(0))
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stream_latency_") as tmp:
        for name in args.models:
            ckpt = write_checkpoint(name, Path(tmp))
            stream = Stream(ckpt, kernel_backend="eager")
            tm = stream.predictor.models[0]
            params = sum(p.numel() for p in tm.model.parameters())
            onnx_path = None
            updates = args.updates if name == "small" else args.ntu_updates
            for threads in args.threads:
                for backend in args.backends:
                    case = {"model": name, "threads": threads, "backend": backend, "window": stream.window,
                            "joints": stream.joints, "persons": stream.persons, "params": params}
                    if threads > allowed:
                        case.update(measured=False, why=f"this process may use {allowed} core(s) (taskset); "
                                                        f"{threads} threads would share or take another core")
                        results.append(case)
                        print(f"{name:6} {threads}t {backend:5} not measured: {case['why']}", flush=True)
                        continue
                    if backend == "onnx":
                        try:
                            import onnxruntime  # noqa: F401
                        except ImportError:
                            case.update(measured=False, why="onnxruntime is not installed (pip install "
                                                            "'amanet-fast[export]')")
                            results.append(case)
                            print(f"{name:6} {threads}t onnx  not measured: {case['why']}", flush=True)
                            continue
                        if onnx_path is None:
                            onnx_path = export_onnx(tm, Path(tmp) / f"{name}.onnx", frames=stream.window)
                    torch.set_num_threads(threads)
                    load_before = _load()
                    if backend == "onnx":
                        ms = time_onnx(stream, onnx_path, threads, updates, args.warmup)
                    else:
                        stream.precision = backend
                        ms = time_eager(stream, updates, args.warmup)
                    case.update(measured=True, **_summary(ms), load_before=load_before, load_after=_load())
                    target = TARGET_MS.get(name)
                    if target is not None:
                        case["target_p99_ms"], case["meets_target"] = target, case["p99_ms"] <= target
                    results.append(case)
                    print(f"{name:6} {threads}t {backend:5} p50 {case['p50_ms']:8.1f} ms  p99 {case['p99_ms']:8.1f} ms"
                          f"  min {case['min_ms']:8.1f} ms  cpu p50 {case['cpu_p50_ms']:7.1f} ms  ({len(ms)} updates, load {load_before[0]:.2f} -> "
                          f"{case['load_after'][0]:.2f})", flush=True)
    return {"cases": results, "cpus_allowed": sorted(os.sched_getaffinity(0)), "cpu_count": os.cpu_count()}


def save(payload: dict[str, Any], directory: Path) -> Path:
    from amanet_fast.atomic import write_json_atomic

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return write_json_atomic(directory / f"stream_latency_{stamp}.json", payload)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.updates < 1 or args.ntu_updates < 1 or args.warmup < 0:
        build_parser().error("--updates / --ntu-updates must be >= 1, --warmup >= 0")
    from benchmarks.conftest import environment_info

    payload = run(args)
    payload["environment"] = environment_info()
    payload["command"] = "python -m benchmarks.stream_latency " + " ".join(argv)
    if not args.no_save:
        print(f"results written to {save(payload, args.results_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
