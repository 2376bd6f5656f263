"""Classification metrics computed from the full score matrix (exact, never
averaged per batch or per rank), plus confusion-matrix files."""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import write_bytes_atomic, write_text_atomic

log = logging.getLogger("amanet_fast.training")


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores: expected (N, num_classes), got shape {scores.shape}")
    if labels.shape != (scores.shape[0],):
        raise ValueError(f"labels: expected shape ({scores.shape[0]},), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels: expected values in [0, {scores.shape[1]}), got [{labels.min()}, {labels.max()}]")
    return scores, labels.astype(np.int64)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of samples whose label is among the k best scores (k clipped to the class count)."""
    scores, labels = _check(scores, labels)
    if labels.size == 0:
        return float("nan")
    k = max(1, min(k, scores.shape[1]))
    # Stable sort: among tied scores the lower class index ranks first, as argmax does,
    # so a constant score vector is not counted correct for every sample.
    topk = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float((topk == labels[:, None]).any(axis=1).mean())


def confusion_matrix(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm


def evaluate_scores(scores: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """top-1, top-5, mean class accuracy (over classes present), per-class accuracy, confusion matrix."""
    scores, labels = _check(scores, labels)
    num_classes = scores.shape[1]
    preds = scores.argmax(axis=1)
    cm = confusion_matrix(preds, labels, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    present = support > 0
    return {
        "top1": topk_accuracy(scores, labels, 1),
        "top5": topk_accuracy(scores, labels, 5),
        "mean_class_acc": float(per_class[present].mean()) if present.any() else float("nan"),
        "per_class_acc": [None if np.isnan(a) else float(a) for a in per_class],
        "num_samples": int(labels.size),
        "confusion": cm,
    }


def write_confusion_csv(path: str | Path, cm: np.ndarray, class_names: Sequence[str]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["true \\ predicted", *class_names])
    for name, row in zip(class_names, cm):
        w.writerow([name, *map(int, row)])
    return write_text_atomic(path, buf.getvalue())


def plot_confusion_png(path: str | Path, cm: np.ndarray, class_names: Sequence[str]) -> bool:
    """Row-normalized heat map. Returns False (and logs why) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: %s not drawn (pip install matplotlib); the CSV is written", path)
        return False
    n = cm.shape[0]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.25 * n, 40)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 60:
        ax.set_xticks(range(n), labels=list(class_names), rotation=90, fontsize=7)
        ax.set_yticks(range(n), labels=list(class_names), fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return True


def most_confused_pairs(cm: np.ndarray, class_names: Sequence[str], top: int = 10) -> list[dict[str, Any]]:
    """The `top` largest off-diagonal cells of the confusion matrix (true -> predicted), largest first.

    `fraction` is the share of that true class's samples that went to the predicted class.
    Ties keep (true, predicted) index order so the list is reproducible.
    """
    cm = np.asarray(cm)
    support = cm.sum(axis=1)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:top]
    pairs = []
    for idx in flat:
        i, j = divmod(int(idx), cm.shape[1])
        if off[i, j] == 0:
            break
        pairs.append({"true": i, "true_name": str(class_names[i]), "predicted": j,
                      "predicted_name": str(class_names[j]), "count": int(off[i, j]),
                      "fraction": float(off[i, j] / support[i])})
    return pairs


def write_predictions_csv(path: str | Path, names: Sequence[str], scores: np.ndarray, labels: np.ndarray,
                          class_names: Sequence[str]) -> Path:
    """One row per sample: name, true label and name, predicted label and name, confidence, correct."""
    scores, labels = _check(scores, labels)
    preds = scores.argmax(axis=1)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["name", "label", "label_name", "predicted", "predicted_name", "confidence", "correct"])
    for name, y, p, row in zip(names, labels, preds, scores):
        w.writerow([name, int(y), class_names[y], int(p), class_names[p], f"{float(row[p]):.6f}", int(y == p)])
    return write_text_atomic(path, buf.getvalue())


def write_sample_outputs(work_dir: str | Path, split: str, names: Sequence[str], scores: np.ndarray,
                         labels: np.ndarray, class_names: Sequence[str], report: dict[str, Any]) -> None:
    """The evaluation's per-sample table (`predictions_<split>.csv`) and, into `report`, the most
    confused class pairs (the training loop copies them into results.json)."""
    write_predictions_csv(Path(work_dir) / f"predictions_{split}.csv", names, scores, labels, class_names)
    report["most_confused"] = most_confused_pairs(report["confusion"], class_names)
