"""Atomic writing of a prepared dataset (docs/design.md §5 prepared format + manifest).

Everything is written into `DIR/.tmp-XXXX` first and moved into place with
`os.replace` only when the whole run succeeded, manifest last. The manifest is
the "this dataset is complete" marker: readers refuse a directory without it,
so an interrupted or failed run never leaves something that looks usable.

A temp folder holds an `flock`ed owner file for its writer's lifetime (the kernel
drops the lock when the writer dies, even by kill -9): the next prepare or check
removes the folder of a dead writer and leaves a live one's (`sweep_temp_dirs`).
"""
from __future__ import annotations

import errno
import logging
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import owner_lock, safe_pickle
from ..atomic import write_json_atomic
from .errors import DataFormatError

__all__ = [
    "FORMAT_VERSION",
    "NUM_FRAMES",
    "NUM_PERSONS",
    "MANIFEST_NAME",
    "data_file",
    "label_file",
    "PreparedWriter",
    "read_manifest",
    "read_label_pickle",
    "open_prepared_array",
    "check_sampled_finite",
    "write_json_atomic",
    "cache_dir",
    "data_root",
    "data_dir",
]

log = logging.getLogger("amanet_fast.data.io")

FORMAT_VERSION = 1
NUM_FRAMES = 300
NUM_PERSONS = 2
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val")
TMP_PREFIX, PARSED_PREFIX = ".tmp-", ".parsed-"  # PreparedWriter's folder; NTU's parse-once folder in --out
TEMP_PREFIXES = (TMP_PREFIX, PARSED_PREFIX)


OWNER_FILE = ".owner.lock"  # inside a temp folder: flock held by the process writing it, and who that is


