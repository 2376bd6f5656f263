"""`python -m amanet_fast.pretrained`: the shipped checkpoints, what each was trained on and scores."""
from __future__ import annotations

import sys

from . import available


def main() -> int:
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


if __name__ == "__main__":
    sys.exit(main())
