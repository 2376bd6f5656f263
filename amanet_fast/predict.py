"""Classify raw skeleton files with trained checkpoints.

    python -m amanet_fast.predict --checkpoint work_dirs/ntu60_joint/best.pt clip.skeleton
    python -m amanet_fast.predict --checkpoint J/best.pt --checkpoint B/best.pt --weights 0.6 0.6 \\
        --topk 3 --json preds.json a.skeleton b.skeleton

Every raw format `python -m amanet_fast.data.prepare` reads is accepted, and
goes through the same reader and preprocessing (NTU `.skeleton` incl. body
selection and pre-normalization, Kinetics-Skeleton JSON, NW-UCLA JSON, pyskl
annotation pickles — one prediction per annotation) plus a `.npy` holding one
prepared `(C, T, V, M)` sample. The model's own input transform follows, the
one its evaluation used (`data.inputs.model_input` with the `InputSpec` the
checkpoint records: clip length, centre window, short-clip padding, stream).
Several checkpoints — typically the four MS-DS streams — are fused like
`python -m amanet_fast.ensemble`: a weighted sum of their softmax scores
(default weights 0.6 joint, 0.6 bone, 0.4 joint_fused, 0.4 bone_fused),
divided by the weight sum so the printed numbers are probabilities.

`Predictor` is the same thing in memory; `load_trained_model` is the one place
that turns a checkpoint into a ready model (also used by `visualize` and
`export`).
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from .data.errors import DataFormatError
from .data.inputs import INPUTS_KEY, InputSpec, check_clip, spec_from_config
from .data.inputs import model_input as spec_input
from .graphs import SkeletonLayout, get_layout
from .streams import STREAMS
from .argparse_util import ArgumentParser

__all__ = ["TrainedModel", "Prediction", "Predictor", "PredictError", "load_trained_model", "read_raw_file",
           "model_input", "main"]

log = logging.getLogger("amanet_fast.predict")

RAW_SUFFIXES = (".skeleton", ".json", ".pkl", ".pickle", ".npy", ".csv")
_XYZ, _XYS = ("x", "y", "z"), ("x", "y", "score")  # channels of the 3D and the 2D+score readers


class PredictError(ValueError):
    """A checkpoint or command-line value that cannot be used; printed as one `error:` line."""


@dataclass
class TrainedModel:
    """A checkpoint's network in eval mode plus what is needed to feed it raw data."""

    model: nn.Module
    config: dict[str, Any]          # the resolved training config stored in the checkpoint
    class_names: list[str]
    class_names_source: str
    stream: str
    layout: SkeletonLayout
    clip_len: int | None
    in_channels: int
    num_person: int
    checkpoint: Path
    epoch: int
    inputs: InputSpec               # how evaluation fed the model (recorded in the checkpoint)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _class_names(state: dict[str, Any], cfg: dict[str, Any], num_classes: int) -> tuple[list[str], str]:
    """Names from the checkpoint when it carries them, else from the prepared data it was trained on."""
    names = state.get("classes")
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) if n is not None else str(i) for i, n in enumerate(names)], "checkpoint"
    try:
        from .data.io import data_dir, read_manifest

        directory = data_dir(cfg)
        classes = (read_manifest(directory) or {}).get("classes")
    except (KeyError, TypeError, OSError, ValueError):
        classes = None
    if isinstance(classes, list) and len(classes) == num_classes and any(c is not None for c in classes):
        return [str(c) if c is not None else str(i) for i, c in enumerate(classes)], f"{directory}/manifest.json"
    log.warning("no class names found (checkpoint has none and the training data's manifest is not at hand): "
                "printing class indices")
    return [str(i) for i in range(num_classes)], "indices"


