"""Pickles as data only: label pickles, pyskl annotations and score files.

A pickle names functions to call while it loads, so `pickle.load` on a file
from someone else can run any code (e.g. `os.system` via `__reduce__`). This
unpickler resolves only the few globals that plain data needs (containers,
bytes, numbers, numpy arrays, dtypes and scalars) and refuses every other
name before anything is called. Checkpoints go through
`torch.load(weights_only=True)`, which applies the same idea to tensors.
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["UnsafePickleError", "load", "loads", "load_file"]

# (module, name) pairs that build plain data and have no side effects.
_ALLOWED = frozenset({
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "bytearray"), ("builtins", "complex"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how protocol 2 stores bytes
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})
# numpy >= 1.25 may name a dtype by its class (numpy.dtypes.Float32DType); all are plain dtypes.
_ALLOWED_MODULE_PREFIXES = ("numpy.dtypes",)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something other than plain data; nothing was called."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Check the Python 3 name that the base class will resolve (protocol <= 2 says __builtin__.set).
        mod3, name3 = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        mod3 = _compat_pickle.IMPORT_MAPPING.get(mod3, mod3)
        if (mod3, name3) in _ALLOWED or (mod3 in _ALLOWED_MODULE_PREFIXES and name3.endswith("DType")):
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"refused: the pickle asks for {mod3}.{name3}; only containers, strings, numbers and numpy "
            "arrays are loaded (a pickle that names other functions can run code when loaded)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused: the pickle uses persistent ids (not plain data)")


def load(fh: BinaryIO) -> Any:
    return _DataUnpickler(fh).load()


def loads(data: bytes) -> Any:
    return load(io.BytesIO(data))


def load_file(path: str | Path) -> Any:
    """Load a data pickle; raises UnsafePickleError for code, other pickle/OS errors as they are."""
    with open(path, "rb") as fh:
        return load(fh)
