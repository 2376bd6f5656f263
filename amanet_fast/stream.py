"""Recognise actions live: a causal window over arriving frames, a prediction every K frames.

    producer | python -m amanet_fast.stream --checkpoint J/best.pt --checkpoint B/best.pt --every 5 --topk 3
    python -m amanet_fast.stream --checkpoint best.pt --replay clip.skeleton --fps 30
    python -m amanet_fast.stream evaluate-early --checkpoint best.pt --data-root PREPARED_DIR --out early/

Input: one JSON frame per line (stdin or `--input FILE`):
`{"joints": [[[x, y, z], ...V joints] per person], "scores": [[s, ...V] per person] (optional), "t": seconds}`
(`null` for a tracked person absent from this frame, so the others keep their slots),
in the checkpoint's layout and channels and in the coordinate convention of the prepared data
(as `prepare` writes it). A checkpoint whose last channel is a detection score (Kinetics) takes
either V x C values per person or V x (C-1) plus "scores". `--replay` reads any raw file the
readers accept (NW-UCLA / Kinetics JSON, NTU .skeleton; prepare's reader and normalization) and
feeds its frames at `--fps`.

Output: one JSON line per update on stdout — the frame index, the buffered frame count, top-k
classes with probabilities and the update's latency in ms. The prediction is `Predictor`'s on
the buffered frames (`predict_arrays`, hence `model_input`: clip length, padding, stream, fusion),
so a full buffer gives exactly what `python -m amanet_fast.predict` gives for those frames.

A bad frame (wrong joint count or channels, NaN, a missing or extra person, a timestamp that goes
back, malformed JSON) is one `warning:` line on stderr and skipped; a time gap longer than
`--max-gap` restarts the window; a stalled input is reported once per stall; end of input ends
the stream with exit 0.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import select
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .data.errors import COORD_LIMIT, DataFormatError
from .predict import PredictError, Predictor, run_cli

__all__ = ["Stream", "Update", "FrameError", "early_accuracy", "main"]

log = logging.getLogger("amanet_fast.stream")

PRECISIONS = ("fp32", "bf16")
DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 11))


class FrameError(DataFormatError):
    """One live frame that cannot be used; the stream warns and skips it."""


@dataclass
class Update:
    frame: int                     # index of the input frame that triggered the update (0-based, skipped ones count)
    frames: int                    # frames in the window the prediction saw
    probabilities: np.ndarray      # fused, sums to 1
    topk: list[tuple[int, str, float]]
    latency_ms: float              # window assembly + preprocessing + forward + fusion
    t: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"frame": self.frame, "t": self.t, "frames": self.frames,
                "topk": [{"label": i, "class": n, "probability": round(float(p), 6)} for i, n, p in self.topk],
                "latency_ms": round(self.latency_ms, 3)}


class Stream:
    """A causal buffer of the last `window` frames in front of a `Predictor`.

    >>> s = Stream("work_dirs/ucla_joint/best.pt", every=5, topk=3)
    >>> for frame in frames:            # (C, V, M) arrays or JSON-frame dicts
    ...     update = s.push(frame)       # an Update every 5th accepted frame, else None
    """

    def __init__(self, checkpoints: str | Path | Sequence[str | Path] | None = None,
                 weights: Sequence[float] | None = None, *, window: int | None = None, every: int = 1,
                 topk: int = 5, device: str | torch.device = "cpu", precision: str = "fp32",
                 max_gap: float | None = 1.0, kernel_backend: str = "auto",
                 predictor: Predictor | None = None, warm: bool = True) -> None:
        if predictor is None:
            predictor = Predictor(checkpoints, weights, device=device, kernel_backend=kernel_backend)
        self.predictor = predictor
        models = predictor.models
        if every < 1:
            raise PredictError(f"--every: expected an integer >= 1, got {every}")
        if topk < 1:
            raise PredictError(f"--topk: expected an integer >= 1, got {topk}")
        if precision not in PRECISIONS:
            raise PredictError(f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
        if max_gap is not None and not max_gap > 0:
            raise PredictError(f"--max-gap: expected seconds > 0, got {max_gap}")
        channels = {tm.in_channels for tm in models}
        if len(channels) != 1:
            raise PredictError(f"--checkpoint: the checkpoints take different channel counts {sorted(channels)}; "
                               "fuse checkpoints trained on the same data")
        lens = [tm.clip_len for tm in models if tm.clip_len is not None]
        # Whole-clip resampling (data.resample) takes any number of frames: its length is the default window.
        resampled = [tm.inputs.protocol.resample for tm in models if tm.inputs.protocol.resample is not None]
        if window is None:
            if not lens and not resampled:
                raise PredictError("--window: the checkpoint fixes no clip length (data.clip_len is null); "
                                   "give the window in frames")
            window = min(lens or resampled)
        if window < 1:
            raise PredictError(f"--window: expected an integer >= 1, got {window}")
        if lens and window > min(lens):
            # model_input would crop the centre of a longer buffer, dropping the newest frames.
            raise PredictError(f"--window: {window} frames is longer than the clip length {min(lens)} the "
                               f"checkpoint was trained on; use --window {min(lens)} or less")
        self.window, self.every, self.topk = int(window), int(every), int(topk)
        self.precision, self.max_gap = precision, max_gap
        first = models[0]
        self.channels = first.in_channels
        self.joints = first.layout.num_joints
        self.persons = min(tm.num_person for tm in models)
        coord_dims = getattr(getattr(first.model, "config", None), "coord_dims", None)
        # The score channel, when the data has one, is the last; frames may then give it apart as "scores".
        self.has_score = coord_dims is not None and coord_dims < self.channels
        self.class_names = predictor.class_names
        self._ring = np.zeros((self.channels, self.window, self.joints, self.persons), np.float32)
        self.reset()
        if warm:
            # The first forward pays one-off costs (kernel backend choice, oneDNN primitives): seconds on
            # a loaded CPU. Paid here, so the first live update is as fast as the rest.
            # A non-zero clip: an all-zero one is refused as "no skeleton" by the input checks.
            self.probabilities([np.ones_like(self._ring)])
        self.received = 0       # frames offered, skipped ones included
        self.accepted = 0
        self.last_t: float | None = None

    # ------------------------------------------------------------------ buffer

    def reset(self) -> None:
        """Empty the window (a gap in the input: old frames no longer belong to the action)."""
        self._ring[:] = 0
        self._head = 0      # slot of the next frame
        self._count = 0

    def frames(self) -> np.ndarray:
        """The buffered frames, oldest first, as a (C, n, V, M) array."""
        if self._count < self.window:
            return self._ring[:, :self._count].copy()
        return np.concatenate([self._ring[:, self._head:], self._ring[:, :self._head]], axis=1)

    # ------------------------------------------------------------------ frames

    def parse(self, frame: Any, where: str) -> tuple[np.ndarray, float | None]:
        """A JSON frame (dict) or a (C, V, M) array -> a checked (C, V, M) float32 array and its time."""
        t = None
        if isinstance(frame, np.ndarray):
            x = frame
        elif isinstance(frame, dict):
            x = self._joints(frame, where)
            t = self._time(frame.get("t"), where)
        else:
            raise FrameError(f"a frame must be a JSON object with 'joints', got {type(frame).__name__}", where)
        if x.ndim != 3 or x.shape[0] != self.channels or x.shape[1] != self.joints:
            raise FrameError(f"frame shape {x.shape} does not fit the checkpoint: expected (C={self.channels}, "
                             f"V={self.joints}, persons)", where)
        if x.ndim == 3 and x.shape[2] > self.persons and not x[:, :, self.persons:].any():
            x = x[:, :, :self.persons]  # all-zero slots are absent persons (prepared arrays have 2 for NW-UCLA)
        if x.shape[2] > self.persons:
            raise FrameError(f"{x.shape[2]} persons, the checkpoint takes at most {self.persons}; send the "
                             f"{self.persons} to recognise", where)
        if not np.isfinite(x).all():
            raise FrameError("non-finite (NaN/inf) value; send finite coordinates (drop frames without a pose)",
                             where)
        if (np.abs(x) > COORD_LIMIT).any():
            raise FrameError(f"a coordinate beyond {COORD_LIMIT:g} (corrupt?); send the prepared coordinates",
                             where)
        if not x.any():
            raise FrameError("no person in the frame (all zeros); send frames with a detected skeleton", where)
        return np.asarray(x, np.float32), t

    def _joints(self, frame: dict, where: str) -> np.ndarray:
        joints = frame.get("joints")
        if not isinstance(joints, list):
            raise FrameError("missing 'joints' (a list of persons, each V joints x C values)", where)
        # null holds the slot of a person not seen in this frame, so the others keep their slots.
        slots = [m for m, person in enumerate(joints) if person is not None]
        if not slots:
            raise FrameError("no person in the frame ('joints' is empty); send frames with a detected skeleton",
                             where)
        try:
            arr = np.array([joints[m] for m in slots])
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.dtype.kind not in "iuf" or arr.ndim != 3:
            raise FrameError(f"'joints' must be persons x {self.joints} joints x values, all numbers, with "
                             "the same joint and value count for every person", where)
        if arr.shape[1] != self.joints:
            raise FrameError(f"{arr.shape[1]} joints per person; the checkpoint's skeleton has {self.joints}",
                             where)
        scores = frame.get("scores")
        width = arr.shape[2]
        if scores is not None:
            if not isinstance(scores, list) or len(scores) != len(joints):
                raise FrameError(f"'scores' must list one entry per entry of 'joints' ({len(joints)})", where)
            if not self.has_score:
                raise FrameError("'scores' given, but the checkpoint's data has no score channel; drop 'scores'",
                                 where)
            if width != self.channels - 1:
                raise FrameError(f"with 'scores' each joint takes {self.channels - 1} values, got {width}", where)
            try:
                s = np.array([scores[m] for m in slots])
            except (TypeError, ValueError):
                s = None
            if s is None or s.dtype.kind not in "iuf" or s.shape != arr.shape[:2]:
                raise FrameError(f"'scores' must be persons x {self.joints} numbers, matching 'joints' "
                                 f"{arr.shape[:2]}", where)
            arr = np.concatenate([arr, s[..., None]], axis=2)
        elif width != self.channels:
            extra = f", or {self.channels - 1} plus 'scores'" if self.has_score else ""
            raise FrameError(f"{width} values per joint; the checkpoint takes {self.channels}{extra}", where)
        for k, m in enumerate(slots):
            # Listed persons are detections; an all-zero one would read as absent in prepared data.
            if not arr[k].any():
                raise FrameError(f"person {m} is all zeros (a missing person); leave absent persons out or "
                                 "send null in their place", where)
        out = np.zeros((len(joints), *arr.shape[1:]))
        out[slots] = arr
        return out.transpose(2, 1, 0)  # (M, V, C) -> (C, V, M)

    @staticmethod
    def _time(t: Any, where: str) -> float | None:
        if t is None:
            return None
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise FrameError(f"'t' must be a finite number of seconds, got {t!r}", where)
        return float(t)

    def push(self, frame: Any, where: str | None = None) -> Update | None:
        """Add one frame; an Update when this frame completes `every` accepted frames, else None.

        Raises FrameError (the frame is not added) for a frame that cannot be used.
        """
        index = self.received
        self.received += 1
        where = where or f"frame {index}"
        x, t = self.parse(frame, where)
        if t is not None and self.last_t is not None:
            if t <= self.last_t:
                raise FrameError(f"timestamp {t:g} is not after the previous frame's {self.last_t:g}; "
                                 "send frames in time order", where)
            if self.max_gap is not None and t - self.last_t > self.max_gap:
                print(f"warning: {where}: {t - self.last_t:.3g} s since the previous frame (more than --max-gap "
                      f"{self.max_gap:g} s): the window restarts at this frame", file=sys.stderr, flush=True)
                self.reset()
        if t is not None:
            self.last_t = t
        self._ring[:, self._head] = 0
        self._ring[:, self._head, :, :x.shape[2]] = x
        self._head = (self._head + 1) % self.window
        self._count = min(self._count + 1, self.window)
        self.accepted += 1
        if self.accepted % self.every:
            return None
        return self.predict_now(index, t)

    # ------------------------------------------------------------------ prediction

    def probabilities(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """(C, n, V, M) windows -> fused probabilities (N, classes): Predictor on each, at this precision."""
        with torch.autocast(self.predictor.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.predictor.predict_arrays(list(clips))

    def predict_now(self, index: int | None = None, t: float | None = None) -> Update:
        """The prediction on the current window."""
        t0 = time.perf_counter()
        clip = self.frames()
        if clip.shape[1] == 0:
            raise PredictError("the window is empty: push frames first")
        probs = self.probabilities([clip])[0]
        latency = (time.perf_counter() - t0) * 1e3
        k = min(self.topk, len(probs))
        order = np.argsort(-probs, kind="stable")[:k]
        return Update(self.received - 1 if index is None else index, clip.shape[1], probs,
                      [(int(i), self.class_names[i], float(probs[i])) for i in order], latency, t)


# ----------------------------------------------------------------------------- early recognition


def prefix_window(x: np.ndarray, observed: int, window: int) -> np.ndarray:
    """The window a Stream holds after the first `observed` frames of clip x (C, T, V, M)."""
    return x[:, max(0, observed - window):observed]


def early_accuracy(stream: Stream, data: np.ndarray, labels: Sequence[int],
                   fractions: Sequence[float] = DEFAULT_FRACTIONS, batch: int = 16) -> list[dict[str, float]]:
    """Top-1/top-5 accuracy when only the first fraction of each clip's valid frames has been seen.

    Each clip's valid frames (first to last non-zero frame, as prepared) are its length; the prefix
    is cut causally and, like the live window, only its last `stream.window` frames are seen.
    """
    from .data.augment import valid_range

    labels = np.asarray(labels)
    ranges = [valid_range(np.asarray(data[i])) for i in range(len(labels))]
    rows = []
    for f in fractions:
        hits1 = hits5 = 0
        seen = []
        for start in range(0, len(labels), batch):
            clips = []
            for i in range(start, min(start + batch, len(labels))):
                b, e = ranges[i]
                n = max(1, math.ceil(f * (e - b) - 1e-9))
                seen.append(n)
                clips.append(prefix_window(np.asarray(data[i][:, b:e], np.float32), n, stream.window))
            probs = stream.probabilities(clips)
            y = labels[start:start + len(clips)]
            top = np.argsort(-probs, axis=1, kind="stable")[:, :5]
            hits1 += int((top[:, 0] == y).sum())
            hits5 += int((top == y[:, None]).any(axis=1).sum())
        rows.append({"fraction": float(f), "mean_frames": float(np.mean(seen)), "top1": hits1 / len(labels),
                     "top5": hits5 / len(labels), "clips": int(len(labels))})
    return rows


def _plot(rows: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .atomic import write_atomic

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    xs = [100 * r["fraction"] for r in rows]
    ax.plot(xs, [100 * r["top1"] for r in rows], "o-", label="top-1")
    ax.plot(xs, [100 * r["top5"] for r in rows], "s--", label="top-5")
    ax.set_xlabel("observed part of the clip (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    try:
        write_atomic(path, lambda fh: fig.savefig(fh, format="png"))
    finally:
        plt.close(fig)


def evaluate_early(args: argparse.Namespace) -> dict[str, Any]:
    from .atomic import write_text_atomic
    from .data.io import data_file, label_file, open_prepared_array, read_label_pickle, read_manifest

    fractions = args.fractions
    if any(not 0 < f <= 1 for f in fractions):
        raise PredictError(f"--fractions: expected values in (0, 1], got {fractions}")
    root = Path(args.data_root)
    if read_manifest(root) is None:
        raise PredictError(f"--data-root: {root} holds no manifest.json; give a folder written by "
                           "python -m amanet_fast.data.prepare")
    stream = Stream(args.checkpoint, args.weights, window=args.window, device=args.device,
                    precision=args.precision, warm=False)
    data = open_prepared_array(root / data_file(args.split))
    _, labels = read_label_pickle(root / label_file(args.split))
    if len(labels) != len(data):
        raise DataFormatError(f"{len(labels)} labels for {len(data)} samples", root / label_file(args.split))
    n = len(labels) if args.limit is None else min(args.limit, len(labels))
    rows = early_accuracy(stream, data[:n], labels[:n], fractions)
    out = Path(args.out)
    csv = "fraction,mean_frames,top1,top5,clips\n" + "".join(
        f"{r['fraction']:.2f},{r['mean_frames']:.1f},{r['top1']:.4f},{r['top5']:.4f},{r['clips']}\n" for r in rows)
    write_text_atomic(out / "early_recognition.csv", csv)
    names = ", ".join(Path(c).parent.name + "/" + Path(c).name for c in args.checkpoint)
    _plot(rows, out / "early_recognition.png", f"{names}: {args.split}, window {stream.window}, {n} clips")
    return {"rows": rows, "csv": out / "early_recognition.csv", "png": out / "early_recognition.png",
            "window": stream.window}


def format_early(rows: list[dict[str, float]]) -> str:
    lines = ["observed  frames   top-1   top-5"]
    for r in rows:
        lines.append(f"{100 * r['fraction']:>7.0f}%  {r['mean_frames']:>6.1f}  {100 * r['top1']:>5.1f}%  "
                     f"{100 * r['top5']:>5.1f}%")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- input


STALL = object()


def read_lines(fd: int, stall_s: float | None) -> Iterator[tuple[int, bytes] | object]:
    """Lines of a file descriptor as they arrive; STALL after `stall_s` seconds without a complete line."""
    buf = b""
    lineno = 0
    while True:
        if stall_s is not None:
            ready, _, _ = select.select([fd], [], [], stall_s)
            if not ready:
                yield STALL
                continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            if buf:
                yield lineno + 1, buf
            return
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            lineno += 1
            yield lineno, line


def json_frames(fd: int, name: str, stall_s: float | None) -> Iterator[tuple[Any, str] | object]:
    """(frame object or FrameError, where) per non-blank line; STALL passes through."""
    for item in read_lines(fd, stall_s):
        if item is STALL:
            yield item
            continue
        lineno, raw = item
        where = f"{name}:{lineno}"
        if not raw.strip():
            continue  # blank lines are keep-alives, not frames
        try:
            yield json.loads(raw), where
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            msg = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
            yield FrameError(f"malformed JSON ({msg}); send one JSON object per line", where), where
        except RecursionError:
            yield FrameError("JSON nested too deeply to be a frame", where), where


def replay_frames(stream: Stream, path: Path, fps: float) -> Iterator[tuple[Any, str]]:
    """The frames of a raw file, through prepare's reader, at `fps` (0: as fast as they are taken)."""
    from .data.augment import valid_range

    samples = stream.predictor.read(path)
    for s in samples:
        begin, end = valid_range(s.data)
        if path.suffix.lower() == ".skeleton":
            # NTU samples come replay-padded to 300 frames, leading bodyless frames dropped and trailing
            # ones filled: replay only the span the file recorded bodies in.
            from .data.ntu import read_skeleton_file

            with_body = np.flatnonzero(read_skeleton_file(path, max_frames=s.data.shape[1])[0].any(axis=(0, 2, 3)))
            end = min(end, begin + int(with_body[-1] - with_body[0]) + 1)
        log.info("replaying %s: %d frames at %s", s.name, end - begin, f"{fps:g} fps" if fps else "full speed")
        start = time.perf_counter()
        for i, f in enumerate(range(begin, end)):
            if fps:
                delay = start + i / fps - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            x = s.data[:, f]
            present = [m for m in range(x.shape[2]) if x[:, :, m].any()]
            # As a live source with person tracking: the persons present, null in the slot of one
            # absent before another (NTU's most active body may be missing from a frame).
            joints = [x[:, :, m].T.tolist() if m in present else None for m in range(present[-1] + 1 if present else 0)]
            yield {"joints": joints, "t": round(i / fps, 6) if fps else None}, f"{s.name}:frame {f}"


