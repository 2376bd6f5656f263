"""DP, random_move and padding on the REAL shared samples (docs/design.md §3.2, §6).

Random skeletons never put a joint exactly at the origin; real prepared data
does (NTU's pre-normalized spine mid in every frame, NW-UCLA's frame-0 spine),
so these tests run the real readers and `build_model(...)`'s own DP module.
"""
from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from amanet_fast import build_model
from amanet_fast.data import SkeletonDataset
from amanet_fast.data.augment import DEFAULT_PAD, fit_length, random_move, valid_range
from amanet_fast.data.kinetics import load_kinetics_clip
from amanet_fast.data.ntu import load_ntu_sample
from amanet_fast.data.pyskl import annotation_to_array, read_pyskl_pickle
from amanet_fast.data.ucla import load_ucla_clip
from amanet_fast.graphs import get_layout

from .helpers import run_prepare

REL_MODES = ("alien", "center", "alien_pinv", "center+alien")
UCLA_FILES = ("a01_s01_e00_v01", "a05_s04_e02_v03", "a09_s03_e01_v02", "a12_s10_e04_v03")


@functools.lru_cache(maxsize=None)
def _dp(dataset: str, mode: str, layout: str | None = None):
    extra = {"layout": layout, "num_class": 10} if layout else {}
    return build_model("amanet", dataset, dp_mode=mode, **extra).dp.double().eval()


def _samples(kind: str, shared: Path) -> list[tuple[str, np.ndarray]]:
    if kind == "ntu60":
        return [(p.stem, load_ntu_sample(p).data) for p in sorted((shared / "ntu_raw").glob("*.skeleton"))]
    if kind == "ucla":
        return [(n, load_ucla_clip(shared / "nw_ucla" / "all_sqe" / f"{n}.json").data) for n in UCLA_FILES]
    if kind == "kinetics":
        return [(p.stem, load_kinetics_clip(p).data) for p in sorted((shared / "kinetics_raw").glob("--*.json"))]
    _, anns = read_pyskl_pickle(shared / "pyskl" / "example_UCF101_skeleton.pkl")
    return [(a["frame_dir"], annotation_to_array(a, a["frame_dir"])[0]) for a in anns]


# dataset name for build_model, its layout override, whether channel 2 is a detection score
KINDS = {"ntu60": ("ntu60", None, False), "ucla": ("ucla", None, False),
         "kinetics": ("kinetics", None, True), "pyskl": ("kinetics", "coco17", True)}


def _expected_live(x: np.ndarray, layout, mode: str, score: bool) -> np.ndarray:
    """(T, V, M) where the relative group must be non-zero, from the data's facts alone.

    3D: every joint of a body present in that frame (any coordinate non-zero),
    except the joint the mode measures from (part origin / center joint). With a
    score channel: the joint and the joints anchoring its part's frame were detected.
    """
    T, V, M = x.shape[1:]
    coord = 2 if score else 3
    if score:
        seen = x[2] != 0
    else:
        seen = np.broadcast_to((x != 0).any(axis=(0, 2))[:, None, :], (T, V, M))
    live = np.zeros((T, V, M), bool)
    if "center" in mode:
        live |= seen & seen[:, [layout.center]] & (x[:coord] != x[:coord, :, [layout.center]]).any(0)
        live[:, layout.center] = False
    if "alien" in mode:
        for part in layout.parts:
            # Documented degenerate frame: axis joint on the origin (real OpenPose data has such
            # frames) or, in 3D, the side joint on the axis line.
            u = x[:coord, :, part.axis] - x[:coord, :, part.origin]
            anchors = seen[:, [part.origin]] & seen[:, [part.axis]] & (np.linalg.norm(u, axis=0) > 1e-6)[:, None]
            if not score:  # the 3D frame also needs the side joint (2D frames do not use it)
                w = x[:coord, :, part.side] - x[:coord, :, part.origin]
                e1 = u / np.maximum(np.linalg.norm(u, axis=0), 1e-12)
                w_perp = w - (w * e1).sum(axis=0) * e1
                anchors &= seen[:, [part.side]] & (np.linalg.norm(w_perp, axis=0) > 1e-6)[:, None]
            for j in part.members:
                if j == part.origin:
                    continue
                d = x[:coord, :, j] - x[:coord, :, part.origin]
                # a joint detected exactly on its origin maps to 0; the rank-1 pinv map keeps only the
                # projection on the axis, exactly 0 for a joint exactly perpendicular (2D pixel grids)
                off = (d != 0).any(0) if mode != "alien_pinv" else (d * u).sum(0) != 0
                live[:, j] |= seen[:, j] & anchors[:, 0] & off
    return live


