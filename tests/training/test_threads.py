"""Thread count under a shared CPU (issue 22): load measurement on a fake /proc, the chooser,
the re-check state machine, the training-loop governor, and the start-up defaults."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from amanet_fast import build_model
from amanet_fast.training import hardware
from amanet_fast.training import threads as T


class FakeProc:
    """A /proc with /proc/stat for cores 0-1, this process (pid 100) and one child (pid 101)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.busy = [0, 0]  # jiffies per core, all processes
        self.idle = [0, 0]
        self.own = 0  # this process
        self.child = 0  # its DataLoader worker
        (root / "100" / "task" / "100").mkdir(parents=True)
        (root / "101").mkdir()
        (root / "100" / "task" / "100" / "children").write_text("101 ")
        self.write()

    def write(self) -> None:
        lines = [f"cpu  {sum(self.busy)} 0 0 {sum(self.idle)} 0 0 0 0 0 0"]
        # busy split over user/nice/system/steal, idle over idle/iowait: all of them must count
        lines += [f"cpu{i} {b - b // 2} {b // 4} {b // 2 - b // 4} {i0 - i0 // 3} {i0 // 3} 0 0 0 0 0"
                  for i, (b, i0) in enumerate(zip(self.busy, self.idle))]
        (self.root / "stat").write_text("\n".join(lines + ["intr 0", "procs_running 1"]) + "\n")
        for pid, t in (("100", self.own), ("101", self.child)):
            utime, stime = t - t // 3, t // 3
            (self.root / pid / "stat").write_text(
                f"{pid} (py thon) R 1 1 1 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 3 0 1 1 1\n")

    def advance(self, jiffies: int, other: tuple[float, float], own: tuple[float, float], child: float = 0.0) -> None:
        """`jiffies` per core pass; per core, other processes and this process (main, child) run
        the given fractions of them."""
        for c in range(2):
            b = round(jiffies * (other[c] + own[c]))
            self.busy[c] += b
            self.idle[c] += jiffies - b
        self.own += round(jiffies * sum(own)) - round(jiffies * child)
        self.child += round(jiffies * child)
        self.write()


@pytest.fixture
def proc(tmp_path):
    return FakeProc(tmp_path)


@pytest.mark.parametrize("other,own,child,expected", [
    ((0.0, 0.0), (1.0, 1.0), 0.0, 0.0),  # idle but for this process on both cores
    ((0.0, 0.0), (1.0, 1.0), 0.9, 0.0),  # its DataLoader worker is not other load
    ((1.0, 0.0), (0.0, 1.0), 0.0, 1.0),  # one core taken by another process
    ((0.5, 0.5), (0.5, 0.5), 0.0, 1.0),  # two threads sharing with one competitor
    ((1.0, 1.0), (0.0, 0.0), 0.0, 2.0),  # fully busy with others
])
def test_probe_counts_other_processes(proc, other, own, child, expected):
    probe = T.LoadProbe(cores=[0, 1], proc=proc.root, pid="100")
    before = probe.snapshot()
    proc.advance(100, other, own, child)
    assert probe.others(before, probe.snapshot()) == pytest.approx(expected, abs=0.02)


def test_probe_reads_only_usable_cores(proc):
    probe = T.LoadProbe(cores=[1], proc=proc.root, pid="100")
    before = probe.snapshot()
    proc.advance(100, (1.0, 0.0), (0.0, 1.0))  # the other process is on core 0, outside the mask
    assert probe.others(before, probe.snapshot()) == pytest.approx(0.0, abs=0.02)


def test_measure_other_load_over_a_window(proc):
    probe = T.LoadProbe(cores=[0, 1], proc=proc.root, pid="100")
    slept = []

    def sleep(s):
        slept.append(s)
        proc.advance(30, (1.0, 0.0), (0.0, 0.0))

    assert T.measure_other_load(probe, 0.3, sleep) == pytest.approx(1.0)
    assert slept == [0.3]
    assert T.measure_other_load(T.LoadProbe(cores=[0], proc=proc.root / "missing"), 0.0) is None


@pytest.mark.parametrize("usable,others,threads", [
    (2, 0.0, 2), (2, 0.2, 2), (2, 0.3, 1), (2, 0.67, 1), (2, 1.0, 1), (2, 2.0, 1),
    (8, 3.0, 5), (8, 0.0, 8), (1, 0.0, 1), (1, 1.0, 1),
])
def test_choose_threads(usable, others, threads):
    assert T.choose_threads(usable, others) == threads


def _feed(policy, windows, t0=0.0, dt=5.0):
    """Feed (rate, others) windows dt seconds apart; return [(time, new threads, why)] of the changes."""
    changes = []
    for i, (rate, others) in enumerate(windows):
        now = t0 + i * dt
        d = policy.observe(now, rate, others)
        if d is not None:
            changes.append((now, *d))
    return changes


