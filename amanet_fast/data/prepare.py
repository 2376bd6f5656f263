"""`python -m amanet_fast.data.prepare KIND --raw PATH --out DIR`: raw skeletons -> prepared arrays.

The driver here is format-agnostic: a reader module builds a `DatasetPlan`,
`run_plan` streams it into memory-mapped `.npy` files (optionally with worker
processes), and `io.PreparedWriter` moves everything into place atomically,
manifest last. User-data problems raise `DataFormatError`; the CLI prints them
as one `error: ...` line and exits 2.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Callable, Sequence

from ..graphs import LAYOUTS, LayoutError
from ..registry import DATASETS, KINDS as _REGISTRY_KINDS
from .engine import run_plan
from .errors import DataFormatError
from .plan import DatasetPlan, Problems
from ..argparse_util import ArgumentParser

__all__ = ["KINDS", "run_plan", "prepare", "make_plan", "main", "build_parser"]

log = logging.getLogger("amanet_fast.data.prepare")

KINDS = tuple(_REGISTRY_KINDS)


# ---------------------------------------------------------------------------
# CLI


_EPILOG = "--raw per kind:\n" + "".join(
    f"  {d.kind:<10} {d.raw}" + (f"; --split {'|'.join(d.benchmarks)}" if d.benchmarks else "") + "\n"
    for d in DATASETS.values()) + """\
  arrays     a folder of per-clip .npy (T,V,C)|(M,T,V,C) / .csv files + labels.csv (file,label,split)
  (kinetics: or a flat dir of clips with one *val_label.json / *train_label.json;
   pyskl: --train-split/--val-split name its splits, --layout gives the skeleton;
   ntu60/120: without --split every benchmark is written to OUT/<benchmark>/ from one parse)
examples:
  python -m amanet_fast.data.prepare ntu60 --raw nturgb+d_skeletons --out data/ntu60 \\
      --ignore-list NTU_RGBD_samples_with_missing_skeletons.txt --workers 8
  python -m amanet_fast.data.prepare kinetics --raw kinetics-skeleton --out data/kinetics --workers 8
  python -m amanet_fast.graphs dump ucla20 > my20.json   # a layout file to edit for your skeleton
  python -m amanet_fast.data.prepare pyskl --raw my_annotations.pkl --layout my20.json --out data/mine
  python -m amanet_fast.data.prepare arrays --raw my_clips/ --layout my20.json --out data/mine
  python -m amanet_fast.data.check data/mine               # counts, lengths, ranges, defects