@pytest.mark.parametrize("kind", list(KINDS))
def test_dp_relative_channels_live_on_real_data(shared_data: Path, kind: str) -> None:
    dataset, layout_name, score = KINDS[kind]
    layout = get_layout(layout_name or {"ntu60": "ntu25", "ucla": "ucla20", "kinetics": "openpose18"}[kind])
    samples = _samples(kind, shared_data)
    if kind == "ntu60":  # both kinds of NTU sample are covered
        persons = {int((x[..., 1] != 0).any()) + 1 for _, x in samples}
        assert persons == {1, 2}
        assert all(np.all(x[:, :, layout.center, 0] == 0) for _, x in samples)  # the case that broke DP
    for mode in REL_MODES:
        dp = _dp(dataset, mode, layout_name)
        assert dp.confidence == score
        groups = 5 if mode == "center+alien" else 4
        for name, x in samples:
            with torch.no_grad():
                out = dp(torch.from_numpy(x).double()[None])[0].numpy()
            assert out.shape == (3 * groups, *x.shape[1:]) and np.isfinite(out).all(), (name, mode)
            coord = 2 if score else 3
            rel = np.concatenate([out[3 * g: 3 * g + coord] for g in range(1, groups - 2)])
            live = (rel != 0).any(axis=0)
            expect = _expected_live(x, layout, mode, score)
            assert expect.any(), name
            missing = expect & ~live
            assert not missing.any(), f"{kind} {name} {mode}: {missing.sum()} present joints with zero " \
                                      f"relative coordinates, e.g. (t, v, m) = {tuple(np.argwhere(missing)[0])}"
            assert not (live & ~expect).any(), f"{kind} {name} {mode}: relative coordinates where no body/joint is"
            begin, end = valid_range(x)
            if end < x.shape[1]:  # zero-padded tail: every relative channel stays 0
                assert not rel[:, end:].any()
            if kind == "ucla":  # frame 0: the spine sits exactly at the origin and is real data
                assert np.all(x[:, 0, layout.center, 0] == 0) and live[0, :, 0].sum() >= 15


