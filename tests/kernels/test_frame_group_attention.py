"""frame_group_attention: eager reference vs a naive float64 loop, and the Triton
kernels (CPU interpreter via tests/conftest.py, or CUDA) vs the eager reference,
forward and every gradient, on the layouts the model passes."""
from __future__ import annotations

import inspect
import logging

import pytest
import torch

from kernels import frame_group, frame_group_attention
from kernels.tools import specs as aot_specs
from kernels.reference import frame_group_attention_reference

fga_module = frame_group  # the Triton op module (kernels/frame_group.py)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (the interpreter cannot run bf16; model-size shapes are too slow)"
)

# dtype -> (rtol, atol) for Triton vs eager.
TOLERANCE = {
    torch.float32: (1e-4, 1e-5),
    torch.float16: (2e-2, 2e-2),
    torch.bfloat16: (2e-2, 2e-2),
}


def naive_frame_group_attention(q, k, v, group, scale):
    """Frame-by-frame float64 loops: the spec read literally."""
    B, H, T, J, D = q.shape
    out = torch.zeros(B, H, T, J * D, dtype=torch.float64)
    qf, kf, vf = (x.double().reshape(B, H, T, J * D) for x in (q, k, v))
    for b in range(B):
        for h in range(H):
            for start in range(0, T, group):
                frames = range(start, min(start + group, T))
                for i in frames:
                    scores = torch.stack([(qf[b, h, i] * kf[b, h, j]).sum() * scale for j in frames])
                    weights = torch.softmax(scores, dim=0)
                    out[b, h, i] = sum(w * vf[b, h, j] for w, j in zip(weights, frames))
    return out.reshape(B, H, T, J, D)


def make_qkv(shape, dtype, layout, *, seed=0, device=DEVICE):
    """q, k, v of logical shape (B, H, T, J, D) in one of the layouts the op must take.

    model:   x.view(B, H, D, T, J).permute(0, 1, 3, 4, 2), as the model passes them
    contig:  plain contiguous (B, H, T, J, D)
    strided: every other element of a larger buffer along T and D (no dense layout)
    mixed:   q model, k contiguous, v strided (each tensor brings its own strides)
    """
    B, H, T, J, D = shape
    gen = torch.Generator().manual_seed(seed)

    def one(kind):
        if kind == "model":
            x = torch.randn(B, H, D, T, J, generator=gen).permute(0, 1, 3, 4, 2)
        elif kind == "contig":
            x = torch.randn(B, H, T, J, D, generator=gen)
        elif kind == "strided":
            x = torch.randn(B, H, 2 * T, J, 2 * D, generator=gen)[:, :, ::2, :, 1::2]
        else:
            raise AssertionError(kind)
        return x.to(device=device, dtype=dtype).requires_grad_()

    kinds = ("model", "contig", "strided") if layout == "mixed" else (layout,) * 3
    leaves = [one(kind) for kind in kinds]
    return leaves


def leaf_grads(fn, leaves, grad_out):
    for x in leaves:
        x.grad = None
    out = fn(*leaves)
    out.backward(grad_out)
    grads = [x.grad.clone() for x in leaves]
    for x in leaves:
        x.grad = None
    return out.detach(), grads


# ---------------------------------------------------------------- eager reference vs naive loops


@pytest.mark.parametrize("shape,group", [((1, 2, 7, 3, 2), 5), ((1, 1, 3, 2, 3), 5), ((1, 1, 6, 2, 2), 1), ((1, 1, 4, 2, 2), 9)])
def test_reference_matches_naive_loop_forward_and_grads(shape, group):
    J, D = shape[3], shape[4]
    scale = (J * D) ** -0.5
    leaves = make_qkv(shape, torch.float64, "model", device="cpu")
    grad_out = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref_out, ref_grads = leaf_grads(lambda q, k, v: frame_group_attention_reference(q, k, v, group, scale), leaves, grad_out)
    naive_out, naive_grads = leaf_grads(lambda q, k, v: naive_frame_group_attention(q, k, v, group, scale), leaves, grad_out)
    torch.testing.assert_close(ref_out, naive_out, rtol=1e-10, atol=1e-12)
    for name, a, b in zip("qkv", ref_grads, naive_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m: f"d{name}: {m}")


def test_reference_gradcheck_with_partial_group():
    leaves = [x.detach().requires_grad_() for x in make_qkv((1, 1, 7, 2, 2), torch.float64, "model", device="cpu")]
    assert torch.autograd.gradcheck(lambda q, k, v: frame_group_attention_reference(q, k, v, 3, 0.7), leaves)


# ---------------------------------------------------------------- Triton vs eager

