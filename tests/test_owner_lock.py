"""Owner files (amanet_fast/owner_lock.py) and the /proc parser under them (amanet_fast/procfs.py):
the one rule the work dir lock and a preparation's temp folders share."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from amanet_fast import owner_lock
from amanet_fast.procfs import STATE, STIME, UTIME, pid_alive, process_start, process_state, stat_fields

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs Linux /proc")


@pytest.fixture
def sleeper():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def _open(path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def test_stat_fields_reads_past_a_command_name_with_spaces_and_parentheses(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "stat").write_text("42 (a) b (c) S 1 1 1 0 -1 0 0 0 0 0 7 5 0 0 20 0 1 0 99 1 1\n")
    fields = stat_fields(42, tmp_path)
    assert fields[STATE] == "S" and (fields[UTIME], fields[STIME]) == ("7", "5") and fields[19] == "99"
    assert stat_fields(43, tmp_path) is None  # gone
    (tmp_path / "44").mkdir()
    (tmp_path / "44" / "stat").write_text("44 (cut) R 1\n")  # truncated: not a stat line
    assert stat_fields(44, tmp_path) is None


def test_state_and_start_of_real_processes(sleeper):
    assert process_state(os.getpid()) == "R"
    before = time.time()
    os.kill(sleeper.pid, signal.SIGSTOP)
    try:
        for _ in range(100):
            if process_state(sleeper.pid) == "T":
                break
            time.sleep(0.01)
        assert process_state(sleeper.pid) == "T"
    finally:
        os.kill(sleeper.pid, signal.SIGCONT)
    start = process_start(sleeper.pid)
    assert before - 60 < start <= before + 1  # started by the fixture, just now (boot time: whole seconds)
    assert process_start(os.getpid()) <= start + 1
    sleeper.kill()
    sleeper.wait()
    assert process_state(sleeper.pid) is None and process_start(sleeper.pid) == float("-inf")
    assert not pid_alive(sleeper.pid)


def test_a_held_file_is_busy_and_names_its_holder(tmp_path):
    first = _open(tmp_path / "own")
    second = _open(tmp_path / "own")  # flock is per open file: a second open conflicts, even here
    try:
        assert owner_lock.take(first) == (True, {})
        owner_lock.write_record(first, command="train")
        ours, holder = owner_lock.take(second)
        assert not ours and holder["pid"] == os.getpid() and holder["command"] == "train"
        assert owner_lock.describe(holder).startswith(f"pid {os.getpid()} on host {socket.gethostname()}, started ")
    finally:
        os.close(first)
    ours, holder = owner_lock.take(second)  # the holder closed (died): the next one takes it, and learns who it was
    os.close(second)
    assert ours and holder["pid"] == os.getpid()
    assert owner_lock.describe({}) == "holder unknown"


@pytest.mark.parametrize("written", ["after the holder started", "before the pid's process started", "no time"])
def test_without_flock_a_live_holder_on_this_host_still_holds(tmp_path, sleeper, written):
    """flock granted (the filesystem does not enforce it): the record decides."""
    started = {"after the holder started": time.time() + 5, "before the pid's process started": 0.0,
               "no time": None}[written]
    rec = {"pid": sleeper.pid, "host": socket.gethostname(), **({} if started is None else {"started": started})}
    (tmp_path / "own").write_text(json.dumps(rec))
    fd = _open(tmp_path / "own")
    try:
        ours, holder = owner_lock.take(fd)
    finally:
        os.close(fd)
    assert holder == rec
    # a pid reused by a process that started after the record was written is not the holder
    assert ours is (written == "before the pid's process started")


def test_records_of_other_hosts_and_dead_processes_are_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for rec in ({"pid": dead.pid, "host": socket.gethostname(), "started": time.time()},
                {"pid": os.getppid(), "host": socket.gethostname() + "-elsewhere", "started": time.time()},
                {"pid": "1", "host": socket.gethostname()}, ["not", "a", "record"]):
        (tmp_path / "own").write_text(json.dumps(rec))
        fd = _open(tmp_path / "own")
        try:
            assert owner_lock.take(fd)[0], rec
        finally:
            os.close(fd)


def test_work_dir_lock_and_temp_folders_share_the_rule(tmp_path, sleeper):
    """The pid-reuse rule reaches both users: a record of a live process written before it started
    is taken over by the work dir lock and swept from a temp folder."""
    from amanet_fast.data.io import OWNER_FILE, sweep_temp_dirs
    from amanet_fast.training.workdir import LOCK_NAME, WorkDirBusyError, WorkDirLock

    stale = {"pid": sleeper.pid, "host": socket.gethostname(), "started": 0.0}
    live = {**stale, "started": time.time() + 5}
    for rec, taken in ((stale, True), (live, False)):
        wd = tmp_path / f"wd-{taken}"
        wd.mkdir()
        (wd / LOCK_NAME).write_text(json.dumps(rec))
        if taken:
            lock = WorkDirLock.acquire(wd)
            assert f"pid {sleeper.pid}" in lock.warnings[0]
            lock.release()
        else:
            with pytest.raises(WorkDirBusyError, match=f"pid {sleeper.pid} on host"):
                WorkDirLock.acquire(wd)
        tmp = tmp_path / f"out-{taken}" / ".tmp-x"
        tmp.mkdir(parents=True)
        (tmp / OWNER_FILE).write_text(json.dumps(rec))
        removed, left = sweep_temp_dirs(tmp.parent)
        assert (not tmp.exists()) is taken and len(removed + left) == 1
        assert f"(pid {sleeper.pid} on host" in (removed + left)[0]
