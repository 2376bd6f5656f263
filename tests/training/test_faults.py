"""The training run survives faults: kill -9 at any instant (inside checkpoint writes too),
SIGTERM, a second run into the same work dir, stale locks and temp files, changed settings on
resume, pickles that would run code."""
from __future__ import annotations

import json
import os
import pickle
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from amanet_fast.training.checkpoint import load_checkpoint

from .conftest import REPO, run_cli, tiny_args

HOOK = Path(__file__).with_name("kill_hook.py")
# Augmentations on, so the restored RNG streams matter; 3 epochs, evaluated after each.
FAULT_ARGS = ["data.random_choose=true", "data.random_move=true", "train.epochs=3"]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def _hooked(args: list[str], file: str, when: str, sig: str = "KILL", nth: int = 1) -> subprocess.CompletedProcess:
    env = dict(_env(), KILL_FILE=file, KILL_WHEN=when, KILL_SIGNAL=sig, KILL_NTH=str(nth))
    return subprocess.run([sys.executable, str(HOOK), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)


def _epoch(path: Path) -> int | None:
    return int(load_checkpoint(path)["epoch"]) if path.exists() else None


def _check_consistent(wd: Path, strict: bool = False) -> dict:
    """What a kill may leave: every file whole and never ahead of latest.pt (which is the commit point).
    `strict`: the run ended cleanly, so best.pt and results.json agree with latest.pt exactly."""
    latest = load_checkpoint(wd / "latest.pt") if (wd / "latest.pt").exists() else None
    done = latest["epoch"] if latest else 0
    best = _epoch(wd / "best.pt")
    res = json.loads((wd / "results.json").read_text()) if (wd / "results.json").exists() else None
    assert best is None or best <= done, (best, done)
    assert res is None or res["epoch"] <= done, (res["epoch"], done)
    if strict:
        assert latest is not None and best == latest["best_epoch"] and res["epoch"] == done
        assert res["best_epoch"] == latest["best_epoch"] and res["best_top1"] == latest["best_top1"]
        assert not list(wd.glob(".*.tmp")) and not (wd / ".lock").exists()
    return {"epoch": done, "best": best, "results": None if res is None else res["epoch"]}


@pytest.mark.slow
def test_kill_anywhere_then_resume_is_bitwise_exact(synthetic_root, tmp_path, capsys):
    ref, wd = tmp_path / "ref", tmp_path / "killed"
    assert run_cli(tiny_args(synthetic_root, ref, *FAULT_ARGS), capsys)[0] == 0
    args = tiny_args(synthetic_root, wd, *FAULT_ARGS)

    # 1. kill -9 between latest.pt and best.pt of epoch 1 (epoch 1 is always the best so far).
    p = _hooked(args, "best.pt", "before")
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert _check_consistent(wd) == {"epoch": 1, "best": None, "results": None}
    assert (wd / ".lock").exists()  # left by the dead process

    # 2. SIGTERM while latest.pt of epoch 2 is being written: the save finishes, then the run stops.
    p = _hooked(args, "latest.pt", "mid", sig="TERM")
    assert p.returncode == 128 + signal.SIGTERM, p.stderr[-2000:]
    assert "interrupted by SIGTERM" in p.stderr and "Traceback" not in p.stderr
    _check_consistent(wd, strict=True)
    assert _epoch(wd / "latest.pt") == 2
    log = (wd / "log.txt").read_text()
    assert "took over the work dir lock" in log and "best.pt was missing; rewritten from latest.pt" in log
    assert "results.json did not match latest.pt" in log and "stopped by SIGTERM" in log

    # 3. kill -9 with the temp file of epoch 3's latest.pt written but not moved into place.
    p = _hooked(args, "latest.pt", "mid")
    assert p.returncode == -signal.SIGKILL
    assert list(wd.glob(".latest.pt.*.tmp"))
    assert _check_consistent(wd)["epoch"] == 2

    # 4. kill -9 at random instants (bounded), then 5. run to the end.
    rng = random.Random(13)
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(2.0, 7.0))
        proc.kill()
        proc.wait(timeout=60)
        _check_consistent(wd)
    assert run_cli(args, capsys)[0] == 0
    state = _check_consistent(wd, strict=True)
    assert state["epoch"] == 3
    log = (wd / "log.txt").read_text()
    assert re.search(r"removed \d+ temp file\(s\) of an interrupted write", log)

    a, b = load_checkpoint(ref / "latest.pt"), load_checkpoint(wd / "latest.pt")
    mismatched = [k for k in a["model"] if not torch.equal(a["model"][k], b["model"][k])]
    assert not mismatched, f"weights differ after kills and resumes: {mismatched[:5]}"
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (ref, wd))
    for k in ("top1", "top5", "val_loss", "epoch", "best_epoch", "best_top1", "finished", "per_class_acc"):
        assert ra[k] == rb[k], k
    assert _epoch(ref / "best.pt") == _epoch(wd / "best.pt")


