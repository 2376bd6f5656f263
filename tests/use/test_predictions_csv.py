"""Evaluation outputs for error analysis: predictions_val.csv beside the confusion matrix,
and the most confused class pairs in results.json."""
from __future__ import annotations

import csv
import json
import pickle

import numpy as np

from amanet_fast.training.metrics import most_confused_pairs


def test_predictions_csv_and_confused_pairs_agree_with_scores(trained):
    wd = trained.joint
    with open(wd / "scores_val.pkl", "rb") as fh:
        scores = pickle.load(fh)
    with open(wd / "labels_val.pkl", "rb") as fh:
        names, labels = pickle.load(fh)
    rows = list(csv.DictReader((wd / "predictions_val.csv").open()))
    assert list(rows[0]) == ["name", "label", "label_name", "predicted", "predicted_name", "confidence", "correct"]
    assert [r["name"] for r in rows] == list(names)
    classes = [r[0] for r in csv.reader((wd / "confusion_matrix.csv").open())][1:]
    for r, y in zip(rows, labels):
        s = scores[r["name"]]
        assert int(r["label"]) == y and r["label_name"] == classes[y]
        assert int(r["predicted"]) == int(np.argmax(s)) and r["predicted_name"] == classes[int(np.argmax(s))]
        assert abs(float(r["confidence"]) - float(s.max())) < 1e-6
        assert r["correct"] == str(int(int(r["predicted"]) == y))

    res = json.loads((wd / "results.json").read_text())
    wrong = sum(r["correct"] == "0" for r in rows)
    assert abs(res["top1"] - (1 - wrong / len(rows))) < 1e-9
    pairs = res["most_confused"]
    assert sum(p["count"] for p in pairs) == wrong or len(pairs) == 10
    counted = {}
    for r in rows:
        if r["correct"] == "0":
            key = (int(r["label"]), int(r["predicted"]))
            counted[key] = counted.get(key, 0) + 1
    for p in pairs:
        assert counted[(p["true"], p["predicted"])] == p["count"] and p["true_name"] == classes[p["true"]]
    assert [p["count"] for p in pairs] == sorted((p["count"] for p in pairs), reverse=True)


def test_most_confused_pairs_order_and_fractions():
    cm = np.array([[5, 3, 0], [1, 2, 4], [0, 4, 9]])
    pairs = most_confused_pairs(cm, ["a", "b", "c"], top=3)
    assert [(p["true_name"], p["predicted_name"], p["count"]) for p in pairs] == [
        ("b", "c", 4), ("c", "b", 4), ("a", "b", 3)]
    assert pairs[0]["fraction"] == 4 / 7 and pairs[2]["fraction"] == 3 / 8
    assert most_confused_pairs(np.diag([3, 4]), ["a", "b"]) == []
