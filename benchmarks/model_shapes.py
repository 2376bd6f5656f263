"""The attention calls a model really makes, read off `build_model` (one place
for the model's per-block kernel shapes; benchmarks and tests derive theirs
from here instead of keeping tables that drift from the model).

The model is built on the meta device and run once with the two public ops
wrapped by recorders, so a paper-size forward (batch 32, T=300) costs no
memory and about a second: every call's (B, H, T, J, D), window or group,
bias shape, the strides the model passes and the calling module are recorded.

    calls = attention_calls("amanet", "ntu60", clips=16, frames=300)
    cases = unique_cases(calls)        # one entry per distinct shape, with its call count
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

import kernels
from amanet_fast import build_model
from amanet_fast.graphs import get_layout

__all__ = ["AttentionCall", "AttentionCase", "attention_calls", "unique_cases"]

WINDOW = "window_attention"
FRAME_GROUP = "frame_group_attention"


@dataclass(frozen=True)
class AttentionCall:
    op: str                          # WINDOW or FRAME_GROUP
    module: str                      # qualified name of the calling module, e.g. "blocks.0.stfem.windows.1"
    shape: tuple[int, int, int, int, int]  # (B, H, T, J, D) of q
    stride: tuple[int, ...]          # q's strides as the model passes them (a permuted view)
    size: int                        # window (τ) or group (g)
    bias_shape: tuple[int, ...] | None
    bias_requires_grad: bool

    @property
    def block(self) -> int | None:
        parts = self.module.split(".")
        return int(parts[1]) if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit() else None


@dataclass(frozen=True)
class AttentionCase:
    """One distinct kernel problem of a model: what a benchmark or test runs."""

    op: str
    dataset: str
    shape: tuple[int, int, int, int, int]
    size: int
    bias_shape: tuple[int, ...] | None
    bias_requires_grad: bool
    calls_per_forward: int
    modules: tuple[str, ...]

    @property
    def id(self) -> str:
        B, H, T, J, D = self.shape
        knob = f"w{self.size}" if self.op == WINDOW else f"g{self.size}"
        name = "window" if self.op == WINDOW else "frame_group"
        return f"{self.dataset}:{name}-{knob}-B{B}H{H}T{T}J{J}D{D}"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "op": self.op, "dataset": self.dataset, "shape": list(self.shape),
                "size": self.size, "bias_shape": list(self.bias_shape) if self.bias_shape else None,
                "bias_requires_grad": self.bias_requires_grad, "calls_per_forward": self.calls_per_forward,
                "modules": list(self.modules)}


@contextmanager
def _recording(calls: list[dict[str, Any]], current: list[str]) -> Iterator[None]:
    """Wrap the public ops (looked up on the `kernels` module at call time by the
    model) so each call is recorded, then runs on the meta device as usual: the
    output keeps whatever layout the op really returns."""
    real_window, real_group = kernels.window_attention, kernels.frame_group_attention

    def window_recorder(q, k, v, bias, window, **kwargs):
        calls.append(dict(op=WINDOW, module=current[-1], shape=tuple(q.shape), stride=tuple(q.stride()),
                          size=int(window), bias_shape=tuple(bias.shape), bias_requires_grad=bias.requires_grad))
        return real_window(q, k, v, bias, window, **kwargs)

    def group_recorder(q, k, v, group, **kwargs):
        calls.append(dict(op=FRAME_GROUP, module=current[-1], shape=tuple(q.shape), stride=tuple(q.stride()),
                          size=int(group), bias_shape=None, bias_requires_grad=False))
        return real_group(q, k, v, group, **kwargs)

    kernels.window_attention, kernels.frame_group_attention = window_recorder, group_recorder
    try:
        yield
    finally:
        kernels.window_attention, kernels.frame_group_attention = real_window, real_group


def attention_calls(arch: str, dataset: str, *, clips: int, frames: int, persons: int | None = None,
                    **overrides: Any) -> list[AttentionCall]:
    """Every attention-op call of one forward of `build_model(arch, dataset, **overrides)`
    on a (clips, C, frames, V, persons) input, in call order. Kernel batch = clips * persons."""
    with torch.device("meta"):
        model = build_model(arch, dataset, **overrides)
    cfg = model.config
    layout = get_layout(cfg.layout)
    persons = cfg.num_person if persons is None else persons
    model.eval()
    stack = ["<model>"]
    handles = []
    for name, module in model.named_modules():
        if name:
            # Hooks must return None (a returned value would replace the module's input/output).
            handles.append(module.register_forward_pre_hook(lambda m, a, name=name: stack.append(name) and None))
            handles.append(module.register_forward_hook(lambda m, a, o: stack.pop() and None))
    raw: list[dict[str, Any]] = []
    try:
        x = torch.empty(clips, cfg.in_channels, frames, layout.num_joints, persons, device="meta")
        with _recording(raw, stack), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [AttentionCall(**call) for call in raw]


def unique_cases(calls: list[AttentionCall], dataset: str) -> list[AttentionCase]:
    """Distinct (op, shape, size, bias) problems in first-call order, with how often a forward runs each."""
    cases: dict[tuple, dict[str, Any]] = {}
    for call in calls:
        key = (call.op, call.shape, call.size, call.bias_shape, call.bias_requires_grad)
        entry = cases.setdefault(key, dict(count=0, modules=[]))
        entry["count"] += 1
        entry["modules"].append(call.module)
    return [AttentionCase(op=op, dataset=dataset, shape=shape, size=size, bias_shape=bias_shape,
                          bias_requires_grad=grad, calls_per_forward=entry["count"], modules=tuple(entry["modules"]))
            for (op, shape, size, bias_shape, grad), entry in cases.items()]
