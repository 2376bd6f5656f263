"""A 2-process CPU torchrun job whose rank 1 is stopped (SIGSTOP) or killed ends with one line from
train.py naming the rank, not a silent 30-minute wait nor a gloo traceback (issue 20)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from amanet_fast.procfs import PPID, stat_fields

from .conftest import REPO, tiny_args

TIMEOUT_S = 10  # runtime.dist_timeout_s of these jobs


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            fields = stat_fields(d.name)
            if fields and int(fields[PPID]) == pid:
                out.append(int(d.name))
    return out


def _rank_pid(agent: int, rank: int) -> int:
    for pid in _children(agent):
        try:
            if f"RANK={rank}".encode() in (Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")):
                return pid
        except OSError:
            pass
    raise AssertionError(f"no rank {rank} under torchrun pid {agent}")


def _job_with_rank1(synthetic_root: Path, wd: Path, sig: signal.Signals) -> tuple[subprocess.CompletedProcess, float]:
    """Start the job, send `sig` to rank 1 once epoch 1 runs; (result, seconds from the signal to rank 0's line)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           *tiny_args(synthetic_root, wd, "train.epochs=1000", f"runtime.dist_timeout_s={TIMEOUT_S}",
                      "runtime.log_interval_s=0")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(240, proc.kill)  # a job that never ends fails the test instead of hanging it
    guard.start()
    try:
        t0 = time.monotonic()
        log = wd / "log.txt"
        while not (log.exists() and "epoch 1/" in log.read_text()):
            assert proc.poll() is None and time.monotonic() - t0 < 180, proc.communicate(timeout=5)
            time.sleep(0.2)
        rank1 = _rank_pid(proc.pid, 1)
        os.kill(rank1, sig)
        t_sig = time.monotonic()
        stderr = []
        for line in proc.stderr:  # the survivor's line, timed when it arrives
            stderr.append(line)
            if line.startswith("train.py: error:"):
                break
        took = time.monotonic() - t_sig
        if sig == signal.SIGSTOP:  # torchrun would give it 30 s after its SIGTERM before SIGKILL
            os.kill(rank1, signal.SIGKILL)
        out, rest = proc.communicate(timeout=120)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, "".join(stderr) + rest), took
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _one_project_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.startswith("train.py:")]
    assert len(lines) == 1, err[-4000:]
    # torchrun's own summary (ChildFailedError) stays; nothing from gloo, DDP or a rank's traceback.
    assert "gloo" not in err.lower() and "DistBackendError" not in err and "Grad strides" not in err, err[-4000:]
    assert err.count("Traceback") == err.count("ChildFailedError:"), err[-4000:]
    return lines[0]


@pytest.mark.slow
def test_stopped_rank_ends_the_job_within_the_timeout(synthetic_root, tmp_path):
    res, took = _job_with_rank1(synthetic_root, tmp_path / "wd", signal.SIGSTOP)
    line = _one_project_line(res.stderr)
    assert res.returncode != 0
    assert "rank 1" in line and "stopped by a signal" in line and "resume" in line, line
    assert took < TIMEOUT_S + 15, took  # one timeout, plus the heartbeat's interval and a loaded core
    assert line.split("error: ", 1)[1] in (tmp_path / "wd" / "log.txt").read_text()


@pytest.mark.slow
def test_killed_rank_ends_the_job_with_one_line(synthetic_root, tmp_path):
    res, took = _job_with_rank1(synthetic_root, tmp_path / "wd", signal.SIGKILL)
    line = _one_project_line(res.stderr)
    assert res.returncode != 0
    assert "rank 1" in line and "killed or crashed" in line, line
    assert took < 15, took


def test_heartbeat_names_the_silent_rank_and_not_a_finished_one():
    """The watcher's logic on an in-memory store, without torchrun: rank 1 never beats, rank 2 beats
    and then finishes; only rank 1 is reported, within the timeout plus one interval."""
    import torch.distributed as dist

    from amanet_fast.training.distributed import Heartbeat

    store = dist.HashStore()
    lines: list[str] = []
    got = threading.Event()

    def on_stall(line: str) -> None:
        lines.append(line)
        got.set()

    t0 = time.monotonic()
    watcher = Heartbeat(store, 0, 3, timeout_s=2.0, on_stall=on_stall).start()
    Heartbeat(store, 1, 3, timeout_s=2.0)  # registered, never beats: a stopped process
    finished = Heartbeat(store, 2, 3, timeout_s=2.0).start()
    time.sleep(0.6)
    finished.stop()
    try:
        assert got.wait(10), "no stall reported"
        took = time.monotonic() - t0
    finally:
        watcher.stop()
    assert len(lines) == 1 and "rank 1 " in lines[0] and "rank 2" not in lines[0], lines
    assert "did not answer" not in lines[0] and "stopped responding for 2 s" in lines[0]
    assert 2.0 <= took < 2.0 + 2 * watcher.interval + 1, took
