"""The synthetic demo never generates its data into a folder that holds something else."""
from __future__ import annotations

import json

import pytest

from .conftest import TINY, run_cli


@pytest.mark.parametrize("content", ["ntu60_manifest", "user_files"])
def test_demo_refuses_a_foreign_data_root(tmp_path, capsys, content):
    root = tmp_path / "my_data"
    root.mkdir()
    if content == "ntu60_manifest":
        (root / "manifest.json").write_text(json.dumps({
            "format_version": 1, "kind": "ntu60", "layout": "ntu25", "num_channels": 3, "num_frames": 300,
            "num_joints": 25, "num_persons": 2, "num_classes": 60, "counts": {"train": 1}}))
        (root / "train_data_joint.npy").write_bytes(b"not touched")
    else:
        (root / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    # --dataset synthetic: without it, --data-root picks the recipe of the folder's manifest (issue 11).
    rc, err = run_cli([*TINY, "--dataset", "synthetic", "--work-dir", str(tmp_path / "wd"), "--data-root", str(root)],
                      capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("train.py: error: data.root ") and str(root) in lines[0]
    assert ("prepared ntu60 data" in lines[0] and "--dataset ntu60" in lines[0]) if content == "ntu60_manifest" \
        else "did not write" in lines[0]
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before  # nothing written, nothing removed
    assert not (tmp_path / "wd").exists()


def test_demo_accepts_an_empty_or_its_own_root(tmp_path, synthetic_root):
    from amanet_fast.training.data import check_synthetic_root

    empty = tmp_path / "empty"
    empty.mkdir()
    for root in (empty, tmp_path / "missing", synthetic_root):
        check_synthetic_root({"dataset": "synthetic", "data": {"root": str(root)}})
