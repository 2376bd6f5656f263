"""build_model: exact MS-G3D parity, shapes for every dataset, override validation, ablation sizes."""
from __future__ import annotations

import pytest
import torch

import amanet_fast
from amanet_fast import build_model
from amanet_fast.model.ablations import ABLATIONS, build_ablation
from amanet_fast.model.build import OVERRIDES

from .conftest import SMALL


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dataset,expected", [("ntu60", 3_194_595), ("kinetics", 3_144_328)])
def test_msg3d_parameter_parity(dataset, expected):
    with torch.device("meta"):
        model = build_model("msg3d", dataset)
    assert n_params(model) == expected


def test_ntu120_ucla_differ_from_ntu60_only_in_head():
    with torch.device("meta"):
        base = n_params(build_model("msg3d", "ntu60"))
        assert n_params(build_model("msg3d", "ntu120")) - base == 60 * 384 + 60
        # UCLA: 20 joints (smaller graphs, data_bn) and 10 classes.
        assert n_params(build_model("msg3d", "ucla")) < base


@pytest.mark.parametrize("dataset", ["ntu60", "ntu120", "kinetics", "ucla", "synthetic"])
@pytest.mark.parametrize("arch", ["msg3d", "amanet"])
def test_output_shapes(dataset, arch):
    torch.manual_seed(0)
    model = build_model(arch, dataset, **SMALL)
    v, classes = model.layout.num_joints, model.num_class
    assert classes == {"ntu60": 60, "ntu120": 120, "kinetics": 400, "ucla": 10, "synthetic": 6}[dataset]
    for t, m in [(1, 1), (1, 2), (5, 2), (6, 1)]:
        y = model(torch.randn(2, 3, t, v, m))
        assert y.shape == (2, classes)
        assert torch.isfinite(y).all()


def test_single_person_model_and_backward():
    model = build_model("amanet", "ntu60", num_person=1, **SMALL)
    x = torch.randn(2, 3, 9, 25, 1)
    model(x).logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    with pytest.raises(ValueError, match="M<= 1"):
        model(torch.randn(2, 3, 9, 25, 2))


def test_input_shape_errors():
    model = build_model("msg3d", "ntu60", **SMALL)
    with pytest.raises(ValueError, match=r"\(N, C, T, V, M\)"):
        model(torch.randn(2, 3, 9, 25))
    with pytest.raises(ValueError, match="V=25"):
        model(torch.randn(2, 3, 9, 18, 2))


def test_unknown_override_lists_valid_ones():
    with pytest.raises(TypeError) as err:
        build_model("amanet", "ntu60", num_classes=10)
    msg = str(err.value)
    assert "num_classes" in msg
    for name in ("num_class", "dp_mode", "kernel_backend", "alpha", "windows", "heads"):
        assert name in msg


@pytest.mark.parametrize("overrides,match", [
    (dict(dp_mode="relative"), "dp_mode"),
    (dict(kernel_backend="cuda"), "kernel_backend"),
    (dict(channels=(96, 190, 384)), "multiples of 6"),
    (dict(stream="joint_fused", dp=True), "dp"),
    (dict(num_class=0), "num_class"),
    (dict(sfem=1), "sfem"),
    (dict(windows=(3, 4)), "odd"),
    (dict(order="random"), "order"),
    (dict(layout="ntu26"), "layout"),
])
def test_bad_override_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        build_model("amanet", "ntu60", **overrides)


def test_bad_arch_and_dataset():
    with pytest.raises(ValueError, match="arch"):
        build_model("stgcn", "ntu60")
    with pytest.raises(ValueError, match="dataset"):
        build_model("msg3d", "ntu90")


def test_amanet_defaults_per_stream():
    cfg = build_model("amanet", "ntu60", **SMALL).config
    assert (cfg.dp, cfg.sfem, cfg.tfem, cfg.stfem, cfg.dp_mode, cfg.alpha, cfg.beta, cfg.group) == (
        True, True, True, True, "alien", 0.8, 0.8, 5)
    bone_dp = build_model("amanet", "ntu60", stream="bone", **SMALL).dp
    assert bone_dp is not None and not bone_dp.confidence
    assert not build_model("amanet", "ntu60", **SMALL).dp.confidence  # 3D: per-body rule, no score
    assert build_model("amanet", "kinetics", **SMALL).dp.confidence
    assert not build_model("amanet", "kinetics", stream="bone", **SMALL).dp.confidence
    assert build_model("amanet", "ntu60", stream="joint_fused", **SMALL).dp is None
    msg = build_model("msg3d", "kinetics", **SMALL).config
    assert (msg.dp, msg.sfem, msg.tfem, msg.stfem, msg.coord_dims) == (False, False, False, False, 2)
    assert set(OVERRIDES) >= {"num_class", "in_channels", "num_person", "layout", "channels", "num_gcn_scales",
                              "num_g3d_scales", "stream", "dp", "dp_mode", "dp_scale", "sfem", "tfem", "stfem",
                              "alpha", "beta", "group", "windows", "heads", "kernel_backend"}


def test_lazy_package_import():
    assert "build_model" in amanet_fast.__all__
    with pytest.raises(AttributeError):
        amanet_fast.not_a_thing  # noqa: B018


@pytest.mark.parametrize("name", [n for n, ab in ABLATIONS.items() if ab.paper_params_m])
def test_ablation_rows_within_ten_percent_of_paper(name):
    ab = ABLATIONS[name]
    with torch.device("meta"):
        params = n_params(build_ablation(name))
    assert abs(params / 1e6 - ab.paper_params_m) <= 0.1 * ab.paper_params_m, (name, params)


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_row_runs(name):
    torch.manual_seed(0)
    model = build_ablation(name, **SMALL)
    y = model(torch.randn(1, 3, 7, 25, 2))
    assert y.shape == (1, 60) and torch.isfinite(y).all()


def test_ablation_switches_change_the_network():
    with torch.device("meta"):
        base = build_ablation("t4_baseline_k13")
        sfem = build_ablation("t4_msgcn_to_sfem_msgcn")
        replaced = build_ablation("t6_g3d_to_stfem")
    names = lambda m: {type(x).__name__ for x in m.modules()}  # noqa: E731
    assert "SFEM" not in names(base) and "SFEM" in names(sfem)
    assert "MultiWindowG3D" not in names(replaced) and "STFEM" in names(replaced)


def test_stfem_bias_option():
    """Default β·tile(Â); eq. 13's β·tile(A): the binary adjacency without self-loops."""
    from amanet_fast.graphs import get_layout
    from amanet_fast.model.attention import STFEM

    a = get_layout("ntu25").adjacency()
    default = build_model("amanet", "ntu60", **SMALL)
    literal = build_model("amanet", "ntu60", stfem_bias="adjacency", **SMALL)
    assert literal.config.stfem_bias == "adjacency" and default.config.stfem_bias == "a_hat"
    b_def = [m.bias for m in default.modules() if isinstance(m, STFEM)]
    b_lit = [m.bias for m in literal.modules() if isinstance(m, STFEM)]
    assert b_lit and len(b_lit) == len(b_def)
    for b in b_lit:
        torch.testing.assert_close(b, 0.8 * torch.tensor((a != 0) * 1.0, dtype=torch.float32))
        assert torch.all(torch.diagonal(b) == 0)
    assert all(torch.all(torch.diagonal(b) > 0) for b in b_def)  # Â has self-loops
    assert sum(p.numel() for p in default.parameters()) == sum(p.numel() for p in literal.parameters())
    with pytest.raises(ValueError, match="stfem_bias"):
        build_model("amanet", "ntu60", stfem_bias="A", **SMALL)
