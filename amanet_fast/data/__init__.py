"""Skeleton data: raw formats -> prepared memory-mapped arrays -> torch Dataset.

Names resolve lazily so that `python -m amanet_fast.data.prepare` and its
worker processes never import torch.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import DataFormatError

__all__ = ["DataFormatError", "SkeletonDataset", "ensure_synthetic", "prepare_command", "ACTIONS"]

if TYPE_CHECKING:  # pragma: no cover
    from .dataset import SkeletonDataset, prepare_command
    from .synthetic import ACTIONS, ensure_synthetic

_LAZY = {"SkeletonDataset": "dataset", "prepare_command": "dataset", "ensure_synthetic": "synthetic",
         "ACTIONS": "synthetic"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'amanet_fast.data' has no attribute {name!r}")
