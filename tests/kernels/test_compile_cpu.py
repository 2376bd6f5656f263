"""torch.compile on the CPU through the eager window reference, forward and backward.

torch 2.13's inductor CPU code for `Tensor.unfold`'s backward corrupts the heap
(docs/kernels.md); the reference builds its windows from stacked slices while compiling.
Each case runs in a subprocess, so that a regression is a failed test, not a dead pytest.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import torch
from kernels.reference import window_attention_reference
torch.manual_seed(0)
window = {window}
# Real head dim and joints; the layout SFEM/STFEM pass (q, k, v permuted views of one qkv tensor).
qkv = torch.randn(2, 3, 4, 24, 8, 25, dtype=torch.float64, requires_grad=True)
q, k, v = (qkv[:, i].permute(0, 1, 3, 4, 2) for i in range(3))
bias = torch.randn(4, 25, 25, dtype=torch.float64, requires_grad=True)
dout = torch.randn(2, 4, 8, window, 25, 24, dtype=torch.float64)

def grads(fn):
    return torch.autograd.grad(fn(q, k, v, bias, window, 24 ** -0.5), (qkv, bias), dout)

want = grads(window_attention_reference)
compiled = torch.compile(window_attention_reference, dynamic=False, fullgraph=True)
for _ in range(3):  # the heap corruption showed from the second call on
    got = grads(compiled)
for a, b in zip(got, want):
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
print("ok")
"""


@pytest.mark.slow
@pytest.mark.parametrize("window", [3, 5])
def test_compiled_window_reference_backward_matches_eager(window):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(window=window)], capture_output=True, text=True,
                         cwd=ROOT, timeout=900, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), (
        f"exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
