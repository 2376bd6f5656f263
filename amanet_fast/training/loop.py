"""The training / evaluation run: one code path for CPU, CUDA and DDP.

Determinism contract: the data order of epoch e depends only on (seed, e)
(DistributedSampler.set_epoch plus per-epoch seeded loader generators), and
every RNG the loop touches is saved in the checkpoint, so a run stopped after
any epoch and resumed ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import bisect
import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

from . import config as C
from ..atomic import write_json_atomic, write_pickle_atomic, write_text_atomic
from .checkpoint import CheckpointError, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from .data import DataBundle, build_datasets, ensure_data
from .distributed import DistContext, all_reduce_sum, barrier, broadcast_object, cleanup, gather_objects, init_distributed, shard
from .logging import ScalarWriter, close_logging, environment_report, setup_logging
from .metrics import evaluate_scores, plot_confusion_png, write_confusion_csv

ModelFactory = Callable[[dict, DataBundle], nn.Module]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN/inf; the message names epoch and step."""


# ----------------------------------------------------------------------------- setup helpers

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:  # numpy/random in loader workers follow the loader's seed
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


@dataclass(frozen=True)
class Precision:
    dtype: torch.dtype | None  # autocast dtype, None = full fp32

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}[self.dtype]


def resolve_precision(amp: str, device: torch.device) -> Precision:
    if amp == "auto":
        if device.type != "cuda":
            return Precision(None)
        return Precision(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if amp == "off":
        return Precision(None)
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("runtime.amp=fp16 needs a CUDA device; use bf16 or off on CPU")
    return Precision(torch.bfloat16 if amp == "bf16" else torch.float16)


def resolve_compile(flag: Any, device: torch.device) -> bool:
    return device.type == "cuda" if flag == "auto" else bool(flag)


def resolved_kernel_backend(requested: str, device: torch.device) -> str:
    """What `backend="auto"` means for the kernels (SPEC §2): Triton on CUDA tensors, eager otherwise."""
    if requested != "auto":
        return requested
    return "triton" if device.type == "cuda" else "eager"


def default_model_factory(cfg: dict, data: DataBundle) -> nn.Module:
    from amanet_fast import build_model

    kwargs = dict(num_class=data.num_classes, in_channels=data.in_channels, num_person=data.num_person,
                  stream=cfg["data"]["stream"], kernel_backend=cfg["runtime"]["kernel_backend"])
    kwargs.update(cfg["model"]["args"])
    return build_model(cfg["model"]["arch"], cfg["dataset"], **kwargs)


def lr_factor(epoch: int, steps: Sequence[int], gamma: float, warmup_epochs: int) -> float:
    """Step decay (x gamma at each milestone) with optional linear warm-up; epoch is 0-based."""
    f = gamma ** bisect.bisect_right(list(steps), epoch)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        f *= (epoch + 1) / warmup_epochs
    return f


def build_optimizer(cfg: dict, model: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    o = cfg["optim"]
    opt = torch.optim.SGD(model.parameters(), lr=C.scaled_lr(cfg), momentum=o["momentum"],
                          nesterov=bool(o["nesterov"]) and o["momentum"] > 0, weight_decay=o["weight_decay"])
    steps, gamma, warm = list(o["lr_steps"]), float(o["lr_gamma"]), int(o["warmup_epochs"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, steps, gamma, warm))
    return opt, sched


def _loader(ds: Dataset, batch_size: int, cfg: dict, ctx: DistContext, *, sampler=None, shuffle=False,
            drop_last=False) -> tuple[DataLoader, torch.Generator]:
    gen = torch.Generator()
    gen.manual_seed(int(cfg["seed"]))
    nw = int(cfg["data"]["num_workers"])
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=shuffle, drop_last=drop_last,
                        num_workers=nw, pin_memory=ctx.device.type == "cuda", generator=gen,
                        worker_init_fn=_seed_worker if nw > 0 else None, persistent_workers=False)
    return loader, gen


# ----------------------------------------------------------------------------- the run

class Run:
    """State of one invocation of train.py (one process of a DDP job)."""

    def __init__(self, cfg: dict, ctx: DistContext, work_dir: Path, argv: Sequence[str],
                 model_factory: ModelFactory | None) -> None:
        self.cfg, self.ctx, self.work_dir, self.argv = cfg, ctx, work_dir, list(argv)
        self.model_factory = model_factory or default_model_factory
        self.log = setup_logging(work_dir, ctx.is_main, ctx.rank)
        self.precision = resolve_precision(cfg["runtime"]["amp"], ctx.device)
        self.compile = resolve_compile(cfg["runtime"]["compile"], ctx.device)
        self.kernel_backend = resolved_kernel_backend(cfg["runtime"]["kernel_backend"], ctx.device)
        self.writer: ScalarWriter | None = None
        self.best_top1, self.best_epoch = -1.0, 0
        self.start_time = time.time()

    # -- setup
    def announce(self, mode: str) -> None:
        cfg, ctx = self.cfg, self.ctx
        if ctx.is_main:
            self.log.info("=" * 30 + f" amanet-fast {mode} " + "=" * 30)
            for line in environment_report(ctx.device, ctx.world_size, self.argv).splitlines():
                self.log.info(line)
            self.log.info("resolved config:\n%s", C.dump_yaml(cfg).rstrip())
            write_text_atomic(self.work_dir / "config.yaml", C.dump_yaml(cfg))
            import shlex

            write_text_atomic(self.work_dir / "command.txt", shlex.join([sys.executable, *self.argv]) + "\n")
        self.log.info(
            "backend: device %s, precision %s, torch.compile %s, kernel backend %s (requested %s), "
            "distributed %s", ctx.device, self.precision.name, "on" if self.compile else "off",
            self.kernel_backend, cfg["runtime"]["kernel_backend"],
            f"{ctx.backend} x{ctx.world_size}" if ctx.distributed else "no",
        )

    def load_data(self) -> DataBundle:
        directory = ensure_data(self.cfg, self.ctx.is_main) if (self.ctx.is_main or self.cfg["dataset"] != "synthetic") else None
        directory = broadcast_object(self.ctx, str(directory) if directory is not None else None)
        data = build_datasets(self.cfg, Path(directory))
        self.log.info("data: %s | train %d, val %d%s samples | %d classes | input (C=%d, T=%d, V=%d, M=%d) | stream %s",
                      directory, len(data.train), len(data.val),
                      f", holdout {len(data.holdout)}" if data.holdout is not None else "",
                      data.num_classes, data.in_channels, data.num_frames, data.num_joints, data.num_person, self.cfg["data"]["stream"])
        return data

    def build_model(self, data: DataBundle) -> nn.Module:
        torch.manual_seed(int(self.cfg["seed"]))  # same initial weights on every rank and every resume
        model = self.model_factory(self.cfg, data).to(self.ctx.device)
        n_params = sum(p.numel() for p in model.parameters())
        self.log.info("model: %s (%s) with %s parameters", self.cfg["model"]["arch"], type(model).__name__,
                      f"{n_params:,}")
        model_cfg = getattr(model, "config", None)
        if hasattr(model_cfg, "to_dict"):
            self.log.info("model config: %s", model_cfg.to_dict())
        return model

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.ctx.device.type, dtype=self.precision.dtype)

    # -- evaluation
    @torch.no_grad()
    def score(self, model: nn.Module, ds: Dataset, batch_size: int, desc: str) -> tuple[np.ndarray, float] | None:
        """Softmax scores of every sample of `ds` in dataset order (rank 0), plus mean loss; None on other ranks."""
        positions = shard(len(ds), self.ctx)
        loader, _ = _loader(Subset(ds, positions), batch_size, self.cfg, self.ctx)
        model.eval()
        chunks: list[np.ndarray] = []
        loss_sum = 0.0
        for x, y, _ in self._progress(loader, desc):
            x = x.to(self.ctx.device, non_blocking=True).float()
            y = y.to(self.ctx.device, non_blocking=True).long()
            with self.autocast():
                logits = model(x)
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            chunks.append(torch.softmax(logits, dim=1).cpu().numpy())
        local = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
        gathered = gather_objects(self.ctx, (positions, local, loss_sum))
        if not self.ctx.is_main:
            return None
        num_classes = max(g[1].shape[1] for g in gathered if g[1].size) if any(g[1].size for g in gathered) else 0
        scores = np.zeros((len(ds), num_classes), dtype=np.float32)
        for pos, sc, _ in gathered:
            if len(pos):
                scores[np.asarray(pos)] = sc
        return scores, sum(g[2] for g in gathered) / max(len(ds), 1)

    def _progress(self, it: Any, desc: str) -> Any:
        # Bars only on an interactive terminal: in a redirected log they interleave with the log lines.
        if not (self.ctx.is_main and self.cfg["runtime"]["progress"] and sys.stderr.isatty()):
            return it
        from tqdm import tqdm

        return tqdm(it, desc=desc, dynamic_ncols=True, leave=False)

    def write_eval_outputs(self, split: str, scores: np.ndarray, names: list[str], labels: np.ndarray,
                           class_names: list[str]) -> dict[str, Any]:
        report = evaluate_scores(scores, labels)
        wd = self.work_dir
        if self.cfg["eval"]["save_scores"]:
            write_pickle_atomic(wd / f"scores_{split}.pkl", {n: s for n, s in zip(names, scores)})
            write_pickle_atomic(wd / f"labels_{split}.pkl", (list(names), [int(v) for v in labels]))
        if self.cfg["eval"]["confusion_matrix"] and split == "val":
            write_confusion_csv(wd / "confusion_matrix.csv", report["confusion"], class_names)
            plot_confusion_png(wd / "confusion_matrix.png", report["confusion"], class_names)
        return report

    def results_record(self, report: dict[str, Any], epoch: int, extra: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        rec = {
            "top1": report["top1"], "top5": report["top5"], "mean_class_acc": report["mean_class_acc"],
            "epoch": epoch, "dataset": cfg["dataset"], "split": cfg["data"]["split"],
            "stream": cfg["data"]["stream"], "arch": cfg["model"]["arch"],
            "num_val_samples": report["num_samples"],
            "device": str(self.ctx.device), "precision": self.precision.name, "compile": self.compile,
            "kernel_backend": self.kernel_backend, "world_size": self.ctx.world_size,
            "elapsed_s": round(time.time() - self.start_time, 2),
        }
        rec.update(extra)
        rec["per_class_acc"] = report["per_class_acc"]
        return rec


def _micro_batches(x: torch.Tensor, y: torch.Tensor, fbs: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if fbs is None or fbs >= len(y):
        yield x, y
        return
    yield from zip(torch.split(x, fbs), torch.split(y, fbs))


def train(cfg: dict, argv: Sequence[str] = (), *, resume: bool = True,
          model_factory: ModelFactory | None = None) -> dict[str, Any] | None:
    """Train (resuming from WORK_DIR/latest.pt when present) and evaluate; returns rank 0's final results."""
    ctx = init_distributed(cfg["runtime"]["device"])
    try:
        return _train(cfg, ctx, argv, resume, model_factory)
    finally:
        close_logging()
        cleanup(ctx)


def _configure_runtime(cfg: dict) -> None:
    rt = cfg["runtime"]
    if rt["threads"]:
        torch.set_num_threads(int(rt["threads"]))
    if rt["deterministic"]:
        import os

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def _check_resume_compatible(saved: dict, cfg: dict, path: Path) -> list[str]:
    must_match = ("dataset", "data.split", "data.stream", "data.clip_len", "model.arch", "model.args")
    bad = [k for k in must_match if C.get_key(saved, k) != C.get_key(cfg, k)]
    if bad:
        raise ValueError(
            f"{path} was trained with a different setup ({', '.join(f'{k}: {C.get_key(saved, k)!r} vs now {C.get_key(cfg, k)!r}' for k in bad)}); "
            "use another --work-dir or --no-resume"
        )
    return [k for k, v in C.iter_flat(cfg) if k not in must_match and _get_flat(saved, k) != v]


def _get_flat(cfg: dict, key: str) -> Any:
    try:
        return C.get_key(cfg, key)
    except (KeyError, TypeError):
        return None


def _train(cfg: dict, ctx: DistContext, argv: Sequence[str], resume: bool,
           model_factory: ModelFactory | None) -> dict[str, Any] | None:
    _configure_runtime(cfg)
    resolve_precision(cfg["runtime"]["amp"], ctx.device)  # fail fast on an impossible setting
    if cfg["dataset"] != "synthetic":
        ensure_data(cfg, ctx.is_main)  # fail fast with the prepare command, before any work dir exists
    work_dir = Path(cfg["work_dir"] or C.default_work_dir(cfg))
    if ctx.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
    barrier(ctx)
    run = Run(cfg, ctx, work_dir, argv, model_factory)
    log = run.log
    run.announce("training")
    seed_everything(int(cfg["seed"]))
    data = run.load_data()

    world = ctx.world_size
    o = cfg["optim"]
    if o["batch_size"] % world:
        raise ValueError(f"optim.batch_size={o['batch_size']} is not divisible by the {world} processes")
    rank_batch = o["batch_size"] // world
    fbs = o["forward_batch_size"]
    if fbs is not None and fbs > rank_batch:
        fbs = None
    accum = 1 if fbs is None else math.ceil(rank_batch / fbs)
    eval_bs = int(cfg["train"]["eval_batch_size"] or fbs or rank_batch)

    model = run.build_model(data)
    optimizer, scheduler = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=run.precision.dtype == torch.float16)
    log.info("optimizer: SGD lr %.5g (base %g x batch %d / %d), momentum %g, nesterov %s, wd %g, steps %s x%g, "
             "warmup %d | batch %d = %d ranks x %d%s", C.scaled_lr(cfg), o["base_lr"], o["batch_size"],
             o["base_batch_size"], o["momentum"], o["nesterov"], o["weight_decay"], o["lr_steps"], o["lr_gamma"],
             o["warmup_epochs"], o["batch_size"], world, rank_batch,
             f" ({accum} accumulated micro-batches of {fbs})" if accum > 1 else "")

    start_epoch = 0
    latest = work_dir / "latest.pt"
    if resume and latest.exists():
        state = load_checkpoint(latest, map_location="cpu")
        changed = _check_resume_compatible(state["config"], cfg, latest)
        if changed:
            log.warning("resuming with changed settings: %s", ", ".join(changed))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        run.best_top1, run.best_epoch = float(state.get("best_top1", -1.0)), int(state.get("best_epoch", 0))
        rng = state["rng"]
        if isinstance(rng, list):  # one state per rank; a changed world size reuses rank 0's
            if len(rng) != world:
                log.warning("checkpoint holds RNG states of %d ranks, this run has %d", len(rng), world)
            rng = rng[ctx.rank] if ctx.rank < len(rng) else rng[0]
        restore_rng_state(rng)
        log.info("resumed from %s after epoch %d (best top-1 %.4f at epoch %d)", latest, start_epoch,
                 run.best_top1, run.best_epoch)
    else:
        torch.manual_seed(int(cfg["seed"]) + ctx.rank)  # per-rank stream for dropout etc.

    train_model: nn.Module = model
    if run.compile:
        train_model = torch.compile(model)
    eval_model = train_model
    ddp: nn.parallel.DistributedDataParallel | None = None
    if ctx.distributed:
        ddp = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        train_model = ddp

    sampler = DistributedSampler(data.train, num_replicas=world, rank=ctx.rank, shuffle=True,
                                 seed=int(cfg["seed"]), drop_last=False)
    drop_last = len(data.train) // world >= rank_batch
    train_loader, train_gen = _loader(data.train, rank_batch, cfg, ctx, sampler=sampler, drop_last=drop_last)
    writer = ScalarWriter(work_dir / "tb", cfg["runtime"]["tensorboard"] and ctx.is_main, log) if ctx.is_main else None
    run.writer = writer

    epochs = int(cfg["train"]["epochs"])
    stop_after = cfg["train"]["stop_after_epoch"]
    label_smoothing = float(o["label_smoothing"])
    results: dict[str, Any] | None = None
    if start_epoch >= epochs:
        log.info("already trained for %d/%d epochs: evaluating only", start_epoch, epochs)
    steps_per_epoch = len(train_loader)
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.time()
            sampler.set_epoch(epoch)
            train_gen.manual_seed(int(cfg["seed"]) * 100_003 + epoch * 1_009 + ctx.rank)
            train_model.train()
            lr = optimizer.param_groups[0]["lr"]
            tot_loss = torch.zeros((), dtype=torch.float64, device=ctx.device)
            tot_correct = torch.zeros((), dtype=torch.float64, device=ctx.device)
            tot_n = 0
            bar = run._progress(train_loader, f"epoch {epoch + 1}/{epochs}")
            for step, (x, y, _) in enumerate(bar):
                x = x.to(ctx.device, non_blocking=True).float()
                y = y.to(ctx.device, non_blocking=True).long()
                optimizer.zero_grad(set_to_none=True)
                step_stats = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss sum, correct, count
                micro = list(_micro_batches(x, y, fbs))
                for i, (xm, ym) in enumerate(micro):
                    sync = ddp is None or i == len(micro) - 1
                    with (contextlib.nullcontext() if sync else ddp.no_sync()):
                        with run.autocast():
                            logits = train_model(xm)
                        loss = F.cross_entropy(logits.float(), ym, label_smoothing=label_smoothing)
                        scaler.scale(loss * (len(ym) / len(y))).backward()
                    step_stats[0] += loss.detach().double() * len(ym)
                    step_stats[1] += (logits.detach().argmax(1) == ym).sum().double()
                    step_stats[2] += len(ym)
                step_stats = all_reduce_sum(ctx, step_stats)
                step_loss = float(step_stats[0] / step_stats[2])
                if not math.isfinite(step_loss):
                    raise NonFiniteLossError(
                        f"training loss became {step_loss} at epoch {epoch + 1}, step {step + 1}/{steps_per_epoch} "
                        f"(global step {epoch * steps_per_epoch + step + 1}); weights of that step were not applied. "
                        f"Lower optim.base_lr (now {o['base_lr']}), check the data, or try runtime.amp=off. "
                        f"The last good checkpoint is {latest if latest.exists() else 'none (first epoch)'}."
                    )
                if o["grad_clip"]:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(o["grad_clip"]))
                scaler.step(optimizer)
                scaler.update()
                tot_loss += step_stats[0]
                tot_correct += step_stats[1]
                tot_n += int(step_stats[2])
                if bar is not train_loader:
                    bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.4g}")
                if writer is not None:
                    writer.scalar("train/loss_step", step_loss, epoch * steps_per_epoch + step)
            scheduler.step()
            train_time = time.time() - t0
            train_loss = float(tot_loss) / max(tot_n, 1)
            train_acc = float(tot_correct) / max(tot_n, 1)
            log.info("epoch %d/%d: train loss %.4f, train top-1 %.4f, lr %.4g, %.1f s (%.1f samples/s)",
                     epoch + 1, epochs, train_loss, train_acc, lr, train_time, tot_n / max(train_time, 1e-9))
            if writer is not None:
                writer.scalar("train/loss", train_loss, epoch + 1)
                writer.scalar("train/top1", train_acc, epoch + 1)
                writer.scalar("train/lr", lr, epoch + 1)
                writer.scalar("time/train_epoch_s", train_time, epoch + 1)

            done = epoch + 1
            last = done == epochs or (stop_after is not None and done >= stop_after)
            if done % int(cfg["train"]["eval_every"]) == 0 or last:
                out = run.score(eval_model, data.val, eval_bs, "eval")
                if ctx.is_main:
                    assert out is not None
                    scores, val_loss = out
                    report = run.write_eval_outputs("val", scores, data.val_names, data.val_labels, data.class_names)
                    if report["top1"] > run.best_top1:
                        run.best_top1, run.best_epoch = report["top1"], done
                    log.info("epoch %d/%d: val top-1 %.4f, top-5 %.4f, mean class acc %.4f, loss %.4f "
                             "(best top-1 %.4f at epoch %d)", done, epochs, report["top1"], report["top5"],
                             report["mean_class_acc"], val_loss, run.best_top1, run.best_epoch)
                    if writer is not None:
                        for k in ("top1", "top5", "mean_class_acc"):
                            writer.scalar(f"val/{k}", report[k], done)
                        writer.scalar("val/loss", val_loss, done)
                    results = run.results_record(report, done, {
                        "mode": "train", "finished": done == epochs, "val_loss": val_loss,
                        "train_loss": train_loss, "train_top1": train_acc, "lr": lr,
                        "best_top1": run.best_top1, "best_epoch": run.best_epoch,
                        "epoch_time_s": round(train_time, 2), "epochs": epochs,
                    })
                    write_json_atomic(work_dir / "results.json", results)
                    is_best = run.best_epoch == done
                else:
                    is_best = False
                is_best = broadcast_object(ctx, is_best)
            else:
                is_best = False
            rng_states = gather_objects(ctx, capture_rng_state())
            if ctx.is_main:
                state = {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": done,
                    "rng": rng_states if ctx.distributed else rng_states[0],
                    "sampler": {"seed": int(cfg["seed"]), "epoch": done, "shuffle": True},
                    "config": cfg, "best_top1": run.best_top1, "best_epoch": run.best_epoch,
                }
                save_checkpoint(latest, state)
                if is_best:
                    save_checkpoint(work_dir / "best.pt", state)
            barrier(ctx)
            if stop_after is not None and done >= stop_after and done < epochs:
                log.info("stopping after epoch %d as configured (train.stop_after_epoch); "
                         "run the same command again to resume", done)
                return results

        if start_epoch >= epochs:
            out = run.score(eval_model, data.val, eval_bs, "eval")
            if ctx.is_main:
                assert out is not None
                report = run.write_eval_outputs("val", out[0], data.val_names, data.val_labels, data.class_names)
                results = run.results_record(report, start_epoch, {
                    "mode": "train", "finished": True, "val_loss": out[1],
                    "best_top1": run.best_top1, "best_epoch": run.best_epoch, "epochs": epochs})
                write_json_atomic(work_dir / "results.json", results)
        if data.holdout is not None:
            out = run.score(eval_model, data.holdout, eval_bs, "holdout")
            if ctx.is_main:
                assert out is not None
                rep = run.write_eval_outputs("holdout", out[0], data.holdout_names, data.holdout_labels,
                                             data.class_names)
                log.info("holdout (%d train samples kept out): top-1 %.4f -> scores_holdout.pkl for ensemble --search",
                         rep["num_samples"], rep["top1"])
        if ctx.is_main and results is not None:
            log.info("done: top-1 %.4f, top-5 %.4f, mean class acc %.4f after %d epochs in %.1f s -> %s",
                     results["top1"], results["top5"], results["mean_class_acc"], results["epoch"],
                     time.time() - run.start_time, work_dir / "results.json")
        return results
    finally:
        if writer is not None:
            writer.close()


