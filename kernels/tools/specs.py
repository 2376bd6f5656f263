"""What the ahead-of-time build check compiles: one KernelSpec per (kernel, dtype,
constexpr config, num_warps, num_stages) the launchers of kernels/window.py and
kernels/frame_group.py can pick for the model's shapes.

`python -m kernels.tools.aot_check` builds them all for sm_80 / sm_86 / sm_90 without a
GPU (docs/kernel_resources.md).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import triton.language as tl

from .. import frame_group, window


@dataclass(frozen=True)
class KernelSpec:
    name: str  # human-readable, unique: e.g. "window_fwd[fp16,w=5,J=25,D=24]"
    fn: Any  # the @triton.jit function
    signature: dict[str, str]  # every non-constexpr argument -> Triton type, e.g. "*fp16", "i32", "fp32"
    constexprs: dict[str, Any]  # every tl.constexpr argument -> value
    num_warps: int = 4
    num_stages: int = 1
    meta: dict[str, Any] = field(default_factory=dict)  # dtype, window, J, D ... for the report


def specialize_like_jit(spec: KernelSpec, int_values: dict[str, int]) -> KernelSpec:
    """The spec the JIT would actually build when the launcher passes these integers.

    At launch, Triton turns every integer argument equal to 1 into a constexpr and marks
    every integer divisible by 16 with tt.divisibility=16. Both change code generation
    (a unit stride makes loads vectorizable), hence registers and spills, so an AOT
    build is only faithful when it sees the same specialization. window_specs() calls it
    with the strides of the layout the model really passes.
    """
    signature = dict(spec.signature)
    constexprs = dict(spec.constexprs)
    divisible = list(spec.meta.get("divisible_by_16", ()))
    for name, value in int_values.items():
        if name not in signature:
            raise ValueError(f"{spec.name}: {name!r} is not a runtime argument of the spec "
                             f"(known: {sorted(signature)})")
        if not signature[name].startswith(("i", "u")) or isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{spec.name}: {name!r} must be an integer argument with an int value, "
                            f"got type {signature[name]!r} and value {value!r}")
        if value == 1:
            del signature[name]
            constexprs[name] = 1
            continue
        if not -2**31 <= value < 2**31:
            signature[name] = "i64"
        if value % 16 == 0 and name not in divisible:
            divisible.append(name)
    meta = {**spec.meta, "divisible_by_16": tuple(divisible)}
    return replace(spec, signature=signature, constexprs=constexprs, meta=meta)


# --------------------------------------------------------------------------- signatures

DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# Both op modules name pointers *_ptr and take one float scalar, `scale`.
_FLOAT_SCALARS = {"scale"}


def _kernel_params(kernel) -> list[tuple[str, bool]]:
    """(name, is_constexpr) of a kernel's parameters, read from the Python function
    so it works for a JITFunction and for the interpreter's InterpretedFunction."""
    params = inspect.signature(kernel.fn).parameters.values()
    return [(p.name, p.annotation is tl.constexpr or "constexpr" in str(p.annotation)) for p in params]


def kernel_signature(kernel, dtype: torch.dtype, fp32_pointers: frozenset[str]) -> dict[str, str]:
    """Triton types of every non-constexpr argument, in the kernel's order: pointers
    carry the q/k/v dtype unless listed in fp32_pointers, integers are i32."""
    signature = {}
    for name, is_constexpr in _kernel_params(kernel):
        if is_constexpr:
            continue
        if name.endswith("_ptr"):
            signature[name] = "*fp32" if name in fp32_pointers else f"*{DTYPE_NAMES[dtype]}"
        elif name in _FLOAT_SCALARS:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
    return signature


# --------------------------------------------------------------------------- window attention

WINDOW_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
WINDOW_SIZES = (1, 3, 5)
WINDOW_JOINTS = (18, 20, 25)
WINDOW_HEAD_DIMS = (8, 16, 24, 32, 48, 64, 96)
_WINDOW_FP32_POINTERS = frozenset({"bias_ptr", "dbias_partial_ptr"})


def _window_layout_ints(kernel_label: str, window_size: int, J: int, D: int, heads: int = 4,
                        T: int = 300) -> dict[str, int]:
    """Stride values the launcher passes for the model's layout (q, k, v channel-major,
    as the model's (N, C, T, V) activations give them; the output and its gradient in
    window.empty_output's layout, gradients in window.empty_grads'), so the AOT build
    sees the JIT's unit-stride/divisibility specialization."""
    meta = torch.empty((2, heads * D, T, J), device="meta").view(2, heads, D, T, J).permute(0, 1, 3, 4, 2)
    out_strides = window.empty_output(meta, window_size).stride()
    ints = {}
    for name in "qkv":
        ints.update(zip((f"stride_{name}{a}" for a in "bhtjd"), meta.stride()))
    ints.update(zip(("stride_bias_h", "stride_bias_r", "stride_bias_c"), (J * J, J, 1)))
    if kernel_label.endswith("fwd"):
        ints.update(zip((f"stride_o{a}" for a in "bhtsjd"), out_strides))
    else:
        ints.update(zip((f"stride_do{a}" for a in "bhtsjd"), out_strides))
        ints.update(zip((f"stride_g{a}" for a in "bhtjd"), window.empty_grads(meta)[0].stride()))
    return ints


