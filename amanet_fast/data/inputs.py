"""The one path from a clip's joint array to the model's input.

`model_input(x, spec)` is called by `SkeletonDataset` (training and
--eval-only), `predict` (CLI and `Predictor`), `visualize` and documented for
`export`. `spec` (an `InputSpec`) is recorded in every checkpoint
(`state["inputs"]`), so a trained model is fed at inference exactly what its
evaluation fed it. Deterministic eval-time transforms (normalisation,
resampling, ...) belong in `model_input`, before the stream: then every tool
gets them.

`check_clip` is the validation layer for clips arriving from outside prepared
data (raw files, arrays handed to the API): one `DataFormatError` naming the
input and what to do.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..graphs import SkeletonLayout, get_layout, layout_from_dict
from ..streams import STREAMS, to_stream
from . import augment
from .errors import DataFormatError, check_coordinates
from .io import NUM_FRAMES, NUM_PERSONS
from .protocol import ClipProtocol

__all__ = ["InputSpec", "model_input", "check_clip", "spec_from_config", "INPUTS_KEY"]

log = logging.getLogger("amanet_fast.data.inputs")

INPUTS_KEY = "inputs"  # the checkpoint key holding InputSpec.to_dict()


def describe_channels(channels: tuple[str, ...] | list[str]) -> str:
    chans = tuple(channels)
    if "z" in chans:
        kind = "3D keypoints"
    elif chans[-1:] == ("score",):
        kind = "2D keypoints + score"
    else:
        kind = "2D keypoints"
    return f"{kind} ({'/'.join(chans)})"


@dataclass(frozen=True)
class InputSpec:
    """What the model was fed: prepared shape, clip length, padding of short clips, stream."""

    layout: SkeletonLayout
    channels: tuple[str, ...]
    stream: str = "joint"
    clip_len: int | None = None
    pad: str = "zero"
    num_frames: int = NUM_FRAMES      # frames of a prepared sample (clips are zero-filled / cut to it)
    num_person: int = NUM_PERSONS
    protocol: ClipProtocol = ClipProtocol()  # whole-clip steps (docs/protocol.md), before clip_len / stream

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise ValueError(f"stream must be one of {STREAMS}, got {self.stream!r}")
        if self.pad not in augment.PAD_MODES:
            raise ValueError(f"pad must be one of {augment.PAD_MODES}, got {self.pad!r}")
        if self.clip_len is not None and (not isinstance(self.clip_len, int) or self.clip_len < 1):
            raise ValueError(f"clip_len must be a positive int or None, got {self.clip_len!r}")

    @property
    def coord_dims(self) -> int:
        """Coordinate channels (x, y[, z]) at the front; all of them when the channels are unnamed."""
        named = sum(c in ("x", "y", "z") for c in self.channels)
        return named or len(self.channels)

    @property
    def confidence(self) -> bool:
        """The last channel is a detection score (OpenPose/COCO): it decides per joint what is missing."""
        return self.channels[-1:] == ("score",)

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout.to_dict(), "channels": list(self.channels), "stream": self.stream,
                "clip_len": self.clip_len, "pad": self.pad, "num_frames": self.num_frames,
                "num_person": self.num_person, "protocol": self.protocol.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        return cls(layout=layout_from_dict(d["layout"], "inputs.layout"), channels=tuple(d["channels"]),
                   stream=d["stream"], clip_len=d["clip_len"], pad=d["pad"], num_frames=int(d["num_frames"]),
                   num_person=int(d["num_person"]), protocol=ClipProtocol.from_dict(d.get("protocol") or {}))


def spec_from_config(cfg: dict[str, Any], layout: SkeletonLayout | str, channels: tuple[str, ...] | None,
                     num_person: int) -> InputSpec:
    """The spec of a checkpoint written before specs were recorded, from its training config.

    The padding default depends on the prepared data's kind, which only the
    registry entry of `cfg["dataset"]` tells here.
    """
    from ..registry import DATASETS

    data = cfg["data"]
    info = DATASETS.get(cfg.get("dataset"))
    pad = data.get("pad") or augment.default_pad(info.kind if info else "")
    chans = tuple(channels or (info.channels if info and info.channels else ("x", "y", "z")))
    clip_len = data.get("clip_len")
    protocol = ClipProtocol.from_config(data)
    if protocol.persons is not None:  # the model sees `persons` bodies; the prepared arrays hold every slot
        num_person = NUM_PERSONS
    return InputSpec(layout=get_layout(layout), channels=chans, stream=data["stream"],
                     clip_len=int(clip_len) if clip_len else None, pad=pad, num_person=num_person,
                     protocol=protocol)


def _prepared_shape(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Frames zero-filled or cut to spec.num_frames and person slots to spec.num_person, as `prepare` writes."""
    C, T, V, M = x.shape
    if T == spec.num_frames and M == spec.num_person:
        return x
    out = np.zeros((C, spec.num_frames, V, spec.num_person), dtype=np.float32)
    t, m = min(T, spec.num_frames), min(M, spec.num_person)
    out[:, :t, :, :m] = x[:, :t, :, :m]
    return out


