"""Run logging: WORK_DIR/log.txt (environment first, so a log alone tells how
a number was produced), console output, and TensorBoard scalars when available.
Only rank 0 writes; other ranks log warnings and errors to the console."""
from __future__ import annotations

import logging
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import torch

LOGGER_NAME = "amanet_fast.training"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logging(work_dir: Path | None, is_main: bool, rank: int = 0) -> logging.Logger:
    log = logging.getLogger(LOGGER_NAME)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    log.setLevel(logging.INFO)
    log.propagate = False
    fmt = logging.Formatter(_FORMAT if is_main else f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
                            datefmt="%Y-%m-%d %H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    console.setLevel(logging.INFO if is_main else logging.WARNING)
    log.addHandler(console)
    if is_main and work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(work_dir / "log.txt", mode="a", encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)
    return log


def close_logging() -> None:
    log = logging.getLogger(LOGGER_NAME)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def _version(module: str) -> str:
    try:
        mod = __import__(module)
        return str(getattr(mod, "__version__", "unknown"))
    except Exception:
        return "not installed"


def environment_report(device: torch.device, world_size: int, argv: Sequence[str]) -> str:
    lines = [
        f"command: {shlex.join([sys.executable, *argv])}",
        f"cwd: {os.getcwd()}",
        f"python {platform.python_version()} on {platform.platform()}",
        "versions: " + ", ".join(
            f"{m} {_version(m)}" for m in ("torch", "triton", "numpy", "yaml", "tqdm", "tensorboard", "matplotlib")
        ),
        f"device: {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                               f" ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"),
        f"cuda available: {torch.cuda.is_available()}, world size {world_size}",
    ]
    if torch.cuda.is_available():
        lines.append(f"cuda {torch.version.cuda}, cudnn {torch.backends.cudnn.version()}")
    return "\n".join(lines)


class ScalarWriter:
    """TensorBoard scalars on rank 0; a logged no-op when tensorboard is missing or disabled."""

    def __init__(self, log_dir: Path | None, enabled: bool, log: logging.Logger) -> None:
        self._writer: Any = None
        if not enabled or log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            log.warning("TensorBoard scalars disabled: %s (pip install tensorboard); training continues", err)
            return
        self._writer = SummaryWriter(log_dir=str(log_dir))
        log.info("TensorBoard scalars -> %s", log_dir)

    @property
    def active(self) -> bool:
        return self._writer is not None

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
