"""In-epoch progress lines for logs that are not a terminal (files, schedulers' logs).

A tqdm bar only makes sense on an interactive terminal; redirected output gets
one line every `runtime.log_interval_s` seconds instead: step, samples/s, loss,
ETA of the epoch and of the run (training time only, evaluation not included).
"""
from __future__ import annotations

import logging
import time


def _hms(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class StepReporter:
    def __init__(self, log: logging.Logger, enabled: bool, interval_s: float, epoch: int, epochs: int,
                 steps: int) -> None:
        self.log, self.enabled, self.interval = log, enabled, float(interval_s)
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.t0 = self.last = time.time()
        self.samples = 0
        self.loss_sum = 0.0

    def step(self, step: int, batch: int, loss: float) -> None:
        """Call after optimizer step `step` (0-based) of `batch` samples (all ranks) with its mean loss."""
        if not self.enabled:
            return
        self.samples += batch
        self.loss_sum += loss * batch
        now = time.time()
        done = step + 1
        if now - self.last < self.interval and done != self.steps:
            return
        self.last = now
        elapsed = now - self.t0
        per_step = elapsed / done
        left_epoch = per_step * (self.steps - done)
        left_run = left_epoch + per_step * self.steps * (self.epochs - self.epoch - 1)
        self.log.info("epoch %d/%d step %d/%d (%.0f%%) | %.1f samples/s | loss %.4f (epoch mean %.4f) | "
                      "ETA epoch %s, run %s (training only)", self.epoch + 1, self.epochs, done, self.steps,
                      100.0 * done / self.steps, self.samples / max(elapsed, 1e-9), loss,
                      self.loss_sum / max(self.samples, 1), _hms(left_epoch), _hms(left_run))
