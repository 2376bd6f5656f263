from __future__ import annotations

import numpy as np
import pytest
import torch

from amanet_fast.graphs import (
    LAYOUTS,
    get_layout,
    k_adjacency,
    k_adjacency_stack,
    spatio_temporal_adjacency,
)
from amanet_fast.streams import STREAMS, bone, fused, to_stream


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_layout_is_consistent(name):
    layout = get_layout(name)
    v = layout.num_joints
    assert layout.parents[layout.root] == layout.root
    # Parents walk back to the root without cycles, along graph edges.
    a = layout.adjacency()
    for j in range(v):
        seen, k = set(), j
        while k != layout.root:
            assert a[k, layout.parents[k]] == 1
            assert k not in seen
            seen.add(k)
            k = layout.parents[k]
    assert len(layout.parts) == 5
    members = sorted(m for p in layout.parts for m in p.members)
    assert members == list(range(v))
    assert len(layout.edges) == v - 1  # a tree


def test_dataset_layouts_and_ntu_bones_match_msg3d():
    from amanet_fast.registry import DATASETS

    assert {k: d.layout for k, d in DATASETS.items()} == {
        "ntu60": "ntu25", "ntu120": "ntu25", "kinetics": "openpose18", "ucla": "ucla20", "synthetic": "openpose18",
        "custom": None}
    ntu = get_layout("ntu25")
    # MS-G3D's NTU bone pairs (1-based (child, parent)): a few that BFS could get wrong.
    for child, parent in [(22, 23), (23, 8), (24, 25), (25, 12), (1, 2), (2, 21), (13, 1)]:
        assert ntu.parents[child - 1] == parent - 1
    assert (ntu.num_joints, ntu.center, ntu.root) == (25, 1, 20)
    op = get_layout("openpose18")
    assert op.parents[:6] == (0, 0, 1, 2, 3, 1)
    assert get_layout("ucla20").num_joints == 20 and get_layout("coco17").num_joints == 17


def test_unknown_layout_raises():
    with pytest.raises(ValueError, match="ntu25"):
        get_layout("ntu26")


def test_k_adjacency_disjoint_hops():
    a = get_layout("ntu25").adjacency()
    hops = [k_adjacency(a, k, with_self=False) for k in range(1, 13)]
    total = sum(hops) + np.eye(25)
    assert np.array_equal(total, np.ones((25, 25)))  # every pair exactly one hop distance (tree diameter <= 12)
    stack = k_adjacency_stack(a, 13)
    assert stack.shape == (13 * 25, 25)
    assert np.allclose(stack[:25], np.eye(25))
    st = spatio_temporal_adjacency(a, 3)
    assert st.shape == (75, 75) and np.array_equal(st[:25, 25:50], a + np.eye(25))


@pytest.mark.parametrize("layout_name", ["ntu25", "openpose18"])
@pytest.mark.parametrize("shape_prefix", [(3, 6), (2, 3, 6)])
def test_streams_numpy_and_torch_agree(layout_name, shape_prefix):
    layout = get_layout(layout_name)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((*shape_prefix, layout.num_joints, 2)).astype(np.float32)
    for stream in STREAMS:
        a = to_stream(x, stream, layout)
        b = to_stream(torch.from_numpy(x), stream, layout_name)
        assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
        assert a.dtype == np.float32 and b.dtype == torch.float32 and a.shape == x.shape
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6)


def test_bone_is_zero_at_root_and_child_minus_parent():
    layout = get_layout("ntu25")
    x = np.random.default_rng(1).standard_normal((3, 4, 25, 2))
    b = bone(x, layout)
    assert b.dtype == np.float64
    assert np.all(b[..., layout.root, :] == 0)
    np.testing.assert_allclose(b[..., 0, :], x[..., 0, :] - x[..., 1, :])  # spine base -> spine mid


def test_fused_is_neighbour_mean():
    layout = get_layout("openpose18")
    x = torch.randn(3, 2, 18, 1, dtype=torch.float64)
    f = fused(x, layout)
    # Nose (0) neighbours: neck 1, eyes 14, 15.
    torch.testing.assert_close(f[..., 0, :], x[..., [0, 1, 14, 15], :].mean(dim=-2))
    const = torch.ones(3, 2, 18, 1)
    torch.testing.assert_close(fused(const, layout), const)
    torch.testing.assert_close(to_stream(x, "bone_fused", layout), bone(fused(x, layout), layout))


def test_stream_errors():
    x = np.zeros((3, 4, 24, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="25 joints"):
        bone(x, "ntu25")
    with pytest.raises(ValueError, match="stream"):
        to_stream(np.zeros((3, 4, 25, 2)), "velocity", "ntu25")
    with pytest.raises(TypeError):
        fused([[0.0]], "ntu25")
