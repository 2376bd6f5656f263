"""`build_model(arch, dataset, **overrides)`: the one way to get a network.

`arch` picks the defaults (MS-G3D: every AMANet module off; AMANet: DP, SFEM,
TFEM and STFEM on); `dataset` gives the registry's defaults (classes, skeleton
layout, graph scales, coordinate kind: `amanet_fast.registry`); overrides may
switch any module, which is how the ablation rows of `ablations.py` are
expressed. Training passes the prepared data's own layout (a `SkeletonLayout`
or its JSON dict), class count and coordinate kind as overrides, so the
network always matches the data. `ModelConfig.to_dict()` is JSON-able and
`model_from_dict` rebuilds exactly that network (checkpoints store it).
`kernel_backend` is accepted beside the overrides but is not part of the
config: it chooses how the network runs, not what it is (model/config.py).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import kernels
import torch.nn as nn

from ..graphs import get_layout
from ..registry import DATASETS as _REGISTRY, coord_dims as _coord_dims
from ..streams import STREAMS
from .attention import STFEM_BIASES
from .config import RUN_TIME_CHOICES, ModelConfig
from .dp import DP_MODES
from .network import SkeletonNet

logger = logging.getLogger("amanet_fast.model")

__all__ = ["ARCHS", "DATASETS", "ModelConfig", "resolve_config", "build_model", "model_from_config",
           "config_from_dict", "model_from_dict"]

ARCHS = ("msg3d", "amanet")
KERNEL_BACKENDS = kernels.BACKENDS  # defined by the kernels package, with the meaning of "auto"
ORDERS = ("sfem_tfem", "tfem_sfem")

DATASETS: tuple[str, ...] = tuple(_REGISTRY)


# What build_model accepts: the network's fields, then the run-time choices.
OVERRIDES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelConfig)
                                   if f.name not in ("arch", "dataset", "extra")) + RUN_TIME_CHOICES


def _fail(name: str, expected: str, value: Any) -> None:
    raise ValueError(f"build_model: {name} must be {expected}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(name, f"an int >= {minimum}", value)


def _check(cfg: ModelConfig) -> None:
    for name in ("num_class", "in_channels", "num_person", "num_gcn_scales", "num_g3d_scales", "group", "head_dim"):
        _check_int(name, getattr(cfg, name))
    for name in ("dp", "msgcn", "g3d", "sfem", "tfem", "stfem", "tfem_ff", "tfem_jf"):
        if not isinstance(getattr(cfg, name), bool):
            _fail(name, "a bool", getattr(cfg, name))
    for name in ("channels", "strides", "windows"):
        value = getattr(cfg, name)
        if not isinstance(value, tuple) or not value or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                                            for v in value):
            _fail(name, "a non-empty tuple of ints >= 1", value)
    if len(cfg.channels) != len(cfg.strides):
        _fail("strides", f"a tuple as long as channels ({len(cfg.channels)})", cfg.strides)
    for c in cfg.channels:
        if c % 6:
            _fail("channels", "multiples of 6 (MS-TCN has six branches)", cfg.channels)
    if cfg.g3d and any(w % 2 == 0 for w in cfg.windows):
        _fail("windows", "odd sizes (G3D windows are centered)", cfg.windows)
    if cfg.coord_dims not in (2, 3) or cfg.coord_dims > cfg.in_channels:
        _fail("coord_dims", f"2 or 3 and <= in_channels ({cfg.in_channels})", cfg.coord_dims)
    if cfg.stream not in STREAMS:
        _fail("stream", f"one of {STREAMS}", cfg.stream)
    if cfg.dp_mode not in DP_MODES:
        _fail("dp_mode", f"one of {DP_MODES}", cfg.dp_mode)
    if cfg.dp and cfg.stream not in ("joint", "bone"):
        _fail("dp", f"False for the {cfg.stream} stream (DP applies to the original-scale joint/bone "
                    "streams only, paper Fig. 6)", cfg.dp)
    if cfg.stfem_bias not in STFEM_BIASES:
        _fail("stfem_bias", f"one of {STFEM_BIASES}", cfg.stfem_bias)
    if cfg.order not in ORDERS:
        _fail("order", f"one of {ORDERS}", cfg.order)
    if not cfg.msgcn and not cfg.sfem:
        _fail("msgcn", "True unless sfem=True replaces it", cfg.msgcn)
    if cfg.tfem and not (cfg.tfem_ff or cfg.tfem_jf):
        _fail("tfem_ff", "True (or tfem_jf True) when tfem is on", cfg.tfem_ff)
    if cfg.jf_kernel is not None:
        _check_int("jf_kernel", cfg.jf_kernel)
    if cfg.heads is not None:
        _check_int("heads", cfg.heads)
    for name in ("alpha", "beta", "dp_scale", "stfem_ratio"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(name, "a number", value)
    if not 0 < cfg.stfem_ratio <= 1:
        _fail("stfem_ratio", "in (0, 1]", cfg.stfem_ratio)
    layout = cfg.layout
    if cfg.dp and "alien" in cfg.dp_mode and not layout.parts:
        raise ValueError(
            f"build_model: layout {layout.name!r} has no DP body parts, which dp_mode={cfg.dp_mode!r} "
            "(AMANet's default) needs: add \"parts\": [{\"name\", \"origin\", \"axis\", \"side\", \"members\"}, ...] "
            "to the layout JSON and prepare the data again (python -m amanet_fast.graphs dump ntu25 shows an "
            "example), or train with model.args.dp_mode=center (joint minus center joint, Table 2 ori_rel) "
            "or model.args.dp_mode=none")


def resolve_config(arch: str, dataset: str, **overrides: Any) -> ModelConfig:
    """Defaults of (arch, dataset) with overrides applied and checked."""
    if arch not in ARCHS:
        raise ValueError(f"build_model: arch must be one of {ARCHS}, got {arch!r}")
    if dataset not in _REGISTRY:
        raise ValueError(f"build_model: dataset must be one of {sorted(_REGISTRY)}, got {dataset!r}")
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"build_model: unknown override(s) {unknown}; valid overrides: {', '.join(OVERRIDES)}")
    run_time = sorted(set(overrides) & set(RUN_TIME_CHOICES))
    if run_time:
        raise TypeError(f"resolve_config: {', '.join(run_time)} chooses how the network runs, not what it is; "
                        "pass it to build_model or model_from_config")
    info = _REGISTRY[dataset]
    values: dict[str, Any] = dict(num_gcn_scales=info.num_gcn_scales, num_g3d_scales=info.num_g3d_scales)
    if info.layout is not None:
        values["layout"] = info.layout
    if info.num_class is not None:
        values["num_class"] = info.num_class
    if info.channels is not None:
        values["coord_dims"] = _coord_dims(info.channels)
    missing = [k for k in ("layout", "num_class", "coord_dims") if k not in values and k not in overrides]
    if missing:
        raise ValueError(f"build_model: dataset {dataset!r} takes {', '.join(missing)} from the prepared data; "
                         "pass them as overrides")
    if arch == "amanet":
        stream = overrides.get("stream", "joint")
        values.update(sfem=True, tfem=True, stfem=True, dp=stream in ("joint", "bone"))
    for name in ("channels", "strides", "windows"):
        if isinstance(overrides.get(name), list):
            overrides[name] = tuple(overrides[name])
    values.update(overrides)
    try:
        values["layout"] = get_layout(values["layout"])
    except ValueError as err:
        raise ValueError(f"build_model: layout: {err}") from None
    cfg = ModelConfig(arch=arch, dataset=dataset, **values)
    _check(cfg)
    return cfg


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Inverse of `ModelConfig.to_dict()` (e.g. a checkpoint's `model_config`), checked like any config.

    Run-time choices that older checkpoints stored beside the network are dropped: the caller picks them.
    """
    d = {k: v for k, v in d.items() if k not in RUN_TIME_CHOICES}
    arch, dataset = d.pop("arch"), d.pop("dataset")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"model config has unknown field(s) {unknown} (written by a newer version?)")
    return resolve_config(arch, dataset, **d)


