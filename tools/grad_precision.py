"""Where does CPU bf16 autocast change a training step? One real batch, same weights: the loss and
every parameter's gradient under the trainer's bf16 defaults (autocast, channels-last conv weights)
and under plain fp32, both against float64, in train mode as in training.

    python tools/grad_precision.py --checkpoint work_dirs/ucla_cpu_hours_joint_fp32_seed2/latest.pt \
        --data-root data/ucla [--split train] [--batch 16] [--seed 0] [--top 20]

Prints the losses, the whole-model relative error and cosine of each precision's gradient, and the
parameters with the largest bf16 error (fp32's beside it, for scale). Gradients that are zero in
exact arithmetic (float64 norm below 1e-9 of the largest: a conv bias right before a BatchNorm, which
cancels it) are counted apart: in lower precision they are rounding noise that the BatchNorm cancels
again, so they say nothing about accuracy.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from amanet_fast.data.dataset import SkeletonDataset  # noqa: E402
from amanet_fast.predict import load_trained_model  # noqa: E402
from amanet_fast.training import hardware  # noqa: E402
from amanet_fast.training.checkpoint import CheckpointError  # noqa: E402

ZERO = 1e-9  # float64 |grad| below this fraction of the largest parameter gradient norm: zero in exact arithmetic


def _gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
               bf16: bool) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    loss = F.cross_entropy(logits if logits.dtype == torch.float64 else logits.float(), y)
    loss.backward()
    grads = {n: p.grad.detach().double().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


def _agreement(got: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """(relative error, cosine) of a gradient against the float64 one."""
    return ((got - exact).norm() / exact.norm()).item(), F.cosine_similarity(got.flatten(), exact.flatten(), dim=0).item()


def compare(checkpoint: str | Path, data_root: str | Path, split: str = "train", batch: int = 16,
            seed: int = 0) -> dict:
    """Losses and per-parameter gradient agreement (fp32 vs bf16 defaults) on one batch of `split`."""
    trained = load_trained_model(checkpoint, kernel_backend="eager")
    data = SkeletonDataset(data_root, split, trained.stream, clip_len=trained.clip_len)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:batch].tolist()
    items = [data[i] for i in order]  # each read once: (x, label, index)
    x = torch.stack([torch.as_tensor(item[0]) for item in items])
    y = torch.tensor([item[1] for item in items])
    fp32 = trained.model.train()
    # Copies before any step: all three start from the same BatchNorm statistics.
    fp64, bf16 = copy.deepcopy(fp32).double(), copy.deepcopy(fp32)
    hardware.prepare_model(bf16, torch.device("cpu"), torch.bfloat16)
    loss64, g64 = _gradients(fp64, x.double(), y, bf16=False)
    loss32, g32 = _gradients(fp32, x, y, bf16=False)
    loss16, g16 = _gradients(bf16, x, y, bf16=True)
    largest = max(g.norm().item() for g in g64.values())
    zeros = [n for n, g in g64.items() if g.norm().item() < ZERO * largest]
    kept = [n for n in g64 if n not in zeros]
    rows = []
    for name in kept:
        (e16, c16), (e32, _) = _agreement(g16[name], g64[name]), _agreement(g32[name], g64[name])
        rows.append({"name": name, "rel_err_bf16": e16, "cosine_bf16": c16, "rel_err_fp32": e32,
                     "norm": g64[name].norm().item()})
    rows.sort(key=lambda r: -r["rel_err_bf16"])
    whole = {tag: _agreement(torch.cat([g[n].flatten() for n in kept]), torch.cat([g64[n].flatten() for n in kept]))
             for tag, g in (("bf16", g16), ("fp32", g32))}
    return {"loss_fp64": loss64, "loss_fp32": loss32, "loss_bf16": loss16, "whole": whole, "params": rows,
            "zero_in_exact": zeros, "batch": len(order), "stream": trained.stream, "split": split}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/grad_precision.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data-root", required=True, help="the prepared data the checkpoint was trained on")
    p.add_argument("--split", default="train")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="which clips form the batch")
    p.add_argument("--top", type=int, default=20, help="parameters to list")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.batch < 1 or args.top < 0 or args.threads < 1:
        print("error: --batch and --threads must be >= 1, --top >= 0", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    try:
        r = compare(args.checkpoint, args.data_root, args.split, args.batch, args.seed)
    except (CheckpointError, ValueError, FileNotFoundError) as err:
        print(f"error: {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{r['stream']} stream, {r['batch']} clips of {r['split']}: loss float64 {r['loss_fp64']:.6f}, "
          f"fp32 {r['loss_fp32']:.6f}, bf16 defaults {r['loss_bf16']:.6f}")
    for tag in ("bf16", "fp32"):
        err, cos = r["whole"][tag]
        print(f"{tag} gradient vs float64, all {len(r['params'])} parameters: relative error {err:.2e}, cosine {cos:.6f}")
    print(f"({len(r['zero_in_exact'])} more are zero in exact arithmetic: conv biases right before a BatchNorm)")
    print(f"{'bf16 err':>9} {'cosine':>8} {'fp32 err':>9} {'|grad|':>10}  parameter")
    for row in r["params"][:args.top]:
        print(f"{row['rel_err_bf16']:9.4f} {row['cosine_bf16']:8.4f} {row['rel_err_fp32']:9.2e} {row['norm']:10.3e}  "
              f"{row['name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