# (B, H, T, J, D), group: partial tails (T=7,g=5; T=3,g=5), exact groups (T=10,g=5),
# g=1, J=18 and J=25, H>1, odd D, g=8, a group longer than the clip, and J*D = 300
# over two feature chunks of 256 (test_real_shapes.py runs the model's 1728..4800).
CASES = [
    ((1, 1, 6, 25, 12), 5),
    ((2, 1, 7, 3, 5), 5),
    ((1, 2, 3, 4, 3), 5),
    ((2, 1, 10, 3, 4), 5),
    ((1, 1, 4, 2, 3), 1),
    ((1, 2, 6, 18, 3), 3),
    ((1, 1, 6, 25, 3), 5),
    ((1, 1, 11, 2, 7), 8),
    ((1, 1, 4, 2, 3), 6),
]


def _check_against_eager(shape, group, dtype, layout, scale=None):
    leaves = make_qkv(shape, dtype, layout)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(7)).to(device=DEVICE, dtype=dtype)
    tri_out, tri_grads = leaf_grads(
        lambda q, k, v: frame_group_attention(q, k, v, group, scale=scale, backend="triton"), leaves, grad_out
    )
    ref_out, ref_grads = leaf_grads(
        lambda q, k, v: frame_group_attention(q, k, v, group, scale=scale, backend="eager"), leaves, grad_out
    )
    rtol, atol = TOLERANCE[dtype]
    assert tri_out.dtype == dtype and tri_out.shape == shape
    torch.testing.assert_close(tri_out, ref_out, rtol=rtol, atol=atol)
    for name, a, b in zip("qkv", tri_grads, ref_grads):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"d{name}: {m}")
    return tri_out


@pytest.mark.parametrize("shape,group", CASES, ids=[f"{s}-g{g}" for s, g in CASES])
def test_triton_matches_eager_fp32_model_layout(shape, group):
    _check_against_eager(shape, group, torch.float32, "model")


@pytest.mark.parametrize("layout", ["contig", "strided", "mixed"])
def test_triton_matches_eager_fp32_other_layouts(layout):
    _check_against_eager((2, 2, 7, 3, 5), 5, torch.float32, layout)


@pytest.mark.parametrize("shape,group", [((1, 2, 7, 3, 5), 5), ((1, 1, 6, 25, 3), 3), ((1, 1, 5, 18, 4), 8)])
def test_triton_matches_eager_fp16(shape, group):
    _check_against_eager(shape, group, torch.float16, "model")


@requires_cuda
@pytest.mark.parametrize("shape,group", [((2, 2, 7, 3, 5), 5), ((2, 1, 30, 25, 96), 5), ((1, 1, 16, 18, 24), 8)])
@pytest.mark.parametrize("layout", ["model", "mixed"])
def test_triton_matches_eager_bf16_cuda(shape, group, layout):
    _check_against_eager(shape, group, torch.bfloat16, layout)


@requires_cuda
def test_triton_matches_eager_model_shape_fp32_cuda():
    _check_against_eager((4, 1, 75, 25, 96), 5, torch.float32, "model")


def test_triton_custom_scale():
    _check_against_eager((1, 1, 7, 3, 4), 5, torch.float32, "model", scale=0.9)


def test_triton_output_keeps_input_layout_and_inputs_are_not_copied(monkeypatch):
    """The model reads the output back through the inverse permute for free only
    if the output has q's layout; a .contiguous()/.clone() of the inputs would
    be a silent full copy."""
    leaves = make_qkv((1, 2, 7, 3, 5), torch.float32, "model")
    copies = []
    for method in ("contiguous", "clone"):
        original = getattr(torch.Tensor, method)

        def spy(self, *args, _original=original, _method=method, **kwargs):
            if any(self is x or self.data_ptr() == x.data_ptr() for x in leaves):
                copies.append(_method)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, spy)
    out = frame_group_attention(*leaves, 5, backend="triton")
    out.backward(torch.ones_like(out))
    assert copies == []
    assert out.stride() == leaves[0].stride()
    assert leaves[0].grad.stride() == leaves[0].stride()


def test_triton_accepts_expanded_grad_output():
    """out.sum().backward() hands the kernel a stride-0 gradient."""
    leaves = make_qkv((1, 1, 7, 3, 4), torch.float32, "model")
    frame_group_attention(*leaves, 5, backend="triton").sum().backward()
    tri = [x.grad.clone() for x in leaves]
    for x in leaves:
        x.grad = None
    frame_group_attention(*leaves, 5, backend="eager").sum().backward()
    for a, x in zip(tri, leaves):
        torch.testing.assert_close(a, x.grad, rtol=1e-4, atol=1e-5)


def test_triton_double_backward_raises_instead_of_returning_wrong_grads():
    leaves = make_qkv((1, 1, 4, 2, 3), torch.float32, "model")
    out = frame_group_attention(*leaves, 2, backend="triton")
    (dq,) = torch.autograd.grad(out.square().sum(), leaves[0], create_graph=True)
    with pytest.raises(RuntimeError, match="no autograd formula was registered"):
        dq.sum().backward()


