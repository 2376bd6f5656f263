"""Owner files: one process at a time holds a path, and a second one learns who.

An owner file is `flock`ed for its holder's lifetime (the kernel drops the lock when the holder
dies, even by kill -9) and holds a JSON record (pid, host, start time) that names the holder in
messages. Where flock is not enforced (some network mounts) the record decides: a process on
this host that is alive and started before the record was written still holds the file.
The work dir lock (training/workdir.py) and a preparation's temp folders (data/io.py) are
owner files.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time

from .procfs import pid_alive, process_start

__all__ = ["take", "write_record", "read_record", "describe"]


def read_record(fd: int) -> dict:
    """The owner record in an open owner file; {} when empty or unreadable."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        rec = json.loads(os.read(fd, 4096).decode() or "{}")
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


def write_record(fd: int, **extra: object) -> None:
    """Name this process as the holder (call after `take` returned True)."""
    rec = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), **extra}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(rec) + "\n").encode("utf-8"))


def describe(rec: dict) -> str:
    if not rec:
        return "holder unknown"
    started = rec.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return f"pid {rec.get('pid', '?')} on host {rec.get('host', '?')}, started {when}"


def _record_lives(rec: dict) -> bool:
    pid, started = rec.get("pid"), rec.get("started")
    if rec.get("host") != socket.gethostname() or not isinstance(pid, int) or pid == os.getpid():
        return False
    if not pid_alive(pid):
        return False
    # A pid reused by a process started after the record is not the holder (+2 s: btime is whole seconds).
    return not isinstance(started, (int, float)) or process_start(pid) < started + 2


def take(fd: int) -> tuple[bool, dict]:
    """Try to hold the owner file open at `fd` without waiting.

    (True, the record a finished holder left, or {}) when this process holds it now;
    (False, the holder's record) when a live process does. OSError when the filesystem
    cannot lock at all (not "busy")."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False, read_record(fd)
        raise
    rec = read_record(fd)
    if _record_lives(rec):  # granted while the holder lives: flock is not enforced here
        return False, rec
    return True, rec
