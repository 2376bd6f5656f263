"""The training / evaluation run: one code path for CPU, CUDA and DDP.

Determinism contract: the data order of epoch e depends only on (seed, e)
(DistributedSampler.set_epoch plus per-epoch seeded loader generators), and
every RNG the loop touches is saved in the checkpoint, so a run stopped after
any epoch and resumed ends with the same weights as one that never stopped.
"""
from __future__ import annotations

import bisect
import contextlib
import json
import logging
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
from . import hardware
from ..atomic import write_json_atomic, write_pickle_atomic, write_text_atomic
from .checkpoint import (CheckpointError, capture_rng_state, check_matches_data, load_checkpoint, model_record,
                         rebuild_model, restore_rng_state, save_checkpoint)
from .data import (DataBundle, build_datasets, check_synthetic_root, describe_data, ensure_data, fit_num_workers,
                   model_kwargs)
from .distributed import DistContext, all_reduce_sum, barrier, broadcast_object, cleanup, gather_objects, init_distributed, shard
from .logging import ScalarWriter, close_logging, environment_report, setup_logging
from .metrics import evaluate_scores, plot_confusion_png, write_confusion_csv, write_sample_outputs
from .progress import StepReporter
from .threads import ThreadGovernor, ThreadPolicy, usable_cores
from .workdir import SignalGuard, Terminated, WorkDirBusyError, WorkDirLock, remove_stale_temp_files

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
        if device.type != "cuda":  # bf16 only where the CPU computes it natively (hardware.py)
            return Precision(torch.bfloat16 if device.type == "cpu" and hardware.cpu_bf16_native()[0] else None)
        return Precision(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    if amp == "off":
        return Precision(None)
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("runtime.amp=fp16 needs a CUDA device; use bf16 or off on CPU")
    return Precision(torch.bfloat16 if amp == "bf16" else torch.float16)


def resolve_compile(flag: Any, device: torch.device) -> bool:
    return device.type == "cuda" if flag == "auto" else bool(flag)


def resolved_kernel_backend(requested: str, device: torch.device) -> str:
    """What `backend="auto"` means for the kernels on `device` (kernels.resolve_backend)."""
    import kernels

    return kernels.resolve_backend(requested, device.type)


def default_model_factory(cfg: dict, data: DataBundle) -> nn.Module:
    """The network for the prepared data: layout, classes and channels from its manifest, the rest from the recipe."""
    from amanet_fast.model.build import build_model

    return build_model(cfg["model"]["arch"], cfg["dataset"], **model_kwargs(cfg, data))


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
    nw, _ = fit_num_workers(int(cfg["data"]["num_workers"]), ctx.world_size)
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, shuffle=shuffle, drop_last=drop_last,
                        num_workers=nw, pin_memory=ctx.device.type == "cuda", generator=gen,
                        worker_init_fn=_seed_worker if nw > 0 else None, persistent_workers=False)
    return loader, gen


# ----------------------------------------------------------------------------- the run

