"""One run per work dir, and signals that end a run cleanly.

The lock is an `flock` on WORK_DIR/.lock (released by the kernel when the
holder dies, even by kill -9) whose text names the holder (pid, host, start
time) for the error message of a second run. A lock file left by a process
that is gone is taken over with a warning.

SIGTERM (what schedulers send before SIGKILL) is handled like Ctrl-C, and both
are held back while the checkpoint/results files are being written, so an
interrupted run always leaves a consistent set of files.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from ..data.io import read_owner_record

LOCK_NAME = ".lock"


class WorkDirBusyError(RuntimeError):
    """Another live run holds the work dir."""


class Terminated(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; a KeyboardInterrupt so every existing Ctrl-C path handles it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown"
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {when}"


class WorkDirLock:
    """Exclusive ownership of a work dir for the lifetime of one run."""

    def __init__(self, path: Path, fd: int, warnings: list[str]) -> None:
        self.path, self._fd, self.warnings = path, fd, warnings

    @classmethod
    def acquire(cls, work_dir: Path, command: str = "") -> "WorkDirLock":
        work_dir.mkdir(parents=True, exist_ok=True)
        path = work_dir / LOCK_NAME
        for _ in range(5):  # retry when the holder removed the file between our open and flock
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                holder = read_owner_record(fd)
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise WorkDirBusyError(
                    f"{work_dir}: work dir is in use by another run ({_describe(holder)}); "
                    "wait for it to finish, stop it, or pass another --work-dir") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise WorkDirBusyError(f"{path}: could not take the work dir lock (it keeps being replaced)")
        holder = read_owner_record(fd)
        warnings: list[str] = []
        if holder:
            pid, host = holder.get("pid"), holder.get("host")
            if host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
                # flock granted although the recorded holder lives: locks are not enforced on this
                # filesystem (some network mounts), so trust the record.
                os.close(fd)
                raise WorkDirBusyError(
                    f"{work_dir}: work dir is in use by another run ({_describe(holder)}); "
                    f"if that process is not a training run, delete {path}")
            warnings.append(f"took over the work dir lock of a run that ended without releasing it "
                            f"({_describe(holder)})")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": command}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
        return cls(path, fd, warnings)

    def release(self) -> None:
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # before unlocking, so nobody sees our record as a stale holder
        os.close(self._fd)
        self._fd = -1


def remove_stale_temp_files(work_dir: Path) -> list[str]:
    """Delete `.NAME.XXXX.tmp` files (amanet_fast.atomic) left by a run that was killed mid-write.

    Only called while holding the work dir lock, so no live writer owns them."""
    removed = []
    for p in sorted(work_dir.glob(".*.tmp")):
        if p.is_file() and not p.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p.name)
    return removed


class SignalGuard:
    """SIGINT and SIGTERM raise `Terminated`, except inside `critical()`, where they wait for its end."""

    def __init__(self) -> None:
        self._depth = 0
        self._pending: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "SignalGuard":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self._depth:
            self._pending = signum
            return
        raise Terminated(signum)

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if not self._depth and self._pending is not None:
            signum, self._pending = self._pending, None
            raise Terminated(signum)