def load_trained_model(checkpoint: str | Path, *, device: str | torch.device = "cpu",
                       kernel_backend: str = "auto") -> TrainedModel:
    """Rebuild the network of a training checkpoint, load its weights, switch to eval mode.

    The architecture comes from the network description the checkpoint stores
    (older checkpoints: its training config and classifier weights). Raises
    `CheckpointError` for a damaged / foreign file or weights that do not fit.
    """
    from .model.record import CheckpointError, load_checkpoint, model_from_checkpoint

    path = Path(checkpoint)
    state = load_checkpoint(path, map_location="cpu")
    cfg = state["config"]
    weights = state["model"]
    if not isinstance(cfg, dict) or "model" not in cfg or "fc.weight" not in weights:
        raise CheckpointError(f"checkpoint {path} holds no amanet-fast model config / classifier weights")
    stream = cfg["data"]["stream"]
    num_class = int(weights["fc.weight"].shape[0])
    try:
        model = model_from_checkpoint(state, kernel_backend)
    except (RuntimeError, ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path}: its weights do not fit the model its config describes "
                              f"(arch {cfg['model']['arch']}, dataset {cfg['dataset']}, stream {stream}): "
                              f"{first}") from err
    model.eval().to(device)
    names, source = _class_names(state, cfg, num_class)
    inputs = _input_spec(state, path, get_layout(model.layout), model.num_person)
    if len(inputs.channels) != model.in_channels or inputs.stream != stream:
        raise CheckpointError(f"checkpoint {path}: its recorded inputs ({len(inputs.channels)} channels, stream "
                              f"{inputs.stream}) contradict its model ({model.in_channels} channels, stream {stream})")
    return TrainedModel(model=model, config=cfg, class_names=names, class_names_source=source, stream=stream,
                        layout=inputs.layout, clip_len=inputs.clip_len, in_channels=model.in_channels,
                        num_person=model.num_person, checkpoint=path, epoch=int(state["epoch"]), inputs=inputs)


def _input_spec(state: dict[str, Any], path: Path, layout: SkeletonLayout, num_person: int) -> InputSpec:
    from .model.record import CheckpointError

    recorded = state.get(INPUTS_KEY)
    if recorded is None:
        spec = spec_from_config(state["config"], layout, state.get("data_channels"), num_person)
        log.warning("checkpoint %s predates recorded input specs: clip_len %s, pad %s, channels %s taken from its "
                    "training config", path, spec.clip_len, spec.pad, "/".join(spec.channels))
        return spec
    try:
        return InputSpec.from_dict(recorded)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {path}: its '{INPUTS_KEY}' record is damaged ({err})") from None


# ----------------------------------------------------------------------------- raw files


@dataclass
class RawSample:
    name: str
    data: np.ndarray          # (C, T, V, M) joint data; a .npy's array as stored (check_clip checks it)
    layout: str | None        # the reader's skeleton layout; None: not told by the file (.npy, pyskl)
    dropped_frames: int = 0
    channels: tuple[str, ...] | None = None  # what the channels mean; None: not told by the file (.npy)
    where: str = ""           # how error messages name it: the file, or file[annotation]


def _read_npy(path: Path) -> list[RawSample]:
    """One (C, T, V, M) sample; its shape and values are checked against the model by `check_clip`."""
    try:
        x = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataFormatError(f"not a readable .npy array ({err})", path) from None
    if not isinstance(x, np.ndarray):  # an .npz archive
        raise DataFormatError("expected one .npy array, got an .npz archive", path)
    return [RawSample(path.name, x, None, 0, None, str(path))]


def _read_clip_array(path: Path, layout: SkeletonLayout | None) -> list[RawSample]:
    """A per-clip .csv / (T, V, C) .npy, through `prepare arrays`' reader (the model's layout gives V)."""
    from .data.arrays import clip_to_array, read_clip

    if layout is None:
        raise DataFormatError("a per-clip .csv/.npy array needs the model's layout to be read; "
                              "use Predictor(...).read or python -m amanet_fast.predict", path)
    data, dropped = clip_to_array(read_clip(path, layout))
    return [RawSample(path.name, data, None, dropped, None, str(path))]


def _npy_ndim(path: Path) -> int | None:
    try:
        x = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None  # _read_npy reports the unreadable file
    return len(x.shape) if isinstance(x, np.ndarray) else None  # an .npz archive: _read_npy says so


