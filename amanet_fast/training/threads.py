"""Intra-op thread count that survives a shared CPU (issue 22; design notes in docs/design.md §6).

OpenMP threads spin-wait at every barrier, so a process with one thread per core collapses
(~5x slower) as soon as another process takes one of those cores. The default therefore
counts the cores that other processes keep busy (from /proc/stat, minus this process and its
children) and uses the rest; during training `ThreadGovernor` re-checks each window of
steps and moves the count down on a throughput collapse and back up once the load is gone.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..data.engine import usable_cores
from ..procfs import STIME, UTIME, stat_fields

__all__ = ["CpuSnapshot", "LoadProbe", "usable_cores", "choose_threads", "measure_other_load", "ThreadPolicy",
           "ThreadGovernor"]

# /proc/stat columns after the cpu name: user nice system idle iowait irq softirq steal (guest* are in user).
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
_IDLE_COLUMNS = (3, 4)
STARTUP_WINDOW_S = 0.3  # 30 jiffies per core at HZ=100: ~0.03 core resolution, short next to start-up
WINDOW_S = 5.0  # training seconds per re-check: several steps even of full-size models, ~2 per demo epoch
SPARE = 0.25  # take a core only if other processes leave at least 0.75 of it free (floor(free + SPARE))


@dataclass(frozen=True)
class CpuSnapshot:
    busy: int  # jiffies the usable cores spent busy, all processes
    total: int  # jiffies the usable cores existed (busy + idle)
    own: int  # jiffies this process and its live children ran


class LoadProbe:
    """Reads cumulative CPU times; the paths are parameters so that tests can feed a fake /proc."""

    def __init__(self, cores: list[int] | None = None, proc: Path = Path("/proc"), pid: str = "self") -> None:
        self.cores = usable_cores() if cores is None else list(cores)
        self.proc, self.pid = Path(proc), pid

    def _own(self) -> int:
        pids = [self.pid]
        # DataLoader workers are children: their CPU is this run's, not competing load.
        for children in (self.proc / self.pid / "task").glob("*/children"):
            try:
                pids += children.read_text().split()
            except OSError:  # the thread ended between glob and read
                pass
        own = 0
        for pid in pids:
            fields = stat_fields(pid, self.proc)
            if fields is not None:  # None: a child that already exited
                own += int(fields[UTIME]) + int(fields[STIME])
        return own

    def snapshot(self) -> CpuSnapshot | None:
        """Cumulative times now; None where /proc/stat does not exist (not Linux)."""
        try:
            lines = (self.proc / "stat").read_text().splitlines()
        except OSError:
            return None
        wanted = {f"cpu{c}" for c in self.cores}
        busy = total = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if name in wanted:
                cols = [int(v) for v in rest.split()]
                b = sum(cols[i] for i in _BUSY_COLUMNS if i < len(cols))
                busy += b
                total += b + sum(cols[i] for i in _IDLE_COLUMNS if i < len(cols))
        return CpuSnapshot(busy, total, self._own())

    def others(self, before: CpuSnapshot, after: CpuSnapshot) -> float:
        """Cores kept busy by other processes between two snapshots (0 .. len(cores))."""
        per_core = (after.total - before.total) / max(1, len(self.cores))
        if per_core <= 0:
            return 0.0
        other = (after.busy - before.busy) - (after.own - before.own)
        return min(float(len(self.cores)), max(0.0, other / per_core))


def choose_threads(usable: int, others: float) -> int:
    """Threads for the cores other processes leave free, at least 1."""
    return max(1, min(usable, math.floor(usable - others + SPARE)))


def measure_other_load(probe: LoadProbe, window_s: float = STARTUP_WINDOW_S,
                       sleep: Callable[[float], None] = time.sleep) -> float | None:
    """Cores busy with other processes over `window_s`; None where the CPU times cannot be read."""
    before = probe.snapshot()
    if before is None:
        return None
    sleep(window_s)
    after = probe.snapshot()
    return None if after is None else probe.others(before, after)


@dataclass
class ThreadPolicy:
    """When to change the thread count, fed one training window at a time (no clock, no I/O).

    Down: at once when the window's throughput fell below `collapse` x the best window at this
    thread count and fewer threads fit the load, or after `confirm` windows in a row whose load
    asks for fewer (load that was there before the first fast window). Up: after `confirm`
    windows in a row whose load asks for more; the first window at the higher count must reach
    `keep_up` x the last one below it, else the count goes back and the next try up waits
    twice as long. No change within `min_interval_s` of the last one.
    """

    usable: int
    threads: int
    collapse: float = 0.6
    keep_up: float = 0.9
    confirm: int = 2
    min_interval_s: float = 20.0
    backoff_s: float = 60.0
    best: dict[int, float] = field(default_factory=dict)
    _down: int = 0
    _up: int = 0
    _last_change: float = -math.inf
    _up_after: float = -math.inf
    _trial: tuple[int, float] | None = None  # (count before a step up, its last rate)

    def observe(self, now: float, rate: float, others: float) -> tuple[int, str] | None:
        """One finished window: samples/s and other processes' busy cores. Returns (new count,
        why) when the count should change, else None."""
        n, want = self.threads, choose_threads(self.usable, others)
        best = self.best.get(n)
        collapsed = best is not None and rate < self.collapse * best
        self.best[n] = max(best or 0.0, rate)
        self._down = self._down + 1 if want < n else 0
        self._up = self._up + 1 if want > n else 0
        load = f"{self.usable} usable core{'s' if self.usable != 1 else ''}, {others:.1f} busy with other processes"
        trial, self._trial = self._trial, None
        if trial is not None and rate < self.keep_up * trial[1]:
            self.backoff_s *= 2
            self._up_after = now + self.backoff_s
            why = (f"{rate:.1f} samples/s at {n} threads < {self.keep_up} x {trial[1]:.1f} at {trial[0]}; "
                   f"{load}; next try up in >= {self.backoff_s:.0f} s")
            return self._change(now, trial[0], why)
        if now - self._last_change < self.min_interval_s:
            return None
        if want < n and (collapsed or self._down >= self.confirm):
            why = (f"throughput {rate:.1f} samples/s < {self.collapse} x best {best:.1f} at {n} threads; {load}"
                   if collapsed else f"{load} for {self._down} windows")
            return self._change(now, want, why)
        if want > n and self._up >= self.confirm and now >= self._up_after:
            self._trial = (n, rate)
            return self._change(now, want, f"{load} for {self._up} windows (now {rate:.1f} samples/s)")
        return None

    def _change(self, now: float, threads: int, why: str) -> tuple[int, str]:
        self.threads, self._last_change, self._down, self._up = threads, now, 0, 0
        return threads, why


class ThreadGovernor:
    """Feeds ThreadPolicy from the training loop: a sample counter per step, and every
    `window_s` of training one /proc read and, on a decision, torch.set_num_threads."""

    def __init__(self, policy: ThreadPolicy, log: logging.Logger, probe: LoadProbe | None = None,
                 window_s: float | None = None, clock: Callable[[], float] = time.monotonic,
                 set_threads: Callable[[int], None] | None = None) -> None:
        import torch

        self.policy, self.log, self.clock = policy, log, clock
        self.window_s = WINDOW_S if window_s is None else float(window_s)
        self.probe = probe or LoadProbe()
        self.set_threads = set_threads or torch.set_num_threads
        self._t0: float | None = None
        self._samples = 0
        self._snap: CpuSnapshot | None = None
        self._paused: float | None = None

    def start(self) -> None:
        """Before an epoch's first step: opens the first window, or resumes the open one (epochs
        shorter than a window still add up to windows)."""
        now = self.clock()
        if self._t0 is None:
            self._t0, self._samples, self._snap = now, 0, self.probe.snapshot()
        elif self._paused is not None:
            self._t0 += now - self._paused  # evaluation and checkpointing stay out of the rate
        self._paused = None

    def pause(self) -> None:
        """After an epoch's last step."""
        self._paused = self.clock()

    def step(self, samples: int) -> None:
        if self._t0 is None or self._paused is not None:
            return
        self._samples += samples
        now = self.clock()
        if now - self._t0 < self.window_s:
            return
        snap = self.probe.snapshot()
        rate = self._samples / (now - self._t0)
        others = self.probe.others(self._snap, snap) if snap is not None and self._snap is not None else 0.0
        self._t0, self._samples, self._snap = now, 0, snap
        old = self.policy.threads
        decision = self.policy.observe(now, rate, others)
        if decision is not None:
            self.set_threads(decision[0])
            self.log.info("intra-op threads %d -> %d: %s", old, decision[0], decision[1])
