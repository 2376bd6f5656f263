"""NTU RGB+D 60/120 `.skeleton` files -> MS-G3D's prepared arrays.

Reading follows MS-G3D's data_gen/ntu_gendata.py facts: at most 4 bodies per
frame are read (by their position in the frame), the 2 most active ones are
kept (activity = sum of the per-axis std over that body's non-zero frames,
ranked like `argsort()[::-1]`), only x, y, z are used. Then pre-normalization
as MS-G3D's data_gen/preprocess.py (see `pre_normalize`). Sample names are
the file names and labels the 0-based action numbers, as MS-G3D writes them.
"""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np

from ..registry import DATASETS
from .errors import COORD_LIMIT, DataFormatError, check_coordinates, read_text_file
from .io import NUM_FRAMES, NUM_PERSONS
from .plan import DatasetPlan, LoadResult, Problems, Sample

__all__ = ["read_skeleton_file", "select_bodies", "pre_normalize", "load_ntu_sample", "plan_ntu",
           "prepare_ntu_benchmarks",
           "NTU60_XSUB_TRAIN_SUBJECTS", "NTU120_XSUB_TRAIN_SUBJECTS", "NTU_XVIEW_TRAIN_CAMERAS"]

NUM_JOINTS = 25
MAX_BODIES_READ = 4  # MS-G3D's max_body_kinect

NTU60_XSUB_TRAIN_SUBJECTS = frozenset(
    [1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38])
NTU120_XSUB_TRAIN_SUBJECTS = NTU60_XSUB_TRAIN_SUBJECTS | frozenset(
    [45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86,
     89, 91, 92, 93, 94, 95, 97, 98, 100, 103])
NTU_XVIEW_TRAIN_CAMERAS = frozenset([2, 3])
BENCHMARKS = {k: DATASETS[k].benchmarks for k in ("ntu60", "ntu120")}
NUM_CLASSES = {k: DATASETS[k].num_class for k in ("ntu60", "ntu120")}

_NAME_RE = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})$")


# ---------------------------------------------------------------------------
# parsing


def _parse_int(line: str, path: Path, lineno: int, what: str) -> int:
    try:
        return int(line.strip())
    except ValueError:
        raise DataFormatError(f"expected {what} (an integer), got {line.strip()[:40]!r}", path, lineno) from None


def read_skeleton_file(path: str | Path, max_frames: int | None = None) -> tuple[np.ndarray, int]:
    """Parse one `.skeleton` file into `(bodies<=4, frames, 25, 3)` float64 x, y, z.

    Body slot m of a frame is the m-th body listed in that frame (MS-G3D's
    convention). With `max_frames`, later frames are parsed for validity but
    not stored; the count of frames dropped is returned beside the array.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise DataFormatError("not a text .skeleton file (undecodable bytes)", path) from None
    except OSError as err:  # a directory or a symlink loop named *.skeleton, an unreadable file
        raise DataFormatError(f"cannot read: {err.strerror or err}", path) from None
    lines = text.splitlines()  # CRLF and LF alike
    n_lines = len(lines)
    if n_lines == 0 or not lines[0].strip():
        raise DataFormatError("empty file", path, 1)
    num_frames = _parse_int(lines[0], path, 1, "frame count")
    if num_frames < 0:
        raise DataFormatError(f"negative frame count {num_frames}", path, 1)
    kept = num_frames if max_frames is None else min(num_frames, max_frames)
    out = np.zeros((MAX_BODIES_READ, kept, NUM_JOINTS, 3), dtype=np.float64)
    i = 1  # 0-based index of the next line

    def need(count: int, what: str) -> None:
        if i + count > n_lines:
            raise DataFormatError(
                f"truncated: expected {what} at line {n_lines + 1} but the file ends after {n_lines} lines "
                f"(header promised {num_frames} frames)", path, n_lines + 1)

    for t in range(num_frames):
        need(1, f"body count of frame {t + 1}")
        num_bodies = _parse_int(lines[i], path, i + 1, f"body count of frame {t + 1}")
        if num_bodies < 0:
            raise DataFormatError(f"negative body count {num_bodies}", path, i + 1)
        i += 1
        for m in range(num_bodies):
            need(2, f"body info of frame {t + 1}")
            if len(lines[i].split()) != 10:
                raise DataFormatError(
                    f"inconsistent: body info line of frame {t + 1} should have 10 values, "
                    f"has {len(lines[i].split())}", path, i + 1)
            num_joints = _parse_int(lines[i + 1], path, i + 2, "joint count")
            if num_joints != NUM_JOINTS:
                raise DataFormatError(f"wrong joint count {num_joints}, expected {NUM_JOINTS}", path, i + 2)
            i += 2
            need(NUM_JOINTS, f"{NUM_JOINTS} joint lines of frame {t + 1}")
            block = lines[i:i + NUM_JOINTS]
            joints = _parse_joint_block(block, path, i + 1)
            if m < MAX_BODIES_READ and t < kept:
                out[m, t] = joints
            i += NUM_JOINTS
    trailing = [k for k in range(i, n_lines) if lines[k].strip()]
    if trailing:
        raise DataFormatError(
            f"inconsistent: data after the {num_frames} frames the header announced", path, trailing[0] + 1)
    return out, num_frames - kept


def _parse_joint_block(block: list[str], path: Path, first_lineno: int) -> np.ndarray:
    """Fast path: one numpy conversion of 25 lines; on any problem, find the exact bad line."""
    fields = [line.split() for line in block]
    if all(len(f) == 12 for f in fields):
        try:
            values = np.array(fields, dtype=np.float64)[:, :3]
            if np.isfinite(values).all() and np.abs(values).max() <= COORD_LIMIT:
                return values
        except ValueError:
            pass
    for k, line in enumerate(block):
        if len(fields[k]) != 12:
            raise DataFormatError(f"joint line should have 12 values, has {len(fields[k])}", path, first_lineno + k)
        try:
            numbers = [float(v) for v in fields[k]]
        except ValueError:
            raise DataFormatError(f"non-numeric value in joint line: {line.strip()[:60]!r}", path,
                                  first_lineno + k) from None
        if not np.isfinite(numbers[:3]).all():
            raise DataFormatError(f"non-finite coordinate (NaN/inf) in joint line: {line.strip()[:60]!r}",
                                  path, first_lineno + k)
        check_coordinates(numbers[:3], path, f"joint line {line.strip()[:60]!r}", first_lineno + k)
    raise AssertionError("joint block failed the fast parse but no bad line was found")  # pragma: no cover


# ---------------------------------------------------------------------------
# body selection and pre-normalization


def _activity(body: np.ndarray) -> float:
    """MS-G3D's get_nonzero_std: per-axis std over the body's non-zero frames, summed."""
    frames = body[body.sum(axis=(-1, -2)) != 0]
    if len(frames) == 0:
        return 0.0
    return float(frames[..., 0].std() + frames[..., 1].std() + frames[..., 2].std())


def select_bodies(bodies: np.ndarray, keep: int = NUM_PERSONS) -> np.ndarray:
    """The `keep` most active bodies, most active first (ties: later slot first, as argsort()[::-1])."""
    energy = np.array([_activity(b) for b in bodies])
    order = np.argsort(energy, kind="stable")[::-1][:keep]
    out = bodies[order]
    if len(out) < keep:
        out = np.concatenate([out, np.zeros((keep - len(out), *bodies.shape[1:]), bodies.dtype)])
    return out


def _rotation_onto(v: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotation about v x target by the angle between them (identity for degenerate input).

    Same degenerate-case thresholds as MS-G3D's rotation.py (|axis|_1 or angle < 1e-6,
    or either vector ~0), written here as Rodrigues' formula.
    """
    axis = np.cross(v, target)
    if np.abs(v).sum() < 1e-6 or np.abs(target).sum() < 1e-6:
        return np.eye(3)
    cos = np.clip(np.dot(v / np.linalg.norm(v), target / np.linalg.norm(target)), -1.0, 1.0)
    theta = np.arccos(cos)
    if np.abs(axis).sum() < 1e-6 or abs(theta) < 1e-6:
        return np.eye(3)
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * (kx @ kx)


def pre_normalize(s: np.ndarray, zaxis: tuple[int, int] = (0, 1), xaxis: tuple[int, int] = (4, 8),
                  center_joint: int = 1, replay: bool = True) -> np.ndarray:
    """MS-G3D/2s-AGCN pre-normalization of one sample, `(M, T, V, 3)` float64, in place.

    1. Null frames: a body starting with empty frames is moved to the front;
       the empty tail after its last frame is filled by replaying the body
       (`replay=False`, prepare's `--pad zero`: the tail stays zero).
    2. Subtract the first body's center joint (spine mid), frame by frame,
       from the non-zero joints of every body.
    3. Rotate so the first body's bone `zaxis` = (from, to) joints at frame 0
       (spine base -> spine mid) lies on +z, then `xaxis` (left shoulder ->
       right shoulder, i.e. MS-G3D's `x[8] - x[4]`) on +x.
    """
    M, T = s.shape[:2]
    if s.sum() == 0:
        return s
    for p in range(M):
        person = s[p]
        if person.sum() == 0:
            continue
        if person[0].sum() == 0:
            valid = person.sum(axis=(-1, -2)) != 0
            moved = person[valid].copy()
            person[:] = 0
            person[:len(moved)] = moved
        frame_sums = person.sum(axis=(-1, -2))
        for f in range(T if replay else 0):
            if frame_sums[f] == 0 and person[f:].sum() == 0:
                reps = int(np.ceil((T - f) / f))
                person[f:] = np.concatenate([person[:f]] * reps, axis=0)[:T - f]
                break
    center = s[0][:, center_joint:center_joint + 1, :].copy()
    for p in range(M):
        if s[p].sum() == 0:
            continue
        mask = (s[p].sum(-1) != 0)[..., None]
        s[p] = (s[p] - center) * mask
    for a, b, target in ((zaxis[0], zaxis[1], np.array([0.0, 0.0, 1.0])),
                         (xaxis[0], xaxis[1], np.array([1.0, 0.0, 0.0]))):
        rot = _rotation_onto(s[0, 0, b] - s[0, 0, a], target)
        for p in range(M):
            if s[p].sum() == 0:
                continue
            nonzero = s[p].sum(axis=(-1, -2)) != 0
            s[p, nonzero] = s[p, nonzero] @ rot.T
    return s