def model_input(x: np.ndarray, spec: InputSpec, rng: np.random.Generator | None = None, *,
                random_choose: bool = False, random_shift: bool = False, random_move: bool = False,
                random_view: bool = False) -> np.ndarray:
    """A (C, T, V, M) joint clip -> the model's (C, T', V, M) float32 input.

    Without the random_* flags (evaluation, inference) the result is a pure
    function of (x, spec). Training passes them with `rng`.
    """
    x = _prepared_shape(np.asarray(x, dtype=np.float32), spec)
    if spec.protocol.active:
        x = spec.protocol.apply(x, spec.coord_dims, rng if random_view else None)
    if spec.protocol.resample is not None:
        pass  # the protocol set the frame count
    elif spec.clip_len is not None:
        x = augment.fit_length(x, spec.clip_len, rng if random_choose else None, spec.pad)
    elif spec.pad == "replay":
        x = augment.fit_length(x, x.shape[1], None, "replay")
    if random_shift:
        x = augment.random_shift(x, rng)
    if random_move:
        x = augment.random_move(x, rng, confidence=spec.confidence)
    return np.ascontiguousarray(to_stream(x, spec.stream, spec.layout), dtype=np.float32)


def check_clip(x: Any, spec: InputSpec, where: str, channels: tuple[str, ...] | None = None) -> np.ndarray:
    """A clip from outside prepared data, checked against the model's spec; float32 (C, T, V, M).

    `channels`: what the reader knows the channels mean (None: unknown, e.g. a
    bare .npy); a 3D clip for a 2D+score model (or the reverse) has the same
    shape, so only this tells them apart.
    """
    if not isinstance(x, np.ndarray):
        raise DataFormatError(f"expected a numpy array (C, T, V, M), got {type(x).__name__}", where)
    if x.dtype.kind not in "iuf":
        raise DataFormatError(f"expected a numeric array, got dtype {x.dtype}", where)
    if x.ndim != 4:
        raise DataFormatError(f"expected one sample of shape (C, T, V, M), got shape {x.shape}", where)
    C, T, V, M = x.shape
    want = f"(C={len(spec.channels)}, T, V={spec.layout.num_joints} ({spec.layout.name}), M<={spec.num_person})"
    if C != len(spec.channels) or V != spec.layout.num_joints or not 1 <= M <= spec.num_person:
        raise DataFormatError(f"shape {x.shape} does not fit the model: expected {want}", where)
    if channels is not None and tuple(channels) != spec.channels:
        raise DataFormatError(f"{describe_channels(channels)}, but the model was trained on "
                              f"{describe_channels(spec.channels)}; use a checkpoint trained on this kind of data",
                              where)
    if T == 0:
        raise DataFormatError("zero frames: nothing to classify", where)
    check_coordinates(x, where, "the clip")
    if not x.any():
        raise DataFormatError("every value is zero: no skeleton to classify", where)
    if T > spec.num_frames:
        log.warning("%s: %d frames past %d were dropped, as prepare does", where, T - spec.num_frames,
                    spec.num_frames)
    return x.astype(np.float32, copy=False)