class _EarlyRecords(logging.Handler):
    """Keeps the records logged before the work dir is opened, to replay them into log.txt."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Run:
    """State of one invocation of train.py (one process of a DDP job).

    Nothing is written to the work dir before `open_work_dir`, which is called once
    the data, the model and any checkpoint to resume from are known to load: a failed
    start leaves the files of a previous run as they were. Lines logged before that
    are printed at once and replayed into log.txt after the run header.
    """

    def __init__(self, cfg: dict, ctx: DistContext, work_dir: Path, argv: Sequence[str],
                 model_factory: ModelFactory | None, guard: SignalGuard | None = None) -> None:
        self.cfg, self.ctx, self.work_dir, self.argv = cfg, ctx, work_dir, list(argv)
        self.model_factory = model_factory or default_model_factory
        self.guard = guard or SignalGuard()
        self.log = setup_logging(None, ctx.is_main, ctx.rank)
        self._early = _EarlyRecords()
        self.log.addHandler(self._early)
        self.lock: WorkDirLock | None = None
        self.precision = resolve_precision(cfg["runtime"]["amp"], ctx.device)
        self.compile = resolve_compile(cfg["runtime"]["compile"], ctx.device)
        self.kernel_backend = resolved_kernel_backend(cfg["runtime"]["kernel_backend"], ctx.device)
        self.writer: ScalarWriter | None = None
        self.best_top1, self.best_epoch = -1.0, 0
        self.start_time = time.time()
        self.elapsed_before = 0.0  # training time of earlier runs of this work dir (from latest.pt)

    def elapsed(self) -> float:
        """Seconds spent on this run across resumes: results.json reports the whole run, not the last leg."""
        return self.elapsed_before + time.time() - self.start_time

    # -- setup
    def open_work_dir(self, mode: str) -> None:
        """Take the work dir (lock, stale temp files), start log.txt, record config.yaml and command.txt."""
        cfg, ctx = self.cfg, self.ctx
        import shlex

        command = shlex.join([sys.executable, *self.argv])
        error = None
        if ctx.is_main:
            try:
                self.lock = WorkDirLock.acquire(self.work_dir, command)
            except WorkDirBusyError as err:
                error = str(err)
        error = broadcast_object(ctx, error)
        if error is not None:
            raise WorkDirBusyError(error)
        early = self._early.records
        self.log = setup_logging(self.work_dir, ctx.is_main, ctx.rank)  # drops the early-records handler
        if ctx.is_main:
            self.log.info("=" * 30 + f" amanet-fast {mode} " + "=" * 30)
            for line in environment_report(ctx.device, ctx.world_size, self.argv).splitlines():
                self.log.info(line)
            self.log.info("resolved config:\n%s", C.dump_yaml(cfg).rstrip())
            for h in self.log.handlers:  # already printed on the console: replay into the file only
                if isinstance(h, logging.FileHandler):
                    for rec in early:
                        h.handle(rec)
            assert self.lock is not None
            for w in self.lock.warnings:
                self.log.warning("%s", w)
            removed = remove_stale_temp_files(self.work_dir)
            if removed:
                self.log.warning("removed %d temp file(s) of an interrupted write: %s", len(removed), ", ".join(removed))
            write_text_atomic(self.work_dir / "config.yaml", C.dump_yaml(cfg))
            write_text_atomic(self.work_dir / "command.txt", command + "\n")
        self.log.info(
            "backend: device %s, precision %s, torch.compile %s, kernel backend %s (requested %s), "
            "distributed %s", ctx.device, self.precision.name, "on" if self.compile else "off",
            self.kernel_backend, cfg["runtime"]["kernel_backend"],
            f"{ctx.backend} x{ctx.world_size}" if ctx.distributed else "no",
        )
        if ctx.device.type == "cpu" and _CPU_RUNTIME is not None:
            self.log.info(_CPU_RUNTIME.describe())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def load_data(self) -> DataBundle:
        directory = ensure_data(self.cfg, self.ctx.is_main) if (self.ctx.is_main or self.cfg["dataset"] != "synthetic") else None
        directory = broadcast_object(self.ctx, str(directory) if directory is not None else None)
        data = build_datasets(self.cfg, Path(directory))
        for line in describe_data(self.cfg, data, self.ctx.world_size):
            self.log.info("%s", line)
        self.log.info("data: %s | train %d, val %d%s samples | %d classes | input (C=%d, T=%d, V=%d, M=%d) | stream %s",
                      directory, len(data.train), len(data.val),
                      f", holdout {len(data.holdout)}" if data.holdout is not None else "",
                      data.num_classes, data.in_channels, data.num_frames, data.num_joints, data.num_person, self.cfg["data"]["stream"])
        return data

    def build_model(self, data: DataBundle) -> nn.Module:
        torch.manual_seed(int(self.cfg["seed"]))  # same initial weights on every rank and every resume
        try:
            model = self.model_factory(self.cfg, data)
        except (TypeError, ValueError) as err:  # a bad model.args value or name, before anything is written
            raise ValueError(f"model.args: the {self.cfg['model']['arch']} model cannot be built with "
                             f"{self.cfg['model']['args']}: {err}") from None
        model, memory_format = self.place_model(model)
        n_params = sum(p.numel() for p in model.parameters())
        self.log.info("model: %s (%s) with %s parameters, %s", self.cfg["model"]["arch"], type(model).__name__,
                      f"{n_params:,}", memory_format)
        model_cfg = getattr(model, "config", None)
        if hasattr(model_cfg, "to_dict"):
            self.log.info("model config: %s", {**model_cfg.to_dict(), "layout": model_cfg.layout.name})
        return model

    def place_model(self, model: nn.Module) -> tuple[nn.Module, str]:
        """Device and memory format, the same for training and --eval-only (bf16 numerics
        depend on the format, so an evaluation must place the model as training did)."""
        model = model.to(self.ctx.device)
        return model, hardware.prepare_model(model, self.ctx.device, self.precision.dtype)

    def load_weights(self, model: nn.Module, state: dict[str, Any], checkpoint: Path) -> None:
        try:
            model.load_state_dict(state["model"])
        except (RuntimeError, KeyError, TypeError) as err:
            first = str(err).strip().splitlines()
            raise CheckpointError(
                f"{checkpoint}: weights do not fit the model built from the config "
                f"(arch {self.cfg['model']['arch']}, dataset {self.cfg['dataset']}, stream {self.cfg['data']['stream']}): "
                f"{' '.join(first[:2])[:300]}"
            ) from None

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

    def evaluate(self, model: nn.Module, data: DataBundle, split: str, batch_size: int, epoch: int,
                 extra: dict[str, Any]) -> dict[str, Any] | None:
        """The one evaluation path (training epochs, resumed-finished runs, --eval-only, holdout):
        score the split, write its scores and confusion matrix, return the results record (rank 0)."""
        ds, names, labels = ((data.val, data.val_names, data.val_labels) if split == "val" else
                             (data.holdout, data.holdout_names, data.holdout_labels))
        out = self.score(model, ds, batch_size, split)
        if not self.ctx.is_main:
            return None
        assert out is not None
        scores, loss = out
        report = self.write_eval_outputs(split, scores, names, labels, data.class_names)
        return self.results_record(report, epoch, {f"{split}_loss": loss, **extra})

    def write_eval_outputs(self, split: str, scores: np.ndarray, names: list[str], labels: np.ndarray,
                           class_names: list[str]) -> dict[str, Any]:
        if not np.isfinite(scores).all():
            bad = int((~np.isfinite(scores).all(axis=1)).sum())
            raise NonFiniteLossError(f"{bad} of {len(scores)} {split} samples got non-finite scores (NaN/inf in the "
                                     "model output): the weights or the data hold NaN/inf; no results written")
        report = evaluate_scores(scores, labels)
        wd = self.work_dir
        write_sample_outputs(wd, split, names, scores, labels, class_names, report)
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
            "elapsed_s": round(self.elapsed(), 2),
        }
        rec.update(extra)
        rec["per_class_acc"] = report["per_class_acc"]
        rec["most_confused"] = report.get("most_confused", [])
        return rec

    def write_results(self, results: dict[str, Any]) -> None:
        if self.ctx.is_main:
            write_json_atomic(self.work_dir / "results.json", results)


def _micro_batches(x: torch.Tensor, y: torch.Tensor, fbs: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if fbs is None or fbs >= len(y):
        yield x, y
        return
    yield from zip(torch.split(x, fbs), torch.split(y, fbs))


_CPU_RUNTIME: hardware.CpuRuntime | None = None  # what _configure_runtime set, for the log


def _configure_runtime(cfg: dict, device: torch.device) -> None:
    global _CPU_RUNTIME
    rt = cfg["runtime"]
    import os

    _CPU_RUNTIME = hardware.apply_cpu_defaults(rt["threads"], int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                                               device.type)
    if rt["deterministic"]:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def _check_resume_compatible(saved: dict, cfg: dict, path: Path) -> list[str]:
    must_match = ("dataset", "data.split", "data.stream", "data.clip_len", "model.arch", "model.args")
    bad = [k for k in must_match if _get_flat(saved, k) != C.get_key(cfg, k)]
    if bad:
        raise ValueError(
            f"{path}: was trained with a different setup ({', '.join(f'{k}: {_get_flat(saved, k)!r} vs now {C.get_key(cfg, k)!r}' for k in bad)}); "
            "use another --work-dir or --no-resume"
        )
    return [k for k, v in C.iter_flat(cfg) if k not in must_match and _get_flat(saved, k) != v]


def _get_flat(cfg: dict, key: str) -> Any:
    try:
        return C.get_key(cfg, key)
    except (KeyError, TypeError):
        return None


# ----------------------------------------------------------------------------- training phases

# Write order of one epoch (a kill at any instant leaves a consistent set; `_check_outputs` repairs
# the one gap on resume): scores_val.pkl / confusion -> latest.pt -> best.pt -> results.json.
# latest.pt is the commit point: files before it describe an epoch that a resume redoes
# bit for bit; best.pt and results.json after it are rebuilt from latest.pt when missing or behind.

class Training:
    """One training run split into its phases: resume, train_one_epoch, evaluate, save."""

    def __init__(self, run: Run, data: DataBundle, model: nn.Module) -> None:
        cfg, ctx = run.cfg, run.ctx
        self.run, self.cfg, self.ctx, self.data, self.model = run, cfg, ctx, data, model
        self.log = run.log
        world = ctx.world_size
        o = cfg["optim"]
        if o["batch_size"] % world:
            raise ValueError(f"optim.batch_size: {o['batch_size']} is not divisible by the {world} processes")
        self.rank_batch = o["batch_size"] // world
        fbs = o["forward_batch_size"]
        self.fbs = None if fbs is not None and fbs > self.rank_batch else fbs
        self.accum = 1 if self.fbs is None else math.ceil(self.rank_batch / self.fbs)
        self.eval_bs = int(cfg["train"]["eval_batch_size"] or self.fbs or self.rank_batch)
        self.optimizer, self.scheduler = build_optimizer(cfg, model)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=run.precision.dtype == torch.float16)
        self.epochs = int(cfg["train"]["epochs"])
        self.start_epoch = 0
        self.latest = run.work_dir / "latest.pt"
        self.best = run.work_dir / "best.pt"
        self.resumed: dict[str, Any] | None = None
        self._changed: list[str] = []
        self.governor: ThreadGovernor | None = None  # set once the log is final (_train_epochs)
        self.last_results: dict[str, Any] | None = None

    def log_optimizer(self) -> None:
        cfg, o = self.cfg, self.cfg["optim"]
        self.log.info("optimizer: SGD lr %.5g (base %g x batch %d / %d), momentum %g, nesterov %s, wd %g, steps %s x%g, "
                      "warmup %d | batch %d = %d ranks x %d%s", C.scaled_lr(cfg), o["base_lr"], o["batch_size"],
                      o["base_batch_size"], o["momentum"], o["nesterov"], o["weight_decay"], o["lr_steps"],
                      o["lr_gamma"], o["warmup_epochs"], o["batch_size"], self.ctx.world_size, self.rank_batch,
                      f" ({self.accum} accumulated micro-batches of {self.fbs})" if self.accum > 1 else "")

    def warn_lr_steps(self) -> None:
        """An LR step at or past the last epoch never applies (lr_factor counts epochs from 0): say so."""
        o, epochs = self.cfg["optim"], self.epochs
        late = [s for s in o["lr_steps"] if s >= epochs]
        if late:
            self.log.warning("optim.lr_steps %s: step%s %s at or past the last epoch (%d epochs: the last is "
                             "epoch index %d), so the learning rate %s; lower optim.lr_steps or raise --epochs",
                             list(o["lr_steps"]), "s" if len(late) > 1 else "", ", ".join(map(str, late)), epochs,
                             epochs - 1, "never decays" if len(late) == len(o["lr_steps"])
                             else "decays fewer times than the recipe says")

    # -- phase: resume
    def resume(self) -> None:
        """Restore model, optimizer, schedule, RNG and best-so-far from latest.pt (read only: nothing is written)."""
        latest, ctx = self.latest, self.ctx
        state = load_checkpoint(latest, map_location="cpu")
        changed = _check_resume_compatible(state["config"], self.cfg, latest)
        check_matches_data(state, latest, self.data.layout, self.data.num_classes, self.data.directory)
        self.run.load_weights(self.model, state, latest)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(f"{latest}: optimizer state does not fit this model: {err}") from None
        self.start_epoch = int(state["epoch"])
        self.run.best_top1, self.run.best_epoch = float(state.get("best_top1", -1.0)), int(state.get("best_epoch", 0))
        self.run.elapsed_before = float(state.get("elapsed_s", 0.0))  # absent in checkpoints older than the field
        rng = state["rng"]
        if isinstance(rng, list):  # one state per rank; a changed world size reuses rank 0's
            if len(rng) != ctx.world_size:
                self.log.warning("checkpoint holds RNG states of %d ranks, this run has %d", len(rng), ctx.world_size)
            rng = rng[ctx.rank] if ctx.rank < len(rng) else rng[0]
        restore_rng_state(rng)
        self.resumed = state
        self._changed = changed

    def apply_changed_settings(self) -> None:
        """Settings changed since latest.pt: the optimizer's own copies are updated, so nothing is silently ignored."""
        if self.resumed is None:
            return
        changed = self._changed
        if changed:
            self.log.warning("resuming with changed settings (applied from now on): %s", ", ".join(
                f"{k} {_get_flat(self.resumed['config'], k)!r} -> {_get_flat(self.cfg, k)!r}" for k in changed))
        o = self.cfg["optim"]
        # SGD keeps lr, momentum, nesterov and weight decay in its param groups, which load_state_dict
        # restored from the checkpoint; the schedule keeps base_lrs. Rebuild them from the config.
        if any(k in changed for k in ("optim.base_lr", "optim.batch_size", "optim.base_batch_size",
                                      "optim.lr_steps", "optim.lr_gamma", "optim.warmup_epochs")):
            base = C.scaled_lr(self.cfg)
            self.scheduler.base_lrs = [base for _ in self.optimizer.param_groups]
            for g, lmbda in zip(self.optimizer.param_groups, self.scheduler.lr_lambdas):
                old = g["lr"]
                g["initial_lr"] = base
                g["lr"] = base * lmbda(self.scheduler.last_epoch)
                self.log.info("learning rate of the restored optimizer: %.6g -> %.6g", old, g["lr"])
        if any(k in changed for k in ("optim.momentum", "optim.nesterov", "optim.weight_decay")):
            for g in self.optimizer.param_groups:
                g["momentum"] = o["momentum"]
                g["nesterov"] = bool(o["nesterov"]) and o["momentum"] > 0
                g["weight_decay"] = o["weight_decay"]

    def check_outputs(self) -> None:
        """After taking the work dir: make best.pt and results.json agree with latest.pt (see the write order)."""
        state, run = self.resumed, self.run
        if state is None or not self.ctx.is_main:
            return
        done, best_epoch = int(state["epoch"]), int(state.get("best_epoch", 0))
        if best_epoch:
            best_now = None
            if self.best.is_file():
                try:
                    best_now = int(load_checkpoint(self.best)["epoch"])
                except CheckpointError as err:
                    self.log.warning("%s", err)
            if best_now != best_epoch:
                if best_epoch == done:  # killed between latest.pt and best.pt: they are the same state
                    with self.run.guard.critical():
                        save_checkpoint(self.best, state)
                    self.log.warning("best.pt %s; rewritten from latest.pt (epoch %d is the best)",
                                     "was missing" if best_now is None else f"held epoch {best_now}", done)
                else:
                    self.log.warning("best.pt %s but latest.pt records the best at epoch %d; it is replaced "
                                     "when a later epoch is better", "is missing" if best_now is None else
                                     f"holds epoch {best_now}", best_epoch)
        rec = state.get("results")
        if isinstance(rec, dict):
            try:
                on_disk = json.loads((run.work_dir / "results.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                on_disk = None
            if not isinstance(on_disk, dict) or on_disk.get("epoch") != rec.get("epoch"):
                run.write_results(rec)
                self.log.warning("results.json did not match latest.pt (epoch %s); rewritten from latest.pt",
                                 rec.get("epoch"))
            self.last_results = rec
        self.log.info("resumed from %s after epoch %d (best top-1 %.4f at epoch %d)", self.latest, done,
                      run.best_top1, run.best_epoch)

    # -- phase: train one epoch
    def train_one_epoch(self, epoch: int, train_model: nn.Module, ddp: Any, loader: DataLoader,
                        sampler: DistributedSampler, gen: torch.Generator) -> dict[str, float]:
        cfg, ctx, run = self.cfg, self.ctx, self.run
        o = cfg["optim"]
        t0 = time.time()
        sampler.set_epoch(epoch)
        gen.manual_seed(int(cfg["seed"]) * 100_003 + epoch * 1_009 + ctx.rank)
        train_model.train()
        lr = self.optimizer.param_groups[0]["lr"]
        label_smoothing = float(o["label_smoothing"])
        steps_per_epoch = len(loader)
        tot_loss = torch.zeros((), dtype=torch.float64, device=ctx.device)
        tot_correct = torch.zeros((), dtype=torch.float64, device=ctx.device)
        tot_n = 0
        bar = run._progress(loader, f"epoch {epoch + 1}/{self.epochs}")
        reporter = StepReporter(self.log, ctx.is_main and bar is loader, cfg["runtime"]["log_interval_s"], epoch,
                                self.epochs, steps_per_epoch)
        if self.governor is not None:
            self.governor.start()
        for step, (x, y, _) in enumerate(bar):
            x = x.to(ctx.device, non_blocking=True).float()
            y = y.to(ctx.device, non_blocking=True).long()
            self.optimizer.zero_grad(set_to_none=True)
            step_stats = torch.zeros(3, dtype=torch.float64, device=ctx.device)  # loss sum, correct, count
            micro = list(_micro_batches(x, y, self.fbs))
            for i, (xm, ym) in enumerate(micro):
                sync = ddp is None or i == len(micro) - 1
                with (contextlib.nullcontext() if sync else ddp.no_sync()):
                    with run.autocast():
                        logits = train_model(xm)
                    loss = F.cross_entropy(logits.float(), ym, label_smoothing=label_smoothing)
                    self.scaler.scale(loss * (len(ym) / len(y))).backward()
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
                    f"The last good checkpoint is {self.latest if self.latest.exists() else 'none (first epoch)'}."
                )
            if o["grad_clip"]:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(o["grad_clip"]))
            self.scaler.step(self.optimizer)
            self.scaler.update()
            tot_loss += step_stats[0]
            tot_correct += step_stats[1]
            tot_n += int(step_stats[2])
            if bar is not loader:
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.4g}")
            reporter.step(step, int(step_stats[2]), step_loss)
            if self.governor is not None:
                self.governor.step(int(step_stats[2]))
            if run.writer is not None:
                run.writer.scalar("train/loss_step", step_loss, epoch * steps_per_epoch + step)
        if self.governor is not None:
            self.governor.pause()
        self.scheduler.step()
        train_time = time.time() - t0
        stats = {"train_loss": float(tot_loss) / max(tot_n, 1), "train_top1": float(tot_correct) / max(tot_n, 1),
                 "lr": lr, "epoch_time_s": round(train_time, 2)}
        self.log.info("epoch %d/%d: train loss %.4f, train top-1 %.4f, lr %.4g, %.1f s (%.1f samples/s)",
                      epoch + 1, self.epochs, stats["train_loss"], stats["train_top1"], lr, train_time,
                      tot_n / max(train_time, 1e-9))
        if run.writer is not None:
            run.writer.scalar("train/loss", stats["train_loss"], epoch + 1)
            run.writer.scalar("train/top1", stats["train_top1"], epoch + 1)
            run.writer.scalar("train/lr", lr, epoch + 1)
            run.writer.scalar("time/train_epoch_s", train_time, epoch + 1)
        return stats

    # -- phase: evaluate (scores and confusion matrix; results.json follows the checkpoint in `save`)
    def evaluate(self, eval_model: nn.Module, done: int, stats: dict[str, float]) -> tuple[dict[str, Any] | None, bool]:
        run = self.run
        rec = run.evaluate(eval_model, self.data, "val", self.eval_bs, done, {})
        is_best = False
        if rec is not None:
            if rec["top1"] > run.best_top1:
                run.best_top1, run.best_epoch = rec["top1"], done
            is_best = run.best_epoch == done
            self.log.info("epoch %d/%d: val top-1 %.4f, top-5 %.4f, mean class acc %.4f, loss %.4f "
                          "(best top-1 %.4f at epoch %d)", done, self.epochs, rec["top1"], rec["top5"],
                          rec["mean_class_acc"], rec["val_loss"], run.best_top1, run.best_epoch)
            if run.writer is not None:
                for k in ("top1", "top5", "mean_class_acc", "val_loss"):
                    run.writer.scalar(f"val/{k.replace('val_', '')}", rec[k], done)
            rec.update({"mode": "train", "finished": done == self.epochs, **stats,
                        "best_top1": run.best_top1, "best_epoch": run.best_epoch, "epochs": self.epochs})
            rec["per_class_acc"] = rec.pop("per_class_acc")  # keep the long list last in results.json
        return rec, broadcast_object(self.ctx, is_best)

    # -- phase: save
    def save(self, done: int, is_best: bool, results: dict[str, Any] | None) -> None:
        """latest.pt, then best.pt, then results.json (the write order above); signals wait until all are written."""
        ctx, cfg, run = self.ctx, self.cfg, self.run
        rng_states = gather_objects(ctx, capture_rng_state())
        if ctx.is_main:
            if results is not None:
                self.last_results = results
            state = {
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(), "epoch": done,
                "rng": rng_states if ctx.distributed else rng_states[0],
                "sampler": {"seed": int(cfg["seed"]), "epoch": done, "shuffle": True},
                "config": cfg, "best_top1": run.best_top1, "best_epoch": run.best_epoch, "elapsed_s": run.elapsed(),
                "results": self.last_results,
                **model_record(self.model, self.data.layout, self.data.class_names, self.data.manifest.get("channels"),
                               self.data.inputs),
            }
            with run.guard.critical():
                save_checkpoint(self.latest, state)
                if is_best:
                    save_checkpoint(self.best, state)
                if results is not None:
                    run.write_results(results)
            self.log.info("saved epoch %d -> %s%s", done, self.latest.name, " and best.pt" if is_best else "")
        barrier(ctx)


