"""Writing checkpoints that survive preemption, and what only training reads back.

The file format, its loader and the model's record live with the model
(model/record.py), which inference uses without the trainer. Here: the
sealed, atomic write, the RNG states (stored as tensors and plain Python
values so `weights_only=True` loading needs no pickle of arbitrary objects),
and the checks --eval-only and resume make before reusing a checkpoint.
"""
from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_bytes_atomic
from ..model.record import (FORMAT_VERSION, REQUIRED_KEYS, TAG, CheckpointError, load_checkpoint,
                            model_from_checkpoint, model_record, network_from_state)

__all__ = ["CheckpointError", "load_checkpoint", "save_checkpoint", "model_record", "model_from_checkpoint",
           "capture_rng_state", "restore_rng_state", "rebuild_model", "check_matches_data"]

_EOCD_SIG = b"PK\x05\x06"


def capture_rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, so a resumed run continues bit for bit."""
    np_state = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:  # a different GPU count: restore what matches the current device
            torch.cuda.set_rng_state(cuda_states[0])


def _as_tuples(obj: Any) -> Any:
    """random.setstate wants tuples; serialization may hand back lists."""
    if isinstance(obj, (list, tuple)):
        return tuple(_as_tuples(o) for o in obj)
    return obj


def _seal(payload: bytes) -> bytes:
    if payload[-22:-18] != _EOCD_SIG or payload[-2:] != b"\x00\x00":
        raise CheckpointError("torch.save produced an unexpected container; cannot add a checksum")
    comment = TAG + hashlib.sha256(payload).hexdigest().encode("ascii")
    return payload[:-2] + len(comment).to_bytes(2, "little") + comment


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in state and k != "format_version"]
    if missing:
        raise ValueError(f"save_checkpoint: state lacks {', '.join(missing)}")
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    return write_bytes_atomic(path, _seal(buf.getvalue()))


def rebuild_model(state: dict[str, Any], kernel_backend: str, log: Any = None, cfg: dict[str, Any] | None = None,
                  path: Any = None) -> Any:
    """The checkpoint's network from its model_config (weights not loaded); None for older checkpoints.

    `cfg` (the run's resolved config) may not ask for another model than the trained one: that is an
    error rather than an override silently ignored.
    """
    if "model_config" not in state:
        return None
    saved = state.get("config") or {}
    if cfg is not None and saved:
        for section, key in (("model", "arch"), ("model", "args"), ("data", "stream")):
            old, new = (saved.get(section) or {}).get(key), (cfg.get(section) or {}).get(key)
            if old != new:
                raise CheckpointError(f"{path}: --eval-only rebuilds the trained model, but {section}.{key} is "
                                      f"{new!r} here and {old!r} in the checkpoint; drop that override")
    model = network_from_state(state, kernel_backend)
    if log is not None:
        log.info("model: rebuilt from the checkpoint's model_config (layout %s, %d classes)",
                 model.config.layout.name, model.config.num_class)
    return model


def check_matches_data(state: dict[str, Any], path: Path, layout: Any, num_classes: int, data_dir: Any) -> None:
    """A checkpoint's model must fit the prepared data it is used with; otherwise one clear error."""
    from ..data.io import MANIFEST_NAME

    where = f"{data_dir}/{MANIFEST_NAME}"
    saved = state.get("layout")
    if saved is not None and layout is not None and saved != layout.to_dict():
        got = layout.to_dict()
        diff = [k for k in sorted(set(saved) | set(got)) if saved.get(k) != got.get(k)]
        raise CheckpointError(
            f"checkpoint {path} was trained on layout {saved.get('name')!r} ({saved.get('num_joints')} joints) "
            f"but {where} has layout {got['name']!r} ({got['num_joints']} joints); they differ in "
            f"{', '.join(diff)}. Use the prepared data the model was trained on "
            f"(training data root: {state.get('config', {}).get('data', {}).get('root')})")
    mc = state.get("model_config") or {}
    if "num_class" in mc and int(mc["num_class"]) != int(num_classes):
        raise CheckpointError(f"checkpoint {path} predicts {mc['num_class']} classes but {where} has "
                              f"{num_classes}; use the prepared data the model was trained on")
