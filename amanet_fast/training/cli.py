"""`python train.py ...`: parse, resolve the config, run; user errors become one
clear message and a non-zero exit code instead of a traceback."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Sequence

from . import config as C
from .checkpoint import CheckpointError, load_checkpoint
from .data import MissingDataError
from .workdir import WorkDirBusyError

EXIT_USER_ERROR = 2
EXIT_TRAINING_FAILED = 1


def recipe_from_data_root(args: argparse.Namespace) -> str | None:
    """`--data-root DIR` alone: the recipe of the folder's manifest (`--dataset`/`--config` win).

    A folder without a manifest gets the custom recipe, whose missing-data check then says what the
    folder is (raw data, a benchmark parent, ...) instead of the synthetic demo being generated into it.
    """
    if args.dataset or args.config or not args.data_root:
        return None
    from ..data.io import read_manifest
    from ..registry import dataset_for_kind

    d = Path(args.data_root).expanduser()
    d = d / args.split if args.split else d
    manifest = read_manifest(d) if d.is_dir() else None
    ds = dataset_for_kind(manifest.get("kind")) if isinstance(manifest, dict) else None
    if ds == "synthetic" and isinstance(manifest.get("synthetic"), dict):
        # Train on the demo data as generated, instead of regenerating it with the recipe's sizes.
        syn = manifest["synthetic"]
        args.overrides[:0] = [f"data.synthetic.{k}={syn[k]}" for k in ("seed", "num_train", "num_val") if k in syn]
    ds = ds or "custom"
    args.dataset = ds
    if not args.split and C.load_yaml(C.default_config_file(ds)).get("data", {}).get("split"):
        args.overrides[:0] = ["data.split=null"]  # the folder given is the data itself, not a benchmark parent
    return ds


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = C.build_arg_parser()
    args = parser.parse_intermixed_args(argv)
    full_argv = ["train.py", *argv]
    try:
        if args.eval_only:
            if not args.checkpoint:
                parser.error("--eval-only needs --checkpoint PATH")
            # The model is defined by the checkpoint's own config; the command line may override run-time keys.
            from ..pretrained import resolve_checkpoint

            checkpoint = resolve_checkpoint(args.checkpoint)
            saved = dict(load_checkpoint(checkpoint, map_location="cpu")["config"])
            # Never write into the training run's dir by default: CKPT_DIR/eval; for a shipped checkpoint
            # (a name) work_dirs/eval_NAME, not the installed package.
            shipped = checkpoint != Path(args.checkpoint)
            saved["work_dir"] = str(Path("work_dirs") / f"eval_{args.checkpoint}") if shipped else None
            cfg = C.resolve_config(args, base=saved)
            from .loop import evaluate_checkpoint

            evaluate_checkpoint(cfg, checkpoint, full_argv)
            return 0
        if args.checkpoint:
            parser.error("--checkpoint is only used with --eval-only (training resumes from WORK_DIR/latest.pt)")
        recipe = recipe_from_data_root(args)
        if recipe is not None:
            print(f"train.py: recipe {C.default_config_file(recipe)} (from {args.data_root}; --dataset picks "
                  "another)")
        cfg = C.resolve_config(args)
        from .loop import train

        train(cfg, full_argv, resume=not args.no_resume)
        return 0
    except (MissingDataError, CheckpointError, WorkDirBusyError, ValueError, TypeError) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:  # work dir unwritable, full disk, unreadable file: name the file, no traceback
        where = f"{err.filename}: " if err.filename else ""
        print(f"train.py: error: {where}{err.strerror or err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        if args.eval_only:  # nothing of an evaluation is kept, and no training was touched
            print(f"train.py: interrupted by {signal.Signals(signum).name}; the evaluation did not finish "
                  "(no results written); run it again", file=sys.stderr)
        else:
            print(f"train.py: interrupted by {signal.Signals(signum).name}; the last finished epoch is in "
                  "WORK_DIR/latest.pt and resumes on the next run", file=sys.stderr)
        return 128 + int(signum)
    except Exception as err:
        from .distributed import DistributedFailure
        from .loop import NonFiniteLossError

        if isinstance(err, DistributedFailure):  # another rank went away: its line, no gloo traceback
            print(f"train.py: error: {err}", file=sys.stderr)
            return EXIT_TRAINING_FAILED
        if isinstance(err, NonFiniteLossError):
            print(f"train.py: error: {err}", file=sys.stderr)
            return EXIT_TRAINING_FAILED
        raise
