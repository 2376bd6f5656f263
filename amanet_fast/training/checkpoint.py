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
    """Load and verify a checkpoint (a path, or the name of a shipped one: amanet_fast.pretrained);
    any damage becomes a CheckpointError naming the file."""
    from ..pretrained import PretrainedError, names_hint, resolve_checkpoint

    try:
        path = resolve_checkpoint(path)
    except PretrainedError as err:
        raise CheckpointError(str(err)) from None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        what = "is a dangling symlink" if path.is_symlink() else f"does not exist (nor is it a pretrained name; {names_hint()})"
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


# ----------------------------------------------------------------------------- the model a checkpoint holds
# Checkpoints carry the network's description beside its weights, so eval, resume and later tools
# (predict, export) rebuild exactly the trained model:
#   state["layout"]       the skeleton layout's JSON dict (docs/design.md §4; graphs.layout_from_dict reads it)
#   state["model_config"] ModelConfig.to_dict() (JSON-able; model.build.model_from_dict rebuilds it)
#   state["classes"]      class names in label order
#   state["data_channels"] meaning of the input channels, e.g. ["x", "y", "score"]
#   state["inputs"]       data.inputs.InputSpec.to_dict(): how evaluation turned a clip into model input


def model_record(model: Any, layout: Any, classes: list[str], channels: list[str] | None,
                 inputs: Any = None) -> dict[str, Any]:
    """The description of `model` to store in its checkpoints (empty parts for foreign model classes)."""
    rec: dict[str, Any] = {"classes": list(classes)}
    if inputs is not None:
        rec["inputs"] = inputs.to_dict()
    if layout is not None:
        rec["layout"] = layout.to_dict()
    if channels:
        rec["data_channels"] = list(channels)
    cfg = getattr(model, "config", None)
    if hasattr(cfg, "to_dict"):
        rec["model_config"] = cfg.to_dict()
    return rec


def model_from_checkpoint(state: dict[str, Any], kernel_backend: str | None = None) -> Any:
    """The trained network of a checkpoint, weights loaded (for predict / export tools)."""
    model = rebuild_model(state, kernel_backend or state.get("model_config", {}).get("kernel_backend", "auto"))
    if model is None:
        raise CheckpointError("checkpoint has no model_config (written before layouts were stored): "
                              "rebuild the model from its training config instead")
    model.load_state_dict(state["model"])
    return model


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
    from ..model.build import model_from_dict

    model = model_from_dict({**state["model_config"], "kernel_backend": kernel_backend})
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
