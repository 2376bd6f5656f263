"""What a killed prepare leaves is cleaned up by the next prepare or check, and prepare's worker
pool leaves no process behind, after success or an error (issue 20)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amanet_fast.procfs import PPID, STATE, stat_fields

REPO = Path(__file__).resolve().parents[2]

_OWN_TEMP = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from amanet_fast.data.io import OwnedTempDir
    d = OwnedTempDir(Path(sys.argv[1]), sys.argv[2])
    print(d.path, flush=True)
    if sys.argv[3] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)
""")


def _temp_owner(parent: Path, prefix: str, die: bool) -> tuple[Path, subprocess.Popen]:
    """A process that makes an owned temp folder in `parent`, then is killed (die) or keeps running."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, "-c", _OWN_TEMP, str(parent), prefix, "die" if die else "live"],
                         env=env, stdout=subprocess.PIPE, text=True)
    path = Path(p.stdout.readline().strip())
    if die:
        assert p.wait(timeout=60) == -signal.SIGKILL
    return path, p


def test_killed_prepares_temp_folders_are_removed_by_check_and_prepare(tmp_path, caplog):
    from amanet_fast.data.check import check_prepared
    from amanet_fast.data.prepare import main as prepare_main

    out, raw = tmp_path / "out", tmp_path / "raw"
    args = ["synthetic", "--out", str(out), "--raw", str(raw), "--num-train", "12", "--num-val", "6"]
    assert prepare_main(args) == 0
    dead, _ = _temp_owner(out, ".tmp-", die=True)
    parsed, _ = _temp_owner(tmp_path, ".parsed-", die=True)  # NTU's parse-once folder, next to the benchmarks
    live, runner = _temp_owner(out, ".tmp-", die=False)
    legacy = out / ".tmp-older-version"
    legacy.mkdir()
    try:
        report = check_prepared(out)
        text = "\n".join(report.warnings)
        assert f"{dead}: removed the temp folder of an interrupted preparation (pid" in text, text
        assert f"{parsed}: removed the temp folder" in text, text
        assert f"{live}: temp folder of a running preparation (pid {runner.pid}" in text, text
        assert f"{legacy}: temp folder without an owner record" in text, text
        assert not dead.exists() and not parsed.exists() and live.is_dir() and legacy.is_dir()

        dead2, _ = _temp_owner(out, ".tmp-", die=True)
        caplog.clear()
        assert prepare_main(args) == 0
        assert f"{dead2}: removed the temp folder of an interrupted preparation" in caplog.text
        assert not dead2.exists() and live.is_dir()
        assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted([live.name, legacy.name])
    finally:
        runner.kill()
        runner.wait()
    report = check_prepared(out)  # its owner gone, the folder goes too
    assert any(f"{live}: removed" in w for w in report.warnings) and not live.exists()


def _children() -> dict[int, str]:
    """Child processes of this one and their state letter (Z: exited, not reaped)."""
    me, out = os.getpid(), {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            fields = stat_fields(d.name)
            try:
                cmd = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if fields and int(fields[PPID]) == me and b"resource_tracker" not in cmd:  # multiprocessing's one helper
                out[int(d.name)] = fields[STATE]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("broken", [False, True], ids=["ok", "error"])
def test_prepare_workers_leave_no_process(tmp_path, monkeypatch, broken):
    from amanet_fast.data import engine
    from amanet_fast.data.prepare import main as prepare_main

    monkeypatch.setattr(engine, "cpu_cores", lambda: 2)  # a pool even on a one-core CI box
    src = tmp_path / "src"
    assert prepare_main(["synthetic", "--out", str(tmp_path / "syn"), "--raw", str(src),
                         "--num-train", "40", "--num-val", "10"]) == 0
    if broken:
        victim = sorted((src / "kinetics_train").glob("*.json"))[-1]  # late: the pool is busy when it fails
        victim.write_text("{not json")
    before = _children()
    spawned = []
    real_pool = engine.multiprocessing.get_context("spawn").Pool

    class Recording(type(engine.multiprocessing.get_context("spawn"))):
        def Pool(self, *a, **k):
            pool = real_pool(*a, **k)
            spawned.extend(p.pid for p in pool._pool)
            return pool

    monkeypatch.setattr(engine.multiprocessing, "get_context", lambda method: Recording())
    rc = prepare_main(["kinetics", "--raw", str(src), "--out", str(tmp_path / "out"), "--workers", "2",
                       "--num-classes", "6"])
    assert rc == (2 if broken else 0)
    assert len(spawned) == 2  # the pool did run
    assert _children() == before, (before, _children())


_PREPARE_2_WORKERS = textwrap.dedent("""
    import sys
    if __name__ == "__main__":
        from amanet_fast.data import engine
        engine.cpu_cores = lambda: 2  # a pool even on a one-core CI box
        from amanet_fast.data.prepare import main
        sys.exit(main(sys.argv[1:]))
""")


def _pids_of_children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            fields = stat_fields(d.name)
            try:
                if fields and int(fields[PPID]) == pid and b"spawn_main" in (d / "cmdline").read_bytes():
                    out.append(int(d.name))
            except OSError:
                pass
    return out


@pytest.mark.slow
def test_sigterm_during_prepare_ends_workers_and_removes_the_temp_folder(tmp_path):
    import time

    from amanet_fast.data.prepare import main as prepare_main

    src, out = tmp_path / "src", tmp_path / "out"
    assert prepare_main(["synthetic", "--out", str(tmp_path / "syn"), "--raw", str(src),
                         "--num-train", "600", "--num-val", "10"]) == 0
    script = tmp_path / "prepare2.py"
    script.write_text(_PREPARE_2_WORKERS)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen([sys.executable, str(script), "kinetics", "--raw", str(src), "--out", str(out),
                          "--workers", "2", "--num-classes", "6", "--no-progress"], env=env,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(workers := _pids_of_children(p.pid)) < 2:
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1]
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        err = p.communicate(timeout=60)[1]
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "interrupted; nothing was written" in err and "Traceback" not in err, err
    time.sleep(1.5)  # an orphan would still be reading clips
    assert not [w for w in workers if Path(f"/proc/{w}").exists()], workers
    assert not out.exists() or not [q for q in out.iterdir() if q.name.startswith(".tmp-")]