def test_second_run_into_a_locked_work_dir_is_refused(synthetic_root, tmp_path, capsys):
    from amanet_fast.training.workdir import WorkDirLock

    wd = tmp_path / "busy"
    lock = WorkDirLock.acquire(wd, "first run")
    (wd / "config.yaml").write_text("the first run's config\n")
    try:
        rc, err = run_cli(tiny_args(synthetic_root, wd), capsys)
    finally:
        lock.release()
    assert rc == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert str(wd) in line and f"pid {os.getpid()} on host {socket.gethostname()}" in line
    assert (wd / "config.yaml").read_text() == "the first run's config\n"  # nothing of the first run touched
    assert sorted(p.name for p in wd.iterdir()) == ["config.yaml"]


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    from amanet_fast.training.workdir import LOCK_NAME, WorkDirLock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    lock = WorkDirLock.acquire(wd)
    try:
        assert len(lock.warnings) == 1 and f"pid {dead.pid}" in lock.warnings[0]
        assert json.loads((wd / LOCK_NAME).read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not (wd / LOCK_NAME).exists()


def test_changed_learning_rate_on_resume_is_applied(synthetic_root, tmp_path, capsys):
    wd = tmp_path / "lr"
    args = tiny_args(synthetic_root, wd, "train.epochs=2")
    assert run_cli([*args, "train.stop_after_epoch=1"], capsys)[0] == 0
    assert load_checkpoint(wd / "latest.pt")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05 * 8 / 32)
    assert run_cli([*args, "optim.base_lr=0.2"], capsys)[0] == 0
    log = (wd / "log.txt").read_text()
    assert "optim.base_lr 0.05 -> 0.2" in log and "restored optimizer: 0.0125 -> 0.05" in log
    res = json.loads((wd / "results.json").read_text())
    assert res["lr"] == pytest.approx(0.2 * 8 / 32)  # epoch 2 trained at the new rate, and says so
    assert load_checkpoint(wd / "latest.pt")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05)


def test_failed_start_writes_nothing(synthetic_root, tmp_path, capsys):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.yaml").write_text("kept\n")
    rc, err = run_cli(tiny_args(synthetic_root, wd, "model.args.channels=[7]"), capsys)
    assert rc == 2 and "model.args" in err
    assert sorted(p.name for p in wd.iterdir()) == ["config.yaml"] and (wd / "config.yaml").read_text() == "kept\n"


def test_crafted_pickles_run_nothing(tmp_path):
    """The corpus refuses crafted files through every CLI; here the control that the payload is live."""
    from amanet_fast import safe_pickle

    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    data = pickle.dumps({"scores": [Evil()]})
    with pytest.raises(safe_pickle.UnsafePickleError, match="posix.system|os.system"):
        safe_pickle.loads(data)
    assert not marker.exists()
    pickle.loads(data)  # what plain pickle would have done
    assert marker.exists()
    import numpy as np

    plain = {"a": np.arange(3, dtype=np.float32), "b": (1, 2.5, "x", b"y", None, True), "c": {1, 2},
             "d": np.float64(2.0), "e": np.zeros((2, 2), dtype=[("f", "<i4")])}
    for proto in (2, 4, 5):
        back = safe_pickle.loads(pickle.dumps(plain, protocol=proto))
        assert back["b"] == plain["b"] and back["c"] == plain["c"] and back["d"] == plain["d"]
        assert np.array_equal(back["a"], plain["a"]) and back["e"].dtype == plain["e"].dtype


def test_disk_full_during_checkpoint_write_leaves_no_temp(synthetic_root, tmp_path, capsys, monkeypatch):
    import errno

    from amanet_fast.training import checkpoint

    wd = tmp_path / "full"
    real = checkpoint.write_bytes_atomic

    def full(path, data):
        def writer(fh):
            fh.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        from amanet_fast.atomic import write_atomic

        return write_atomic(path, writer)

    monkeypatch.setattr(checkpoint, "write_bytes_atomic", full)
    rc, err = run_cli(tiny_args(synthetic_root, wd, "train.epochs=1"), capsys)
    assert rc == 2 and "Traceback" not in err
    assert f"{wd / 'latest.pt'}: No space left on device" in err.strip().splitlines()[-1]
    assert not list(wd.glob(".*.tmp")) and not (wd / "latest.pt").exists() and not (wd / ".lock").exists()
    del real
