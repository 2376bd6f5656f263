"""DP features: alien (moving-frame) coordinates, center-relative, velocity, acceleration."""
from __future__ import annotations

import math

import pytest
import torch

from amanet_fast.graphs import get_layout
from amanet_fast.model.dp import DataPreprocessing, acceleration, velocity

S = 1.2


def _skeleton(v: int, t: int = 4, m: int = 2, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, t, v, m, generator=g, dtype=torch.float64)


def _random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def test_axis_joint_maps_to_s00_3d():
    layout = get_layout("ntu25")
    dp = DataPreprocessing(layout, "alien", S, coord_dims=3)
    x = _skeleton(25)
    rel = dp.alien(x, pinv=False)
    # Trunk part: origin 20, axis 1 (a member) -> (s, 0, 0).
    expected = torch.tensor([S, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(rel[:, :, :, 1], expected.expand(1, 3, 4, 2))
    # A left-arm joint halfway along the arm's axis -> (s/2, 0, 0); the origin -> 0.
    x[:, :, :, 5] = 0.5 * (x[:, :, :, 4] + x[:, :, :, 20])
    rel = dp.alien(x, pinv=False)
    torch.testing.assert_close(rel[:, :, :, 5], (expected / 2).expand(1, 3, 4, 2))
    assert torch.all(rel[:, :, :, 4] == 0)


def test_alien_frame_is_orthonormal_distance_preserving():
    layout = get_layout("ntu25")
    dp = DataPreprocessing(layout, "alien", S, coord_dims=3)
    x = _skeleton(25, seed=3)
    rel = dp.alien(x, pinv=False)
    # Within the left arm: |rel_j| = s |x_j - x_o| / |x_r - x_o|.
    u = (x[:, :, :, 20] - x[:, :, :, 4]).norm(dim=1)
    for j in (5, 6, 7, 21, 22):
        d = (x[:, :, :, j] - x[:, :, :, 4]).norm(dim=1)
        torch.testing.assert_close(rel[:, :, :, j].norm(dim=1), S * d / u)


def test_alien_invariant_to_rigid_motion_and_scale():
    layout = get_layout("ntu25")
    dp = DataPreprocessing(layout, "alien", S, coord_dims=3)
    x = _skeleton(25, seed=1)
    rot = _random_rotation(7)
    moved = torch.einsum("ij,njtvm->nitvm", rot, x) * 2.5 + torch.tensor([0.3, -1.0, 2.0],
                                                                          dtype=torch.float64).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(dp.alien(moved, pinv=False), dp.alien(x, pinv=False))


def test_alien_2d_rotation_invariant_and_score_passes_through():
    layout = get_layout("openpose18")
    dp = DataPreprocessing(layout, "alien", S, coord_dims=2, in_channels=3)
    x = _skeleton(18, c=3, seed=2)
    x[:, 2] = torch.rand_like(x[:, 2])  # score channel
    angle = 0.7
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                       dtype=torch.float64)
    moved = x.clone()
    moved[:, :2] = torch.einsum("ij,njtvm->nitvm", rot, x[:, :2]) + 0.25
    out, out_moved = dp(x), dp(moved)
    assert out.shape == (1, 12, 4, 18, 2)
    # Group 1 is the alien group: rotation-invariant coordinates, score untouched.
    torch.testing.assert_close(out_moved[:, 3:5], out[:, 3:5])
    torch.testing.assert_close(out[:, 5], x[:, 2])
    # Head part: origin neck 1, axis nose 0 (a member) -> (s, 0).
    torch.testing.assert_close(out[:, 3:5, :, 0], torch.tensor([S, 0.0], dtype=torch.float64)
                               .view(1, 2, 1, 1).expand(1, 2, 4, 2))


def test_missing_bodies_and_padded_frames_give_zeros_not_nan():
    """3D: "missing" is per body and frame; an exactly-zero joint of a present body is real data."""
    layout = get_layout("ntu25")
    x = _skeleton(25, t=5, seed=4)
    x[:, :, 3:] = 0           # padded frames
    x[:, :, 0, :, 1] = 0      # second body absent in frame 0
    x[:, :, 0, 1, 0] = 0      # first body's spine mid at the origin (NTU pre-normalization does this)
    x[:, :, 1, 4] = 0         # left-arm origin at the origin: still a valid frame
    x[:, :, 2, 8] = x[:, :, 2, 20]  # right-arm axis of zero length: degenerate
    x.requires_grad_(True)
    for mode in ("alien", "alien_pinv", "center", "center+alien", "none"):
        dp = DataPreprocessing(layout, mode, S, coord_dims=3)
        out = dp(x)
        assert torch.isfinite(out).all(), mode
        out.sum().backward()
        assert torch.isfinite(x.grad).all(), mode
        x.grad = None
    rel = DataPreprocessing(layout, "alien", S).alien(x, pinv=False)
    assert torch.all(rel[:, :, 3:] == 0)
    assert torch.all(rel[:, :, 0, :, 1] == 0)
    torch.testing.assert_close(rel[:, :, 0, 1, 0], torch.tensor([[S, 0.0, 0.0]], dtype=torch.float64))
    assert (rel[:, :, 1, [5, 6, 7, 21, 22]].abs().sum(dim=1) > 0).all()
    assert torch.all(rel[:, :, 2, [8, 9, 10, 11, 23, 24]] == 0)
    center = DataPreprocessing(layout, "center", S).center_relative(x)
    torch.testing.assert_close(center[:, :, 0, 3, 0], x[:, :, 0, 3, 0])  # center at the origin is real
    assert torch.all(center[:, :, 0, :, 1] == 0) and torch.all(center[:, :, 3:] == 0)


def test_confidence_channel_decides_per_joint():
    """2D + score (Kinetics/COCO): a joint with score 0 is missing, its part too when it anchors the frame."""
    layout = get_layout("openpose18")
    x = _skeleton(18, c=3, seed=9)
    x[:, 2] = torch.rand_like(x[:, 2]) + 0.1
    x[:, :, 0, 3] = 0         # right elbow lost (x = y = score = 0, as the Kinetics reader writes it)
    x[:, :, 1, 5] = 0         # left shoulder = left-arm origin lost
    rel = DataPreprocessing(layout, "alien", S, coord_dims=2, in_channels=3, confidence=True).alien(x, pinv=False)
    assert torch.all(rel[:, :, 0, 3] == 0) and (rel[:, :, 0, 4].abs().sum(dim=1) > 0).all()
    assert torch.all(rel[:, :, 1, [5, 6, 7]] == 0) and (rel[:, :, 1, [3, 4]].abs().sum(dim=1) > 0).all()
    with pytest.raises(ValueError, match="score channel"):
        DataPreprocessing(layout, "alien", S, coord_dims=2, in_channels=2, confidence=True)


def test_pinv_is_rank_one_and_center_mode():
    layout = get_layout("ntu25")
    x = _skeleton(25, seed=5)
    rel = DataPreprocessing(layout, "alien_pinv", S).alien(x, pinv=True)
    assert torch.all(rel[:, 1:] == 0)
    torch.testing.assert_close(rel[:, 0, :, 1], torch.full((1, 4, 2), S, dtype=torch.float64))
    # The orthonormal frame's first coordinate is the same projection.
    ortho = DataPreprocessing(layout, "alien", S).alien(x, pinv=False)
    torch.testing.assert_close(rel[:, 0], ortho[:, 0])
    center = DataPreprocessing(layout, "center", S).center_relative(x)
    assert torch.all(center[:, :, :, layout.center] == 0)
    torch.testing.assert_close(center[:, :, :, 3], x[:, :, :, 3] - x[:, :, :, 1])


def test_velocity_acceleration_first_frames():
    x = torch.arange(5, dtype=torch.float64).pow(2).view(1, 1, 5, 1, 1)  # 0 1 4 9 16
    vel = velocity(x)
    acc = acceleration(vel)
    assert vel.flatten().tolist() == [0, 1, 3, 5, 7]
    assert acc.flatten().tolist() == [0, 1, 2, 2, 2]
    one = torch.ones(1, 1, 1, 1, 1)
    assert velocity(one).item() == 1 and acceleration(velocity(one)).item() == 1


@pytest.mark.parametrize("mode,groups", [("alien", 4), ("center", 4), ("alien_pinv", 4), ("none", 3),
                                         ("center+alien", 5)])
def test_group_order_and_count(mode, groups):
    layout = get_layout("ntu25")
    dp = DataPreprocessing(layout, mode, S)
    x = _skeleton(25, seed=6)
    out = dp(x)
    assert out.shape[1] == 3 * groups == dp.out_channels
    torch.testing.assert_close(out[:, :3], x)
    torch.testing.assert_close(out[:, -6:-3], velocity(x))
    torch.testing.assert_close(out[:, -3:], acceleration(velocity(x)))


def test_bad_dp_arguments():
    layout = get_layout("ntu25")
    with pytest.raises(ValueError, match="dp_mode"):
        DataPreprocessing(layout, "relative")
    with pytest.raises(ValueError, match="coord_dims"):
        DataPreprocessing(layout, "alien", coord_dims=4)
    with pytest.raises(ValueError, match=r"\(N, 3, T, V, M\)"):
        DataPreprocessing(layout)(torch.zeros(1, 2, 3, 25, 2))


def test_bone_stream_keeps_root_anchored_parts():
    """On bone data the root's zero vector is real: arms (axis = root) and trunk (origin = root) must map."""
    from amanet_fast.streams import bone

    layout = get_layout("ntu25")
    x = bone(_skeleton(25, seed=8), layout)
    rel = DataPreprocessing(layout, "alien", S).alien(x, pinv=False)
    assert (rel[:, :, :, [5, 1]].abs().sum(dim=1) > 0).all()
    assert torch.isfinite(rel).all()
    assert torch.all(DataPreprocessing(layout, "alien", S).alien(torch.zeros_like(x), pinv=False) == 0)