def evaluate_checkpoint(cfg: dict, checkpoint: Path, argv: Sequence[str] = (), *,
                        model_factory: ModelFactory | None = None) -> dict[str, Any] | None:
    """--eval-only: score the val split with the weights of `checkpoint`."""
    ctx = init_distributed(cfg["runtime"]["device"])
    try:
        _configure_runtime(cfg)
        state = load_checkpoint(checkpoint, map_location="cpu")
        if cfg["dataset"] != "synthetic":
            ensure_data(cfg, ctx.is_main)
        work_dir = Path(cfg["work_dir"] or (Path(checkpoint).parent / "eval"))
        if ctx.is_main:
            work_dir.mkdir(parents=True, exist_ok=True)
        barrier(ctx)
        run = Run(cfg, ctx, work_dir, argv, model_factory)
        run.announce("evaluation")
        run.log.info("checkpoint: %s (epoch %d)", checkpoint, int(state["epoch"]))
        data = run.load_data()
        model = run.build_model(data)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint {checkpoint} does not fit the model built from the config "
                f"(arch {cfg['model']['arch']}, dataset {cfg['dataset']}, stream {cfg['data']['stream']}): {err}"
            ) from err
        eval_model = torch.compile(model) if run.compile else model
        bs = int(cfg["train"]["eval_batch_size"] or cfg["optim"]["forward_batch_size"]
                 or max(1, cfg["optim"]["batch_size"] // ctx.world_size))
        out = run.score(eval_model, data.val, bs, "eval")
        if not ctx.is_main:
            return None
        assert out is not None
        report = run.write_eval_outputs("val", out[0], data.val_names, data.val_labels, data.class_names)
        results = run.results_record(report, int(state["epoch"]), {
            "mode": "eval", "finished": True, "val_loss": out[1], "checkpoint": str(checkpoint)})
        write_json_atomic(work_dir / "results.json", results)
        run.log.info("eval: top-1 %.4f, top-5 %.4f, mean class acc %.4f on %d samples -> %s", report["top1"],
                     report["top5"], report["mean_class_acc"], report["num_samples"], work_dir / "results.json")
        return results
    finally:
        close_logging()
        cleanup(ctx)