def train(cfg: dict, argv: Sequence[str] = (), *, resume: bool = True,
          model_factory: ModelFactory | None = None) -> dict[str, Any] | None:
    """Train (resuming from WORK_DIR/latest.pt when present) and evaluate; returns rank 0's final results."""
    ctx = init_distributed(cfg["runtime"]["device"])
    try:
        with SignalGuard() as guard:
            return _train(cfg, ctx, argv, resume, model_factory, guard)
    finally:
        close_logging()
        cleanup(ctx)


def _work_dir(cfg: dict) -> Path:
    work_dir = Path(cfg["work_dir"] or C.default_work_dir(cfg))
    if work_dir.exists() and not work_dir.is_dir():
        raise NotADirectoryError(f"{work_dir}: --work-dir exists and is not a directory")
    return work_dir


def _train(cfg: dict, ctx: DistContext, argv: Sequence[str], resume: bool,
           model_factory: ModelFactory | None, guard: SignalGuard) -> dict[str, Any] | None:
    _configure_runtime(cfg, ctx.device)
    resolve_precision(cfg["runtime"]["amp"], ctx.device)  # fail fast on an impossible setting
    if cfg["dataset"] != "synthetic":
        ensure_data(cfg, ctx.is_main)  # fail fast with the prepare command, before any work dir exists
    else:
        check_synthetic_root(cfg)  # never generate demo data into a user's folder; before any work dir exists
    work_dir = _work_dir(cfg)
    run = Run(cfg, ctx, work_dir, argv, model_factory, guard)
    try:
        seed_everything(int(cfg["seed"]))
        data = run.load_data()
        model = run.build_model(data)
        tr = Training(run, data, model)
        tr.log_optimizer()
        latest = tr.latest
        if resume and (latest.exists() or latest.is_symlink()):  # a dangling/looping link is an error, not "no run"
            tr.resume()
        else:
            torch.manual_seed(int(cfg["seed"]) + ctx.rank)  # per-rank stream for dropout etc.
        # Config, data, model and checkpoint are good: only now does the run touch the work dir.
        run.open_work_dir("training")
        tr.log = run.log
        tr.apply_changed_settings()
        tr.warn_lr_steps()
        tr.check_outputs()
        return _train_epochs(tr)
    except Terminated as sig:
        run.log.warning("stopped by %s; %s", sig.args[0], "latest.pt holds the last finished epoch; run the same "
                        "command again to resume" if run.lock is not None else "nothing was written")
        raise
    finally:
        run.close()


