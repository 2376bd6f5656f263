"""The CTR-GCN family's whole-clip protocol (amanet_fast.data.protocol) on one sample, through
the dataset and the trainer's config; and on the real NW-UCLA files, against the protocol
applied by hand to the raw JSON (the published feeder's steps)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from amanet_fast.data.protocol import ClipProtocol, _resample_indices


def clip(T=30, V=20, M=2, valid=(4, 24), seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((3, T, V, M), np.float32)
    x[:, valid[0]:valid[1], :, 0] = rng.normal(size=(3, valid[1] - valid[0], V)) + 2.0
    return x


def _config(argv):
    from amanet_fast.training import config as C

    return C.resolve_config(C.build_arg_parser().parse_args(argv))


def test_eval_is_deterministic_and_covers_the_whole_clip():
    p = ClipProtocol(persons=1, center_joint=1, minmax=True, resample=52)
    x = clip()
    a, b = p.apply(x, 3), p.apply(x, 3)
    assert a.shape == (3, 52, 20, 1) and np.array_equal(a, b)
    # min-max over the valid frames: every axis spans exactly [-1, 1]
    assert np.allclose(a.min(axis=(1, 2, 3)), -1) and np.allclose(a.max(axis=(1, 2, 3)), 1)
    # linspace over the 20 valid frames: first and last valid frame kept
    valid = x[:, 4:24, :, :1]
    centred = valid - valid[:, 0, 1][:, None, None]
    lo, hi = centred.min(axis=(1, 2, 3), keepdims=True), centred.max(axis=(1, 2, 3), keepdims=True)
    expect = ((centred - lo) / (hi - lo) * 2 - 1)[:, np.linspace(0, 19, 52).astype(int)]
    assert np.allclose(a, expect, atol=1e-6)


def test_centre_joint_of_first_frame_is_origin():
    out = ClipProtocol(center_joint=3).apply(clip(), 3)
    assert out.shape[1] == 20  # the valid frames only
    assert np.allclose(out[:, 0, 3, 0], 0)
    assert np.all(out[..., 1] == 0)  # an absent body stays zero


def test_random_view_rotates_and_scales_rigidly():
    p = ClipProtocol(center_joint=1, rotate_deg=60, scale_range=(0.5, 1.5))
    x = clip()
    centred = ClipProtocol(center_joint=1).apply(x, 3)
    seen = set()
    for seed in range(6):
        out = p.apply(x, 3, np.random.default_rng(seed))
        d0 = np.linalg.norm(centred[:, :, 0, 0] - centred[:, :, 5, 0], axis=0)
        d1 = np.linalg.norm(out[:, :, 0, 0] - out[:, :, 5, 0], axis=0)
        ratio = d1 / d0
        assert np.allclose(ratio, ratio[0], rtol=1e-4) and 0.5 - 1e-6 <= ratio[0] <= 1.5 + 1e-6
        seen.add(round(float(ratio[0]), 3))
    assert len(seen) > 1
    # without an rng (evaluation) the view is left as it is
    assert np.allclose(p.apply(x, 3), centred)


def test_training_resample_is_a_sorted_draw_with_repeats():
    rng = np.random.default_rng(0)
    idx = _resample_indices(20, 52, rng)
    assert len(idx) == 52 and np.all(np.diff(idx) >= 0) and idx.min() >= 0 and idx.max() <= 19
    assert len(np.unique(idx)) < 52  # a 20-frame clip to 52 frames repeats frames
    assert np.array_equal(_resample_indices(20, 5, None), [0, 4, 9, 14, 19])


def test_options_that_cannot_apply_are_refused():
    with pytest.raises(ValueError, match="data.view_rotate_deg.*2D"):
        ClipProtocol(rotate_deg=30).check(17, 2, "kinetics")
    with pytest.raises(ValueError, match="data.center_joint.*0..19"):
        ClipProtocol(center_joint=20).check(20, 3, "ucla")
    with pytest.raises(ValueError, match="data.view_scale"):
        ClipProtocol(scale_range=(1.5, 0.5)).check(20, 3, "ucla")
    with pytest.raises(ValueError, match="empty skeleton"):
        ClipProtocol(minmax=True).apply(np.zeros((3, 10, 20, 1), np.float32), 3)


def test_config_keys_reach_the_datasets(tmp_path):
    from amanet_fast.training.data import build_datasets, ensure_data

    cfg = _config(["--dataset", "synthetic", "data.persons=1", "data.minmax_normalize=true",
                          "data.resample=16", "data.clip_len=null", "data.train_repeat=3", "data.center_joint=0",
                          f"data.root={tmp_path / 'synth'}", "data.synthetic.num_train=12",
                          "data.synthetic.num_val=6"])
    bundle = build_datasets(cfg, ensure_data(cfg, is_main=True))
    assert len(bundle.train) == 3 * 12
    x = bundle.val[0][0]
    assert tuple(x.shape[1:]) == (16, bundle.num_joints, 1) and bundle.num_person == 1
    # resampling may skip the extreme frames: inside [-1, 1], and spread over most of it
    assert -1.0 <= float(x[:2].min()) < -0.8 and 0.8 < float(x[:2].max()) <= 1.0


def test_resample_with_random_choose_is_refused():
    with pytest.raises(ValueError, match="data.random_choose"):
        _config(["--dataset", "ucla", "data.resample=52", "data.random_choose=true"])


def test_real_ucla_eval_sample_equals_the_feeder_steps(shared_data, tmp_path):
    """Prepared NW-UCLA through the dataset (standard preset's eval path) = the published
    feeder's evaluation steps applied by hand to the raw JSON of the same clip."""
    from amanet_fast.data import SkeletonDataset
    from amanet_fast.data.prepare import main as prepare_main

    out = tmp_path / "ucla"
    prepare_main(["ucla", "--raw", str(shared_data / "nw_ucla"), "--out", str(out)])
    p = ClipProtocol(persons=1, center_joint=1, minmax=True, resample=52, rotate_deg=60, scale_range=(0.5, 1.5))
    ds = SkeletonDataset(out, "val", protocol=p)
    for i in (0, 17, len(ds) - 1):
        x = ds[i][0].numpy()
        raw = np.asarray(json.loads((shared_data / "nw_ucla" / "all_sqe" / f"{ds.sample_names[i]}.json")
                                    .read_text())["skeletons"], dtype=np.float64)  # (T, 20, 3)
        v = (raw - raw[0, 1]).reshape(-1, 3)
        v = ((v - v.min(0)) / (v.max(0) - v.min(0)) * 2 - 1).reshape(-1, 20, 3)
        v = v[np.linspace(0, len(v) - 1, 52).astype(int)]
        assert np.allclose(x[..., 0].transpose(1, 2, 0), v, atol=1e-5), ds.sample_names[i]
