"""The harness the bad-input corpora share (test_bad_inputs_corpus.py: prepare, train.py, ensemble;
test_bad_inputs_tools.py: the tools around a trained model)."""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

TINY = ["--preset", "tiny", "data.synthetic.num_train=24", "data.synthetic.num_val=12", "runtime.threads=1",
        "runtime.tensorboard=false", "train.epochs=1"]


@dataclass
class Ctx:
    """What a case builds its input from: a fresh temp dir, the shared raw data, the synthetic set and
    its 1-epoch checkpoint."""

    tmp: Path
    shared: Path
    syn: Path
    ckpt: Path
    monkeypatch: Any
    predictor: Any = None
    lock: Any = None  # a work-dir lock a case holds; released after the call

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    @property
    def marker(self) -> Path:
        return self.tmp / "PWNED"


@dataclass
class Case:
    name: str
    cli: str
    build: Callable[[Ctx], tuple]  # -> (argv or callable, the text the error line must name, *more)
    expect: str


class Cases(list):
    """A corpus: `add(name, cli, build)` or `@case(cli)` on a builder named after the case."""

    def add(self, name: str, cli: str, build: Callable, expect: str = "error") -> None:
        self.append(Case(name, cli, build, expect))

    def case(self, cli: str, expect: str = "error") -> Callable:
        def deco(fn: Callable) -> Callable:
            self.add(fn.__name__, cli, fn, expect)
            return fn
        return deco


class Evil:
    """Pickles to a call of os.system: loading it with plain pickle would create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_pickle(path: Path, obj: Any) -> Path:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)
    return path


def train_tiny(root: Path, *extra: str) -> tuple[Path, Path]:
    """A tiny synthetic prepared set under `root` and a 1-epoch checkpoint trained on it."""
    from amanet_fast.data.synthetic import ensure_synthetic
    from amanet_fast.training.cli import main

    syn = Path(ensure_synthetic(root / "syn", seed=0, num_train=24, num_val=12))
    wd = root / "wd"
    assert main([*TINY, "--work-dir", str(wd), f"data.root={syn}", *extra]) == 0
    return syn, wd / "latest.pt"


def run_main(main: Callable, argv: list) -> int:
    """A CLI's exit status, in-process."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code


def check_one_error(rc: int, errors: list[str], where: str, extra: tuple, stderr: str) -> None:
    """Exit 2 and exactly one error line naming `where` and each of `extra` ("!text": not in stderr)."""
    assert rc == 2, f"exit {rc} (expected 2); stderr tail: {stderr[-600:]!r}"
    assert len(errors) == 1, f"expected one error line: {stderr[-600:]!r}"
    line = errors[0]
    assert where in line, f"error line does not name {where!r}: {line!r}"
    for want in extra:
        if want.startswith("!"):
            assert want[1:] not in stderr, f"error says {want[1:]!r}: {stderr[-600:]!r}"
        else:
            assert want in line, f"error line lacks {want!r}: {line!r}"
