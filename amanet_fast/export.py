"""Export a trained checkpoint for deployment.

    pip install -e ".[export]"        # onnx, onnxscript, onnxruntime
    python -m amanet_fast.export onnx --checkpoint work_dirs/ntu60_joint/best.pt --out ntu60_joint.onnx

The graph is the eager attention path (the Triton kernels have no ONNX form),
traced with `torch.export` and converted by `torch.onnx.export(dynamo=True)`.
Batch and frame count are dynamic. Input `x`: float32 (N, C, T, V, M) exactly
as the model sees it in evaluation (`amanet_fast.data.inputs.model_input` with
the spec in metadata key `amanet_fast.inputs`: clip length, padding, stream);
output `logits` (N, num_classes). Class names, stream, layout, clip length and
that input spec are stored in the model's metadata. After writing, the file is run with
onnxruntime on CPU against PyTorch at two input shapes and the largest logit
difference is printed (skipped, and said so, when onnxruntime is missing).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .predict import PredictError, TrainedModel, load_trained_model
from .argparse_util import ArgumentParser

__all__ = ["export_onnx", "check_onnx", "main"]

log = logging.getLogger("amanet_fast.export")

DEFAULT_OPSET = 18
MIN_OPSET = 18


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise PredictError(f"{module} is not installed: ONNX export needs the export extra "
                           "(pip install 'amanet-fast[export]', i.e. onnx, onnxscript, onnxruntime)") from None


def _check_opset(opset: int) -> None:
    """torch's exporter implements opsets 18 and newer and would silently raise a lower request."""
    onnx = _require("onnx")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise PredictError(f"--opset: {opset} cannot be honoured; the exporter writes opset {MIN_OPSET}..{newest} "
                           f"(default {DEFAULT_OPSET})")


def _example(tm: TrainedModel, batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tm.in_channels, frames, tm.layout.num_joints, tm.num_person, generator=g)


def export_onnx(tm: TrainedModel, out: str | Path, *, frames: int | None = None,
                opset: int = DEFAULT_OPSET) -> Path:
    """Write `tm.model` (which must use the eager kernel backend) as ONNX with dynamic batch and T, atomically."""
    _require("onnx")
    _require("onnxscript")
    import onnx
    from torch.export import Dim

    out = Path(out)
    from .data.io import NUM_FRAMES

    frames = int(frames or tm.clip_len or NUM_FRAMES)
    model = tm.model.eval().cpu()
    x = _example(tm, 2, frames)
    dynamic = {"x": {0: Dim("batch", min=1, max=65536), 2: Dim("frames", min=2, max=100000)}}
    log.info("exporting %s (%s stream, eager attention) with torch.export, example input %s, opset %d",
             tm.checkpoint, tm.stream, tuple(x.shape), opset)
    with torch.no_grad():
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=dynamic, input_names=["x"],
                                    output_names=["logits"], opset_version=opset, verbose=False)
    proto = program.model_proto
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise PredictError(f"--opset: {opset} was requested but the exporter wrote opset {written}; nothing saved")
    onnx.helper.set_model_props(proto, {
        "amanet_fast.class_names": json.dumps(tm.class_names),
        "amanet_fast.stream": tm.stream,
        "amanet_fast.layout": tm.layout.name,
        "amanet_fast.clip_len": json.dumps(tm.clip_len),
        "amanet_fast.input": "x: float32 (N, C, T, V, M) = amanet_fast.data.inputs.model_input(clip, "
                             "InputSpec.from_dict(json.loads(metadata['amanet_fast.inputs'])))",
        "amanet_fast.inputs": json.dumps(tm.inputs.to_dict()),
        "amanet_fast.checkpoint": str(tm.checkpoint),
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def check_onnx(tm: TrainedModel, path: str | Path, shapes: Sequence[tuple[int, int]] | None = None) -> float:
    """Largest |logit| difference between onnxruntime (CPU) and PyTorch over inputs of (batch, frames) shapes."""
    ort = _require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    base = tm.clip_len or 300
    shapes = shapes or [(1, base), (3, max(2, base // 2 + 3))]
    worst = 0.0
    for i, (n, t) in enumerate(shapes):
        x = _example(tm, n, t, seed=100 + i)
        with torch.no_grad():
            ref = tm.model(x).numpy()
        got = session.run(["logits"], {"x": x.numpy()})[0]
        if got.shape != ref.shape:
            raise RuntimeError(f"onnxruntime returned {got.shape}, PyTorch {ref.shape} for input {tuple(x.shape)}")
        diff = float(np.abs(got - ref).max())
        log.info("onnxruntime vs PyTorch, input %s: max |logit difference| %.3g", tuple(x.shape), diff)
        worst = max(worst, diff)
    return worst


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m amanet_fast.export", description="Export a trained checkpoint.")
    sub = p.add_subparsers(dest="format", required=True)
    o = sub.add_parser("onnx", help="ONNX (eager attention path, dynamic batch and frame count)")
    o.add_argument("--checkpoint", required=True, type=Path)
    o.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    o.add_argument("--frames", type=int, help="frame count of the tracing example (default: the training clip "
                                              "length, else 300); the exported graph takes any count")
    o.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    o.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    return p


def run(args: argparse.Namespace) -> tuple[Path, float | None]:
    if args.frames is not None and args.frames < 2:
        raise PredictError(f"--frames: expected an integer >= 2, got {args.frames}")
    from .atomic import check_output_path

    check_output_path(args.out, "--out", inputs=[args.checkpoint])
    _check_opset(args.opset)
    tm = load_trained_model(args.checkpoint, device="cpu", kernel_backend="eager")
    out = export_onnx(tm, args.out, frames=args.frames, opset=args.opset)
    diff = None if args.no_check else check_onnx(tm, out)
    return out, diff


def main(argv: Sequence[str] | None = None) -> int:
    from .data.errors import DataFormatError
    from .model.record import CheckpointError

    # Our progress at INFO; the exporter's optimizer logs every initializer it merges at INFO too.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("amanet_fast").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    try:
        out, diff = run(args)
    except (CheckpointError, PredictError, DataFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    if diff is not None:
        print(f"onnxruntime vs PyTorch: max |logit difference| {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
