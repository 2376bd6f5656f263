"""DDP plumbing: one process per device under torchrun (NCCL on CUDA, gloo on
CPU), a plain single process otherwise. Helpers are no-ops when not distributed
so the loop has one code path.

A job whose rank stops answering ends with one line naming the rank (Heartbeat,
docs/design.md "Distributed failures"): collectives time out after
runtime.dist_timeout_s, and a watcher thread ends a survivor blocked longer.
"""
from __future__ import annotations

import datetime
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from ..procfs import process_state


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None when not distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(requested)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"runtime.device={requested!r} but CUDA is not available on this machine")
        if dev.index is None:
            dev = torch.device(f"cuda:{local_rank}")
    return dev


def init_distributed(requested_device: str = "auto", timeout_s: float = 300.0) -> DistContext:
    """Join the torchrun process group if the environment says so; collectives give up after `timeout_s`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _pick_device(requested_device, local_rank)
    if world <= 1:
        return DistContext(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistContext(rank, world, local_rank, device, backend)


def cleanup(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place on a copy); the tensor must live on ctx.device."""
    if ctx.distributed:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's object, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shard(n: int, ctx: DistContext) -> list[int]:
    """Strided, unpadded shard of range(n): every sample evaluated exactly once across ranks."""
    return list(range(ctx.rank, n, ctx.world_size))


# ----------------------------------------------------------------------------- failures of other ranks

EXIT_DIST_FAILED = 1
_FAILURE_MARKERS = ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset", "Broken pipe", "Timed out",
                    "timed out", "ProcessGroup")


class DistributedFailure(RuntimeError):
    """Another rank of the job stopped, crashed or was killed; the message is the one line to print."""


def is_peer_failure(err: BaseException) -> bool:
    """A collective failed because of another process (not a bug of this one)."""
    return isinstance(err, dist.DistError) or (
        isinstance(err, RuntimeError) and any(m in str(err) for m in _FAILURE_MARKERS))


