"""`python tests/training/kill_hook.py TRAIN_ARGS...`: train.py that signals itself inside one file write.

KILL_FILE names the file (latest.pt, best.pt, results.json), KILL_NTH which of its writes in this
process, KILL_WHEN where: `before` (nothing written yet), `mid` (temp file fully written, not yet
moved into place) or `after` (moved into place); KILL_SIGNAL is KILL or TERM. This puts a kill at
the exact instants a timer cannot hit reliably.
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from amanet_fast import atomic  # noqa: E402

_real = atomic.write_atomic
_target, _nth, _when = os.environ["KILL_FILE"], int(os.environ["KILL_NTH"]), os.environ["KILL_WHEN"]
_sig = getattr(signal, "SIG" + os.environ.get("KILL_SIGNAL", "KILL"))
_count = 0


def _fire() -> None:
    os.kill(os.getpid(), _sig)


def write_atomic(path, writer):
    global _count
    if Path(path).name != _target:
        return _real(path, writer)
    _count += 1
    if _count != _nth:
        return _real(path, writer)
    if _when == "before":
        _fire()
        return _real(path, writer)
    if _when == "mid":
        def write_then_fire(fh):
            writer(fh)
            fh.flush()
            _fire()
        return _real(path, write_then_fire)
    out = _real(path, writer)
    _fire()
    return out


atomic.write_atomic = write_atomic

if __name__ == "__main__":
    from amanet_fast.training.cli import main

    sys.argv[0] = "train.py"
    raise SystemExit(main(sys.argv[1:]))
