from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amanet_fast.data.errors import DataFormatError
from amanet_fast.data.ntu import load_ntu_sample, read_skeleton_file, select_bodies

from .helpers import load_prepared, manifest, run_prepare

REF = "S001C001P001R001A001"


def test_xsub_split_and_reference(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ntu60_xsub"
    assert run_prepare("ntu60", "--split", "xsub", "--raw", shared_data / "ntu_raw", "--out", out) == 0
    train, train_names, train_labels = load_prepared(out, "train")
    val, val_names, val_labels = load_prepared(out, "val")
    assert train.shape == (5, 3, 300, 25, 2) and val.shape == (2, 3, 300, 25, 2)
    assert train.dtype == np.float32
    # x-sub: P001, P008, P015 train; P003 val. Labels are the 0-based action numbers.
    assert val_names == ["S002C001P003R001A003.skeleton", "S004C002P003R001A017.skeleton"]
    assert val_labels == [2, 16]
    assert sorted(train_labels) == [0, 10, 33, 49, 57]
    ref = np.load(shared_data / "ntu_prenorm_reference" / f"{REF}.npy")
    got = train[train_names.index(f"{REF}.skeleton")]
    np.testing.assert_allclose(got, ref, atol=1e-3)
    assert np.abs(got - ref).max() < 1e-5  # in fact float32 noise
    m = manifest(out)
    assert m["kind"] == "ntu60" and m["split"] == "xsub" and m["layout"]["name"] == "ntu25"
    assert m["counts"] == {"train": 5, "val": 2} and m["num_classes"] == 60 and m["num_channels"] == 3
    assert m["classes"][0] == "drink water"  # label_map_ntu60.txt next to the raw files
    assert m["skipped"] == [] and m["dropped_frames"] == {"train": 0, "val": 0}
    assert "--split xsub" in m["prepare_command"]


def test_two_person_files_keep_two_bodies(shared_data: Path) -> None:
    """A050 (punching) and A058 (shaking hands) are 2-person actions; A001 is single."""
    for name, persons in (("S001C001P001R001A050", 2), ("S001C003P008R002A058", 2), (REF, 1)):
        x = load_ntu_sample(shared_data / "ntu_raw" / f"{name}.skeleton").data
        assert int((np.abs(x).sum(axis=(0, 1, 2)) > 0).sum()) == persons, name


def test_crlf_and_lf_parse_alike(standin_data: Path, tmp_path: Path) -> None:
    src = standin_data / "ntu_raw" / f"{REF}.skeleton"
    raw = src.read_bytes()
    assert b"\r\n" in raw
    lf = tmp_path / f"{REF}.skeleton"
    lf.write_bytes(raw.replace(b"\r\n", b"\n"))
    a, _ = read_skeleton_file(src)
    b, _ = read_skeleton_file(lf)
    np.testing.assert_array_equal(a, b)


def test_most_active_body_comes_first() -> None:
    rng = np.random.default_rng(0)
    bodies = np.zeros((4, 10, 25, 3))
    bodies[0] = 1.0 + 0.01 * rng.normal(size=(10, 25, 3))  # nearly still
    bodies[2] = 1.0 + 0.5 * rng.normal(size=(10, 25, 3))   # moving a lot
    kept = select_bodies(bodies)
    np.testing.assert_array_equal(kept[0], bodies[2])
    np.testing.assert_array_equal(kept[1], bodies[0])


def test_ntu120_xset_and_ignore_list(shared_data: Path, tmp_path: Path) -> None:
    ignore = tmp_path / "missing.txt"
    ignore.write_text("S001C001P001R001A011\n")
    out = tmp_path / "ntu120_xset"
    assert run_prepare("ntu120", "--split", "xset", "--raw", shared_data / "ntu_raw", "--out", out,
                       "--ignore-list", ignore) == 0
    m = manifest(out)
    # Setups 2 and 4 are even (train); 1 and 3 are val; one S001 file is ignored.
    assert m["counts"] == {"train": 2, "val": 4}
    assert [s["file"].endswith("S001C001P001R001A011.skeleton") for s in m["skipped"]] == [True]
    assert m["num_classes"] == 120


def test_pre_normalization_invariants_on_all_samples(shared_data: Path) -> None:
    """Every real sample: first body's spine mid at the origin in every frame, its frame-0
    left -> right shoulder exactly on +x (the last rotation) and spine base -> spine mid near
    +z (exact after the first rotation; the shoulder rotation tilts it a little, as in MS-G3D)."""
    for f in sorted((shared_data / "ntu_raw").glob("*.skeleton")):
        x = load_ntu_sample(f).data.astype(np.float64)  # (3, 300, 25, 2)
        body = x[..., 0]
        assert np.abs(body[:, :, 1]).max() < 1e-6, f.name
        spine = body[:, 0, 1] - body[:, 0, 0]
        assert spine[2] > 0 and np.degrees(np.arctan2(np.hypot(spine[0], spine[1]), spine[2])) < 15, f.name
        shoulders = body[:, 0, 8] - body[:, 0, 4]
        assert shoulders[0] > 0 and abs(shoulders[1]) < 1e-5 and abs(shoulders[2]) < 1e-5, f.name
        # replay padding: no all-zero frame in the first body after its start
        assert (np.abs(body).sum(axis=(0, 2)) > 0).all(), f.name


def test_mismatched_field_counts_are_caught(tmp_path: Path, standin_data: Path) -> None:
    """11 + 13 values on two joint lines must not pass as 25 x 12."""
    lines = (standin_data / "ntu_raw" / f"{REF}.skeleton").read_text().splitlines()
    a, b = lines[4].split(), lines[5].split()
    lines[4], lines[5] = " ".join(a[:11]), " ".join(b + a[11:])
    bad = tmp_path / f"{REF}.skeleton"
    bad.write_text("\n".join(lines))
    with pytest.raises(DataFormatError, match=r":5: joint line should have 12 values, has 11"):
        read_skeleton_file(bad)