class OwnedTempDir:
    """A temp folder in `parent` that the next sweep_temp_dirs recognises as ours, and as dead once we are."""

    def __init__(self, parent: Path, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self._fd = os.open(self.path / OWNER_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        owner_lock.take(self._fd)  # a fresh file: nobody else can hold it
        owner_lock.write_record(self._fd)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def sweep_temp_dirs(parent: Path, prefixes: tuple[str, ...] = TEMP_PREFIXES) -> tuple[list[str], list[str]]:
    """Remove the temp folders in `parent` whose writer died; (removed, left) lines for the report.

    Only folders carrying our owner file are removed; others (an older version's, a user's) are
    named with a hint, never touched."""
    removed: list[str] = []
    left: list[str] = []
    try:
        found = sorted(p for p in Path(parent).iterdir() if p.is_dir() and not p.is_symlink()
                       and p.name.startswith(prefixes))
    except OSError:
        return removed, left
    for d in found:
        try:
            fd = os.open(d / OWNER_FILE, os.O_RDWR)
        except FileNotFoundError:
            left.append(f"{d}: temp folder without an owner record (an older prepare's, or one starting right "
                        "now); delete it if no prepare is writing here")
            continue
        except OSError as err:
            left.append(f"{d}: temp folder whose owner record cannot be opened ({err.strerror}); delete it if no "
                        "prepare is writing here")
            continue
        try:
            try:
                ours, holder = owner_lock.take(fd)
            except OSError as err:
                left.append(f"{d}: cannot tell whether its preparation still runs (locking: {err.strerror}); "
                            "delete it if no prepare is writing here")
                continue
            if not ours:
                left.append(f"{d}: temp folder of a running preparation ({owner_lock.describe(holder)}); left alone")
                continue
            shutil.rmtree(d, ignore_errors=True)
            if d.exists():
                left.append(f"{d}: temp folder of an interrupted preparation ({owner_lock.describe(holder)}) could "
                            "not be removed (permissions?); delete it")
            else:
                removed.append(f"{d}: removed the temp folder of an interrupted preparation "
                               f"({owner_lock.describe(holder)})")
        finally:
            os.close(fd)
    return removed, left


def report_temp_dirs(parent: Path, log_: logging.Logger, prefixes: tuple[str, ...] = TEMP_PREFIXES) -> None:
    removed, left = sweep_temp_dirs(parent, prefixes)
    for line in removed + left:
        log_.warning("%s", line)


def data_file(split: str) -> str:
    return f"{split}_data_joint.npy"


def label_file(split: str) -> str:
    return f"{split}_label.pkl"


def cache_dir() -> Path:
    """$AMANET_CACHE, else ~/.cache/amanet_fast (the synthetic demo is prepared there)."""
    env = os.environ.get("AMANET_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "amanet_fast"


def data_root(cfg: dict[str, Any]) -> Path:
    """The prepared data's root folder a resolved training config names (data.root, dataset)."""
    root = cfg["data"]["root"]
    if root:
        return Path(root).expanduser()
    if cfg["dataset"] == "synthetic":
        return cache_dir() / "synthetic"
    base = os.environ.get("AMANET_DATA")
    return (Path(base).expanduser() if base else Path("data")) / cfg["dataset"]


def data_dir(cfg: dict[str, Any]) -> Path:
    """data_root plus the config's split folder: where its manifest and arrays are."""
    root = data_root(cfg)
    split = cfg["data"]["split"]
    return root / str(split) if split else root


# Manifest keys readers rely on, with the type each must have.
# layout: the full layout object (docs/design.md §4); older manifests name a built-in layout
_MANIFEST_TYPES = {"layout": (dict, str), "num_classes": int, "num_channels": int, "counts": dict}


def read_manifest(data_dir: Path) -> dict | None:
    """The manifest of a prepared dataset (None when absent); damage is a DataFormatError naming the file."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    from .errors import read_json_file

    manifest = read_json_file(path)
    if not isinstance(manifest, dict):
        raise DataFormatError(f"expected a JSON object, got {type(manifest).__name__} (re-run the preparation)",
                              path)
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if key not in manifest:
            raise DataFormatError(f"lacks {key!r}: not written by this version of prepare (re-run it)", path)
        if isinstance(value, bool) or not isinstance(value, kind) or (kind is int and value < 1):
            expected = " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__
            raise DataFormatError(f"{key!r} is {value!r:.60}, expected a{' positive' if kind is int else ''} "
                                  f"{expected}", path)
    return manifest


def read_label_pickle(path: Path) -> tuple[list[str], list[int]]:
    """A prepared `*_label.pkl`: (sample names, integer labels) of equal length, loaded as data only."""
    expected = "expected a pickled (sample_names, labels) pair"
    try:
        obj = safe_pickle.load_file(path)
    except safe_pickle.UnsafePickleError as err:
        raise DataFormatError(str(err), path) from None
    except FileNotFoundError:
        raise DataFormatError("label file not found", path) from None
    except Exception as err:  # truncated, not a pickle, unreadable
        raise DataFormatError(f"cannot read ({type(err).__name__}: {str(err)[:120]}); {expected}", path) from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        n = len(obj) if isinstance(obj, (tuple, list)) else type(obj).__name__
        raise DataFormatError(f"holds {n}{'-tuple' if isinstance(n, int) else ''}; {expected}", path)
    names, labels = (list(v) if isinstance(v, (list, tuple, np.ndarray)) else v for v in obj)
    if not isinstance(names, list) or not isinstance(labels, list) or len(names) != len(labels):
        raise DataFormatError(f"names and labels differ in kind or length; {expected}", path)
    bad = next((v for v in labels if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))), None)
    if bad is not None:
        raise DataFormatError(f"label {bad!r:.40} is not an integer", path)
    return [str(n) for n in names], [int(v) for v in labels]


def open_prepared_array(path: Path, mmap: bool = True) -> np.ndarray:
    """A prepared `.npy` float array, checked against its header before mapping (truncation, garbage, pickles)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            reader = {(1, 0): np.lib.format.read_array_header_1_0,
                      (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, _, dtype = reader(fh)
            offset = fh.tell()
    except FileNotFoundError:
        raise DataFormatError("array file not found", path) from None
    except OSError as err:
        raise DataFormatError(f"cannot read: {err.strerror or err}", path) from None
    except ValueError as err:
        raise DataFormatError(f"not a .npy array file ({str(err)[:80]}); re-run the preparation", path) from None
    if dtype.hasobject or dtype.kind not in "f":
        raise DataFormatError(f"holds dtype {dtype}, expected float32 arrays (re-run the preparation)", path)
    need = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < need:
        raise DataFormatError(f"truncated: {size} bytes, its header {tuple(shape)} {dtype} needs {need} "
                              "(interrupted copy or full disk?); re-run the preparation or copy it again", path)
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def check_sampled_finite(data: np.ndarray, path: Path, samples: int = 16) -> None:
    """Spot-check evenly spaced samples for NaN/inf (prepare never writes them; a damaged or foreign array can)."""
    n = len(data)
    for i in sorted({int(k) for k in np.linspace(0, n - 1, num=min(samples, n))} if n else ()):
        if not np.isfinite(data[i]).all():
            raise DataFormatError(f"sample {i} holds NaN/inf values: the array is damaged or not made by prepare",
                                  path)


def _reserve(path: Path) -> None:
    """Allocate every block of `path` now (free space checked first, for a message that says how much)."""
    size = path.stat().st_size
    free = shutil.disk_usage(path.parent).free
    if size > free:
        raise OSError(errno.ENOSPC, f"No space left on device: needs {size / 1e9:.2f} GB, {free / 1e9:.2f} GB free",
                      str(path))
    fd = os.open(path, os.O_RDWR)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
    except OSError as err:
        if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without fallocate: free space checked above
            return
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        os.close(fd)


class PreparedWriter:
    """Collects the splits of one prepared dataset in a private temp directory.

    Use as a context manager: leaving the block with an exception deletes the
    temp directory and leaves `out_dir` exactly as it was.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        report_temp_dirs(self.out_dir, log)
        self._owned = OwnedTempDir(self.out_dir, TMP_PREFIX)
        self.tmp_dir = self._owned.path
        self._files: list[str] = []

    def __enter__(self) -> "PreparedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.discard()

    def discard(self) -> None:
        self._owned.remove()

    def open_data(self, split: str, shape: tuple[int, ...]) -> np.memmap:
        """A float32 memory-mapped .npy so a split never has to fit in RAM.

        Its blocks are reserved before mapping: a full disk is an OSError here, never a SIGBUS
        on a page written later through the map."""
        name = data_file(split)
        arr = np.lib.format.open_memmap(self.tmp_dir / name, mode="w+", dtype=np.float32, shape=shape)
        self._files.append(name)
        _reserve(self.tmp_dir / name)
        return arr

    def shrink_data(self, split: str, arr: np.memmap, count: int, chunk: int = 256) -> np.memmap:
        """Keep the first `count` samples (after `--skip-bad` dropped some), copied in chunks."""
        if count == arr.shape[0]:
            return arr
        name = data_file(split)
        part = self.tmp_dir / (name + ".part")
        out = np.lib.format.open_memmap(part, mode="w+", dtype=np.float32, shape=(count, *arr.shape[1:]))
        _reserve(part)
        for start in range(0, count, chunk):
            out[start:start + chunk] = arr[start:min(start + chunk, count)]
        out.flush()
        del arr
        os.replace(part, self.tmp_dir / name)
        return np.load(self.tmp_dir / name, mmap_mode="r+")

    def write_labels(self, split: str, sample_names: list[str], labels: list[int]) -> None:
        name = label_file(split)
        path = self.tmp_dir / name
        self._files.append(name)
        try:
            with open(path, "wb") as f:
                pickle.dump((list(sample_names), [int(l) for l in labels]), f)
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(path)) from None

    def commit(self, manifest: dict) -> Path:
        """Move every file into place, manifest last; stale split files of an older run go first."""
        old_manifest = self.out_dir / MANIFEST_NAME
        old_manifest.unlink(missing_ok=True)
        for split in SPLITS:
            for name in (data_file(split), label_file(split)):
                if name not in self._files:
                    (self.out_dir / name).unlink(missing_ok=True)
        for name in self._files:
            os.replace(self.tmp_dir / name, self.out_dir / name)
        write_json_atomic(self.tmp_dir / MANIFEST_NAME, manifest)
        os.replace(self.tmp_dir / MANIFEST_NAME, old_manifest)
        self.discard()
        return self.out_dir
