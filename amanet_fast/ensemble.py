"""Multi-stream score fusion (MS-DS, docs/design.md §3.3).

    python -m amanet_fast.ensemble WD_joint WD_bone WD_joint_fused WD_bone_fused
    python -m amanet_fast.ensemble a/scores_val.pkl b/scores_val.pkl --weights 1 1
    python -m amanet_fast.ensemble WD_joint WD_bone ... --search

Each input is a training work dir (its scores_val.pkl / labels_val.pkl are
used) or a score pickle `{sample name: score vector}` as train.py writes them
(softmax probabilities). The fused score is the weighted sum; default weights
0.6, 0.6, 0.4, 0.4 in the order joint, bone, joint-fused, bone-fused.

`--search` picks the weights on data none of the models trained on and that is
not the reported split: the held-out part of the training set that train.py
scores when run with `data.holdout_fraction=F` (scores_holdout.pkl). Weights
picked on the validation split itself would overstate the fused accuracy.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from . import safe_pickle
from .argparse_util import ArgumentParser

DEFAULT_WEIGHTS = (0.6, 0.6, 0.4, 0.4)


class EnsembleError(ValueError):
    pass


def _read_pickle(path: Path, what: str):
    if not path.is_file():
        raise EnsembleError(f"{what} file {path} does not exist")
    try:
        return safe_pickle.load_file(path)  # score files from others are data, never code
    except safe_pickle.UnsafePickleError as err:
        raise EnsembleError(f"{what} file {path}: {err}") from None
    except Exception as err:
        raise EnsembleError(f"{what} file {path} could not be read: {type(err).__name__}: {str(err)[:200]}") from None


def load_scores(path: str | Path, split: str = "val") -> tuple[dict[str, np.ndarray], Path]:
    """Score dict of a work dir (scores_<split>.pkl) or of a pickle file; returns it and the file used."""
    path = Path(path)
    file = path / f"scores_{split}.pkl" if path.is_dir() else path
    obj = _read_pickle(file, "score")
    if isinstance(obj, (list, tuple)) and len(obj) == 2 and not isinstance(obj[0], str):
        try:
            obj = dict(obj)  # MS-G3D style: list of (name, score) pairs
        except (TypeError, ValueError):
            raise EnsembleError(f"score file {file}: expected {{sample name: score vector}} or (name, score) "
                                "pairs") from None
    if not isinstance(obj, dict) or not obj:
        raise EnsembleError(f"score file {file}: expected a non-empty {{sample name: score vector}} mapping")
    scores = {}
    for k, v in obj.items():
        vec = np.asarray(v)
        if vec.dtype.kind not in "iuf" or vec.size == 0:
            raise EnsembleError(f"score file {file}: the score of {k!r:.60} is {v!r:.60}, expected a vector of numbers")
        vec = vec.astype(np.float64).reshape(-1)
        if not np.isfinite(vec).all():  # NaN would rank arbitrarily and still report an accuracy
            raise EnsembleError(f"score file {file}: the score of {k!r:.60} holds NaN/inf")
        scores[str(k)] = vec
    widths = {v.shape[0] for v in scores.values()}
    if len(widths) != 1:
        raise EnsembleError(f"score file {file}: score vectors have different lengths {sorted(widths)}")
    return scores, file


def load_labels(path: str | Path) -> dict[str, int]:
    """Labels from a (sample_names, labels) pickle (prepared *_label.pkl or train.py's labels_<split>.pkl)."""
    path = Path(path)
    obj = _read_pickle(path, "label")
    expected = f"label file {path}: expected (sample_names, labels) or {{name: label}} with integer labels >= 0"
    if isinstance(obj, dict):
        pairs = list(obj.items())
    elif (isinstance(obj, (list, tuple)) and len(obj) == 2 and all(hasattr(o, "__len__") for o in obj)
          and len(obj[0]) == len(obj[1])):
        pairs = list(zip(obj[0], obj[1]))
    else:
        raise EnsembleError(expected)
    bad = next((v for _, v in pairs if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
                or v < 0), None)
    if bad is not None:
        raise EnsembleError(f"{expected}; got label {bad!r:.40}")
    return {str(n): int(lbl) for n, lbl in pairs}


def _labels_for(first_input: Path, split: str, labels_arg: str | None) -> tuple[dict[str, int], str]:
    if labels_arg:
        return load_labels(labels_arg), str(labels_arg)
    folder = first_input if first_input.is_dir() else first_input.parent
    candidate = folder / f"labels_{split}.pkl"
    if candidate.is_file():
        return load_labels(candidate), str(candidate)
    raise EnsembleError(f"no labels found: {candidate} does not exist; pass --labels PATH "
                        "(the prepared data's val_label.pkl)")


def stack(score_dicts: Sequence[dict[str, np.ndarray]], labels: dict[str, int],
          sources: Sequence[Path], label_source: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(streams, N, classes) array over the samples all inputs share with the labels."""
    names = sorted(labels)
    for d, src in zip(score_dicts, sources):
        missing = [n for n in names if n not in d]
        if missing:
            raise EnsembleError(f"{src} lacks scores for {len(missing)} labelled samples (e.g. {missing[:3]})")
    widths = {next(iter(d.values())).shape[0] for d in score_dicts}
    if len(widths) != 1:
        raise EnsembleError(f"inputs have different class counts: {sorted(widths)}")
    (width,) = widths
    too_big = next((n for n in names if labels[n] >= width), None)
    if too_big is not None:
        raise EnsembleError(f"{label_source or 'labels'}: label {labels[too_big]} of {too_big!r} is outside the "
                            f"{width} classes of the scores")
    arr = np.stack([np.stack([d[n] for n in names]) for d in score_dicts])
    return arr, np.asarray([labels[n] for n in names], dtype=np.int64), names


def accuracy(scores: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    k = min(k, scores.shape[-1])
    topk = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
    return float((topk == labels[:, None]).any(axis=-1).mean())


def fuse(stacked: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (stacked.shape[0],):
        raise EnsembleError(f"--weights: expected {stacked.shape[0]} values (one per input), got {len(w)}")
    return np.tensordot(w, stacked, axes=1)


def search_weights(stacked: np.ndarray, labels: np.ndarray, grid: Sequence[float]) -> tuple[tuple[float, ...], float]:
    """Exhaustive grid search for top-1; ties keep the earliest (smallest-weight-first) candidate."""
    best_w: tuple[float, ...] | None = None
    best_acc = -1.0
    for w in itertools.product(grid, repeat=stacked.shape[0]):
        if not any(w):
            continue
        acc = accuracy(fuse(stacked, w), labels)
        if acc > best_acc + 1e-12:
            best_w, best_acc = tuple(float(v) for v in w), acc
    assert best_w is not None
    return best_w, best_acc


def default_weights(n: int) -> tuple[float, ...]:
    if n > len(DEFAULT_WEIGHTS):
        raise EnsembleError(f"{n} inputs: pass --weights (defaults exist for up to {len(DEFAULT_WEIGHTS)} streams)")
    return DEFAULT_WEIGHTS[:n]


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m amanet_fast.ensemble",
                                description="Fuse per-stream score files and report each stream's and the fused accuracy.")
    p.add_argument("inputs", nargs="+", help="work dirs or score pickles, in stream order (joint, bone, joint_fused, bone_fused)")
    p.add_argument("--weights", type=float, nargs="+", help="one weight per input (default 0.6 0.6 0.4 0.4)")
    p.add_argument("--labels", help="(names, labels) pickle; default: labels_<split>.pkl next to the first input")
    p.add_argument("--split", default="val", help="which scores_<split>.pkl to read from work dirs")
    p.add_argument("--search", action="store_true", help="pick weights on held-out train scores (scores_holdout.pkl)")
    p.add_argument("--search-inputs", nargs="+", help="held-out score files for --search (default: <input>/scores_holdout.pkl)")
    p.add_argument("--search-labels", help="labels for --search-inputs (default labels_holdout.pkl next to them)")
    p.add_argument("--grid", type=float, nargs="+", default=[round(0.1 * i, 1) for i in range(11)],
                   help="candidate weight values for --search (default 0.0 0.1 ... 1.0)")
    p.add_argument("--output", help="write fused scores {name: vector} to this pickle")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def run(args: argparse.Namespace) -> dict:
    inputs = [Path(p) for p in args.inputs]
    loaded = [load_scores(p, args.split) for p in inputs]
    dicts, files = [d for d, _ in loaded], [f for _, f in loaded]
    _check_finite_args(args)
    labels, label_file = _labels_for(inputs[0], args.split, args.labels)
    stacked, y, names = stack(dicts, labels, files, label_file)

    report: dict = {"num_samples": len(y), "streams": []}
    for f, s in zip(files, stacked):
        report["streams"].append({"file": str(f), "top1": accuracy(s, y, 1), "top5": accuracy(s, y, 5)})

    if args.search:
        if args.weights:
            raise EnsembleError("--search and --weights exclude each other")
        if args.search_inputs:
            s_inputs = [Path(p) for p in args.search_inputs]
        else:
            s_inputs = [p if p.is_dir() else p.parent for p in inputs]
        if len(s_inputs) != len(inputs):
            raise EnsembleError(f"--search-inputs: expected {len(inputs)} files, got {len(s_inputs)}")
        s_loaded = [load_scores(p, "holdout") for p in s_inputs]
        s_labels, s_label_file = _labels_for(s_inputs[0], "holdout", args.search_labels)
        if set(s_labels) & set(names):
            raise EnsembleError("held-out search scores share samples with the evaluated split; "
                                "weights must be picked on other data")
        s_stacked, s_y, _ = stack([d for d, _ in s_loaded], s_labels, [f for _, f in s_loaded], s_label_file)
        weights, search_acc = search_weights(s_stacked, s_y, args.grid)
        report["search"] = {"num_samples": len(s_y), "top1": search_acc, "files": [str(f) for _, f in s_loaded]}
    else:
        weights = tuple(args.weights) if args.weights else default_weights(len(inputs))
    fused = fuse(stacked, weights)
    report["weights"] = list(weights)
    report["fused"] = {"top1": accuracy(fused, y, 1), "top5": accuracy(fused, y, 5)}
    if args.output:
        from amanet_fast.atomic import write_pickle_atomic

        write_pickle_atomic(args.output, {n: v.astype(np.float32) for n, v in zip(names, fused)})
        report["output"] = args.output
    return report


def _check_finite_args(args: argparse.Namespace) -> None:
    for flag, values in (("--weights", args.weights), ("--grid", args.grid if args.search else None)):
        if values is None:
            continue
        if not all(math.isfinite(v) for v in values):
            raise EnsembleError(f"{flag}: expected finite numbers, got {' '.join(f'{v:g}' for v in values)}")
        if not any(values):
            raise EnsembleError(f"{flag}: all values are 0, so every fused score would be 0")
        if any(v < 0 for v in values):
            print(f"ensemble: warning: {flag} has negative values ({' '.join(f'{v:g}' for v in values)}): "
                  "those streams count against their classes", file=sys.stderr)


def format_report(report: dict) -> str:
    lines = [f"samples: {report['num_samples']}"]
    for i, s in enumerate(report["streams"]):
        lines.append(f"stream {i + 1}: top-1 {100 * s['top1']:.2f}%  top-5 {100 * s['top5']:.2f}%  ({s['file']})")
    if "search" in report:
        lines.append(f"weights searched on {report['search']['num_samples']} held-out train samples "
                     f"(held-out fused top-1 {100 * report['search']['top1']:.2f}%)")
    lines.append("weights: " + ", ".join(f"{w:g}" for w in report["weights"]))
    lines.append(f"fused: top-1 {100 * report['fused']['top1']:.2f}%  top-5 {100 * report['fused']['top5']:.2f}%")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except EnsembleError as err:
        print(f"ensemble: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # --output is a directory, read-only or on a full disk
        print(f"ensemble: error: {err.filename + ': ' if err.filename else ''}{err.strerror or err}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
