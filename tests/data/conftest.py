"""Fixtures of the data tests: writable copies of the shared samples for corruption tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def ntu_copy(shared_data: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "ntu_raw"
    shutil.copytree(shared_data / "ntu_raw", dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


@pytest.fixture
def kinetics_copy(shared_data: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "kinetics_raw"
    shutil.copytree(shared_data / "kinetics_raw", dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst
