"""The bytes-moved model (kernels/tools/traffic.py): the window backward stays within 1.5x of
its minimum traffic at the model's layout, and the table in docs is the one the model
generates today."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kernels.tools import traffic

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("window", [1, 3, 5])
def test_window_backward_within_1_5x_of_minimum(window):
    after = traffic.window_backward(window)
    before = traffic.window_backward_phases(window)
    assert after.model <= 1.5 * after.minimum, after
    assert after.minimum == before.minimum
    assert after.model < before.model


def test_phase_backward_model_counts_window_fp32_writes():
    # Phase design, fp32 inputs, no conversion: q, k, v read once per phase over frames
    # phase..T-1, dout once, fp32 grads written `window` times and read `window - 1` times.
    B, H, T, J, D, w = 1, 1, 10, 2, 3, 3
    f = J * D * 4
    row = traffic.window_backward_phases(w, torch.float32, B=B, H=H, T=T, J=J, D=D)
    frames = T + (T - 1) + (T - 2)
    want = 3 * frames * f + 3 * T * f + 3 * 2 * ((T - 1) + (T - 2)) * f + w * T * f + H * J * J * 4
    assert row.model == want


def test_sliding_backward_worst_counts_warmup_and_passes():
    # Small enough to count by hand: T=8, window 3, chunk rule -> one program per head
    # covering all anchors (no warm-up): reads q, k, v and dout once per head-dim pass.
    row = traffic.window_backward(3, torch.float16, B=1, H=1, T=8, J=4, D=24)
    f = 4 * 24 * 2
    passes = 2  # D=24 in 16-wide fp16 chunks
    reads = passes * (3 * 8 * f + 8 * 3 * f + 4 * 4 * 4)
    assert row.worst == reads + 3 * 8 * f + 2 * 16 * 16 * 4


def test_docs_table_is_current():
    text = (REPO_ROOT / "docs" / "kernel_resources.md").read_text(encoding="utf-8")
    assert traffic.format_markdown(traffic.all_traffic()) in text, (
        "regenerate with `python -m kernels.tools.traffic --markdown docs/kernel_resources.md`")


def test_cli_refreshes_only_its_block(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Title\n\n{traffic.GENERATED_BEGIN}\nstale\n{traffic.GENERATED_END}\n\ntail\n")
    assert traffic.main(["--markdown", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Title\n") and text.endswith("\n\ntail\n") and "stale" not in text
    assert "window_attention bwd (sliding, after)" in capsys.readouterr().out
    assert traffic.main(["--markdown", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path}: ")
