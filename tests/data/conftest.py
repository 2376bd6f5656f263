"""Fixtures of the data tests: writable copies of the shared samples for corruption tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def _writable_copy(src: Path, dst: Path) -> Path:
    # The shared samples may be read-only; corruption tests edit the copies.
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


@pytest.fixture
def ntu_copy(standin_data: Path, tmp_path: Path) -> Path:
    return _writable_copy(standin_data / "ntu_raw", tmp_path / "ntu_raw")


@pytest.fixture
def kinetics_copy(standin_data: Path, tmp_path: Path) -> Path:
    return _writable_copy(standin_data / "kinetics_raw", tmp_path / "kinetics_raw")