def test_policy_down_on_collapse_then_up_when_load_goes():
    p = T.ThreadPolicy(usable=2, threads=2)
    idle2, loaded2, loaded1, idle1 = (40.0, 0.05), (8.0, 0.7), (30.0, 1.0), (27.0, 0.0)
    changes = _feed(p, [idle2] * 6 + [loaded2] + [loaded1] * 10 + [idle1] * 2 + [(40.0, 0.05)] * 5)
    assert [c[1] for c in changes] == [2 - 1, 2]
    down, up = changes
    assert down[0] == 30.0 and "8.0 samples/s < 0.6 x best 40.0 at 2 threads" in down[2]  # at once
    assert up[0] == 90.0 and "0.0 busy with other processes for 2 windows" in up[2]  # 2 idle windows
    assert p.threads == 2


def test_policy_holds_under_steady_load_and_noise():
    p = T.ThreadPolicy(usable=2, threads=2)
    rates = [40.0, 31.0, 38.0, 25.0, 39.0, 26.0] * 20  # noisy but never below 0.6 x best, no load
    assert _feed(p, [(r, 0.1 * (i % 3)) for i, r in enumerate(rates)]) == []


def test_policy_does_not_flap_under_intermittent_load():
    p = T.ThreadPolicy(usable=2, threads=2)
    windows = [(40.0, 0.0)] * 3 + [(8.0, 0.8), (30.0, 0.0)] * 40  # load every other window
    assert [c[1] for c in _feed(p, windows)] == [1]  # down once; never two load-free windows in a row


def test_policy_collapse_without_free_cores_keeps_the_count():
    p = T.ThreadPolicy(usable=2, threads=2)
    assert _feed(p, [(40.0, 0.0)] * 3 + [(5.0, 0.1)] * 10) == []  # slow for another reason (I/O, eval)


def test_policy_reverts_a_failed_step_up_and_backs_off():
    p = T.ThreadPolicy(usable=2, threads=1, min_interval_s=0.0, backoff_s=60.0)
    # load reads as gone but 2 threads are slower (e.g. a niced competitor that still takes its core)
    windows = [(30.0, 0.0), (30.0, 0.0), (10.0, 0.0)] + [(30.0, 0.0)] * 30
    changes = _feed(p, windows)
    assert [c[1] for c in changes[:2]] == [2, 1]
    assert "10.0 samples/s at 2 threads < 0.9 x 30.0 at 1" in changes[1][2]
    assert "next try up in >= 120 s" in changes[1][2]
    assert changes[2][0] >= changes[1][0] + 120  # the next try waits for the back-off
    assert len(changes) <= 4  # 2 tries in 165 s, no flapping


def test_policy_min_interval_between_changes():
    p = T.ThreadPolicy(usable=4, threads=4, min_interval_s=20.0)
    windows = [(40.0, 0.0)] * 2 + [(10.0, 2.0)] + [(5.0, 3.0)] * 6
    changes = _feed(p, windows)
    assert [(c[0], c[1]) for c in changes] == [(10.0, 2), (30.0, 1)]


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_governor_sets_threads_and_logs(proc, caplog):
    clock, calls = _Clock(), []
    probe = T.LoadProbe(cores=[0, 1], proc=proc.root, pid="100")
    gov = T.ThreadGovernor(T.ThreadPolicy(usable=2, threads=2), logging.getLogger("test.threads"), probe,
                           window_s=5.0, clock=clock, set_threads=calls.append)
    gov.step(100)  # before start(): ignored
    gov.start()
    for step in range(20):  # 1 s per step of 40 samples: idle windows
        clock.t += 1.0
        proc.advance(100, (0.0, 0.0), (1.0, 1.0))
        gov.step(40)
    assert calls == [] and gov.policy.best == {2: 40.0}
    with caplog.at_level(logging.INFO, logger="test.threads"):
        for step in range(5):  # a competitor on a core: 8 samples/s
            clock.t += 1.0
            proc.advance(100, (0.6, 0.0), (0.4, 1.0))
            gov.step(8)
    assert calls == [1]
    assert caplog.messages == ["intra-op threads 2 -> 1: throughput 8.0 samples/s < 0.6 x best 40.0 at 2 threads; "
                               "2 usable cores, 0.6 busy with other processes"]