def load_ntu_sample(path: Path, num_frames: int = NUM_FRAMES, pad: str = "replay") -> LoadResult:
    """One `.skeleton` file -> `(3, 300, 25, 2)` float32, prepared exactly as MS-G3D (pad="replay")."""
    bodies, dropped = read_skeleton_file(path, max_frames=num_frames)
    if not bodies.any():
        raise DataFormatError("no skeleton in any frame (one of the official missing-skeleton samples? "
                              "pass --ignore-list or --skip-bad)", path)
    chosen = select_bodies(bodies)
    s = np.zeros((NUM_PERSONS, num_frames, NUM_JOINTS, 3), dtype=np.float64)
    s[:, :chosen.shape[1]] = chosen
    # MS-G3D stores the raw read as float32 before normalizing; do the same for bit-level parity.
    s = s.astype(np.float32).astype(np.float64)
    pre_normalize(s, replay=pad == "replay")
    return LoadResult(np.ascontiguousarray(s.transpose(3, 1, 2, 0), dtype=np.float32), dropped)


# ---------------------------------------------------------------------------
# plan


def parse_ntu_name(name: str) -> dict[str, int] | None:
    m = _NAME_RE.match(name)
    if not m:
        return None
    setup, camera, subject, rep, action = map(int, m.groups())
    return {"setup": setup, "camera": camera, "subject": subject, "replication": rep, "action": action}


def is_training(info: dict[str, int], kind: str, benchmark: str) -> bool:
    if benchmark == "xsub":
        subjects = NTU60_XSUB_TRAIN_SUBJECTS if kind == "ntu60" else NTU120_XSUB_TRAIN_SUBJECTS
        return info["subject"] in subjects
    if benchmark == "xview":
        return info["camera"] in NTU_XVIEW_TRAIN_CAMERAS
    if benchmark == "xset":
        return info["setup"] % 2 == 0
    raise ValueError(f"unknown NTU benchmark {benchmark!r}")


def _read_ignore_list(path: Path) -> set[str]:
    if not path.is_file():
        raise DataFormatError("ignore list not found", path)
    names = set()
    for line in read_text_file(path, "ignore list").splitlines():
        line = line.strip()
        if line:
            names.add(line[:-len(".skeleton")] if line.endswith(".skeleton") else line)
    return names


def _class_names(raw: Path, kind: str, num_classes: int) -> list[str | None] | None:
    path = raw / f"label_map_{kind}.txt"
    if not path.is_file():
        return None
    names = [l.strip() for l in read_text_file(path, "label map").splitlines() if l.strip()]
    if len(names) != num_classes:
        raise DataFormatError(f"expected {num_classes} class names, found {len(names)}", path)
    return names


