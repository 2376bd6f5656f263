"""One tiny trained model per session for the predict / visualize / export tests.

Two streams (joint, bone) of the synthetic demo's `tiny` preset, trained in
process on 24 generated clips: seconds on a CPU, and real checkpoints written
by the real training loop (config, weights, scores_val.pkl, predictions CSV).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

NUM_TRAIN, NUM_VAL = 24, 12


@dataclass
class Trained:
    data: Path            # prepared synthetic data (raw JSON clips under data/raw)
    joint: Path           # work dirs
    bone: Path

    def raw_val(self) -> list[Path]:
        return sorted((self.data / "raw" / "kinetics_val").glob("*.json"))


def _train(data: Path, work_dir: Path, stream: str) -> None:
    from amanet_fast.training.cli import main

    rc = main(["--preset", "tiny", f"data.synthetic.num_train={NUM_TRAIN}", f"data.synthetic.num_val={NUM_VAL}",
               # fp32 evaluation: predict runs in fp32, and its scores are compared with these to 2e-6
               # (the CPU default, bf16 autocast where native, would differ by bf16 rounding).
               "runtime.threads=1", "runtime.tensorboard=false", "--amp", "off", "--work-dir", str(work_dir),
               f"data.root={data}", "--stream", stream])
    assert rc == 0 and (work_dir / "latest.pt").is_file()


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    from amanet_fast.data.synthetic import ensure_synthetic

    root = tmp_path_factory.mktemp("use")
    data = root / "synthetic"
    ensure_synthetic(data, seed=0, num_train=NUM_TRAIN, num_val=NUM_VAL)
    t = Trained(data, root / "joint", root / "bone")
    _train(data, t.joint, "joint")
    _train(data, t.bone, "bone")
    return t