class Heartbeat:
    """Every `interval` s each rank counts up its key in a store shared by the job, and a watcher
    thread notes when every other rank's count last moved. A rank whose count stood still for
    `timeout_s` is stalled (SIGSTOP, a frozen machine) or gone; `on_stall` then ends this process,
    which may be blocked inside a collective no exception can reach."""

    def __init__(self, store: Any, rank: int, world_size: int, timeout_s: float,
                 on_stall: Callable[[str], None] | None = None) -> None:
        self.store, self.rank, self.world_size, self.timeout_s = store, rank, world_size, float(timeout_s)
        self.interval = min(10.0, max(0.5, self.timeout_s / 10))
        self.on_stall = on_stall or _end_process
        self._counts = [-1] * world_size
        self._moved = [time.monotonic()] * world_size
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amanet-heartbeat", daemon=True)
        self.store.set(f"host{rank}", f"{socket.gethostname()} {os.getpid()}")

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def stop(self) -> None:
        """This rank is done: the others stop watching it (ranks leave a finished job at different times)."""
        self._stop.set()
        try:
            self.store.set(f"done{self.rank}", "1")
        except Exception:  # the store is gone with the job: nobody is left to watch
            pass
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2 * self.interval + 1)

    def _beat_and_look(self) -> None:
        self.store.add(f"beat{self.rank}", 1)
        now = time.monotonic()
        counts = [int(self.store.add(f"beat{r}", 0)) for r in range(self.world_size)]
        done = {r for r, c in enumerate(counts) if c == self._counts[r] and self.store.check([f"done{r}"])}
        with self._lock:
            for r, c in enumerate(counts):
                if c != self._counts[r] or r in done:  # a rank that finished is not stalled
                    self._counts[r], self._moved[r] = c, now

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat_and_look()
            except Exception as err:  # the store's host is gone: that ends the job as well
                if self._stop.is_set():
                    return
                first = (str(err).splitlines() or [type(err).__name__])[0][:120]
                self.on_stall(f"distributed: rank {self.rank} lost the job's store ({first}): its host (torchrun's "
                              "agent, or rank 0) ended; the job ends here")
                return
            silent = self.silent_ranks(self.timeout_s)
            if silent:
                self.on_stall(self.describe(silent, f"stopped responding for {int(self.timeout_s)} s "
                                                    "(runtime.dist_timeout_s)"))
                return

    def silent_ranks(self, min_age_s: float) -> list[int]:
        now = time.monotonic()
        with self._lock:
            return [r for r in range(self.world_size) if r != self.rank and now - self._moved[r] >= min_age_s]

    def _local_state(self, rank: int) -> str:
        try:
            host, pid = self.store.get(f"host{rank}").decode().split()
        except Exception:
            return ""
        if host != socket.gethostname():
            return f" on host {host}"
        state = process_state(int(pid))
        return {None: f" (pid {pid}, killed or crashed)", "Z": f" (pid {pid}, killed or crashed)",
                "T": f" (pid {pid}, stopped by a signal: SIGSTOP or Ctrl-Z)"}.get(state, f" (pid {pid})")

    def dead_local_ranks(self) -> list[int]:
        """Ranks on this host whose process is gone or a zombie."""
        out = []
        for r in range(self.world_size):
            if r == self.rank:
                continue
            try:
                host, pid = self.store.get(f"host{r}").decode().split()
            except Exception:
                continue
            if host == socket.gethostname() and process_state(int(pid)) in (None, "Z"):
                out.append(r)
        return out

    def describe(self, ranks: list[int], what: str) -> str:
        names = ", ".join(f"rank {r}{self._local_state(r)}" for r in ranks)
        return (f"distributed: {names} {what}; the job ends here (seen by rank {self.rank}); run the same command "
                "again (training resumes from WORK_DIR/latest.pt)")

    def explain(self, err: BaseException) -> str:
        """The one line for a collective that failed in this rank: which rank went away, if it can be told."""
        deadline = time.monotonic() + 2 * self.interval + 1
        while True:  # a killed local rank shows at once; a remote one by its silent heartbeat
            gone = self.dead_local_ranks() or self.silent_ranks(2 * self.interval)
            if gone or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        timed_out = "timed out" in str(err).lower()
        if gone:
            return self.describe(gone, f"did not answer for {int(self.timeout_s)} s (runtime.dist_timeout_s)"
                                 if timed_out else "ended or stopped answering")
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        return self.describe([], f"a collective failed ({first})").replace("distributed:  ", "distributed: ")


def record_in_log_file(line: str) -> None:
    """An error line into log.txt (rank 0) only: the console gets it once, from train.py, on stderr."""
    import logging

    from .logging import LOGGER_NAME

    for h in logging.getLogger(LOGGER_NAME).handlers:
        if isinstance(h, logging.FileHandler):
            h.handle(logging.makeLogRecord({"msg": line, "levelno": logging.ERROR, "levelname": "ERROR",
                                            "name": LOGGER_NAME}))
            h.flush()


def _end_process(line: str) -> None:
    """Print the line and end now: the main thread may be stuck in a collective that never returns."""
    print(f"train.py: error: {line}", file=sys.stderr, flush=True)
    record_in_log_file(line)
    os._exit(EXIT_DIST_FAILED)


def start_heartbeat(ctx: DistContext, timeout_s: float) -> Heartbeat | None:
    """The job's heartbeat on its own connection to torchrun's store (None when not distributed)."""
    if not ctx.distributed:
        return None
    host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500"))
    client = dist.TCPStore(host, port, is_master=False, timeout=datetime.timedelta(seconds=timeout_s),
                           wait_for_workers=False)
    run = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    store = dist.PrefixStore(f"amanet_heartbeat/{run}/", client)
    return Heartbeat(store, ctx.rank, ctx.world_size, timeout_s).start()
