"""Shared fixtures for the training tests: one small synthetic dataset per session,
and helpers that run train.py in-process or as a subprocess with tiny settings."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NUM_TRAIN, NUM_VAL = 24, 12

# Tiny, fast settings on top of configs/synthetic.yaml's `tiny` preset.
TINY = ["--preset", "tiny", f"data.synthetic.num_train={NUM_TRAIN}", f"data.synthetic.num_val={NUM_VAL}",
        "runtime.threads=1", "runtime.tensorboard=false"]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from amanet_fast.data.synthetic import ensure_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    ensure_synthetic(root, seed=0, num_train=NUM_TRAIN, num_val=NUM_VAL)
    return root


def tiny_args(synthetic_root: Path, work_dir: Path, *extra: str) -> list[str]:
    return [*TINY, "--work-dir", str(work_dir), f"data.root={synthetic_root}", *extra]


def run_cli(args: list[str], capsys=None) -> tuple[int, str]:
    """In-process train.py; returns (exit code, stderr)."""
    from amanet_fast.training.cli import main

    rc = main(args)
    err = capsys.readouterr().err if capsys is not None else ""
    return rc, err


def run_subprocess(cmd: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, *cmd], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
