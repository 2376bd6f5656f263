"""Reading a checkpoint and rebuilding the network it holds (what predict, export,
visualize and stream need; training writes the files: training/checkpoint.py).

A checkpoint is an ordinary `torch.save` zip whose zip comment carries a SHA-256
of the payload, so silent bit rot in tensor data, which the zip reader does not
notice, is caught on load. Loading uses `weights_only=True`. Beside the weights a
checkpoint carries the network's description (docs/design.md §4):
  state["model_config"]  ModelConfig.to_dict(): what the network is, never how it runs
  state["layout"]        the skeleton layout's JSON dict
  state["classes"]       class names in label order
  state["data_channels"] meaning of the input channels, e.g. ["x", "y", "score"]
  state["inputs"]        data.inputs.InputSpec.to_dict(): how evaluation fed the model
"""
from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "load_checkpoint", "model_record", "model_from_checkpoint"]

FORMAT_VERSION = 1
TAG = b"amanet-fast-sha256:"
REQUIRED_KEYS = ("format_version", "model", "optimizer", "scheduler", "scaler", "epoch", "rng", "config")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, damaged or not an amanet-fast checkpoint."""


def _verify(path: Path, data: bytes) -> None:
    tag_at = data.rfind(TAG, max(0, len(data) - 200))
    if tag_at < 0:
        raise CheckpointError(
            f"checkpoint {path} has no amanet-fast checksum: it is truncated, damaged, or not written by amanet-fast"
        )
    comment = data[tag_at:]
    expected = comment[len(TAG):].decode("ascii", errors="replace")
    payload = data[: tag_at - 2] + b"\x00\x00"
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its SHA-256 is {actual[:16]}..., the recorded one {expected[:16]}... "
            "(damaged on disk or during copy); delete it to start over or point --checkpoint at another file"
        )


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


def network_from_state(state: dict[str, Any], kernel_backend: str = "auto") -> Any:
    """The checkpoint's network, weights not loaded.

    From its model_config; checkpoints older than that from the training config they store
    (prepared data always has 3 channels and 2 person slots: data.io; the classifier's
    weights give the class count).
    """
    from .build import build_model, model_from_dict

    if "model_config" in state:
        return model_from_dict(state["model_config"], kernel_backend)
    from ..data.io import NUM_PERSONS

    cfg = state["config"]
    kwargs = dict(num_class=int(state["model"]["fc.weight"].shape[0]), in_channels=3, num_person=NUM_PERSONS,
                  stream=cfg["data"]["stream"])
    kwargs.update(cfg["model"].get("args") or {})
    kwargs["kernel_backend"] = kernel_backend  # the caller's choice, not the training run's
    return build_model(cfg["model"]["arch"], cfg["dataset"], **kwargs)


def model_from_checkpoint(state: dict[str, Any], kernel_backend: str = "auto") -> Any:
    """The trained network of a loaded checkpoint, weights loaded; `kernel_backend` is the caller's choice."""
    model = network_from_state(state, kernel_backend)
    model.load_state_dict(state["model"])
    return model