def _fit_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares dst ~ A src + b over (2, n) points; (A, max residual)."""
    design = np.concatenate([src.T, np.ones((src.shape[1], 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, dst.T, rcond=None)
    return coef[:2].T, float(np.abs(design @ coef - dst.T).max())


@pytest.mark.parametrize("kind", ["ntu60", "ucla", "kinetics"])
def test_random_move_is_rigid_for_every_present_joint(shared_data: Path, kind: str) -> None:
    score = KINDS[kind][2]
    name, x = _samples(kind, shared_data)[-1 if kind == "ntu60" else 0]
    moved = random_move(x, np.random.default_rng(5), confidence=score)
    np.testing.assert_array_equal(moved[2], x[2])  # z / score untouched
    checked = 0
    for t in range(x.shape[1]):
        keep = x[2, t] != 0 if score else np.broadcast_to((x[:, t] != 0).any(axis=(0, 1)), x.shape[2:])
        if not keep.any():
            assert not moved[:, t].any()  # padding / absent bodies stay exactly zero
            continue
        a, resid = _fit_similarity(x[:2, t][:, keep], moved[:2, t][:, keep])
        assert resid < 1e-5, (name, t, resid)  # one transform for every joint, incl. those at the origin
        assert abs(a[0, 0] - a[1, 1]) < 1e-5 and abs(a[0, 1] + a[1, 0]) < 1e-5  # a scaled rotation
        assert not moved[:2, t][:, ~keep].any()
        checked += 1
    assert checked >= 30
    if kind == "ntu60":  # the first body's spine mid (0, 0, 0 after pre-normalization) moves with its body
        assert (moved[:2, :, get_layout("ntu25").center, 0] != 0).any(axis=0).all()
    if kind == "ucla":  # so does the frame-0 spine (the origin of the NW-UCLA translation)
        assert np.all(x[:, 0, 1, 0] == 0) and (moved[:2, 0, 1, 0] != 0).any()


def test_pad_zero_and_replay(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "kinetics"
    assert run_prepare("kinetics", "--raw", shared_data / "kinetics_raw", "--out", out) == 0
    assert SkeletonDataset(out, "val").pad == DEFAULT_PAD["kinetics"] == "zero"
    zero = SkeletonDataset(out, "val", pad="zero")
    replay = SkeletonDataset(out, "val", pad="replay")
    clip = SkeletonDataset(out, "val", pad="replay", clip_len=280)
    short = 0
    for i in range(len(zero)):
        z, r, c = zero[i][0].numpy(), replay[i][0].numpy(), clip[i][0].numpy()
        b, e = valid_range(z)
        n = e - b
        if n == 300:
            np.testing.assert_array_equal(r, z)
            continue
        short += 1
        assert not z[:, e:].any()
        t = np.arange(300)
        np.testing.assert_array_equal(r, z[:, b + t % n])  # valid frames first, then replayed
        np.testing.assert_array_equal(c, r[:, :280]) if n < 280 else None
        assert r[:, n:].any()  # the tail is live data, not zeros
    assert short >= 1
    with pytest.raises(ValueError, match="pad must be"):
        SkeletonDataset(out, "val", pad="loop")
    x = zero[0][0].numpy()
    np.testing.assert_array_equal(fit_length(x, 300, None, "zero"), fit_length(x, 300))


def test_ntu_arrays_are_replayed_and_refuse_zero_padding(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ntu"
    assert run_prepare("ntu60", "--split", "xview", "--raw", shared_data / "ntu_raw", "--out", out) == 0
    ds = SkeletonDataset(out, "train")
    assert ds.pad == "replay" and all(valid_range(ds.data[i]) == (0, 300) for i in range(len(ds)))
    with pytest.raises(ValueError, match="--pad zero"):
        SkeletonDataset(out, "train", pad="zero")
    with open(out / "train_label.pkl", "rb") as f:
        assert len(pickle.load(f)[0]) == len(ds)


def test_ntu_parse_once_writes_every_benchmark_like_single_runs(shared_data: Path, tmp_path: Path) -> None:
    from .helpers import load_prepared, manifest

    raw = shared_data / "ntu_raw"
    assert run_prepare("ntu60", "--raw", raw, "--out", tmp_path / "all") == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["xsub", "xview"]  # no parse cache left
    for bench in ("xsub", "xview"):
        assert run_prepare("ntu60", "--split", bench, "--raw", raw, "--out", tmp_path / bench) == 0
        a, b = manifest(tmp_path / "all" / bench), manifest(tmp_path / bench)
        assert (a["split"], a["counts"], a["dropped_frames"]) == (b["split"], b["counts"], b["dropped_frames"])
        for split in a["counts"]:
            xa, na, la = load_prepared(tmp_path / "all" / bench, split)
            xb, nb, lb = load_prepared(tmp_path / bench, split)
            assert (na, la) == (nb, lb)
            np.testing.assert_array_equal(xa, xb)
    # --pad zero keeps the frames after a body's last one empty; the dataset then accepts data.pad=zero
    assert run_prepare("ntu60", "--split", "xview", "--pad", "zero", "--raw", raw, "--out", tmp_path / "z") == 0
    ds = SkeletonDataset(tmp_path / "z", "train", pad="zero")
    lengths = [valid_range(ds.data[i])[1] for i in range(len(ds))]
    assert max(lengths) < 300 and SkeletonDataset(tmp_path / "z", "train").pad == "replay"
    assert run_prepare("ucla", "--pad", "zero", "--raw", shared_data / "nw_ucla", "--out", tmp_path / "u") == 2
