"""Test-wide setup: Triton runs in its CPU interpreter when no GPU is present,
and the research-licensed sample data is read from ../shared/data (never copied)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# The interpreter flag is read when kernels are decorated, so it must be set
# before any test module imports `kernels`.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # The tests run many tiny ops: on a 2-core CI box one intra-op thread avoids
    # OpenMP spin contention (measured 100x slower small forwards with two).
    torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Location of the shared sample data: $AMANET_SHARED_DATA or ../shared/data."""
    env = os.environ.get("AMANET_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"needs the real sample files: not found at {root}; set AMANET_SHARED_DATA=/path/to/data "
                    "(kinetics_raw/, ntu_raw/, nw_ucla/, pyskl/) to run it")
    return root


@pytest.fixture(scope="session")
def standin_data(tmp_path_factory) -> Path:
    """Generated files in the shared data's layout and formats (tests/standin.py): for tests that need
    *a* valid raw file to break or feed a CLI, not the real release."""
    from tests.standin import make_standin

    return make_standin(tmp_path_factory.mktemp("standin") / "data")


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
