"""Training and evaluation of AMANet / MS-G3D (`python train.py`).

Modules: config (YAML + key=value overrides), loop (train / evaluate), checkpoint
(atomic, checksummed, full RNG state), metrics, distributed (torchrun/DDP),
logging (log.txt, TensorBoard), data (config -> datasets), cli (train.py).
"""
from __future__ import annotations

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .cli import main
from .config import DEFAULTS, build_arg_parser, resolve_config
from .data import MissingDataError
from .loop import NonFiniteLossError, evaluate_checkpoint, train

__all__ = [
    "CheckpointError", "DEFAULTS", "MissingDataError", "NonFiniteLossError", "build_arg_parser",
    "evaluate_checkpoint", "load_checkpoint", "main", "resolve_config", "save_checkpoint", "train",
]
