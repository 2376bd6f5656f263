"""Pack a finished training run as a shipped pretrained checkpoint (build-time tool).

    python tools/pack_pretrained.py --work-dir work_dirs/ucla_cpu_standard_joint --name ucla-amanet-joint

Takes the run's final-epoch checkpoint (latest.pt; refused unless the schedule finished: no
epoch is picked on the validation set), keeps the network's description and half-precision
weights (no optimizer state), writes amanet_fast/pretrained/NAME.pt atomically and records in
amanet_fast/pretrained/index.json its sha256, what it was trained on, the final-epoch top-1 /
top-5 of results.json, the summed epoch training time from log.txt and the command.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amanet_fast.atomic import write_text_atomic  # noqa: E402
from amanet_fast.pretrained import index_file, pretrained_dir, sha256_file  # noqa: E402
from amanet_fast.training.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

TRAINED_ON = {"ucla": "NW-UCLA (views 1+2 train, view 3 val; 1020 / 464 clips)"}
_EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+): train loss [^,]+, train top-1 [^,]+, lr [^,]+, ([\d.]+) s \(")


def train_seconds(log_text: str) -> float:
    """Sum of the per-epoch training times in log.txt (the last line of each epoch wins after a resume)."""
    per_epoch: dict[int, float] = {}
    for m in _EPOCH_LINE.finditer(log_text):
        per_epoch[int(m.group(1))] = float(m.group(3))
    return sum(per_epoch.values())


def compact(state: dict) -> dict:
    out = {k: v for k, v in state.items() if k not in ("optimizer", "scheduler", "scaler", "rng")}
    out["model"] = {k: (v.half() if v.is_floating_point() else v) for k, v in state["model"].items()}
    out.update(optimizer={}, scheduler={}, scaler={}, rng={})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/pack_pretrained.py", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--work-dir", type=Path, required=True)
    p.add_argument("--name", required=True, help="the name users pass as --checkpoint, e.g. ucla-amanet-joint")
    p.add_argument("--hardware", default="2-core AMD EPYC CPU, 1 thread", help="where it trained (index text)")
    args = p.parse_args(argv)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", args.name):
        p.error(f"--name: lowercase letters, digits and '-' only, got {args.name!r}")
    state = load_checkpoint(args.work_dir / "latest.pt")
    cfg = state["config"]
    epochs = int(cfg["train"]["epochs"])
    if int(state["epoch"]) != epochs:
        p.error(f"{args.work_dir}/latest.pt is epoch {state['epoch']} of {epochs}: the schedule has not finished")
    results = json.loads((args.work_dir / "results.json").read_text())
    if int(results["epoch"]) != epochs:
        p.error(f"{args.work_dir}/results.json is for epoch {results['epoch']}, not the final {epochs}")
    file = pretrained_dir() / f"{args.name}.pt"
    save_checkpoint(file, compact(state))
    digest = sha256_file(file)
    command = (args.work_dir / "command.txt").read_text().strip().split("train.py", 1)[-1]
    index = json.loads(index_file().read_text()) if index_file().is_file() else {}
    index[args.name] = {
        "file": file.name, "sha256": digest, "bytes": file.stat().st_size,
        "dataset": cfg["dataset"], "trained_on": TRAINED_ON.get(cfg["dataset"], cfg["dataset"]),
        "arch": cfg["model"]["arch"], "stream": cfg["data"]["stream"], "seed": int(cfg["seed"]),
        "epochs": epochs, "top1": float(results["top1"]), "top5": float(results["top5"]),
        "train_minutes": round(train_seconds((args.work_dir / "log.txt").read_text()) / 60, 1),
        "hardware": args.hardware, "command": "python train.py" + command,
    }
    write_text_atomic(index_file(), json.dumps(dict(sorted(index.items())), indent=2) + "\n")
    print(f"{file} ({file.stat().st_size / 1e6:.2f} MB, sha256 {digest}); index entry {args.name}: top-1 "
          f"{100 * index[args.name]['top1']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
