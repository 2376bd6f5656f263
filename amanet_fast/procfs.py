"""What Linux says about a local process (/proc): alive, state letter, start time, CPU times.

One parser for /proc/PID/stat; the owner locks (owner_lock.py), the distributed heartbeat and
the thread governor read it. Everywhere else these answer "unknown" (None, -inf).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["pid_alive", "stat_fields", "process_state", "process_start", "STATE", "PPID", "UTIME", "STIME"]

# Indexes into stat_fields(): proc(5) numbers the fields from 1, and the list starts at field 3.
STATE, PPID, UTIME, STIME, STARTTIME = 0, 1, 11, 12, 19


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stat_fields(pid: int | str, proc: Path = Path("/proc")) -> list[str] | None:
    """/proc/PID/stat split after the command name (which may hold spaces and parentheses);
    None when the process is gone or there is no /proc."""
    try:
        text = (Path(proc) / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = text.rsplit(b")", 1)[-1].split()
    return [f.decode() for f in fields] if len(fields) > STARTTIME else None


def process_state(pid: int) -> str | None:
    """State letter (R, S, T = stopped, Z = dead but not reaped, ...); None when gone."""
    fields = stat_fields(pid)
    return None if fields is None else fields[STATE]


def process_start(pid: int) -> float:
    """When a process started, in epoch seconds (whole seconds: the boot time is); -inf when unknown."""
    fields = stat_fields(pid)
    if fields is None:
        return float("-inf")
    try:
        with open("/proc/stat", "rb") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith(b"btime "))
        return boot + int(fields[STARTTIME]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return float("-inf")