def test_governor_windows_span_short_epochs_without_the_pauses(proc):
    clock, seen = _Clock(), []
    policy = T.ThreadPolicy(usable=2, threads=2)
    observe = policy.observe
    policy.observe = lambda now, rate, others: seen.append((rate, others)) or observe(now, rate, others)
    gov = T.ThreadGovernor(policy, logging.getLogger("test.threads"), T.LoadProbe([0, 1], proc.root, "100"),
                           window_s=5.0, clock=clock, set_threads=lambda n: None)
    for epoch in range(3):  # 2 s epochs of 20 samples/s, then 30 s of evaluation each
        gov.start()
        for _ in range(2):
            clock.t += 1.0
            proc.advance(100, (0.0, 0.0), (1.0, 1.0))
            gov.step(20)
        gov.pause()
        clock.t += 30.0
        proc.advance(3000, (0.5, 0.5), (0.0, 0.0))
        gov.step(1000)  # outside an epoch: not counted
    assert len(seen) == 1 and seen[0][0] == pytest.approx(20.0)  # 6 s of training, 120 samples
    assert 0.5 < seen[0][1] < 1.0  # the evaluation pauses' load still counts as load


def test_explicit_threads_override(monkeypatch):
    monkeypatch.setattr(T, "measure_other_load", lambda *a, **k: pytest.fail("measured despite runtime.threads"))
    before = torch.get_num_threads()
    try:
        rt = hardware.apply_cpu_defaults(3)
        assert torch.get_num_threads() == 3 and rt.threads == 3 and not rt.adaptive
        assert rt.describe().startswith("cpu runtime: 3 intra-op threads (runtime.threads; fixed);")
        rt = hardware.apply_cpu_defaults(None, local_world_size=64)  # DDP ranks share the cores evenly
        assert rt.threads == 1 and not rt.adaptive and "/ 64 local processes; fixed" in rt.threads_source
        rt = hardware.apply_cpu_defaults(None, device_type="cuda")
        assert not rt.adaptive and "fixed, the model runs on cuda" in rt.threads_source
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("others,threads", [(0.0, 2), (1.0, 1), (2.0, 1)])
def test_default_follows_the_load(monkeypatch, others, threads):
    monkeypatch.setattr(T, "usable_cores", lambda: [0, 1])
    monkeypatch.setattr(T, "measure_other_load", lambda probe: others)
    before = torch.get_num_threads()
    try:
        rt = hardware.apply_cpu_defaults(None)
    finally:
        torch.set_num_threads(before)
    assert rt.threads == threads and rt.adaptive
    assert rt.describe().startswith(f"cpu runtime: {threads} intra-op threads (2 usable cores, {others:.1f} busy "
                                    "with other processes over 0.3 s; re-checked when throughput collapses);")


def test_default_on_this_machine():
    """The real /proc: at least one thread, and the log says why."""
    before = torch.get_num_threads()
    try:
        rt = hardware.apply_cpu_defaults(None)
        assert torch.get_num_threads() == rt.threads >= 1
    finally:
        torch.set_num_threads(before)
    assert "busy with other processes over 0.3 s" in rt.threads_source, rt.describe()


def test_training_loop_feeds_the_governor(monkeypatch, synthetic_root, tmp_path, capsys):
    """train.py without runtime.threads: the start-up line says it re-checks, and the loop's
    steps reach the policy (every step closes a window here)."""
    from amanet_fast.training.loop import ThreadPolicy
    from tests.training.conftest import run_cli, tiny_args

    monkeypatch.setattr(T, "usable_cores", lambda: [0, 1])  # 2 cores even under taskset -c 1
    monkeypatch.setattr(T, "WINDOW_S", 0.0)
    seen = []
    observe = ThreadPolicy.observe
    monkeypatch.setattr(ThreadPolicy, "observe", lambda self, *a: seen.append(a) or observe(self, *a))
    before = torch.get_num_threads()
    try:
        rc, err = run_cli(tiny_args(synthetic_root, tmp_path / "wd", "runtime.threads=null"), capsys)
    finally:
        torch.set_num_threads(before)
    assert rc == 0, err[-2000:]
    log = (tmp_path / "wd" / "log.txt").read_text()
    assert "2 usable cores" in log and "re-checked when throughput collapses" in log
    assert len(seen) >= 4 and all(rate > 0 and 0 <= others <= 2 for _, rate, others in seen)


def test_changing_threads_mid_run_with_bf16():
    """set_num_threads between oneDNN bf16 steps (what the governor does): the steps stay
    the same as at a fixed count, up to bf16 reduction order."""
    def train(counts):
        torch.manual_seed(0)
        model = build_model("amanet", "ntu60", channels=(6, 12, 24), num_gcn_scales=2, num_g3d_scales=2)
        hardware.prepare_model(model, torch.device("cpu"), torch.bfloat16)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(1)
        losses = []
        for n in counts:
            torch.set_num_threads(n)
            x, y = torch.randn(2, 3, 8, 25, 2, generator=g), torch.randint(0, 60, (2,), generator=g)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses

    before = torch.get_num_threads()
    try:
        fixed, switched = train([1, 1, 1, 1]), train([1, 2, 1, 2])
    finally:
        torch.set_num_threads(before)
    assert all(torch.isfinite(torch.tensor(switched)))
    assert switched == pytest.approx(fixed, rel=0.02)
