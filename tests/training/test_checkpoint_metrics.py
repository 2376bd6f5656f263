"""Checkpoint integrity + RNG round trip, and metrics on hand-computed cases."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from amanet_fast.training.checkpoint import (CheckpointError, capture_rng_state, load_checkpoint,
                                             restore_rng_state, save_checkpoint)
from amanet_fast.training.metrics import confusion_matrix, evaluate_scores, topk_accuracy


def _state():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": {}, "scaler": {},
            "epoch": 3, "rng": capture_rng_state(), "config": {"dataset": "synthetic", "x": [1, 2]}}


def test_roundtrip_and_plain_torch_load(tmp_path):
    st = _state()
    p = save_checkpoint(tmp_path / "latest.pt", st)
    back = load_checkpoint(p)
    assert back["epoch"] == 3 and back["config"] == st["config"]
    assert torch.equal(back["model"]["weight"], st["model"]["weight"])
    assert torch.load(p, weights_only=True)["epoch"] == 3  # still an ordinary torch file
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_rng_state_roundtrip(tmp_path):
    save_checkpoint(tmp_path / "c.pt", _state())
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, damage):
    p = save_checkpoint(tmp_path / "latest.pt", _state())
    data = bytearray(p.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":  # inside tensor data: the zip reader alone would not notice
        data[len(data) // 2] ^= 0xFF
    elif damage == "garbage":
        data = bytearray(b"not a checkpoint at all" * 10)
    else:
        data = bytearray()
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(p.name)):
        load_checkpoint(p)


def test_foreign_torch_file_rejected(tmp_path):
    p = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, p)
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


def test_metrics_hand_computed():
    scores = np.array([
        [0.9, 0.05, 0.05, 0.0, 0.0, 0.0],  # label 0: top-1 hit
        [0.5, 0.4, 0.1, 0.0, 0.0, 0.0],    # label 1: top-1 miss, top-2 hit
        [0.1, 0.2, 0.3, 0.15, 0.14, 0.11],  # label 0: lowest of 6 -> top-5 miss
        [0.0, 0.0, 0.2, 0.8, 0.0, 0.0],    # label 3: hit
    ])
    labels = np.array([0, 1, 0, 3])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(0.5)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(0.75)
    assert topk_accuracy(scores, labels, 5) == pytest.approx(0.75)
    rep = evaluate_scores(scores, labels)
    # classes present: 0 (1/2), 1 (0/1), 3 (1/1) -> mean 0.5; classes 2, 4, 5 absent -> None
    assert rep["mean_class_acc"] == pytest.approx(0.5)
    assert rep["per_class_acc"] == [0.5, 0.0, None, 1.0, None, None]
    cm = rep["confusion"]
    assert cm[1, 0] == 1 and cm[0, 2] == 1 and cm.sum() == 4


def test_constant_scores_are_not_all_correct():
    scores = np.zeros((4, 3))
    assert topk_accuracy(scores, np.array([0, 1, 2, 1]), 1) == pytest.approx(0.25)


def test_metric_input_errors():
    with pytest.raises(ValueError, match="labels"):
        evaluate_scores(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        evaluate_scores(np.zeros((2, 2)), np.array([0, 2]))
    assert confusion_matrix(np.array([1, 1]), np.array([0, 1]), 2).tolist() == [[0, 1], [0, 1]]
