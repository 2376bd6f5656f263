"""`python -m amanet_fast.data.prepare KIND --raw PATH --out DIR`: raw skeletons -> prepared arrays.

The driver here is format-agnostic: a reader module builds a `DatasetPlan`,
`run_plan` streams it into memory-mapped `.npy` files (optionally with worker
processes), and `io.PreparedWriter` moves everything into place atomically,
manifest last. User-data problems raise `DataFormatError`; the CLI prints them
as one `error: ...` line and exits 2.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import logging
import multiprocessing
import shlex
import sys
from functools import partial
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..graphs import LAYOUTS, LayoutError, resolve_layout
from ..registry import DATASETS, KINDS as _REGISTRY_KINDS, coord_dims, dataset_for_kind
from .errors import DataFormatError
from .io import FORMAT_VERSION, NUM_FRAMES, NUM_PERSONS, PreparedWriter, data_file, label_file
from .plan import DatasetPlan, LoadResult, Problems, Sample
from ..argparse_util import ArgumentParser

__all__ = ["KINDS", "run_plan", "prepare", "make_plan", "main", "build_parser"]

log = logging.getLogger("amanet_fast.data.prepare")

KINDS = tuple(_REGISTRY_KINDS)
_PROGRESS_MIN_SAMPLES = 200


def _load_guarded(load, sample: Sample) -> tuple[str, LoadResult | DataFormatError]:
    """Runs in workers: bad data comes back as a value so the parent decides (raise or skip)."""
    try:
        return "ok", load(sample.source)
    except DataFormatError as err:
        return "bad", err


def _results(plan: DatasetPlan, samples: list[Sample], pool, workers: int) -> Iterator[tuple[str, object]]:
    if pool is None:
        for s in samples:
            yield _load_guarded(plan.load, s)
        return
    chunk = max(1, min(64, len(samples) // (workers * 8)))
    yield from pool.imap(partial(_load_guarded, plan.load), samples, chunksize=chunk)


def cpu_cores() -> int:
    """CPU cores this process may use (its affinity mask, e.g. a scheduler's allocation)."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _worker_pool(workers: int, total: int):
    """One pool for all splits; None (in-process) when it would not pay for its start-up."""
    if workers <= 1 or total < 2 * workers:
        yield None
        return
    # spawn: never fork a parent that may hold torch / thread state (ensure_synthetic from train.py).
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield pool


def _check_sample(arr: np.ndarray, shape: tuple[int, ...], sample: Sample) -> None:
    if arr.shape != shape:
        raise DataFormatError(f"prepared sample has shape {arr.shape}, expected {shape}", sample.where or sample.name)
    if not np.isfinite(arr).all():
        raise DataFormatError("non-finite (NaN/inf) coordinates", sample.where or sample.name)


def run_plan(plan: DatasetPlan, out_dir: str | Path, *, workers: int = 1, skip_bad: bool = False,
             command: str | None = None, progress: bool | None = None, extra: dict | None = None) -> Path:
    """Stream every split of `plan` into `out_dir` (atomic; returns `out_dir`)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if not plan.splits:
        raise _all_bad("no samples found for any split (train/val)", plan.skipped, None, out_dir)
    layout = resolve_layout(plan.layout)
    V = layout.num_joints
    C = len(plan.channels)
    shape = (C, NUM_FRAMES, V, NUM_PERSONS)
    problems = Problems(skip_bad)
    splits_info: dict[str, dict] = {}
    total = sum(len(v) for v in plan.splits.values())
    if workers > cpu_cores():
        log.info("--workers %d -> %d: this machine gives the process %d CPU cores", workers, cpu_cores(),
                 cpu_cores())
        workers = cpu_cores()
    with PreparedWriter(out_dir) as writer, _worker_pool(workers, total) as pool:
        for split, samples in plan.splits.items():
            arr = writer.open_data(split, (len(samples), *shape))
            names: list[str] = []
            labels: list[int] = []
            dropped = 0
            with_dropped = 0
            longest = 0
            show = progress if progress is not None else len(samples) >= _PROGRESS_MIN_SAMPLES
            bar = tqdm(total=len(samples), desc=f"{plan.kind} {split}", unit="clip", disable=not show,
                       file=sys.stderr)
            for sample, (status, result) in zip(samples, _results(plan, samples, pool, workers)):
                bar.update(1)
                if status == "ok":
                    try:
                        _check_sample(result.data, shape, sample)
                    except DataFormatError as err:
                        status, result = "bad", err
                if status == "bad":
                    problems.report(result, split)
                    continue
                arr[len(names)] = result.data
                names.append(sample.name)
                labels.append(sample.label)
                dropped += result.dropped_frames
                with_dropped += result.dropped_frames > 0
                longest = max(longest, result.dropped_frames)
            bar.close()
            if not names:
                raise _all_bad(f"every sample of split {split!r} was bad; nothing to write",
                               plan.skipped + problems.skipped, split, out_dir)
            arr.flush()
            arr = writer.shrink_data(split, arr, len(names))
            del arr
            writer.write_labels(split, names, labels)
            splits_info[split] = {
                "count": len(names), "data": data_file(split), "label": label_file(split),
                "dropped_frames": int(dropped), "samples_with_dropped_frames": int(with_dropped),
                "longest_frames": int(NUM_FRAMES + longest) if with_dropped else None,
            }
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": plan.kind,
            "dataset": dataset_for_kind(plan.kind),
            "split": plan.benchmark,
            "layout": layout.to_dict(),
            "num_channels": C,
            "channels": list(plan.channels),
            "coord_dims": coord_dims(plan.channels),
            "num_frames": NUM_FRAMES,
            "num_joints": V,
            "num_persons": NUM_PERSONS,
            "num_classes": plan.num_classes,
            "classes": plan.classes if plan.classes is not None else [None] * plan.num_classes,
            "counts": {k: v["count"] for k, v in splits_info.items()},
            "splits": splits_info,
            "dropped_frames": {k: v["dropped_frames"] for k, v in splits_info.items()},
            "skipped": plan.skipped + problems.skipped,
            "notes": plan.notes,
            "options": plan.options,
            "prepare_command": command,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if extra:
            manifest.update(extra)
        writer.commit(manifest)
    report_plan_outcome(plan, layout, splits_info, problems.skipped, out_dir)
    return out_dir


def report_plan_outcome(plan: DatasetPlan, layout, splits_info: dict[str, dict], skipped: list[dict],
                        out_dir: Path) -> None:
    """Say what was left out or cut, instead of only recording it in the manifest."""
    by_reason: dict[str, list[str]] = {}
    for rec in plan.skipped + skipped:
        by_reason.setdefault(rec["reason"], []).append(str(rec.get("file") or ""))
    for reason, files in by_reason.items():
        shown = ", ".join(Path(f).name for f in files[:3] if f and f not in reason)
        more = f" and {len(files) - 3} more" if len(files) > 3 else ""
        log.warning("skipped %d sample(s): %s%s", len(files), reason, f" ({shown}{more})" if shown else "")
    for split, info in splits_info.items():
        if info["samples_with_dropped_frames"]:
            log.warning("%s: %d of %d samples were longer than %d frames: %d frames past frame %d were dropped "
                        "(longest %d frames)", split, info["samples_with_dropped_frames"], info["count"],
                        NUM_FRAMES, info["dropped_frames"], NUM_FRAMES, info["longest_frames"])
    skipped_n = len(plan.skipped) + len(skipped)
    log.info("prepared %s -> %s: %s%s | layout %s (%d joints%s) | channels %s | %d classes", plan.kind, out_dir,
             ", ".join(f"{k} {v['count']}" for k, v in splits_info.items()),
             f", {skipped_n} skipped (listed in manifest.json)" if skipped_n else "",
             layout.name, layout.num_joints, f", {len(layout.parts)} DP parts" if layout.parts else "",
             "/".join(plan.channels), plan.num_classes)
    if not layout.parts:
        log.warning("layout %s has no DP body parts: AMANet's default dp_mode=alien will refuse it; add \"parts\" "
                    "to the layout file and prepare again, or train with model.args.dp_mode=center or none",
                    layout.name)


def _all_bad(what: str, skipped: list[dict], split: str | None, out_dir: Path) -> DataFormatError:
    """Name the input that was bad (the first skipped one), not the output dir."""
    first = next((r for r in skipped if split is None or r.get("split") in (split, None)), None)
    if first is None or not first.get("file"):
        return DataFormatError(what, out_dir)
    return DataFormatError(f"{what}: {len(skipped)} skipped, the first: {first['reason']}", first["file"],
                           first.get("line"))


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
    if kind in ("ntu60", "ntu120"):
        from .ntu import plan_ntu
        if args.split is None or args.split == "all":  # prepare() writes every benchmark from one parse instead
            raise DataFormatError(f"--split is required here for {kind} ({'|'.join(DATASETS[kind].benchmarks)})")
        plan = plan_ntu(args.raw, kind, args.split, problems, ignore_list=args.ignore_list, pad=args.pad or "replay")
    elif kind == "kinetics":
        from .kinetics import plan_kinetics
        plan = plan_kinetics(args.raw, problems, train_dir=args.train_dir, val_dir=args.val_dir,
                             train_label_file=args.train_label_file, val_label_file=args.val_label_file,
                             num_classes=args.num_classes if args.num_classes is not None
                             else DATASETS["kinetics"].num_class)
    elif kind == "ucla":
        from .ucla import plan_ucla
        plan = plan_ucla(args.raw, problems)
    elif kind == "pyskl":
        from .pyskl import plan_pyskl
        plan = plan_pyskl(args.raw, problems, train_split=args.train_split, val_split=args.val_split,
                          unsplit_to=args.unsplit_to, layout=args.layout, num_classes=args.num_classes,
                          class_names=_read_class_names(args.class_names) if args.class_names else None)
    elif kind == "arrays":
        from .arrays import plan_arrays
        plan = plan_arrays(args.raw, problems, layout=args.layout, label_base=args.label_base,
                           class_names=_read_class_names(args.class_names) if args.class_names else None)
    else:  # pragma: no cover - argparse restricts choices
        raise ValueError(kind)
    plan.skipped = problems.skipped + plan.skipped
    problems.skipped = []
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = build_parser().parse_args(argv)
    command = "python -m amanet_fast.data.prepare " + shlex.join(argv)
    try:
        out = prepare(args, command=command)
    except (DataFormatError, LayoutError, FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # --out is a file, read-only or full: name the path, no traceback
        print(f"error: {err.filename + ': ' if err.filename else ''}{err.strerror or err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing was written to the output directory", file=sys.stderr)
        return 130
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