def read_raw_file(path: str | Path, layout: SkeletonLayout | None = None) -> list[RawSample]:
    """One raw file -> its samples, read and preprocessed exactly as `prepare` does.

    `layout` (the model's) reads per-clip arrays: .csv, and .npy of (T, V, C); a 4-D .npy stays
    one prepared (C, T, V, M) sample, the format predict has always taken."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError("file not found", path)
    suffix = path.suffix.lower()
    if suffix == ".csv" or (suffix == ".npy" and _npy_ndim(path) == 3):
        samples = _read_clip_array(path, layout)
    elif suffix == ".skeleton":
        from .data.ntu import load_ntu_sample

        res = load_ntu_sample(path)
        samples = [RawSample(path.name, res.data, "ntu25", res.dropped_frames, _XYZ)]
    elif suffix == ".json":
        from .data.errors import read_json_file

        doc = read_json_file(path)
        if isinstance(doc, dict) and "data" in doc:
            from .data.kinetics import skeleton_from_kinetics_json

            data, dropped = skeleton_from_kinetics_json(doc, path)
            samples = [RawSample(path.name, data, "openpose18", dropped, _XYS)]
        elif isinstance(doc, dict) and "skeletons" in doc:
            from .data.ucla import load_ucla_clip

            res = load_ucla_clip(path)
            samples = [RawSample(path.stem, res.data, "ucla20", res.dropped_frames, _XYZ)]
        else:
            raise DataFormatError("JSON is neither a Kinetics-Skeleton clip ('data' list) nor an NW-UCLA "
                                  "sequence ('skeletons')", path)
    elif suffix in (".pkl", ".pickle"):
        from .data.pyskl import annotation_to_array, read_pyskl_pickle

        _, annotations = read_pyskl_pickle(path)
        samples = []
        for i, ann in enumerate(annotations):
            name = str(ann.get("frame_dir", i)) if isinstance(ann, dict) else str(i)
            where = f"{path}[{name}]"
            if not isinstance(ann, dict):
                raise DataFormatError(f"annotation {i} is not a dict", path)
            data, dropped, mode = annotation_to_array(ann, where)
            # pyskl annotations do not name their joint order (prepare takes it from --layout):
            # only the joint count can be checked against the model.
            samples.append(RawSample(f"{path.name}[{name}]", data, None, dropped, _XYS if mode == "2d" else _XYZ))
    elif suffix == ".npy":
        samples = _read_npy(path)
    else:
        raise DataFormatError(f"unknown file type {suffix or '(none)'!r}; expected one of {', '.join(RAW_SUFFIXES)}",
                              path)
    for s in samples:
        if not s.where:  # the full path, plus the annotation for a pyskl pickle's samples
            s.where = str(path) + s.name[len(path.name):] if s.name.startswith(path.name + "[") else str(path)
        if s.dropped_frames:
            log.warning("%s: %d frames past %d were dropped, as prepare does", s.name, s.dropped_frames,
                        s.data.shape[1])
    return samples


def model_input(x: np.ndarray, tm: TrainedModel, where: str = "input",
                channels: tuple[str, ...] | None = None) -> np.ndarray:
    """A clip checked against the model (`check_clip`), then exactly its evaluation input."""
    return spec_input(check_clip(x, tm.inputs, where, channels), tm.inputs)


# ----------------------------------------------------------------------------- predictor


@dataclass
class Prediction:
    name: str
    probabilities: np.ndarray                                # (num_classes,) fused, sums to 1
    topk: list[tuple[int, str, float]] = field(default_factory=list)  # (class index, name, probability)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name,
                "topk": [{"label": i, "class": n, "probability": round(float(p), 6)} for i, n, p in self.topk]}


def _default_weight(stream: str) -> float:
    from .ensemble import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS[STREAMS.index(stream)]


class Predictor:
    """Trained checkpoint(s) -> class probabilities for raw files or prepared arrays.

    >>> p = Predictor(["work_dirs/joint/best.pt", "work_dirs/bone/best.pt"])
    >>> p.predict_files(["clip.skeleton"], topk=3)[0].topk
    """

    @classmethod
    def from_pretrained(cls, names: str | Sequence[str], weights: Sequence[float] | None = None,
                        **kwargs: Any) -> "Predictor":
        """Shipped checkpoints by name (`python -m amanet_fast.pretrained` lists them), fused like paths."""
        from .pretrained import is_pretrained_name, names_hint

        names = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in names if not is_pretrained_name(n)]
        if unknown:
            raise PredictError(f"from_pretrained: {unknown[0]!r} is not a pretrained name; {names_hint()}")
        return cls(names, weights, **kwargs)

    def __init__(self, checkpoints: str | Path | Sequence[str | Path], weights: Sequence[float] | None = None, *,
                 device: str | torch.device = "cpu", kernel_backend: str = "auto", batch_size: int = 8) -> None:
        if isinstance(checkpoints, (str, Path)):
            checkpoints = [checkpoints]
        if not checkpoints:
            raise PredictError("--checkpoint: at least one checkpoint is needed")
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.models = [load_trained_model(c, device=self.device, kernel_backend=kernel_backend) for c in checkpoints]
        first = self.models[0]
        for tm in self.models[1:]:
            if tm.layout.name != first.layout.name or tm.num_classes != first.num_classes:
                raise PredictError(f"--checkpoint: {tm.checkpoint} ({tm.layout.name}, {tm.num_classes} classes) "
                                   f"cannot be fused with {first.checkpoint} ({first.layout.name}, "
                                   f"{first.num_classes} classes)")
            if tm.inputs.channels != first.inputs.channels:
                raise PredictError(f"--checkpoint: {tm.checkpoint} ({'/'.join(tm.inputs.channels)}) cannot be fused "
                                   f"with {first.checkpoint} ({'/'.join(first.inputs.channels)})")
            if tm.class_names_source != "indices" and first.class_names_source != "indices" \
                    and tm.class_names != first.class_names:
                raise PredictError(f"--checkpoint: {tm.checkpoint} and {first.checkpoint} name their classes "
                                   "differently; they were trained on different data")
        if weights is None:
            weights = [1.0] if len(self.models) == 1 else [_default_weight(tm.stream) for tm in self.models]
        weights = [float(w) for w in weights]
        if len(weights) != len(self.models):
            raise PredictError(f"--weights: expected {len(self.models)} values (one per checkpoint), got {len(weights)}")
        if any(w < 0 or not np.isfinite(w) for w in weights) or sum(weights) <= 0:
            raise PredictError(f"--weights: expected non-negative numbers with a positive sum, got {weights}")
        self.weights = weights
        named = next((tm for tm in self.models if tm.class_names_source != "indices"), first)
        self.class_names = named.class_names
        for tm, w in zip(self.models, weights):
            log.info("checkpoint %s: %s/%s, stream %s, epoch %d, %d classes (names from %s), clip_len %s, "
                     "weight %g", tm.checkpoint, tm.config["model"]["arch"], tm.config["dataset"], tm.stream,
                     tm.epoch, tm.num_classes, tm.class_names_source, tm.clip_len, w)

    @property
    def layout(self) -> SkeletonLayout:
        return self.models[0].layout

    @torch.no_grad()
    def predict_arrays(self, samples: Sequence[np.ndarray], names: Sequence[str] | None = None,
                       channels: Sequence[tuple[str, ...] | None] | None = None) -> np.ndarray:
        """(C, T, V, M) joint clips -> fused probabilities (N, num_classes); `channels`: what each clip's
        channels mean, where known (None: only the shape is checked)."""
        names = list(names) if names is not None else [f"sample {i}" for i in range(len(samples))]
        chans = list(channels) if channels is not None else [None] * len(samples)
        from .ensemble import fuse

        per_model = []
        for tm in self.models:
            inputs = [model_input(x, tm, n, c) for x, n, c in zip(samples, names, chans)]
            probs = []
            for start in range(0, len(inputs), self.batch_size):
                batch = torch.from_numpy(np.stack(inputs[start:start + self.batch_size])).to(self.device)
                probs.append(torch.softmax(tm.model(batch).float(), dim=1).cpu().numpy())
            per_model.append(np.concatenate(probs) if probs else np.zeros((0, tm.num_classes), np.float32))
        fused = fuse(np.stack(per_model).astype(np.float64), self.weights) / sum(self.weights)
        return fused

    def read(self, path: str | Path) -> list[RawSample]:
        """Read a raw file and check that its skeleton is the one the model was trained on."""
        samples = read_raw_file(path, self.layout)
        for s in samples:
            if s.layout is not None and s.layout != self.layout.name:
                raise DataFormatError(f"a {s.layout} skeleton, but the checkpoint's model expects "
                                      f"{self.layout.name} ({self.layout.num_joints} joints); use a checkpoint "
                                      f"trained on {s.layout} data", path)
        return samples

    def predict_files(self, paths: Sequence[str | Path], topk: int = 5) -> list[Prediction]:
        """Every file is read (and checked) before any model runs: a bad file stops with DataFormatError."""
        samples = [s for p in paths for s in self.read(p)]
        probs = self.predict_arrays([s.data for s in samples], [s.where for s in samples],
                                    [s.channels for s in samples])
        return [self._prediction(s.name, p, topk) for s, p in zip(samples, probs)]

    def predict(self, x: np.ndarray | str | Path, topk: int = 5) -> Prediction | list[Prediction]:
        """A raw file path (-> list, pyskl pickles hold several) or one prepared (C, T, V, M) array."""
        if isinstance(x, (str, Path)):
            return self.predict_files([x], topk)
        return self._prediction("array", self.predict_arrays([x], ["array"])[0], topk)

    def _prediction(self, name: str, probs: np.ndarray, topk: int) -> Prediction:
        k = max(1, min(int(topk), len(probs)))
        order = np.argsort(-probs, kind="stable")[:k]
        return Prediction(name, probs, [(int(i), self.class_names[i], float(probs[i])) for i in order])


# ----------------------------------------------------------------------------- CLI


def format_predictions(preds: Sequence[Prediction]) -> str:
    lines = []
    for p in preds:
        lines.append(p.name)
        width = max(len(n) for _, n, _ in p.topk)
        for rank, (i, n, prob) in enumerate(p.topk, 1):
            lines.append(f"  {rank}. {n:<{width}}  {prob:.4f}  (label {i})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m amanet_fast.predict",
        description="Top-k action classes for raw skeleton files (NTU .skeleton, Kinetics / NW-UCLA JSON, "
                    "pyskl .pkl, prepared (C,T,V,M) .npy, per-clip .csv / (T,V,C) .npy as prepare arrays reads them) from one or several trained checkpoints.")
    p.add_argument("files", nargs="+", type=Path, help="raw skeleton files")
    p.add_argument("--checkpoint", action="append", required=True, type=Path,
                   help="a training checkpoint (best.pt / latest.pt); repeat to fuse streams")
    p.add_argument("--weights", type=float, nargs="+",
                   help="one fusion weight per checkpoint (default by stream: joint/bone 0.6, fused 0.4)")
    p.add_argument("--topk", type=int, default=5, help="classes to list per file (default 5)")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the predictions to this JSON file")
    p.add_argument("--device", default="auto", help="auto (CUDA when available) | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=8)
    return p


def _device(arg: str) -> torch.device:
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(arg)
    except RuntimeError:
        raise PredictError(f"--device: expected auto, cpu, cuda or cuda:N, got {arg!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"--device: {arg} requested but no CUDA device is available")
    return dev


def run(args: argparse.Namespace) -> list[Prediction]:
    if args.topk < 1:
        raise PredictError(f"--topk: expected an integer >= 1, got {args.topk}")
    if args.json:
        from .atomic import check_output_path

        check_output_path(args.json, "--json", inputs=[*args.files, *args.checkpoint])
    predictor = Predictor(args.checkpoint, args.weights, device=_device(args.device), batch_size=args.batch_size)
    preds = predictor.predict_files(args.files, args.topk)
    if args.json:
        from .atomic import write_json_atomic

        write_json_atomic(args.json, {
            "checkpoints": [str(tm.checkpoint) for tm in predictor.models],
            "streams": [tm.stream for tm in predictor.models],
            "weights": predictor.weights,
            "predictions": [p.to_dict() for p in preds],
        })
    return preds


def run_cli(parser: argparse.ArgumentParser, run_fn: Callable[[argparse.Namespace], Any],
            show: Callable[[argparse.Namespace, Any], None], argv: Sequence[str] | None) -> int:
    """The shape of the trained-model CLIs (predict, visualize): a user mistake is one
    `error:` line and exit 2, a result is shown and exits 0."""
    from .model.record import CheckpointError

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parser.parse_args(argv)
    try:
        result = run_fn(args)
    except (DataFormatError, CheckpointError, PredictError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    show(args, result)
    return 0


def _show_predictions(args: argparse.Namespace, preds: list) -> None:
    print(format_predictions(preds))
    if args.json:
        log.info("predictions written to %s", args.json)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), run, _show_predictions, argv)


if __name__ == "__main__":
    sys.exit(main())