# ----------------------------------------------------------------------------- CLI


def _warn(err: Exception) -> None:
    print(f"warning: {err}; frame skipped", file=sys.stderr, flush=True)


def run_stream(args: argparse.Namespace) -> dict[str, int]:
    if args.replay is not None and args.input is not None:
        raise PredictError("--replay and --input: give one source")
    if args.fps < 0:
        raise PredictError(f"--fps: expected frames per second >= 0 (0: full speed), got {args.fps}")
    if args.stall is not None and not args.stall > 0:
        raise PredictError(f"--stall: expected seconds > 0, got {args.stall}")
    stream = Stream(args.checkpoint, args.weights, window=args.window, every=args.every, topk=args.topk,
                    device=args.device, precision=args.precision, max_gap=args.max_gap)
    log.info("stream: window %d frames, an update every %d, %s, %d checkpoint(s)", stream.window, stream.every,
             stream.precision, len(stream.predictor.models))
    opened: int | None = None
    if args.replay is not None:
        source: Iterator[Any] = replay_frames(stream, args.replay, args.fps)
        name = str(args.replay)
    elif args.input is not None:
        try:
            fd = os.open(args.input, os.O_RDONLY)
        except OSError as err:
            raise PredictError(f"--input: cannot open {args.input}: {err.strerror}") from None
        source, name = json_frames(fd, str(args.input), args.stall), str(args.input)
        opened = fd
    else:
        source, name = json_frames(sys.stdin.fileno(), "stdin", args.stall), "stdin"
    skipped = updates = 0
    stalled = False
    try:
        for item in source:
            if item is STALL:
                if not stalled:
                    print(f"warning: {name}: no frame for {args.stall:g} s (input stalled?); still waiting",
                          file=sys.stderr, flush=True)
                stalled = True
                continue
            stalled = False
            frame, where = item
            try:
                if isinstance(frame, FrameError):
                    stream.received += 1
                    raise frame
                update = stream.push(frame, where)
            except FrameError as err:
                skipped += 1
                _warn(err)
                continue
            if update is not None:
                updates += 1
                sys.stdout.write(json.dumps(update.to_dict()) + "\n")
                sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away: nobody to report to, not an error of the stream.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        if opened is not None:
            os.close(opened)
    return {"frames": stream.received, "skipped": skipped, "updates": updates, "source": name}