def _train_epochs(tr: Training) -> dict[str, Any] | None:
    run, ctx, cfg, data, log = tr.run, tr.ctx, tr.cfg, tr.data, tr.log
    train_model: nn.Module = tr.model
    if run.compile:
        train_model = torch.compile(tr.model)
    eval_model = train_model
    ddp: nn.parallel.DistributedDataParallel | None = None
    if ctx.distributed:
        ddp = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
        train_model = ddp
    sampler = DistributedSampler(data.train, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=int(cfg["seed"]), drop_last=False)
    drop_last = len(data.train) // ctx.world_size >= tr.rank_batch
    loader, gen = _loader(data.train, tr.rank_batch, cfg, ctx, sampler=sampler, drop_last=drop_last)
    run.writer = ScalarWriter(run.work_dir / "tb", cfg["runtime"]["tensorboard"], log) if ctx.is_main else None
    if ctx.device.type == "cpu" and _CPU_RUNTIME is not None and _CPU_RUNTIME.adaptive:
        tr.governor = ThreadGovernor(ThreadPolicy(len(usable_cores()), _CPU_RUNTIME.threads), log)

    epochs, stop_after = tr.epochs, cfg["train"]["stop_after_epoch"]
    eval_every = int(cfg["train"]["eval_every"])
    results: dict[str, Any] | None = tr.last_results if tr.start_epoch >= epochs else None
    if tr.start_epoch >= epochs:
        log.info("already trained for %d/%d epochs: evaluating only", tr.start_epoch, epochs)
    for epoch in range(tr.start_epoch, epochs):
        stats = tr.train_one_epoch(epoch, train_model, ddp, loader, sampler, gen)
        done = epoch + 1
        last = done == epochs or (stop_after is not None and done >= stop_after)
        rec, is_best = (tr.evaluate(eval_model, done, stats) if done % eval_every == 0 or last else (None, False))
        tr.save(done, is_best, rec)
        results = rec if rec is not None else results
        if stop_after is not None and done >= stop_after and done < epochs:
            log.info("stopping after epoch %d as configured (train.stop_after_epoch); "
                     "run the same command again to resume", done)
            return results

    if tr.start_epoch >= epochs:
        rec = run.evaluate(eval_model, data, "val", tr.eval_bs, tr.start_epoch, {
            "mode": "train", "finished": True, "best_top1": run.best_top1, "best_epoch": run.best_epoch,
            "epochs": epochs})
        if rec is not None:
            results = rec
            run.write_results(rec)
    if data.holdout is not None:
        rep = run.evaluate(eval_model, data, "holdout", tr.eval_bs, epochs, {})
        if rep is not None:
            log.info("holdout (%d train samples kept out): top-1 %.4f -> scores_holdout.pkl for ensemble --search",
                     rep["num_val_samples"], rep["top1"])
    if ctx.is_main and results is not None:
        log.info("done: top-1 %.4f, top-5 %.4f, mean class acc %.4f after %d epochs in %.1f s -> %s",
                 results["top1"], results["top5"], results["mean_class_acc"], results["epoch"],
                 run.elapsed(), run.work_dir / "results.json")
    return results


