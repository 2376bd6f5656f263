"""Atomic file writes shared by data preparation and training: a crash or
preemption mid-write never leaves a half file under the final name (temp file
in the same folder, fsync, os.replace)."""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import IO, Any, Callable


def write_atomic(path: str | Path, writer: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; datasets and results are meant to be shared
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError):  # full disk, target is a directory: name the file meant, not the temp
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise
    return path


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    return write_atomic(path, lambda fh: fh.write(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_pickle_atomic(path: str | Path, obj: Any) -> Path:
    return write_atomic(path, lambda fh: pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL))


def check_output_path(out: str | Path, flag: str, *, inputs: Any = (), raw_dirs: Any = (),
                      directory: bool = False) -> Path:
    """Refuse an output path before any long work starts; raises DataFormatError naming `flag`.

    Refused: the same file as an input (symlinks resolved), a path equal to or
    inside a raw-data folder, an existing directory where a file is written (or
    the reverse), a location that cannot be written.
    """
    from .data.errors import DataFormatError

    out = Path(out)
    real = out.resolve()
    for src in inputs:
        src = Path(src)
        if src.exists() and (real == src.resolve() or (out.exists() and os.path.samefile(out, src))):
            raise DataFormatError(f"{flag}: is the input {src}; writing it would destroy that input, "
                                  "choose another name", out)
    for raw in raw_dirs:
        raw_real = Path(raw).resolve()
        if real == raw_real or raw_real in real.parents:
            raise DataFormatError(f"{flag}: is inside the raw data folder {raw}; prepared data is never written "
                                  "there, choose a folder outside it", out)
    if directory and out.exists() and not out.is_dir():
        raise DataFormatError(f"{flag}: is an existing file, expected a folder", out)
    if not directory and out.is_dir():
        raise DataFormatError(f"{flag}: is an existing directory, expected a file name", out)
    parent = out if directory else out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataFormatError(f"{flag}: {parent} is a file, so nothing can be created under it", out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataFormatError(f"{flag}: {parent} is not writable", out)
    return out