def test_auto_backend_on_cpu_is_eager_and_logged(caplog):
    # CPU tensors: "auto" means eager on them on a CUDA machine too (no skip there: the GPU
    # suite counts every skip on CUDA as a failure).
    q, k, v = make_qkv((1, 1, 5, 2, 3), torch.float32, "model", device="cpu")
    from kernels import _checks

    _checks._announced.discard(("frame_group_attention", "eager", "cpu"))
    with caplog.at_level(logging.INFO, logger="kernels"):
        out = frame_group_attention(q, k, v, 2)
    assert "eager" in caplog.text
    torch.testing.assert_close(out, frame_group_attention_reference(q, k, v, 2, 6 ** -0.5))


# ---------------------------------------------------------------- argument errors


def _qkv(shape=(1, 1, 4, 2, 3), dtype=torch.float32):
    return [torch.randn(shape, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"group": 0}, ValueError, "group must be >= 1"),
        ({"group": 2.0}, TypeError, "group must be an int"),
        ({"group": True}, TypeError, "group must be an int"),
        ({"scale": -1.0}, ValueError, "scale must be > 0"),
        ({"scale": "big"}, TypeError, "scale must be a float"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
    ],
)
def test_argument_errors(kwargs, exc, match):
    q, k, v = _qkv()
    call = {"group": 2, **kwargs}
    group = call.pop("group")
    with pytest.raises(exc, match=match):
        frame_group_attention(q, k, v, group, **call)


def test_shape_dtype_device_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"q, k, v must share one shape"):
        frame_group_attention(q, k[:, :, :3], v, 2)
    with pytest.raises(ValueError, match=r"must have shape \(B, H, T, J, D\)"):
        frame_group_attention(q[0], k[0], v[0], 2)
    with pytest.raises(TypeError, match="share one dtype"):
        frame_group_attention(q, k.half(), v, 2)
    with pytest.raises(TypeError, match="floating-point"):
        frame_group_attention(q.long(), k.long(), v.long(), 2)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        frame_group_attention(q.numpy(), k, v, 2)


def test_triton_rejects_groups_beyond_register_budget():
    q, k, v = _qkv((1, 1, 20, 2, 3))
    with pytest.raises(ValueError, match=r"group <= 8.*backend='eager'"):
        frame_group_attention(q, k, v, 9, backend="triton")
    # ... but a group longer than the clip is just one group of the clip.
    torch.testing.assert_close(
        frame_group_attention(q[:, :, :6], k[:, :, :6], v[:, :, :6], 9, backend="triton"),
        frame_group_attention(q[:, :, :6], k[:, :, :6], v[:, :, :6], 9, backend="eager"),
    )


def test_triton_rejects_float64():
    q, k, v = _qkv(dtype=torch.float64)
    with pytest.raises(TypeError, match="Triton backend supports"):
        frame_group_attention(q, k, v, 2, backend="triton")


# ---------------------------------------------------------------- launch config + AOT enumeration


@pytest.mark.parametrize("group", range(1, 9))
@pytest.mark.parametrize("features", [6, 450, 18 * 96, 25 * 96, 25 * 384])
@pytest.mark.parametrize("backward", [False, True])
def test_launch_config_is_consistent(group, features, backward):
    cfg = fga_module.launch_config(group, features, backward=backward)
    assert cfg.group == group
    assert cfg.block_g >= group and cfg.block_g & (cfg.block_g - 1) == 0
    assert cfg.block_f >= 16 and cfg.block_f & (cfg.block_f - 1) == 0
    assert cfg.block_g * cfg.block_f <= 4096
    assert cfg.num_warps in (4, 8)


def test_aot_specs_cover_every_model_config_with_full_signatures():
    specs = aot_specs.frame_group_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    built = {(s.fn, s.meta["dtype"], tuple(sorted(s.constexprs.items())), s.num_warps) for s in specs}
    for features in (18 * 96, 20 * 96, 25 * 96, 25 * 192, 18 * 384, 25 * 384):
        for group in range(1, fga_module.MAX_TRITON_GROUP + 1):
            for backward, fn in ((False, fga_module.frame_group_fwd_kernel), (True, fga_module.frame_group_bwd_kernel)):
                cfg = fga_module.launch_config(group, features, backward=backward)
                constexprs = tuple(sorted({"GROUP": group, "BLOCK_G": cfg.block_g, "BLOCK_F": cfg.block_f}.items()))
                for dtype in ("fp32", "fp16", "bf16"):
                    assert (fn, dtype, constexprs, cfg.num_warps) in built, (group, features, backward, dtype)
    for spec in specs:
        params = inspect.signature(spec.fn.fn).parameters
        assert set(spec.signature) | set(spec.constexprs) == set(params), spec.name
        assert not set(spec.signature) & set(spec.constexprs)
        pointer_type = "*" + spec.meta["dtype"]
        assert spec.signature["q_ptr"] == pointer_type and spec.signature["probs_ptr"] == "*fp32"
        assert set(spec.signature.values()) <= {pointer_type, "*fp32", "i32", "fp32"}
