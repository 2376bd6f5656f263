"""`python -m benchmarks.threads_under_load`: the synthetic demo next to a competing CPU-bound
process, with the load-aware thread default (issue 22) and with the old one-thread-per-core.

Runs a shortened demo (`python train.py train.epochs=3 train.eval_every=3`: 3 of the demo's 8
epochs, one validation; everything else as `python train.py`) five ways, one after another:

  a  idle, new default (runtime.threads unset)
  b  idle, old default (runtime.threads=<usable cores>)
  c  a competitor (a Python busy loop) from the start, new default
  d  the same competitor, old default
  e  new default, the competitor arriving --arrive-s seconds into the run (exercises the re-check)

and prints each run's wall time, training time (sum of the epoch times in log.txt) and thread
log lines, then the ratios c/a (the issue's target: <= 1.5), a/b (idle speed kept: ~1.0), d/b and
e/a. Needs an otherwise idle machine; the other processes' load measured before each run is
recorded. About 7-8 min on the idle 2-core development machine, d (~5x slow) the most. Results go to
benchmarks/results/threads_under_load_<time>.json. `--smoke`: the seconds-long `--preset tiny`
instead of the demo, to check the plumbing.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from amanet_fast.training import threads as T

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SHORT_DEMO = ["train.epochs=3", "train.eval_every=3"]
SMOKE = ["--preset", "tiny", "data.synthetic.num_train=24", "data.synthetic.num_val=12"]
BUSY_LOOP = "while True:\n    pass\n"
_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+ ")  # log.txt's time and level
_EPOCH = re.compile(r"epoch \d+/\d+: train loss .*?, ([0-9.]+) s \(")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, no usage dump
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _run(name: str, extra: list[str], base: list[str], work: Path, competitor: float | None,
         timeout_s: float) -> dict[str, Any]:
    """One train.py run; `competitor`: seconds after the start at which the busy loop starts
    (negative: that long before), None: no competitor."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    wd = work / name
    cmd = [sys.executable, str(ROOT / "train.py"), *base, "--work-dir", str(wd), "runtime.tensorboard=false",
           "runtime.progress=false", *extra]
    load_before = T.measure_other_load(T.LoadProbe(), 0.5)
    busy = None
    if competitor is not None and competitor <= 0:
        busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        time.sleep(-competitor)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        if competitor is not None and competitor > 0:
            try:
                proc.wait(timeout=competitor)
            except subprocess.TimeoutExpired:
                busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
        _, err = proc.communicate(timeout=timeout_s)
        wall = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if busy is not None:
            busy.kill()
            busy.wait()
    if proc.returncode != 0:
        raise SystemExit(f"error: run {name} ({' '.join(cmd)}) failed with exit code {proc.returncode}: "
                         f"{err.strip().splitlines()[-1] if err.strip() else 'no stderr'}")
    log = (wd / "log.txt").read_text()
    lines = [_PREFIX.sub("", ln) for ln in log.splitlines()]
    return {
        "name": name, "overrides": extra, "competitor_at_s": competitor, "wall_s": round(wall, 2),
        "train_s": round(sum(float(m.group(1)) for m in map(_EPOCH.search, lines) if m), 2),
        "other_load_before": None if load_before is None else round(load_before, 2),
        "threads_log": [ln for ln in lines if "cpu runtime:" in ln or ("intra-op threads " in ln and " -> " in ln)],
    }


def main(argv: list[str] | None = None) -> int:
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny preset instead of the shortened demo (plumbing only)")
    p.add_argument("--arrive-s", type=float, default=15.0, help="when the competitor of run e starts (s)")
    p.add_argument("--timeout-s", type=float, default=900.0, help="limit per run")
    p.add_argument("--results-dir", default=str(RESULTS_DIR))
    args = p.parse_args(argv)
    base = SMOKE if args.smoke else SHORT_DEMO
    old = [f"runtime.threads={len(T.usable_cores())}"]
    runs = [("a_idle_new", [], None), ("b_idle_old", old, None), ("c_loaded_new", [], -1.0),
            ("d_loaded_old", old, -1.0), ("e_arriving_new", [], args.arrive_s)]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="threads_under_load_") as tmp:
        work = Path(tmp)
        if args.smoke:  # the tiny subset goes to its own folder, never over the demo's data
            base = [*base, f"data.root={work / 'synthetic'}"]
        # Data generation and cold file caches stay out of the timed runs.
        _run("warmup", ["train.epochs=1", "runtime.threads=1"], base, work, None, args.timeout_s)
        for name, extra, competitor in runs:
            r = results[name] = _run(name, extra, base, work, competitor, args.timeout_s)
            print(f"{name}: wall {r['wall_s']:.1f} s, training {r['train_s']:.1f} s, other load before "
                  f"{r['other_load_before']} cores", flush=True)
            for line in r["threads_log"]:
                print(f"    {line[:200]}", flush=True)

    def ratio(x: str, y: str) -> float:
        return round(results[x]["wall_s"] / results[y]["wall_s"], 3)

    ratios = {"c/a loaded/idle new (target <= 1.5)": ratio("c_loaded_new", "a_idle_new"),
              "a/b idle new/old (target ~1.0)": ratio("a_idle_new", "b_idle_old"),
              "d/b loaded/idle old": ratio("d_loaded_old", "b_idle_old"),
              "e/a arriving/idle new": ratio("e_arriving_new", "a_idle_new")}
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.results_dir) / f"threads_under_load_{stamp}{'_smoke' if args.smoke else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = ["python", "-m", "benchmarks.threads_under_load", *(sys.argv[1:] if argv is None else argv)]
    record = {"command": " ".join(command), "demo_overrides": SMOKE if args.smoke else base,
              "usable_cores": len(T.usable_cores()), "cpu_count": os.cpu_count(), "runs": results,
              "ratios_wall": ratios}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
