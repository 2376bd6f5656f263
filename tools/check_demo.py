"""Check that the demo holds: `python train.py` (synthetic, full AMANet) for every seed x thread count.

    python tools/check_demo.py [--seeds 0 1 2] [--threads 1 2] [--min-top1 0.90] [--budget 180]
                               [--jobs 1] [-- extra train.py overrides, e.g. runtime.amp=off]

The demo data is generated once (timed, like a first `python train.py`), then
each run is the plain demo command plus `--seed S runtime.threads=N` in its own
work dir. A run passes when its final val top-1 >= --min-top1 and its training
wall time <= --budget seconds. Prints one row per run (seed, threads, top-1,
train wall s, CPU s = user + sys of that process) and exits 1 if any run fails.
`--jobs` > 1 runs several at once: only for a correctness sweep, since runs then
share the cores and wall times are no longer what a user sees (CPU seconds are
the load-independent figure).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _demo_settings() -> dict:
    from amanet_fast.training import config as C

    args = C.build_arg_parser().parse_intermixed_args([])
    return C.resolve_config(args)["data"]["synthetic"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--min-top1", type=float, default=0.90)
    p.add_argument("--budget", type=float, default=180.0, help="max training wall seconds per run")
    p.add_argument("--jobs", type=int, default=1, help="runs at once (>1 distorts wall times)")
    p.add_argument("--out", type=Path, help="work dirs and demo cache (default: a new temp folder)")
    p.add_argument("extra", nargs="*", help="extra train.py arguments, after --")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    out = args.out or Path(tempfile.mkdtemp(prefix="check_demo-"))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, AMANET_CACHE=str(out / "cache"))

    from amanet_fast.data.synthetic import ensure_synthetic

    syn = _demo_settings()
    t0 = time.perf_counter()
    ensure_synthetic(out / "cache" / "synthetic", seed=int(syn["seed"]), num_train=int(syn["num_train"]),
                     num_val=int(syn["num_val"]))
    gen_s = time.perf_counter() - t0
    print(f"demo data: {out / 'cache' / 'synthetic'} ({gen_s:.1f} s to generate and prepare)", flush=True)

    todo = [(s, n) for s in args.seeds for n in args.threads]
    running: dict[int, tuple[int, int, subprocess.Popen, float, Path]] = {}
    rows = []
    while todo or running:
        while todo and len(running) < args.jobs:
            seed, threads = todo.pop(0)
            wd = out / f"seed{seed}_threads{threads}"
            cmd = [sys.executable, str(REPO / "train.py"), "--seed", str(seed), "--work-dir", str(wd),
                   f"runtime.threads={threads}", "runtime.progress=false", "runtime.tensorboard=false", *args.extra]
            log = open(out / f"seed{seed}_threads{threads}.log", "w")
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[proc.pid] = (seed, threads, proc, time.perf_counter(), wd)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        seed, threads, proc, start, wd = running.pop(pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        cpu = usage.ru_utime + usage.ru_stime
        top1, train_s = float("nan"), wall
        res_path = wd / "results.json"
        if proc.returncode == 0 and res_path.is_file():
            res = json.loads(res_path.read_text())
            top1, train_s = float(res["top1"]), float(res.get("elapsed_s", wall))
        ok = proc.returncode == 0 and top1 >= args.min_top1 and train_s <= args.budget
        rows.append((seed, threads, top1, train_s, cpu, ok, proc.returncode))
        print(f"  finished seed {seed} threads {threads}: top-1 {top1:.4f}, {train_s:.1f} s, rc {proc.returncode}",
              flush=True)

    rows.sort()
    print("\n| seed | threads | val top-1 | train wall s | CPU s | pass |\n|---:|---:|---:|---:|---:|:---:|")
    for seed, threads, top1, train_s, cpu, ok, rc in rows:
        print(f"| {seed} | {threads} | {100 * top1:.1f}% | {train_s:.1f} | {cpu:.1f} | {'yes' if ok else 'NO'} |")
    failed = [r for r in rows if not r[5]]
    print(f"\n{len(rows) - len(failed)}/{len(rows)} runs reach >= {100 * args.min_top1:.0f}% top-1 within "
          f"{args.budget:.0f} s of training (+ {gen_s:.1f} s data generation, once); logs and work dirs in {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
