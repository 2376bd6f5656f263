"""Trained weights shipped with the repository, loadable offline by name wherever a checkpoint path
is accepted (`--checkpoint ucla-amanet-joint`, `Predictor.from_pretrained(...)`).

`index.json` lists each name with its file, sha256, what it was trained on, its final-epoch
scores and the command that reproduces it; `python -m amanet_fast.pretrained` prints the list.
The files are compact checkpoints (half-precision weights, no optimizer state) written by
`tools/pack_pretrained.py` from a finished training run.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["pretrained_dir", "index_file", "available", "resolve_checkpoint", "is_pretrained_name",
           "PretrainedError"]


def pretrained_dir() -> Path:
    """This package's folder; $AMANET_PRETRAINED_DIR points elsewhere (tests, a local collection)."""
    env = os.environ.get("AMANET_PRETRAINED_DIR")
    return Path(env) if env else Path(__file__).resolve().parent


def index_file() -> Path:
    return pretrained_dir() / "index.json"


class PretrainedError(ValueError):
    """A name that is neither a file nor a shipped checkpoint, or a shipped file that was altered."""


def available() -> dict[str, dict[str, Any]]:
    """name -> its index entry (file, sha256, dataset, arch, stream, seed, top1, top5, ...)."""
    if not index_file().is_file():
        return {}
    return json.loads(index_file().read_text(encoding="utf-8"))


def is_pretrained_name(text: str | Path) -> bool:
    return str(text) in available()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_checkpoint(path_or_name: str | Path) -> Path:
    """An existing path as it is; else a shipped name's file, its sha256 checked; else the path
    unchanged (the loader then says it does not exist, naming the shipped names)."""
    path = Path(path_or_name)
    entry = None if path.exists() else available().get(str(path_or_name))
    if entry is None:
        return path
    file = pretrained_dir() / entry["file"]
    if not file.is_file():
        raise PretrainedError(f"pretrained {path_or_name}: {file} is missing from this installation; "
                              "reinstall the package (pip install -e .) or check out the repository again")
    digest = sha256_file(file)
    if digest != entry["sha256"]:
        raise PretrainedError(f"pretrained {path_or_name}: {file} has sha256 {digest[:12]}..., the index lists "
                              f"{entry['sha256'][:12]}...; the file was altered: check it out again")
    return file


def main(argv: list[str] | None = None) -> int:
    """`python -m amanet_fast.pretrained`: each shipped name, what it was trained on, its scores."""
    entries = available()
    if not entries:
        print("no pretrained checkpoints are shipped")
        return 0
    for name, e in sorted(entries.items()):
        print(f"{name}: {e['arch']} {e['stream']} stream on {e['trained_on']}, seed {e['seed']}, "
              f"{e['epochs']} epochs ({e['train_minutes']:.0f} min on {e['hardware']}); final-epoch "
              f"top-1 {100 * e['top1']:.2f}%, top-5 {100 * e['top5']:.2f}%")
        print(f"    reproduce: {e['command']}")
        print(f"    use: python -m amanet_fast.predict --checkpoint {name} FILE ...  |  sha256 {e['sha256']}")
    return 0


def names_hint() -> str:
    names = sorted(available())
    return f"shipped names: {', '.join(names)}" if names else "no pretrained checkpoints are shipped"
