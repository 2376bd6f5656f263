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


# `pytest -m quick`: a few minutes on one busy core, at least one module per package (data, model,
# kernels, training, use) plus the CLI error corpus; their `slow` tests stay out. Listed here rather than marked in each module
# so the whole subset is visible (and checked, tests/test_quick_subset.py) in one place.
QUICK_MODULES = frozenset({
    "tests/data/test_synthetic.py", "tests/data/test_dataset.py", "tests/data/test_bad_input.py",
    "tests/model/test_graphs_streams.py", "tests/model/test_dp.py",
    "tests/kernels/test_traffic.py", "tests/kernels/test_custom_ops.py",
    "tests/training/test_config.py", "tests/training/test_checkpoint_metrics.py", "tests/training/test_ensemble.py",
    "tests/use/test_predictions_csv.py", "tests/use/test_own_arrays.py",
    "tests/test_bad_inputs_corpus.py", "tests/test_quick_subset.py",
})


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if (Path(str(item.fspath)).resolve().relative_to(REPO_ROOT).as_posix() in QUICK_MODULES
                and item.get_closest_marker("slow") is None):
            item.add_marker(pytest.mark.quick)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