def evaluate_checkpoint(cfg: dict, checkpoint: Path, argv: Sequence[str] = (), *,
                        model_factory: ModelFactory | None = None) -> dict[str, Any] | None:
    """--eval-only: score the val split with the weights of `checkpoint` (into CKPT_DIR/eval by default)."""
    ctx = init_distributed(cfg["runtime"]["device"])
    try:
        with SignalGuard() as guard:
            _configure_runtime(cfg, ctx.device)
            state = load_checkpoint(checkpoint, map_location="cpu")
            if cfg["dataset"] != "synthetic":
                ensure_data(cfg, ctx.is_main)
            work_dir = _work_dir(dict(cfg, work_dir=cfg["work_dir"] or Path(checkpoint).parent / "eval"))
            run = Run(cfg, ctx, work_dir, argv, model_factory, guard)
            try:
                data = run.load_data()
                check_matches_data(state, checkpoint, data.layout, data.num_classes, data.directory)
                # Exactly the trained network (its stored model_config), whatever the recipe would build today.
                model = (rebuild_model(state, cfg["runtime"]["kernel_backend"], run.log, cfg, checkpoint)
                         if model_factory is None else None)
                model = run.place_model(model)[0] if model is not None else run.build_model(data)
                run.load_weights(model, state, Path(checkpoint))
                run.open_work_dir("evaluation")
                run.log.info("checkpoint: %s (epoch %d)", checkpoint, int(state["epoch"]))
                eval_model = torch.compile(model) if run.compile else model
                bs = int(cfg["train"]["eval_batch_size"] or cfg["optim"]["forward_batch_size"]
                         or max(1, cfg["optim"]["batch_size"] // ctx.world_size))
                rec = run.evaluate(eval_model, data, "val", bs, int(state["epoch"]),
                                   {"mode": "eval", "finished": True, "checkpoint": str(checkpoint)})
                if rec is None:
                    return None
                run.write_results(rec)
                run.log.info("eval: top-1 %.4f, top-5 %.4f, mean class acc %.4f on %d samples -> %s", rec["top1"],
                             rec["top5"], rec["mean_class_acc"], rec["num_val_samples"],
                             run.work_dir / "results.json")
                return rec
            finally:
                run.close()
    finally:
        close_logging()
        cleanup(ctx)