def model_from_dict(d: dict[str, Any], kernel_backend: str = "auto") -> SkeletonNet:
    """The exact network a `ModelConfig.to_dict()` describes (weights not loaded)."""
    return model_from_config(config_from_dict(d), kernel_backend)


def model_from_config(cfg: ModelConfig, kernel_backend: str = "auto") -> SkeletonNet:
    if kernel_backend not in KERNEL_BACKENDS:
        _fail("kernel_backend", f"one of {KERNEL_BACKENDS}", kernel_backend)
    return SkeletonNet(cfg, kernel_backend)


def build_model(arch: str, dataset: str, **overrides: Any) -> nn.Module:
    """Build MS-G3D or AMANet for a dataset; input (N, C, T, V, M), output (N, num_class) logits.

    Raises TypeError for an unknown override (listing the valid ones) and
    ValueError for a bad value.
    """
    kernel_backend = overrides.pop("kernel_backend", "auto")
    cfg = resolve_config(arch, dataset, **overrides)
    model = model_from_config(cfg, kernel_backend)
    if cfg.sfem or cfg.stfem or (cfg.tfem and cfg.tfem_ff):
        logger.info("%s/%s: attention kernels backend=%r (auto = Triton on CUDA, eager otherwise)",
                    arch, dataset, kernel_backend)
    return model