def _show_stream(args: argparse.Namespace, result: dict[str, int]) -> None:
    log.info("end of %s: %d frames, %d skipped, %d updates", result["source"], result["frames"], result["skipped"],
             result["updates"])


def _show_early(args: argparse.Namespace, result: dict[str, Any]) -> None:
    print(format_early(result["rows"]))
    log.info("table written to %s, plot to %s", result["csv"], result["png"])


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", action="append", required=True, type=Path,
                   help="a training checkpoint; repeat to fuse streams as predict does")
    p.add_argument("--weights", type=float, nargs="+", help="one fusion weight per checkpoint (default as predict)")
    p.add_argument("--window", type=int, help="frames in the causal buffer (default: the checkpoint's clip length)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16: autocast on the device (default fp32)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m amanet_fast.stream",
                                description="Live action recognition on skeleton frames arriving one at a time.")
    _common(p)
    p.add_argument("--every", type=int, default=1, help="an update every K accepted frames (default 1)")
    p.add_argument("--topk", type=int, default=5, help="classes per update (default 5)")
    p.add_argument("--input", type=Path, help="read JSON frames from this file instead of stdin")
    p.add_argument("--replay", type=Path, help="replay a raw file (NW-UCLA / Kinetics JSON, NTU .skeleton)")
    p.add_argument("--fps", type=float, default=30.0, help="replay rate (default 30; 0: as fast as possible)")
    p.add_argument("--max-gap", type=float, default=1.0,
                   help="seconds between timestamps beyond which the window restarts (default 1)")
    p.add_argument("--stall", type=float, default=5.0, help="warn after this many seconds without input (default 5)")
    return p


def build_early_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m amanet_fast.stream evaluate-early",
                                description="Accuracy against the observed fraction of each clip (causal prefixes).")
    _common(p)
    p.add_argument("--data-root", required=True, type=Path, help="a prepared dataset folder")
    p.add_argument("--split", default="val")
    p.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS))
    p.add_argument("--limit", type=int, help="only the first N clips")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for early_recognition.csv / .png")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["evaluate-early"]:
        return run_cli(build_early_parser(), evaluate_early, _show_early, argv[1:])
    return run_cli(build_parser(), run_stream, _show_stream, argv)


if __name__ == "__main__":
    sys.exit(main())
