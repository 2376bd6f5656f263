from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .helpers import load_prepared, manifest, run_prepare


def _reference_clip(path: Path) -> np.ndarray:
    """Independent loop-per-frame statement of the ST-GCN / MS-G3D Kinetics rule."""
    video = json.loads(path.read_text())
    out = np.zeros((3, 300, 18, 2), np.float32)
    for frame in video["data"]:
        t = frame["frame_index"] - 1
        persons = []
        for person in frame["skeleton"][:5]:
            pose = np.array(person["pose"], np.float64).reshape(18, 2)
            score = np.array(person["score"], np.float64)
            xy = pose - 0.5
            xy[:, 1] *= -1
            xy[score == 0] = 0
            persons.append((score.sum(), np.concatenate([xy, score[:, None]], 1)))
        persons.sort(key=lambda p: -p[0])  # stable: equal sums keep listed order
        for m, (_, p) in enumerate(persons[:2]):
            out[:, t, :, m] = p.T
    return out


def test_four_real_clips(shared_data: Path, tmp_path: Path) -> None:
    raw = shared_data / "kinetics_raw"
    out = tmp_path / "kinetics"
    assert run_prepare("kinetics", "--raw", raw, "--out", out) == 0  # flat dir + my_val_label.json detected
    data, names, labels = load_prepared(out, "val")
    assert data.shape == (4, 3, 300, 18, 2)
    table = json.loads((raw / "my_val_label.json").read_text())
    assert labels == [table[n[:-len(".json")]]["label_index"] for n in names]
    assert sorted(labels) == [129, 166, 244, 314]
    for i, name in enumerate(names):
        np.testing.assert_allclose(data[i], _reference_clip(raw / name), atol=1e-6)
    m = manifest(out)
    assert m["layout"]["name"] == "openpose18" and m["num_classes"] == 400 and m["counts"] == {"val": 4}
    assert m["classes"][166] == "javelin throw"
    assert not (out / "train_data_joint.npy").exists()  # absent raw split is not produced


def test_explicit_label_file_and_frame_cap(kinetics_copy: Path, tmp_path: Path) -> None:
    clip = kinetics_copy / "--7goKgS4kc.json"
    video = json.loads(clip.read_text())
    last = video["data"][-1]
    video["data"] += [dict(last, frame_index=300 + k) for k in range(1, 6)]  # frames 301..305
    clip.write_text(json.dumps(video))
    out = tmp_path / "k"
    assert run_prepare("kinetics", "--raw", kinetics_copy, "--val-dir", kinetics_copy,
                       "--val-label-file", kinetics_copy / "my_val_label.json", "--out", out) == 0
    m = manifest(out)
    assert m["dropped_frames"] == {"val": 5}
    assert m["splits"]["val"]["samples_with_dropped_frames"] == 1


def test_has_skeleton_false_is_dropped(kinetics_copy: Path, tmp_path: Path) -> None:
    table_path = kinetics_copy / "my_val_label.json"
    table = json.loads(table_path.read_text())
    table["--33Lscn6sk"]["has_skeleton"] = False
    table_path.write_text(json.dumps(table))
    out = tmp_path / "k"
    assert run_prepare("kinetics", "--raw", kinetics_copy, "--out", out) == 0
    _, names, _ = load_prepared(out, "val")
    assert "--33Lscn6sk.json" not in names and len(names) == 3
    assert "has_skeleton=false" in manifest(out)["skipped"][0]["reason"]


def test_release_layout(kinetics_copy: Path, tmp_path: Path) -> None:
    """kinetics_{train,val}/ + kinetics_{train,val}_label.json, as the ST-GCN release ships it."""
    rel = tmp_path / "release"
    table = json.loads((kinetics_copy / "my_val_label.json").read_text())
    for split, ids in (("train", list(table)[:3]), ("val", list(table)[3:])):
        (rel / f"kinetics_{split}").mkdir(parents=True)
        for cid in ids:
            (rel / f"kinetics_{split}" / f"{cid}.json").write_bytes((kinetics_copy / f"{cid}.json").read_bytes())
        (rel / f"kinetics_{split}_label.json").write_text(json.dumps({c: table[c] for c in ids}))
    out = tmp_path / "k"
    assert run_prepare("kinetics", "--raw", rel, "--out", out) == 0
    assert manifest(out)["counts"] == {"train": 3, "val": 1}


def test_flat_folder_shared_by_both_splits(kinetics_copy: Path, tmp_path: Path) -> None:
    table = json.loads((kinetics_copy / "my_val_label.json").read_text())
    ids = sorted(table)
    (kinetics_copy / "my_val_label.json").write_text(json.dumps({c: table[c] for c in ids[:1]}))
    (kinetics_copy / "my_train_label.json").write_text(json.dumps({c: table[c] for c in ids[1:]}))
    out = tmp_path / "k"
    assert run_prepare("kinetics", "--raw", kinetics_copy, "--out", out) == 0
    assert manifest(out)["counts"] == {"train": 3, "val": 1}
    assert load_prepared(out, "val")[1] == [ids[0] + ".json"]
