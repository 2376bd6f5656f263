"""The format-agnostic half of `prepare`: a reader's `DatasetPlan` streamed into prepared arrays.

Readers (ntu, kinetics, ucla, pyskl, arrays, synthetic) build plans and may call `run_plan`,
`results` and `worker_pool`; nothing here imports a reader, so the data package has no import
circle (tests/test_import_graph.py). `run_plan` loads samples (in worker processes when it pays),
checks each, writes memory-mapped `.npy` files through `io.PreparedWriter` (atomic, manifest
last) and reports what was skipped or cut.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import multiprocessing
import sys
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np

from ..graphs import resolve_layout
from ..registry import coord_dims, dataset_for_kind
from .errors import DataFormatError
from .io import FORMAT_VERSION, NUM_FRAMES, NUM_PERSONS, PreparedWriter, data_file, label_file
from .plan import DatasetPlan, LoadResult, Problems, Sample

__all__ = ["run_plan", "results", "worker_pool", "usable_cores", "cpu_cores", "report_plan_outcome"]

log = logging.getLogger("amanet_fast.data.prepare")

_PROGRESS_MIN_SAMPLES = 200


def _load_guarded(load, sample: Sample) -> tuple[str, LoadResult | DataFormatError]:
    """Runs in workers: bad data comes back as a value so the parent decides (raise or skip)."""
    try:
        return "ok", load(sample.source)
    except DataFormatError as err:
        return "bad", err


def results(plan: DatasetPlan, samples: list[Sample], pool, workers: int) -> Iterator[tuple[str, object]]:
    if pool is None:
        for s in samples:
            yield _load_guarded(plan.load, s)
        return
    chunk = max(1, min(64, len(samples) // (workers * 8)))
    yield from pool.imap(partial(_load_guarded, plan.load), samples, chunksize=chunk)


def usable_cores() -> list[int]:
    """The cores this process may run on (its affinity mask, e.g. a scheduler's allocation)."""
    import os

    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return list(range(os.cpu_count() or 1))


def cpu_cores() -> int:
    """How many cores this process may use."""
    return len(usable_cores())


def _worker_init(parent: int) -> None:
    """Ctrl-C is the parent's to handle (it ends the pool); a worker whose parent died ends too
    instead of finishing its queue as an orphan."""
    import os
    import signal
    import threading
    import time

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


@contextlib.contextmanager
def worker_pool(workers: int, total: int):
    """One pool for all splits; None (in-process) when it would not pay for its start-up.

    Every exit (done, an error, Ctrl-C, SIGTERM turned into KeyboardInterrupt by prepare's CLI)
    terminates the workers and waits for them, so none is left running or unreaped."""
    import os

    if workers <= 1 or total < 2 * workers:
        yield None
        return
    # spawn: never fork a parent that may hold torch / thread state (ensure_synthetic from train.py).
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init, initargs=(os.getpid(),))
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


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
    with PreparedWriter(out_dir) as writer, worker_pool(workers, total) as pool:
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
            for sample, (status, result) in zip(samples, results(plan, samples, pool, workers)):
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
