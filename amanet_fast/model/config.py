"""`ModelConfig`: what defines a network, one field per knob (docs/design.md §4).

Only the network's shape lives here, so a checkpoint's `model_config` is exactly
this record. How a run executes it (the attention kernels' backend) is a
run-time choice passed beside it, never stored with it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..graphs import SkeletonLayout, get_layout

__all__ = ["ModelConfig", "RUN_TIME_CHOICES"]

# Arguments of build_model that choose how the network runs, not what it is. Older checkpoints
# stored them in model_config; config_from_dict drops them there.
RUN_TIME_CHOICES: tuple[str, ...] = ("kernel_backend",)


@dataclass(frozen=True)
class ModelConfig:
    """Every knob of the network. Field names are the override names of `build_model`."""

    arch: str
    dataset: str
    num_class: int
    layout: SkeletonLayout                # a name or JSON dict given to resolve_config becomes the object
    num_gcn_scales: int
    num_g3d_scales: int
    coord_dims: int                      # 3 (x, y, z) or 2 (x, y + trailing score channels)
    in_channels: int = 3
    num_person: int = 2
    channels: tuple[int, ...] = (96, 192, 384)
    strides: tuple[int, ...] = (1, 2, 2)
    windows: tuple[int, ...] = (3, 5)    # G3D and STFEM window sizes τ
    stream: str = "joint"
    dp: bool = False
    dp_mode: str = "alien"
    dp_scale: float = 1.2                # s of the alien coordinates (paper Fig. 7)
    msgcn: bool = True                   # False: SFEM replaces MS-GCN (Table 4 "GCN->SFEM")
    g3d: bool = True                     # False: STFEM replaces MS-G3D (Table 6 "G3D->STFEM")
    sfem: bool = False
    tfem: bool = False
    stfem: bool = False
    order: str = "sfem_tfem"             # Table 9
    alpha: float = 0.8
    beta: float = 0.8
    group: int = 5                       # g of FF
    tfem_ff: bool = True                 # Table 5 rows: FF / JF alone
    tfem_jf: bool = True
    jf_kernel: int | None = None         # R of JF's temporal conv; None = group (paper: R = g)
    stfem_ratio: float = 0.25
    stfem_bias: str = "a_hat"            # STFEM bias block: Â (default) or eq. 13's binary A ("adjacency")
    heads: int | None = None             # None: width // head_dim per module
    head_dim: int = 24
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("extra")
        d["layout"] = get_layout(self.layout).to_dict()
        for name in ("channels", "strides", "windows"):
            d[name] = list(d[name])
        return d
