"""Argument validation and backend choice shared by both public ops."""
from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger("kernels")

BACKENDS = ("auto", "triton", "eager")
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_announced: set[tuple[str, str, str]] = set()


def check_qkv(op: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 5:
            raise ValueError(f"{op}: {name} must have shape (B, H, T, J, D), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"{op}: q, k, v must share one shape (B, H, T, J, D); got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"{op}: q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{op}: q, k, v must be on one device; got {q.device}, {k.device}, {v.device}")
    if min(q.shape) == 0:
        raise ValueError(f"{op}: q, k, v must be non-empty, got shape {tuple(q.shape)}")


def check_bias(op: str, bias: torch.Tensor, q: torch.Tensor) -> None:
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"{op}: bias must be a torch.Tensor, got {type(bias).__name__}")
    if not bias.is_floating_point():
        raise TypeError(f"{op}: bias must be a floating-point tensor, got {bias.dtype}")
    H, J = q.shape[1], q.shape[3]
    if tuple(bias.shape) not in ((J, J), (H, J, J)):
        raise ValueError(
            f"{op}: bias must have shape (J, J) = ({J}, {J}) or (H, J, J) = ({H}, {J}, {J}), "
            f"got {tuple(bias.shape)}"
        )
    if bias.device != q.device:
        raise ValueError(f"{op}: bias is on {bias.device} but q is on {q.device}")


def check_positive_int(op: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{op}: {name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{op}: {name} must be >= 1, got {value}")
    return value


def resolve_scale(op: str, scale: float | None, default: float) -> float:
    if scale is None:
        return default
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"{op}: scale must be a float or None, got {scale!r}")
    if not scale > 0:
        raise ValueError(f"{op}: scale must be > 0, got {scale}")
    return float(scale)


def triton_interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, device_type: str) -> str:
    """The one definition of 'auto': Triton on CUDA, eager elsewhere; other names unchanged."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return ("triton" if device_type == "cuda" else "eager") if backend == "auto" else backend


def choose_backend(op: str, backend: str, q: torch.Tensor) -> str:
    """`resolve_backend` for q's device, checked against what q allows. Pure (no logging):
    it runs inside torch.compile's trace; whoever RUNS a backend calls announce()."""
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend must be one of {BACKENDS}, got {backend!r}")
    chosen = resolve_backend(backend, q.device.type)
    if chosen == "triton":
        if not (q.is_cuda or triton_interpreter_on()):
            raise RuntimeError(
                f"{op}: backend='triton' needs CUDA tensors, or TRITON_INTERPRET=1 set before "
                f"importing kernels to run the Triton interpreter on {q.device}"
            )
        if q.dtype not in TRITON_DTYPES:
            raise TypeError(f"{op}: the Triton backend supports {TRITON_DTYPES}, got {q.dtype}")
    return chosen


def announce(op: str, backend: str, device_type: str) -> None:
    """Log once per (op, backend, device type) which backend ran, so a slow path is
    never silent. Called where the backend runs: the custom ops' implementations
    (outside any traced graph) and the public functions' direct eager path when not compiling."""
    key = (op, backend, device_type)
    if key not in _announced:
        _announced.add(key)
        logger.info("%s: using the %s backend on %s", op, backend, device_type)
