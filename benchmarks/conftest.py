"""Benchmark-wide plumbing: environment in the machine info, per-case peer
ratios at the end of the run, and results files under benchmarks/results/.

A benchmark takes part in the ratio table when it sets
`benchmark.extra_info["peer"]` (e.g. "triton", "eager", "sdpa") and shares its
`benchmark.group` with the other peers of the same case; the ratio of every
peer is its median time over the eager peer's (and over Triton's, where that
ran). Results are written (atomically) to benchmarks/results/ by default when
CUDA is present, or on request with --save-results.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pytest
import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BASELINE_PEER = "eager"
KERNEL_PEER = "triton"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amanet benchmarks")
    group.addoption(
        "--save-results",
        action="store_true",
        default=None,
        help="write a summary JSON (device, versions, shapes, medians, peak memory, peer ratios) "
        "to benchmarks/results/ (default: on when CUDA is available)",
    )
    group.addoption(
        "--no-save-results", action="store_false", dest="save_results", help="do not write benchmarks/results/"
    )
    group.addoption(
        "--torch-threads",
        type=int,
        default=None,
        help="torch.set_num_threads(N) before benchmarking (CPU runs on a shared machine are far "
        "steadier with 1: OpenMP barriers stall when a worker thread is descheduled)",
    )
    group.addoption(
        "--results-dir", default=str(RESULTS_DIR), help="where --save-results writes (default benchmarks/results/)"
    )


def pytest_configure(config: pytest.Config) -> None:
    threads = config.getoption("torch_threads", default=None)
    if threads is not None:
        if threads < 1:
            raise pytest.UsageError(f"--torch-threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def environment_info() -> dict[str, Any]:
    """What a reader needs to compare two results files (the same record as
    python -m benchmarks.gpu_suite: device, versions, driver, git commit)."""
    from benchmarks.suite_support import environment

    return environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def summarize(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per benchmark group: each peer's median, peak memory, speed-up ratios
    and achieved bandwidth. records: dicts with group, median_s, extra_info."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for record in records:
        extra = record.get("extra_info") or {}
        peer = extra.get("peer")
        if peer is None or record.get("median_s") is None:
            continue
        groups.setdefault(record["group"], {})[peer] = {
            "median_s": record["median_s"],
            "min_s": record.get("min_s"),
            **extra,
        }
    summary = []
    for group, peers in groups.items():
        base = peers.get(BASELINE_PEER, {}).get("median_s")
        base_min = peers.get(BASELINE_PEER, {}).get("min_s")
        kernel = peers.get(KERNEL_PEER, {}).get("median_s")
        rows = []
        for peer, entry in sorted(peers.items(), key=lambda item: item[1]["median_s"]):
            median = entry["median_s"]
            min_bytes = entry.get("min_bytes")
            rows.append(
                {
                    "peer": peer,
                    "median_ms": median * 1e3,
                    "min_ms": entry["min_s"] * 1e3 if entry.get("min_s") else None,
                    "speedup_vs_eager": (base / median) if base else None,
                    "speedup_vs_eager_by_min": (base_min / entry["min_s"]) if base_min and entry.get("min_s") else None,
                    "time_vs_triton": (median / kernel) if kernel else None,
                    "peak_mem_MiB": entry.get("peak_mem_MiB"),
                    "GB_per_s_at_min_traffic": (min_bytes / median / 1e9) if min_bytes else None,
                }
            )
        first = next(iter(peers.values()))
        case = {k: first[k] for k in ("op", "mode", "shape", "dtype", "device", "window", "group") if k in first}
        summary.append({"group": group, "case": case, "peers": rows})
    return summary


def _records_from_session(config: pytest.Config) -> list[dict[str, Any]]:
    session = getattr(config, "_benchmarksession", None)  # pytest-benchmark's session object
    records = []
    for bench in getattr(session, "benchmarks", []) or []:
        if not bench:  # skipped or failed before timing
            continue
        records.append(
            {
                "group": bench.group,
                "median_s": bench.stats.median,
                "min_s": bench.stats.min,
                "extra_info": bench.extra_info,
            }
        )
    return records


def _format_table(summary: list[dict[str, Any]]) -> list[str]:
    lines = []
    for entry in summary:
        lines.append(f"{entry['group']}")
        for row in entry["peers"]:
            speedup = row["speedup_vs_eager"]
            vs_triton = row["time_vs_triton"]
            mem = row["peak_mem_MiB"]
            bandwidth = row["GB_per_s_at_min_traffic"]
            line = f"  {row['peer']:<8} median {row['median_ms']:>10.3f} ms"
            if row["min_ms"] is not None:
                line += f"  min {row['min_ms']:>10.3f} ms"
            if speedup:
                line += f"  speed-up vs eager {speedup:>7.2f}x (by min {row['speedup_vs_eager_by_min'] or 0:.2f}x)"
            if vs_triton:
                line += f"  {vs_triton:>7.2f}x triton's time"
            if mem is not None:
                line += f"  peak {mem:>9.1f} MiB"
            if bandwidth is not None:
                line += f"  {bandwidth:>7.1f} GB/s"
            lines.append(line)
    return lines


def _should_save(config: pytest.Config) -> bool:
    choice = config.getoption("save_results")
    return torch.cuda.is_available() if choice is None else bool(choice)


def write_results(directory: Path, payload: dict[str, Any]) -> Path:
    """Atomic write of one results file named by UTC time and device."""
    directory.mkdir(parents=True, exist_ok=True)
    device = re.sub(r"[^A-Za-z0-9]+", "-", payload["environment"]["device"]).strip("-").lower()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = directory / f"kernels_{stamp}_{device}.json"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2, default=str)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    return target


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    machine_info["amanet"] = environment_info()


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """--benchmark-json / --benchmark-save files also carry the ratio table."""
    records = [
        {
            "group": b.get("group"),
            "median_s": (b.get("stats") or {}).get("median"),
            "min_s": (b.get("stats") or {}).get("min"),
            "extra_info": b.get("extra_info"),
        }
        for b in output_json.get("benchmarks", [])
    ]
    output_json["amanet_summary"] = summarize(records)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    summary = summarize(_records_from_session(config))
    if not summary:
        return
    terminalreporter.write_sep("-", "peer ratios per case (median; speed-up vs eager)")
    for line in _format_table(summary):
        terminalreporter.write_line(line)
    if _should_save(config):
        payload = {"environment": environment_info(), "summary": summary}
        path = write_results(Path(config.getoption("results_dir")), payload)
        terminalreporter.write_line(f"results written to {path}")
