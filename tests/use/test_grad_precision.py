"""tools/grad_precision.py: bf16-defaults and fp32 gradients against float64 on a real checkpoint."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import grad_precision  # noqa: E402


def test_fp32_is_near_float64_and_bias_before_bn_is_set_apart(trained):
    r = grad_precision.compare(trained.joint / "latest.pt", trained.data, batch=4)
    assert abs(r["loss_fp32"] - r["loss_fp64"]) < 1e-4 and abs(r["loss_bf16"] - r["loss_fp64"]) < 0.05
    err32, cos32 = r["whole"]["fp32"]
    err16, cos16 = r["whole"]["bf16"]
    assert err32 < 0.05 and cos32 > 0.999
    assert err32 < err16 < 0.5 and cos16 > 0.9  # bf16 rounds: a real, bounded difference
    # Every conv bias that feeds a BatchNorm directly has an exactly-zero gradient in exact arithmetic.
    assert "blocks.0.tcn.branches.0.0.0.bias" in r["zero_in_exact"]
    assert not any(n.endswith(".weight") for n in r["zero_in_exact"])
    assert {row["name"] for row in r["params"]}.isdisjoint(r["zero_in_exact"])


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert grad_precision.main(["--checkpoint", str(tmp_path / "nope.pt"), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "nope.pt" in err


@pytest.mark.parametrize("flag", [["--batch", "0"], ["--threads", "0"]])
def test_bad_numbers_are_one_line(tmp_path, capsys, flag):
    assert grad_precision.main(["--checkpoint", "x.pt", "--data-root", str(tmp_path), *flag]) == 2
    assert capsys.readouterr().err.strip().startswith("error: ")
