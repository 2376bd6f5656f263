#!/usr/bin/env python
"""Train or evaluate AMANet / MS-G3D. `python train.py` runs the synthetic CPU demo.

All logic lives in amanet_fast.training; see `python train.py --help` and configs/*.yaml.
"""
from amanet_fast.training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