"""


def build_parser(prog: str = "python -m amanet_fast.data.prepare", need_out: bool = True) -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Convert raw skeleton data into the memory-mapped prepared format "
                    "({train,val}_data_joint.npy, {train,val}_label.pkl, manifest.json).",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=KINDS)
    p.add_argument("--raw", type=Path, help="raw data location (per kind: see below)")
    if need_out:
        p.add_argument("--out", type=Path, required=True, help="output directory of the prepared dataset")
    p.add_argument("--split", help="benchmark: " + ", ".join(
        f"{'|'.join(d.benchmarks)} ({d.kind})" for d in DATASETS.values() if d.benchmarks)
        + "; NTU without --split (or all): every benchmark from one parse, into OUT/<benchmark>/")
    p.add_argument("--workers", type=int, default=1, help="worker processes for reading raw files")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable samples (listed in manifest.json) instead of stopping")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("NTU")
    g.add_argument("--ignore-list", type=Path, help="official list of samples with missing skeletons")
    g.add_argument("--pad", choices=("replay", "zero"), help="null frames after a body's last frame: replay it "
                   "(default, MS-G3D's pre-normalization) or leave zeros (for data.pad=zero)")
    g = p.add_argument_group("Kinetics-style JSON (kinetics, synthetic)")
    g.add_argument("--train-dir", type=Path, help="folder of train JSON clips (default RAW/kinetics_train)")
    g.add_argument("--val-dir", type=Path, help="folder of val JSON clips (default RAW/kinetics_val)")
    g.add_argument("--train-label-file", type=Path, help="default RAW/kinetics_train_label.json")
    g.add_argument("--val-label-file", type=Path, help="default RAW/kinetics_val_label.json "
                   "(a flat RAW with a single *val_label.json / *train_label.json is detected)")
    g.add_argument("--num-classes", type=int, help=f"kinetics: default {DATASETS['kinetics'].num_class}; "
                   "pyskl: default the class names' count, else max label + 1")
    g = p.add_argument_group("pyskl")
    g.add_argument("--train-split", default="train", help="name of the train split in the pickle")
    g.add_argument("--val-split", default="val", help="name of the val split in the pickle")
    g.add_argument("--unsplit-to", choices=("train", "val"), default="train",
                   help="split receiving all annotations of a pickle without a 'split' key")
    g.add_argument("--layout", help="skeleton layout: a layout JSON file (docs/design.md §4; start from `python -m "
                   f"amanet_fast.graphs dump ntu25`) or a built-in name ({', '.join(LAYOUTS)}). "
                   "Default: pyskl's own convention (2D 17 joints = coco17, 3D 25 joints = ntu25), else required")
    g.add_argument("--class-names", type=Path, help="text file with one class name per line, in label order "
                   "(default: the pickle's 'classes' / 'class_names' / 'label_names' list, if any)")
    g = p.add_argument_group("arrays (RAW/labels.csv + per-clip .npy/.csv; --layout required, --class-names "
                             "as for pyskl)")
    g.add_argument("--label-base", type=int, choices=(0, 1), help="integer labels count from 0 or 1 (default: "
                   "1-based when the smallest label is 1 and none is 0, and said so)")
    g = p.add_argument_group("synthetic")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--num-train", type=int, default=None)
    g.add_argument("--num-val", type=int, default=None)
    return p


def _check_out(args: argparse.Namespace) -> None:
    """--out may not be (inside) a raw folder nor any input file: checked before any reading."""
    from ..atomic import check_output_path

    if args.kind == "synthetic":  # its --raw is where the generated raw clips go, not an input
        return
    sources = [getattr(args, k, None) for k in ("raw", "train_dir", "val_dir", "train_label_file", "val_label_file",
                                                  "ignore_list", "class_names", "layout")]
    paths = [Path(s) for s in sources if s is not None]
    check_output_path(args.out, "--out", inputs=[p for p in paths if p.is_file()],
                      raw_dirs=[p for p in paths if p.is_dir()], directory=True)


def prepare(args: argparse.Namespace, command: str | None = None) -> Path:
    """Dispatch one parsed command line to its reader and run it."""
    if args.workers < 1:
        raise DataFormatError(f"--workers must be >= 1, got {args.workers}")
    _check_out(args)
    if args.kind == "synthetic":
        from .synthetic import DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, prepare_synthetic
        return prepare_synthetic(
            args.out, seed=args.seed,
            num_train=args.num_train if args.num_train is not None else DEFAULT_NUM_TRAIN,
            num_val=args.num_val if args.num_val is not None else DEFAULT_NUM_VAL,
            raw_dir=args.raw, workers=args.workers, command=command)
    if args.kind in ("ntu60", "ntu120") and args.raw is not None and (args.split is None or args.split == "all"):
        from .ntu import prepare_ntu_benchmarks  # parse once, write OUT/<benchmark>/ for each

        written = prepare_ntu_benchmarks(args.raw, args.kind, args.out, ignore_list=args.ignore_list,
                                         pad=args.pad or "replay", workers=args.workers, skip_bad=args.skip_bad,
                                         command=command, progress=False if args.no_progress else None)
        return args.out if len(written) > 1 else written[0]
    plan = make_plan(args)
    return run_plan(plan, args.out, workers=args.workers, skip_bad=args.skip_bad, command=command,
                    progress=False if args.no_progress else None)


def _read_class_names(path: Path) -> list[str]:
    if not path.is_file():
        raise DataFormatError("class-name file not found", path)
    names = [l.strip() for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    if not names:
        raise DataFormatError("class-name file is empty (expected one name per line)", path)
    return names


def _plan_ntu(args: argparse.Namespace, problems: Problems) -> DatasetPlan:
    from .ntu import plan_ntu

    if args.split is None or args.split == "all":  # prepare() writes every benchmark from one parse instead
        raise DataFormatError(f"--split is required here for {args.kind} ({'|'.join(DATASETS[args.kind].benchmarks)})")
    return plan_ntu(args.raw, args.kind, args.split, problems, ignore_list=args.ignore_list, pad=args.pad or "replay")


def _plan_kinetics(args: argparse.Namespace, problems: Problems) -> DatasetPlan:
    from .kinetics import plan_kinetics

    return plan_kinetics(args.raw, problems, train_dir=args.train_dir, val_dir=args.val_dir,
                         train_label_file=args.train_label_file, val_label_file=args.val_label_file,
                         num_classes=args.num_classes if args.num_classes is not None
                         else DATASETS["kinetics"].num_class)


def _plan_ucla(args: argparse.Namespace, problems: Problems) -> DatasetPlan:
    from .ucla import plan_ucla

    return plan_ucla(args.raw, problems)


def _plan_pyskl(args: argparse.Namespace, problems: Problems) -> DatasetPlan:
    from .pyskl import plan_pyskl

    return plan_pyskl(args.raw, problems, train_split=args.train_split, val_split=args.val_split,
                      unsplit_to=args.unsplit_to, layout=args.layout, num_classes=args.num_classes,
                      class_names=_read_class_names(args.class_names) if args.class_names else None)


def _plan_arrays(args: argparse.Namespace, problems: Problems) -> DatasetPlan:
    from .arrays import plan_arrays

    return plan_arrays(args.raw, problems, layout=args.layout, label_base=args.label_base,
                       class_names=_read_class_names(args.class_names) if args.class_names else None)


# prepare KIND -> its reader's plan (adding a reader: one entry here and its CLI options);
# synthetic generates its own raw data and is dispatched by prepare().
READERS: dict[str, Callable[[argparse.Namespace, Problems], DatasetPlan]] = {
    "ntu60": _plan_ntu, "ntu120": _plan_ntu, "kinetics": _plan_kinetics, "ucla": _plan_ucla,
    "pyskl": _plan_pyskl, "arrays": _plan_arrays,
}


def make_plan(args: argparse.Namespace) -> DatasetPlan:
    """The reader's plan for a parsed prepare command line (shared with `amanet_fast.data.check`)."""
    problems = Problems(args.skip_bad)
    kind = args.kind
    if kind not in ("pyskl", "arrays") and (getattr(args, "layout", None) or getattr(args, "class_names", None)):
        raise DataFormatError(f"--layout and --class-names are for pyskl and arrays data; {kind} has a fixed layout and classes")
    if args.raw is None:
        raise DataFormatError(f"--raw is required for {kind}")
    if args.pad is not None and kind not in ("ntu60", "ntu120"):
        raise DataFormatError(f"--pad is an NTU option ({kind} arrays are zero-filled; the training config's "
                              f"data.pad replays them at load time)")
    if kind not in READERS:
        raise DataFormatError(f"{kind} has no raw-data reader (choose one of {', '.join(READERS)})")
    plan = READERS[kind](args, problems)
    plan.skipped = problems.skipped + plan.skipped
    problems.skipped = []
    return plan


def _terminated(signum: int, frame) -> None:
    err = KeyboardInterrupt()
    err.signum = signum
    raise err


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    command = "python -m amanet_fast.data.prepare " + shlex.join(argv)
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)  # like Ctrl-C: workers ended, temp folder removed
    try:
        out = prepare(args, command=command)
    except (DataFormatError, LayoutError, FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # --out is a file, read-only or full: name the path, no traceback
        print(f"error: {err.filename + ': ' if err.filename else ''}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print("interrupted; nothing was written to the output directory", file=sys.stderr)
        return 128 + getattr(err, "signum", signal.SIGINT)
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