def _jit_specialization(ints: dict[str, int]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """What the JIT specializes on for these integer arguments: the ones equal to 1
    (they become constexprs) and the ones divisible by 16 (tt.divisibility)."""
    return (tuple(sorted(n for n, v in ints.items() if v == 1)),
            tuple(sorted(n for n, v in ints.items() if v % 16 == 0)))


def window_specs() -> list[KernelSpec]:
    """Every (kernel, dtype, config) window.launch_config can pick for windows {1,3,5},
    J {18,20,25}, D {8..96}.
    "model" builds carry the JIT specialization of the model's layout (unit joint
    strides, strides divisible by 16; the forward with AFFINE=True); one config
    serves many (window, J, D) whose strides specialize differently, so each
    distinct specialization is its own build, named after its first shape.
    "generic" builds are the arbitrary-strides path, unspecialized."""
    specs: dict[tuple, KernelSpec] = {}
    for dtype in WINDOW_DTYPES:
        for size in WINDOW_SIZES:
            for J in WINDOW_JOINTS:
                for D in WINDOW_HEAD_DIMS:
                    cfg = window.launch_config(dtype, size, J, D)
                    variants = []
                    for model_layout in (True, False):
                        variants.append(("window_attention_fwd", window.window_fwd_kernel,
                                         cfg.fwd_constexprs(model_layout), cfg.fwd_num_warps, model_layout))
                        for compute_dbias in (True, False):
                            variants.append(("window_attention_bwd", window.window_bwd_kernel,
                                             cfg.bwd_constexprs(compute_dbias), cfg.bwd_num_warps, model_layout))
                    for label, fn, constexprs, num_warps, model_layout in variants:
                        ints = _window_layout_ints(label, size, J, D) if model_layout else {}
                        jit_key = _jit_specialization(ints) if ints else None
                        key = (label, dtype, tuple(sorted(constexprs.items())), num_warps, cfg.num_stages, jit_key)
                        if key in specs:
                            specs[key].meta["shapes"].append((size, J, D))
                            continue
                        knobs = ",".join(f"{k}={v}" for k, v in constexprs.items())
                        layout = f",model=w{size}J{J}D{D}" if ints else ",generic"
                        spec = KernelSpec(
                            name=f"{label}[{DTYPE_NAMES[dtype]},{knobs},warps={num_warps}{layout}]",
                            fn=fn,
                            signature=kernel_signature(fn, dtype, _WINDOW_FP32_POINTERS),
                            constexprs=dict(constexprs),
                            num_warps=num_warps,
                            num_stages=cfg.num_stages,
                            meta={"op": window.OP, "dtype": DTYPE_NAMES[dtype], "shapes": [(size, J, D)],
                                  "layout": "model" if ints else "generic"},
                        )
                        if ints:
                            spec = specialize_like_jit(spec, ints)
                        specs[key] = spec
    return list(specs.values())


# --------------------------------------------------------------------------- frame-group attention

# Groups and feature counts the model launches: TFEM groups of 3/5/8 frames
# (all of 1..MAX_TRITON_GROUP are listed: the launcher accepts each); one head
# of F = C * J features, C in 96/192/384 and J in 18 (OpenPose), 20 (NW-UCLA),
# 25 (NTU).
FRAME_GROUPS = tuple(range(1, frame_group.MAX_TRITON_GROUP + 1))
FRAME_GROUP_FEATURE_COUNTS = tuple(c * j for c in (96, 192, 384) for j in (18, 20, 25))
_FRAME_GROUP_FP32_POINTERS = frozenset({"probs_ptr", "ds_ptr"})


def frame_group_specs() -> list[KernelSpec]:
    """Every (kernel, dtype, config) frame_group.launch_config picks for g in FRAME_GROUPS
    and F in FRAME_GROUP_FEATURE_COUNTS (deduplicated: most F share the tile-limited BLOCK_F)."""
    specs: list[KernelSpec] = []
    for kind, fn in (("fwd", frame_group.frame_group_fwd_kernel), ("bwd", frame_group.frame_group_bwd_kernel)):
        configs = sorted(
            {frame_group.launch_config(g, f, backward=kind == "bwd")
             for g in FRAME_GROUPS for f in FRAME_GROUP_FEATURE_COUNTS},
            key=lambda c: (c.group, c.block_f),
        )
        for dtype, tdt in DTYPE_NAMES.items():
            for cfg in configs:
                specs.append(
                    KernelSpec(
                        name=f"frame_group_{kind}[{tdt},g={cfg.group},BLOCK_F={cfg.block_f},w={cfg.num_warps}]",
                        fn=fn,
                        signature=kernel_signature(fn, dtype, _FRAME_GROUP_FP32_POINTERS),
                        constexprs={"GROUP": cfg.group, "BLOCK_G": cfg.block_g, "BLOCK_F": cfg.block_f},
                        num_warps=cfg.num_warps,
                        num_stages=cfg.num_stages,
                        meta={"dtype": tdt, "group": cfg.group, "block_g": cfg.block_g, "block_f": cfg.block_f},
                    )
                )
    return specs
