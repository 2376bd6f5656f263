"""What an ahead-of-time build needs to know about one kernel launch config.

Each Triton op module exposes `aot_specs() -> list[KernelSpec]`, enumerating
every (kernel, dtype, constexpr config, num_warps, num_stages) its launcher can
pick for the shapes the model uses; `kernels.aot_check` compiles them all for
sm_80 / sm_86 / sm_90 without a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KernelSpec:
    name: str  # human-readable, unique: e.g. "window_fwd[fp16,w=5,J=25,D=24]"
    fn: Any  # the @triton.jit function
    signature: dict[str, str]  # every non-constexpr argument -> Triton type, e.g. "*fp16", "i32", "fp32"
    constexprs: dict[str, Any]  # every tl.constexpr argument -> value
    num_warps: int = 4
    num_stages: int = 1
    meta: dict[str, Any] = field(default_factory=dict)  # dtype, window, J, D ... for the report
