"""The project's argument parser: no abbreviations, and a did-you-mean for a mistyped flag.

argparse's own defaults fail newcomers twice: `--epoch 6` silently means `--epochs` (and a later flag
starting with --epoch would silently change its meaning), and `--epcohs 6` ends in "unrecognized
arguments" without naming the flag that was meant.
"""
from __future__ import annotations

import argparse
import difflib

__all__ = ["ArgumentParser", "suggest_flag"]


def suggest_flag(word: str, options: list[str]) -> str | None:
    flag = word.split("=", 1)[0]
    close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
    return close[0] if close else None


class ArgumentParser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _flags(self) -> list[str]:
        flags = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        for a in self._actions:  # sub-commands' flags too (python -m amanet_fast.export onnx --chekpoint)
            if isinstance(a, argparse._SubParsersAction):
                flags += [s for p in a.choices.values() for b in p._actions for s in b.option_strings
                          if s.startswith("--")]
        return sorted(set(flags))

    def error(self, message: str) -> None:  # type: ignore[override]
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            hints = []
            for word in message[len(prefix):].split():
                if word.startswith("--"):
                    guess = suggest_flag(word, self._flags())
                    hints.append(f"{word}: did you mean {guess}?" if guess else
                                 f"{word}: no such flag (see --help)")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        super().error(message)
