"""`python -m benchmarks.gpu_suite`: the --smoke run CI keeps alive (same code
paths as the GPU run, CPU, tiny shapes), and the rules the GPU run relies on:
kernel tests that skip on CUDA fail the suite, budgets interrupt, out-of-memory
and budget overruns become recorded skips while the project's own ops crashing
becomes an error, the results folder is written atomically."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_suite as gs
from benchmarks import suite_support as sup
from benchmarks.model_shapes import FRAME_GROUP, WINDOW, attention_calls, unique_cases

REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the --smoke run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "results"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--smoke", "--out", str(out)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    return done, out, wall


def test_smoke_exits_zero_and_writes_one_folder(smoke):
    done, out, wall = smoke
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["kernel_tests.log", "results.json", "results.md"]
    assert not out.with_name(out.name + ".partial").exists()  # staging folder renamed, not left behind
    assert done.stdout.strip().splitlines()[-1] == str(out)
    data = json.loads((out / "results.json").read_text())
    assert data["complete"] and data["mode"] == "smoke" and data["verdict"] == {"status": "pass", "reasons": []}
    assert data["wall_s"] <= data["budget_s"] + 30
    env = data["environment"]
    assert env["device"] == "cpu" and env["torch"] == torch.__version__ and "triton" in env
    assert env["git"]["source"] in ("git", "AMANET_GIT_COMMIT") or env["git"]["commit"] is None


def test_smoke_kernel_tests_ran_and_recorded_their_skips(smoke):
    _, out, _ = smoke
    sec = json.loads((out / "results.json").read_text())["sections"]["kernel_tests"]
    assert sec["status"] == "passed" and sec["counts"]["passed"] >= 1 and sec["counts"]["failed"] == 0
    # bf16 cases skip off CUDA; the reason is kept (on CUDA the same skip would fail the suite)
    assert sec["counts"]["skipped"] >= 1
    assert all(s["reason"] for s in sec["skipped"]) and any("bf16" in s["test"] for s in sec["skipped"])
    assert "pytest" in sec["command"] and "passed" in (out / "kernel_tests.log").read_text()
    assert sec["deselected"] > 0  # the -k selection; read off pytest's summary line


def test_smoke_ops_cover_the_model_cases_with_finite_ratios(smoke):
    _, out, _ = smoke
    sec = json.loads((out / "results.json").read_text())["sections"]["ops"]
    assert sec["status"] == "done"
    ops = {c["op"] for c in sec["cases"]}
    assert ops == {WINDOW, FRAME_GROUP}
    assert {c["size"] for c in sec["cases"] if c["op"] == WINDOW} == {1, 3, 5}
    assert {c["dataset"] for c in sec["cases"]} == {"ntu60", "kinetics"}
    ok = [r for r in sec["results"] if r["status"] == "ok"]
    assert {r["peer"] for r in ok} == {"eager", "sdpa", "compile"}  # compile: capped at one build in smoke
    for r in ok:
        assert math.isfinite(r["ms"]) and r["ms"] > 0 and r["agrees"], r
    # every (case, mode) has eager and sdpa, and ratios are finite
    assert len(sec["ratios"]) == 2 * len(sec["cases"])
    for row in sec["ratios"]:
        assert {"eager", "sdpa"} <= set(row["ms"])
        assert all(math.isfinite(v) and v > 0 for v in row["speedup_vs_eager"].values())
        assert row["speedup_vs_eager"]["eager"] == 1.0
    skipped: dict[str, set[str]] = {}
    for r in sec["results"]:
        if r["status"] == "skipped":
            skipped.setdefault(r["peer"], set()).add(r["reason"])
    assert all("CUDA" in reason for reason in skipped["triton"])
    assert any("CPU" in reason for reason in skipped["flex"]) and any("window op only" in r for r in skipped["flex"])
    assert any("compile cap" in r["reason"] for r in sec["results"] if r["status"] == "skipped")
    assert set(sec["per_step"]) == {"ntu60", "kinetics"} and sec["per_step"]["ntu60"]["eager"] > 0


def test_smoke_training_matrix_and_markdown(smoke):
    _, out, _ = smoke
    data = json.loads((out / "results.json").read_text())
    sec = data["sections"]["train"]
    ok = [r for r in sec["results"] if r["status"] == "ok"]
    assert {(r["arch"], r["dataset"], r["precision"]) for r in ok} == {
        (a, d, p) for a in ("amanet", "msg3d") for d in ("ntu60", "kinetics") for p in ("fp32", "bf16")}
    for r in ok:
        assert r["samples_per_s"] > 0 and math.isfinite(r["ms_per_step"]) and r["params"] > 0
    ratios = {r["config"]: r for r in sec["ratios"]}
    assert all(math.isfinite(r["speedup_vs_baseline"]) for r in ratios.values())
    assert ratios["amanet/ntu60/eager/fp32/kernels=eager"]["speedup_vs_baseline"] == 1.0
    assert math.isfinite(ratios["amanet/ntu60/eager/bf16/kernels=eager"]["time_vs_msg3d"])
    reasons = {r["config"]: r.get("reason", "") for r in sec["results"] if r["status"] == "skipped"}
    assert "CUDA" in reasons["amanet/ntu60/eager/bf16/kernels=triton"]
    assert "compile cap" in reasons["msg3d/ntu60/compile/bf16/kernels=-"]
    # every skip is also listed in one place with its reason
    assert all(s["reason"] for s in data["skipped"]) and {s["section"] for s in data["skipped"]} == {"ops", "train"}
    md = (out / "results.md").read_text()
    for heading in ("# GPU suite: cpu — PASS", "## Environment", "## Kernel tests", "### fwd+bwd",
                    "## Training step", "## Skipped (with reasons)"):
        assert heading in md
    assert "compile cap reached" in md and "x baseline" in md


# ----------------------------------------------------------------------------- the kernel-test rule


def _outcome(**kw) -> sup.KernelTestOutcome:
    base = dict(returncode=0, passed=["t::test_a[bf16]", "t::test_b"])
    base.update(kw)
    return sup.KernelTestOutcome(**base)


def test_kernel_test_skip_on_cuda_fails_the_suite():
    outcome = _outcome(returncode=0, skipped=[("t::test_c", "needs more memory")])
    ok, reasons = sup.kernel_tests_verdict(outcome, on_cuda=True, required=gs.REQUIRED_KERNEL_TESTS)
    assert not ok and "skipped on CUDA" in reasons[0] and "needs more memory" in reasons[0]
    # the same run off CUDA (smoke) passes and only reports the skip
    assert sup.kernel_tests_verdict(outcome, on_cuda=False) == (True, [])


@pytest.mark.parametrize("kw, expected", [
    (dict(), None),
    (dict(returncode=1, failed=["t::test_x"]), "1 failed"),
    (dict(returncode=1, errors=["t::test_y"]), "1 errors"),
    (dict(timed_out=True, returncode=-9), "did not finish"),
    (dict(passed=[], returncode=5), "no kernel test was collected"),
    (dict(junit_found=False, passed=[], returncode=4), "no test report"),
    (dict(passed=["t::test_b"]), "no passed kernel test matches"),  # bf16 cases did not run
    (dict(returncode=3), "exited with status 3"),
])
def test_kernel_test_verdict_on_cuda(kw, expected):
    ok, reasons = sup.kernel_tests_verdict(_outcome(**kw), on_cuda=True, required=gs.REQUIRED_KERNEL_TESTS)
    if expected is None:
        assert ok and reasons == []
    else:
        assert not ok and any(expected in r for r in reasons), reasons


def test_gpu_run_leaves_out_only_the_aot_builds_and_cpu_only_tests_and_says_why():
    settings = gs.make_settings(gs.build_parser().parse_args([]))
    assert settings.kernel_test_args == ("tests/kernels", *gs.MODEL_BACKEND_TESTS, "-m", "not cpu_only",
                                         "--ignore=tests/kernels/test_aot.py")
    assert "no GPU" in settings.kernel_tests_not_run["tests/kernels/test_aot.py"]
    settings = gs.make_settings(gs.build_parser().parse_args(["--all-kernel-tests"]))
    assert settings.kernel_test_args == ("tests/kernels", *gs.MODEL_BACKEND_TESTS, "-m", "not cpu_only")
    assert settings.kernel_tests_not_run == {}
    # the model-level tests named there exist (a renamed test would fail the GPU run with "not found")
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *gs.MODEL_BACKEND_TESTS],
                               cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert collected.returncode == 0 and "2 tests collected" in collected.stdout, collected.stdout[-2000:]
    # the marker is registered (an unknown marker would only warn, and a typo would deselect nothing)
    assert "cpu_only:" in (REPO_ROOT / "pyproject.toml").read_text()


def test_parse_junit_sorts_every_outcome(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text("""<?xml version="1.0"?><testsuites><testsuite>
      <testcase classname="tests.k" name="test_pass"/>
      <testcase classname="tests.k" name="test_fail"><failure message="boom"/></testcase>
      <testcase classname="tests.k" name="test_err"><error message="fixture"/></testcase>
      <testcase classname="tests.k" name="test_skip"><skipped type="pytest.skip" message="needs CUDA"/></testcase>
      <testcase classname="tests.k" name="test_xf"><skipped type="pytest.xfail" message="known"/></testcase>
    </testsuite></testsuites>""")
    o = sup.parse_junit(xml, returncode=1)
    assert o.passed == ["tests.k::test_pass"] and o.failed == ["tests.k::test_fail"]
    assert o.errors == ["tests.k::test_err"] and o.xfailed == ["tests.k::test_xf"]
    assert o.skipped == [("tests.k::test_skip", "needs CUDA")]
    assert not sup.parse_junit(tmp_path / "missing.xml", returncode=4).junit_found


def test_suite_verdict_fails_on_kernel_tests_or_errors():
    data = {"sections": {"kernel_tests": {"status": "failed", "verdict_reasons": ["2 skipped on CUDA"]}},
            "errors": []}
    assert gs.verdict(data) == {"status": "fail", "reasons": ["kernel tests: 2 skipped on CUDA"]}
    data = {"sections": {"kernel_tests": {"status": "passed"}}, "complete": True,
            "errors": [{"section": "ops", "item": "x triton", "reason": "disagrees"}]}
    assert gs.verdict(data)["status"] == "fail"
    data["errors"] = []
    assert gs.verdict(data)["status"] == "pass"
    data["complete"] = False  # a folder left by a killed run never reads as a pass
    assert gs.verdict(data)["status"] == "incomplete"


# ----------------------------------------------------------------------------- budgets, OOM, folder


def test_budget_shares_leftover_time_with_later_sections():
    now = [0.0]
    budget = sup.Budget(450.0, clock=lambda: now[0])
    first = budget.section(140, 310)
    assert first.left() == pytest.approx(140.0)
    now[0] = 40.0  # the first section ends early: its unused 100 s flow on
    second = budget.section(120, 190)
    assert second.left() == pytest.approx(410.0 * 120 / 310)


def test_time_limit_interrupts_and_is_found_behind_wrapping():
    with pytest.raises(sup.BudgetExceeded):
        with sup.time_limit(0.05):
            while True:
                pass
    with pytest.raises(sup.BudgetExceeded):
        with sup.time_limit(0):
            pass
    try:
        try:
            raise sup.BudgetExceeded("limit")
        except BaseException as inner:
            raise RuntimeError("wrapped by a compiler") from inner
    except RuntimeError as outer:
        assert isinstance(sup.budget_exceeded_in(outer), sup.BudgetExceeded)
    assert sup.budget_exceeded_in(ValueError("x")) is None


def test_out_of_memory_is_recognized():
    assert sup.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert sup.is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not sup.is_out_of_memory(RuntimeError("shape mismatch"))


def _tiny_run(tmp_path, **changes) -> gs.Run:
    args = gs.build_parser().parse_args(["--smoke", "--datasets", "ntu60"])
    settings = gs.make_settings(args)
    for key, value in changes.items():
        setattr(settings, key, value)
    return gs.Run(settings, sup.ResultsFolder(tmp_path / "r"), sup.Budget(100.0))


def test_ops_degrade_oom_and_budget_to_skips_but_own_crashes_to_errors(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path)
    monkeypatch.setattr(gs, "_peer_unavailable", lambda s, peer: None)  # pretend Triton/Flex could run here

    def fake_measure(run_, case, peer, mode, x, ref):
        raise {"triton": RuntimeError("kernel launch failed"), "eager": torch.OutOfMemoryError("CUDA out of memory"),
               "sdpa": sup.BudgetExceeded("exceeded its 30 s time limit")}[peer]

    monkeypatch.setattr(gs, "measure_peer", fake_measure)
    case = unique_cases(attention_calls("amanet", "ntu60", clips=1, frames=4, channels=(12, 24, 48)), "ntu60")[0]
    sec = {"results": []}
    gs._run_case(run, sec, case, "fwd", ["triton", "eager", "sdpa"], sup.Deadline(time.monotonic() + 60), 0)
    by_peer = {r["peer"]: r for r in sec["results"]}
    assert by_peer["triton"]["status"] == "error" and "kernel launch failed" in by_peer["triton"]["reason"]
    assert by_peer["eager"]["status"] == "skipped" and "out of memory" in by_peer["eager"]["reason"]
    assert by_peer["sdpa"]["status"] == "skipped" and "time budget" in by_peer["sdpa"]["reason"]
    assert [e["item"] for e in run.data["errors"]] == [f"{case.id} fwd triton"]


def test_an_illegal_memory_access_stops_later_gpu_work(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path, train_backends=("eager",), train_precisions=("fp32",))
    monkeypatch.setattr(gs, "_peer_unavailable", lambda s, peer: None)

    def fake_measure(run_, case, peer, mode, x, ref):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(gs, "measure_peer", fake_measure)
    case = unique_cases(attention_calls("amanet", "ntu60", clips=1, frames=4, channels=(12, 24, 48)), "ntu60")[0]
    sec = {"results": []}
    gs._run_case(run, sec, case, "fwd", ["triton", "eager"], sup.Deadline(time.monotonic() + 60), 0)
    assert [r["status"] for r in sec["results"]] == ["error", "skipped"]
    assert "CUDA context unusable" in sec["results"][1]["reason"]
    gs.section_train(run, sup.Deadline(time.monotonic() + 60))  # nothing more runs on a broken context
    assert all("CUDA context unusable" in r["reason"] for r in run.data["sections"]["train"]["results"])


def test_ops_skip_what_the_memory_estimate_says_cannot_fit(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path)
    monkeypatch.setattr(sup, "free_memory_bytes", lambda device: 1024)  # a nearly full card
    case = unique_cases(attention_calls("amanet", "ntu60", clips=1, frames=4, channels=(12, 24, 48)), "ntu60")[0]
    sec = {"results": []}
    gs._run_case(run, sec, case, "fwd+bwd", ["eager", "sdpa"], sup.Deadline(time.monotonic() + 60), 0)
    assert all(r["status"] == "skipped" and r["reason"].startswith("estimated") for r in sec["results"])


def test_train_oom_is_a_skip_and_a_crash_is_an_error(tmp_path, monkeypatch):
    run = _tiny_run(tmp_path, train_backends=("eager",), train_precisions=("fp32",))

    def fake_measure(settings, cfg):
        if cfg.arch == "amanet":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        raise ValueError("bad model")

    monkeypatch.setattr(gs, "measure_train", fake_measure)
    gs.section_train(run, sup.Deadline(time.monotonic() + 60))
    results = {r["config"]: r for r in run.data["sections"]["train"]["results"]}
    assert results["amanet/ntu60/eager/fp32/kernels=eager"]["status"] == "skipped"
    assert "out of memory" in results["amanet/ntu60/eager/fp32/kernels=eager"]["reason"]
    assert results["msg3d/ntu60/eager/fp32/kernels=-"]["status"] == "error"


def test_results_folder_is_staged_then_renamed(tmp_path):
    final = tmp_path / "empty"
    final.mkdir()  # an existing empty folder (like the device tool's $OUT) may receive the results
    folder = sup.ResultsFolder(final)
    folder.write({"results.json": {"a": 1}, "results.md": "# x\n"})
    assert not any(final.iterdir()) and (folder.staging / "results.json").is_file()
    assert folder.commit() == final and sorted(p.name for p in final.iterdir()) == ["results.json", "results.md"]
    assert not folder.staging.exists()
    assert sup.check_out_dir(final) is not None  # now non-empty: never mixed into


@pytest.mark.parametrize("argv, message", [
    (["--smoke", "--sections", "ops,bogus"], "--sections"),
    (["--smoke", "--datasets", "nope"], "--datasets"),
    (["--smoke", "--max-op-compiles", "-1"], "--max-op-compiles"),
    (["--smoke", "--budget-s", "0"], "--budget-s"),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = gs.main(argv)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err and "Traceback" not in err


def test_out_must_be_new_or_empty(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert gs.main(["--smoke", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --out {tmp_path}: expected a new or empty directory") and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_gpu_run_without_cuda_says_so(capsys):
    assert gs.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the model's shapes


def test_model_shapes_are_the_modules_own():
    """Every recorded call agrees with the attributes of the module that made it,
    at the paper's setting (16 clips x 2 persons, T = 300)."""
    from amanet_fast import build_model

    calls = attention_calls("amanet", "ntu60", clips=16, frames=300)
    with torch.device("meta"):
        modules = dict(build_model("amanet", "ntu60").named_modules())
    assert {c.op for c in calls} == {WINDOW, FRAME_GROUP}
    for call in calls:
        B, H, T, J, D = call.shape
        module = modules[call.module]
        assert B == 32 and J == 25 and T in (300, 150)
        if call.op == WINDOW:
            assert call.size in (1, getattr(module, "window", 1)) and H == module.heads
            assert call.bias_shape == (25, 25) and not call.bias_requires_grad
        else:
            assert call.size == module.group == 5 and H == 1
        # the model's layout: D is the slowest-varying axis of the fused qkv activation
        assert call.stride[4] == T * J and call.stride[3] == 1
    assert attention_calls("msg3d", "ntu60", clips=1, frames=8) == []
    cases = unique_cases(calls, "ntu60")
    assert sum(c.calls_per_forward for c in cases) == len(calls)