def plan_ntu(raw: str | Path, kind: str, benchmark: str, problems: Problems,
             ignore_list: str | Path | None = None, pad: str = "replay") -> DatasetPlan:
    raw = Path(raw)
    if kind not in BENCHMARKS:
        raise ValueError(f"kind must be one of {sorted(BENCHMARKS)}, got {kind!r}")
    if benchmark not in BENCHMARKS[kind]:
        raise DataFormatError(f"--split for {kind} must be one of {BENCHMARKS[kind]}, got {benchmark!r}")
    if not raw.is_dir():
        raise DataFormatError("raw NTU directory not found (expected the folder of .skeleton files)", raw)
    files = sorted(p for p in raw.iterdir() if p.suffix == ".skeleton")
    if not files:
        raise DataFormatError("no .skeleton files in this directory", raw)
    ignored = _read_ignore_list(Path(ignore_list)) if ignore_list else set()
    num_classes = NUM_CLASSES[kind]
    splits: dict[str, list[Sample]] = {"train": [], "val": []}
    for path in files:
        info = parse_ntu_name(path.stem)
        split_guess = None
        try:
            if info is None:
                raise DataFormatError("file name is not an NTU sample name (SsssCcccPpppRrrrAaaa.skeleton)", path)
            split_guess = "train" if is_training(info, kind, benchmark) else "val"
            if path.stem in ignored:
                problems.skip(path, "listed in the missing-skeleton ignore list", split_guess)
                continue
            if not 1 <= info["action"] <= num_classes:
                raise DataFormatError(f"action A{info['action']:03d} out of range for {kind} "
                                      f"(1..{num_classes}); use ntu120 for A061-A120", path)
        except DataFormatError as err:
            problems.report(err, split_guess)
            continue
        splits[split_guess].append(Sample(path.name, info["action"] - 1, path, str(path)))
    return DatasetPlan(
        kind=kind, benchmark=benchmark, layout=DATASETS[kind].layout, channels=DATASETS[kind].channels,
        num_classes=num_classes,
        classes=_class_names(raw, kind, num_classes), splits={k: v for k, v in splits.items() if v},
        load=partial(load_ntu_sample, pad=pad),
        options={"ignore_list": str(ignore_list) if ignore_list else None, "pad": pad},
        notes=[f"MS-G3D pre-normalization: {'replay' if pad == 'replay' else 'zero'}-padded null frames, "
               "spine-mid centered, spine base->spine mid on +z, right->left shoulder on +x"],
    )


def _load_parsed(source: tuple[str, int, int]) -> LoadResult:
    """A row of the parse-once cache (see `prepare_ntu_benchmarks`)."""
    path, row, dropped = source
    return LoadResult(np.array(np.load(path, mmap_mode="r")[row]), dropped)


def prepare_ntu_benchmarks(raw: str | Path, kind: str, out: str | Path, *, benchmarks: tuple[str, ...] | None = None,
                           ignore_list: str | Path | None = None, pad: str = "replay", workers: int = 1,
                           skip_bad: bool = False, command: str | None = None,
                           progress: bool | None = None) -> list[Path]:
    """Parse every `.skeleton` file once and write each benchmark to OUT/<benchmark>/.

    Parsing and pre-normalizing dominate NTU preparation; the benchmarks differ
    only in which split a sample goes to. So the files are read once into a
    temporary prepared array (OUT/.parsed-XXXX, removed afterwards) and every
    benchmark's splits are copied from it by the same driver as a single one.
    """
    import logging

    from .engine import results, run_plan, worker_pool
    from .io import PARSED_PREFIX, OwnedTempDir, report_temp_dirs

    log = logging.getLogger("amanet_fast.data.prepare")

    raw, out = Path(raw), Path(out)
    benchmarks = benchmarks or BENCHMARKS[kind]
    found = {b: Problems(skip_bad) for b in benchmarks}  # per benchmark: ignored / unusable files
    plans = {b: plan_ntu(raw, kind, b, found[b], ignore_list, pad) for b in benchmarks}
    first = plans[benchmarks[0]]
    samples = sorted((s for v in first.splits.values() for s in v), key=lambda s: s.name)
    out.mkdir(parents=True, exist_ok=True)
    report_temp_dirs(out, log, (PARSED_PREFIX,))
    owned = OwnedTempDir(out, PARSED_PREFIX)
    tmp = owned.path
    try:
        cache = tmp / "parsed.npy"
        arr = np.lib.format.open_memmap(cache, mode="w+", dtype=np.float32,
                                        shape=(len(samples), 3, NUM_FRAMES, NUM_JOINTS, NUM_PERSONS))
        rows: dict[str, tuple[int, int]] = {}
        bad: dict[str, DataFormatError] = {}
        with worker_pool(workers, len(samples)) as pool:
            for i, (sample, (status, result)) in enumerate(zip(samples, results(first, samples, pool, workers))):
                if status == "ok":
                    arr[i] = result.data
                    rows[sample.name] = (i, result.dropped_frames)
                elif not skip_bad:
                    raise result
                else:
                    bad[sample.name] = result
        arr.flush()
        del arr
        written = []
        for b, plan in plans.items():
            problems = found[b]
            for split, items in plan.splits.items():
                kept = []
                for smp in items:
                    if smp.name in bad:
                        problems.report(bad[smp.name], split)
                    else:
                        row, dropped = rows[smp.name]
                        kept.append(Sample(smp.name, smp.label, (str(cache), row, dropped), smp.where))
                plan.splits[split] = kept
            plan.splits = {k: v for k, v in plan.splits.items() if v}
            plan.skipped = problems.skipped + plan.skipped
            plan.load = _load_parsed
            plan.notes.append("parsed once for every benchmark of this kind")
            written.append(run_plan(plan, out / b, skip_bad=skip_bad, command=command, progress=progress))
        return written
    finally:
        owned.remove()
