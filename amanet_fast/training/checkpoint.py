"""Checkpoints that survive preemption and detect damage.

A checkpoint is an ordinary `torch.save` zip (so `torch.load` reads it) whose
zip comment carries a SHA-256 of the payload: silent bit rot in tensor data,
which the zip reader does not notice, is caught on load. Files are written
atomically, and loading uses `weights_only=True` (RNG states are stored as
tensors and plain Python values so no pickle of arbitrary objects is needed).
"""
from __future__ import annotations

import hashlib
import io
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_bytes_atomic

FORMAT_VERSION = 1
_TAG = b"amanet-fast-sha256:"
_EOCD_SIG = b"PK\x05\x06"
REQUIRED_KEYS = ("format_version", "model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, damaged or not an amanet-fast checkpoint."""


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
    comment = _TAG + hashlib.sha256(payload).hexdigest().encode("ascii")
    return payload[:-2] + len(comment).to_bytes(2, "little") + comment


def _verify(path: Path, data: bytes) -> None:
    tag_at = data.rfind(_TAG, max(0, len(data) - 200))
    if tag_at < 0:
        raise CheckpointError(
            f"checkpoint {path} has no amanet-fast checksum: it is truncated, damaged, or not written by amanet-fast"
        )
    comment = data[tag_at:]
    expected = comment[len(_TAG):].decode("ascii", errors="replace")
    payload = data[: tag_at - 2] + b"\x00\x00"
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its SHA-256 is {actual[:16]}..., the recorded one {expected[:16]}... "
            "(damaged on disk or during copy); delete it to start over or point --checkpoint at another file"
        )


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in state and k != "format_version"]
    if missing:
        raise ValueError(f"save_checkpoint: state lacks {', '.join(missing)}")
    buf = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buf)
    return write_bytes_atomic(path, _seal(buf.getvalue()))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and verify a checkpoint; any damage becomes a CheckpointError naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        what = "is a dangling symlink" if path.is_symlink() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}") from None
    except OSError as err:  # a directory, a symlink loop, unreadable
        raise CheckpointError(f"checkpoint {path} cannot be read: {err.strerror or err}") from None
    if len(data) < 22:
        raise CheckpointError(f"checkpoint {path} is corrupt: only {len(data)} bytes")
    _verify(path, data)
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # weights_only refused an object: loading it would run code. Never offer to lift that.
        raise CheckpointError(f"checkpoint {path} holds objects other than tensors and plain data; refused, "
                              "since loading them could run code (not a checkpoint written by amanet-fast)") from None
    except Exception as err:  # zip / format errors of all kinds
        msg = str(err).splitlines()[0][:200] if str(err) else ""
        raise CheckpointError(f"checkpoint {path} could not be read: {type(err).__name__}: {msg}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a mapping (got {type(state).__name__})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: not an amanet-fast training checkpoint")
    if not isinstance(state["config"], dict) or not isinstance(state["model"], dict):
        raise CheckpointError(f"checkpoint {path}: 'config' and 'model' must be mappings; not an amanet-fast checkpoint")
    if not isinstance(state["format_version"], int) or not isinstance(state["epoch"], int):
        raise CheckpointError(f"checkpoint {path}: 'format_version' and 'epoch' must be integers")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state['format_version']}, this code reads <= {FORMAT_VERSION}"
        )
    return state
