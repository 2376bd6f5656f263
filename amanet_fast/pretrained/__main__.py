"""`python -m amanet_fast.pretrained`: the shipped checkpoints, what each was trained on and scores."""
import sys

from . import main

sys.exit(main())
