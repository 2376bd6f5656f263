"""Model tests run many tiny ops: one intra-op thread avoids OpenMP spin contention on the
shared 2-core CI machine (measured: 100x slower forward passes with the default 2 threads
under load)."""
from __future__ import annotations

import torch

torch.set_num_threads(1)

SMALL = dict(channels=(12, 24, 24))
