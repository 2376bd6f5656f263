"""One run per work dir, and signals that end a run cleanly.

The lock is an owner file, WORK_DIR/.lock (owner_lock.py: an `flock` the kernel
releases when the holder dies, even by kill -9, and a record naming the holder
for the error message of a second run). A lock file left by a process that is
gone is taken over with a warning.

SIGTERM (what schedulers send before SIGKILL) is handled like Ctrl-C, and both
are held back while the checkpoint/results files are being written, so an
interrupted run always leaves a consistent set of files.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

from .. import owner_lock

LOCK_NAME = ".lock"


class WorkDirBusyError(RuntimeError):
    """Another live run holds the work dir."""


class Terminated(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; a KeyboardInterrupt so every existing Ctrl-C path handles it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class WorkDirLock:
    """Exclusive ownership of a work dir for the lifetime of one run (an owner file, owner_lock.py)."""

    def __init__(self, path: Path, fd: int, warnings: list[str]) -> None:
        self.path, self._fd, self.warnings = path, fd, warnings

    @classmethod
    def acquire(cls, work_dir: Path, command: str = "") -> "WorkDirLock":
        work_dir.mkdir(parents=True, exist_ok=True)
        path = work_dir / LOCK_NAME
        for _ in range(5):  # retry when the holder removed the file between our open and flock
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                ours, holder = owner_lock.take(fd)
            except BaseException:
                os.close(fd)
                raise
            if not ours:
                os.close(fd)
                raise WorkDirBusyError(
                    f"{work_dir}: work dir is in use by another run ({owner_lock.describe(holder)}); "
                    "wait for it to finish, stop it, or pass another --work-dir")
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise WorkDirBusyError(f"{path}: could not take the work dir lock (it keeps being replaced)")
        warnings = [f"took over the work dir lock of a run that ended without releasing it "
                    f"({owner_lock.describe(holder)})"] if holder else []
        owner_lock.write_record(fd, command=command)
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
