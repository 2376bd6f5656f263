"""Stream fusion CLI on hand-made score files."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from amanet_fast import ensemble


def _write_stream(d, split, names, scores, labels):
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"scores_{split}.pkl", "wb") as fh:
        pickle.dump({n: s for n, s in zip(names, scores)}, fh)
    with open(d / f"labels_{split}.pkl", "wb") as fh:
        pickle.dump((list(names), list(labels)), fh)


def _streams(tmp_path):
    """Stream A right on samples 0-2, stream B right on 3-5; fused with equal weight right on all."""
    names = [f"s{i}" for i in range(6)]
    labels = [0, 1, 0, 1, 0, 1]
    a = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4], [0.45, 0.55], [0.55, 0.45]])
    b = np.array([[0.4, 0.6], [0.55, 0.45], [0.45, 0.55], [0.1, 0.9], [0.9, 0.1], [0.2, 0.8]])
    _write_stream(tmp_path / "joint", "val", names, a, labels)
    _write_stream(tmp_path / "bone", "val", names, b, labels)
    return names, labels, a, b


def test_fusion_reports_each_stream_and_fused(tmp_path, capsys):
    _streams(tmp_path)
    rc = ensemble.main([str(tmp_path / "joint"), str(tmp_path / "bone"), "--json"])
    assert rc == 0
    import json

    rep = json.loads(capsys.readouterr().out)
    assert rep["weights"] == [0.6, 0.6]
    assert [s["top1"] for s in rep["streams"]] == pytest.approx([0.5, 0.5])
    assert rep["fused"]["top1"] == pytest.approx(1.0)


def test_weights_change_the_result(tmp_path, capsys):
    _streams(tmp_path)
    assert ensemble.main([str(tmp_path / "joint" / "scores_val.pkl"), str(tmp_path / "bone" / "scores_val.pkl"),
                          "--labels", str(tmp_path / "joint" / "labels_val.pkl"), "--weights", "1", "0"]) == 0
    out = capsys.readouterr().out
    assert "fused: top-1 50.00%" in out


def test_search_uses_holdout_scores(tmp_path, capsys):
    _streams(tmp_path)
    # Held-out train scores where only stream B is informative: the search must weight A to 0.
    names = [f"h{i}" for i in range(4)]
    labels = [0, 1, 0, 1]
    a = np.array([[0.1, 0.9], [0.9, 0.1], [0.2, 0.8], [0.8, 0.2]])
    b = np.array([[0.8, 0.2], [0.3, 0.7], [0.7, 0.3], [0.4, 0.6]])
    _write_stream(tmp_path / "joint", "holdout", names, a, labels)
    _write_stream(tmp_path / "bone", "holdout", names, b, labels)
    assert ensemble.main([str(tmp_path / "joint"), str(tmp_path / "bone"), "--search", "--json"]) == 0
    import json

    rep = json.loads(capsys.readouterr().out)
    assert rep["search"]["top1"] == pytest.approx(1.0)
    assert rep["weights"][0] == 0.0 and rep["weights"][1] > 0
    assert rep["fused"]["top1"] == pytest.approx(0.5)  # = stream B alone on val


def test_clear_errors(tmp_path, capsys):
    _streams(tmp_path)
    assert ensemble.main([str(tmp_path / "joint"), str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err
    assert ensemble.main([str(tmp_path / "joint"), str(tmp_path / "bone"), "--weights", "1"]) == 2
    assert "expected 2 values" in capsys.readouterr().err
    with open(tmp_path / "bone" / "scores_val.pkl", "wb") as fh:
        pickle.dump({"s0": np.zeros(2)}, fh)
    assert ensemble.main([str(tmp_path / "joint"), str(tmp_path / "bone")]) == 2
    assert "lacks scores" in capsys.readouterr().err
