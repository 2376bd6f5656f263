"""`amanet_fast.Stream` / `python -m amanet_fast.stream`: a window's prediction is Predictor's on
the same frames, bad live frames are one warning line each and skipped, early recognition
scores causal prefixes."""
from __future__ import annotations

import json
import math
import os
import pickle
import threading
import time

import numpy as np
import pytest

from amanet_fast import Predictor, Stream
from amanet_fast.data.augment import valid_range
from amanet_fast.predict import read_raw_file
from amanet_fast.stream import FrameError, main

CLIP = 16  # the tiny preset's clip length


def _val(trained):
    data = np.load(trained.data / "val_data_joint.npy")
    with open(trained.data / "val_label.pkl", "rb") as fh:
        _, labels = pickle.load(fh)
    return data, np.asarray(labels)


def _json_frame(x, t=None):
    """(C, V, M) -> a live frame listing the persons present."""
    persons = [m for m in range(x.shape[2]) if x[:, :, m].any()]
    frame = {"joints": x[:, :, persons].transpose(2, 1, 0).tolist()}
    if t is not None:
        frame["t"] = t
    return frame


def test_window_equals_predictor_on_the_same_frames(trained, tmp_path):
    ckpts = [trained.joint / "latest.pt", trained.bone / "latest.pt"]
    predictor = Predictor(ckpts, [0.6, 0.4])
    stream = Stream(predictor=predictor, every=3)
    assert stream.window == CLIP
    (sample,) = read_raw_file(trained.raw_val()[0])
    x = sample.data
    _, end = valid_range(x)
    assert end > 2 * CLIP  # the ring wraps around at least once
    checked_full = checked_partial = 0
    for f in range(end):
        update = stream.push(_json_frame(x[:, f]), f"frame {f}")
        if update is None:
            continue
        expected = predictor.predict_arrays([x[:, max(0, f + 1 - CLIP):f + 1]])[0]
        assert update.frame == f and update.frames == min(f + 1, CLIP)
        assert np.allclose(update.probabilities, expected, atol=1e-6)
        assert update.topk[0][0] == int(np.argmax(expected)) and update.latency_ms > 0
        checked_full += update.frames == CLIP
        checked_partial += update.frames < CLIP
    assert checked_full >= 5 and checked_partial >= 3
    # The last window through predict's file path (.npy, zero-padded to 300 frames like prepared data).
    npy = tmp_path / "window.npy"
    np.save(npy, x[:, end - CLIP:end])
    stream_last = Stream(predictor=predictor)
    for f in range(end - CLIP, end):
        update = stream_last.push(x[:, f])
    (from_file,) = predictor.predict_files([npy])
    assert np.allclose(update.probabilities, from_file.probabilities, atol=1e-6)


def test_bf16_is_close_to_fp32(trained):
    data, _ = _val(trained)
    fp32 = Stream(trained.joint / "latest.pt")
    bf16 = Stream(predictor=fp32.predictor, precision="bf16")
    a = fp32.probabilities([data[0][:, :CLIP]])[0]
    b = bf16.probabilities([data[0][:, :CLIP]])[0]
    assert not np.array_equal(a, b) and np.abs(a - b).max() < 0.05


def test_replay_cli_prints_an_update_every_k_frames(trained, capsys):
    path = trained.raw_val()[1]
    rc = main(["--checkpoint", str(trained.joint / "latest.pt"), "--replay", str(path), "--fps", "0",
               "--every", "4", "--topk", "2"])
    out, err = capsys.readouterr()
    assert rc == 0 and "warning" not in err and "Traceback" not in err
    lines = [json.loads(line) for line in out.splitlines()]
    (sample,) = read_raw_file(path)
    begin, end = valid_range(sample.data)
    assert len(lines) == (end - begin) // 4
    assert [u["frame"] for u in lines] == list(range(3, end - begin, 4))[:len(lines)]
    last = lines[-1]
    f = last["frame"] + begin + 1
    expected = Predictor(trained.joint / "latest.pt").predict_arrays([sample.data[:, f - CLIP:f]])[0]
    assert last["frames"] == CLIP and len(last["topk"]) == 2
    assert last["topk"][0]["label"] == int(np.argmax(expected))
    assert abs(last["topk"][0]["probability"] - expected.max()) < 1e-5


def test_replay_at_fps_takes_real_time(trained, capsys):
    path = trained.raw_val()[2]
    (sample,) = read_raw_file(path)
    begin, end = valid_range(sample.data)
    t0 = time.perf_counter()
    assert main(["--checkpoint", str(trained.joint / "latest.pt"), "--replay", str(path), "--fps", "200",
                 "--every", "1000"]) == 0
    assert time.perf_counter() - t0 >= (end - begin - 1) / 200


# ----------------------------------------------------------------------------- messy live input


def _good(trained):
    data, _ = _val(trained)
    return data[0][:, :, :, :1]  # one person


def _run_lines(trained, tmp_path, capsys, lines, *extra):
    path = tmp_path / "frames.jsonl"
    path.write_text("".join(lines))
    rc = main(["--checkpoint", str(trained.joint / "latest.pt"), "--input", str(path), *extra])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err
    return [json.loads(line) for line in out.splitlines()], [e for e in err.splitlines() if e.startswith("warning")]


BAD_FRAMES = {
    "joint count": (lambda x: {"joints": x[:, :17].transpose(2, 1, 0).tolist()}, "17 joints per person"),
    "channels": (lambda x: {"joints": x[:2].transpose(2, 1, 0).tolist()}, "2 values per joint"),
    "nan": (lambda x: {"joints": np.where(np.arange(18)[None, :, None] == 3, np.nan, x).transpose(2, 1, 0).tolist()},
            "non-finite"),
    "missing person": (lambda x: {"joints": []}, "no person"),
    "all-zero person": (lambda x: {"joints": [x[:, :, 0].T.tolist(), np.zeros((18, 3)).tolist()]}, "all zeros"),
    "extra person": (lambda x: {"joints": [x[:, :, 0].T.tolist()] * 3}, "3 persons"),
    "not an object": (lambda x: [1, 2, 3], "JSON object"),
    "no joints": (lambda x: {"pose": []}, "missing 'joints'"),
    "ragged": (lambda x: {"joints": [x[:, :, 0].T.tolist(), x[:, :5, 0].T.tolist()]}, "same joint"),
    "bad t": (lambda x: {"joints": x.transpose(2, 1, 0).tolist(), "t": "soon"}, "'t' must be"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_a_bad_frame_is_one_warning_and_skipped(trained, tmp_path, capsys, case):
    x = _good(trained)
    make, words = BAD_FRAMES[case]
    lines = [json.dumps(_json_frame(x[:, f])) + "\n" for f in range(3)]
    lines.insert(1, json.dumps(make(x[:, 1])) + "\n")
    updates, warnings = _run_lines(trained, tmp_path, capsys, lines)
    assert len(warnings) == 1 and words in warnings[0] and "frames.jsonl:2" in warnings[0], warnings
    assert [u["frame"] for u in updates] == [0, 2, 3] and [u["frames"] for u in updates] == [1, 2, 3]


def test_malformed_json_and_an_unterminated_last_line(trained, tmp_path, capsys):
    x = _good(trained)
    lines = [json.dumps(_json_frame(x[:, 0])) + "\n", '{"joints": [[1, 2\n', "\n",
             json.dumps(_json_frame(x[:, 1]))]  # input closed mid-stream, no final newline
    updates, warnings = _run_lines(trained, tmp_path, capsys, lines)
    assert len(warnings) == 1 and "malformed JSON" in warnings[0] and "frames.jsonl:2" in warnings[0]
    assert [u["frames"] for u in updates] == [1, 2]


def test_timestamps_going_back_are_skipped_and_a_gap_restarts_the_window(trained, tmp_path, capsys):
    x = _good(trained)
    times = [0.0, 0.033, 0.02, 0.066, 0.066, 5.0, 5.033]
    lines = [json.dumps(_json_frame(x[:, i], t)) + "\n" for i, t in enumerate(times)]
    updates, warnings = _run_lines(trained, tmp_path, capsys, lines, "--max-gap", "1")
    assert len(warnings) == 3, warnings
    assert "timestamp 0.02 is not after the previous frame's 0.033" in warnings[0] and ":3:" in warnings[0]
    assert "timestamp 0.066" in warnings[1] and ":5:" in warnings[1]
    assert "window restarts" in warnings[2] and ":6:" in warnings[2]
    assert [u["frames"] for u in updates] == [1, 2, 3, 1, 2]
    assert [u["t"] for u in updates] == [0.0, 0.033, 0.066, 5.0, 5.033]


def test_a_stalled_input_warns_once_and_the_stream_goes_on(trained, capsys, monkeypatch):
    x = _good(trained)
    r, w = os.pipe()
    first = threading.Event()
    push = Stream.push

    def push_and_tell(self, *a, **k):
        first.set()
        return push(self, *a, **k)

    # The stall must start once the stream reads: model loading takes seconds on a loaded core.
    monkeypatch.setattr(Stream, "push", push_and_tell)

    def producer():
        with os.fdopen(w, "w") as fh:
            fh.write(json.dumps(_json_frame(x[:, 0])) + "\n")
            fh.flush()
            first.wait(120)
            time.sleep(1.2)  # > 2 stall periods: still one warning
            fh.write(json.dumps(_json_frame(x[:, 1])) + "\n")

    thread = threading.Thread(target=producer)
    thread.start()
    try:
        rc = main(["--checkpoint", str(trained.joint / "latest.pt"), "--input", f"/dev/fd/{r}", "--stall", "0.4"])
    finally:
        thread.join()
        os.close(r)
    out, err = capsys.readouterr()
    warnings = [e for e in err.splitlines() if e.startswith("warning")]
    assert rc == 0 and len(warnings) == 1 and "no frame for 0.4 s" in warnings[0]
    assert [json.loads(line)["frames"] for line in out.splitlines()] == [1, 2]


def test_python_api_raises_frame_error_and_keeps_the_window(trained):
    x = _good(trained)
    stream = Stream(trained.joint / "latest.pt")
    stream.push(x[:, 0])
    with pytest.raises(FrameError, match="3 persons"):
        stream.push(np.ones((3, 18, 3), np.float32))
    # An all-zero slot past the checkpoint's persons is an absent person, as in prepared arrays.
    assert stream.push(np.concatenate([x[:, 1], np.zeros((3, 18, 2), np.float32)], -1)).frames == 2
    assert np.array_equal(stream.frames()[:, 1, :, 0], x[:, 1, :, 0])


def test_null_keeps_a_tracked_person_in_its_slot(trained):
    data, _ = _val(trained)
    x = next(c for c in data if c[..., 1].any())[:, :3]  # a clip with a second person
    stream = Stream(trained.joint / "latest.pt")
    assert stream.persons == 2
    stream.push({"joints": [x[:, 0, :, 0].T.tolist(), x[:, 0, :, 1].T.tolist()]})
    stream.push({"joints": [None, x[:, 1, :, 1].T.tolist()]})
    assert np.array_equal(stream.frames()[:, 1], np.stack([np.zeros_like(x[:, 1, :, 1]), x[:, 1, :, 1]], -1))
    with pytest.raises(FrameError, match="no person"):
        stream.push({"joints": [None, None]})
    assert stream.frames().shape[1] == 2


@pytest.mark.parametrize("argv, words", [
    (["--window", "40"], "longer than the clip length 16"),
    (["--every", "0"], "--every"),
    (["--fps", "-1", "--replay", "x.json"], "--fps"),
])
def test_bad_options_are_one_error_line(trained, capsys, argv, words):
    rc = main(["--checkpoint", str(trained.joint / "latest.pt"), *argv])
    err = capsys.readouterr().err
    errors = [e for e in err.splitlines() if e.startswith("error:")]
    assert rc == 2 and len(errors) == 1 and words in errors[0] and "Traceback" not in err


# ----------------------------------------------------------------------------- early recognition


def test_evaluate_early_scores_causal_prefixes(trained, tmp_path, capsys):
    out = tmp_path / "early"
    rc = main(["evaluate-early", "--checkpoint", str(trained.joint / "latest.pt"), "--data-root", str(trained.data),
               "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and "observed" in printed
    rows = (out / "early_recognition.csv").read_text().splitlines()
    assert rows[0] == "fraction,mean_frames,top1,top5,clips" and len(rows) == 11
    assert (out / "early_recognition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The 30% row, recomputed by hand: the last CLIP frames of each clip's first 30% valid frames.
    data, labels = _val(trained)
    predictor = Predictor(trained.joint / "latest.pt")
    clips = []
    for x in data:
        b, e = valid_range(x)
        n = math.ceil(0.3 * (e - b) - 1e-9)
        clips.append(x[:, b:b + n][:, -CLIP:])
    top1 = float((predictor.predict_arrays(clips).argmax(1) == labels).mean())
    fraction, _, got, _, clips_n = rows[3].split(",")
    assert fraction == "0.30" and int(clips_n) == len(labels)
    assert abs(float(got) - top1) < 1e-4


def test_evaluate_early_needs_a_prepared_folder(trained, tmp_path, capsys):
    rc = main(["evaluate-early", "--checkpoint", str(trained.joint / "latest.pt"), "--data-root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "error: --data-root" in err and "Traceback" not in err


def test_latency_benchmark_writes_its_results(tmp_path, capsys):
    from benchmarks.stream_latency import main as bench

    assert bench(["--models", "small", "--backends", "fp32", "--threads", "1,4096", "--updates", "3",
                  "--warmup", "1", "--results-dir", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("stream_latency_*.json")
    doc = json.loads(path.read_text())
    measured, skipped = doc["cases"]
    assert measured["measured"] and measured["updates"] == 3 and measured["window"] == 52
    assert 0 < measured["min_ms"] <= measured["p50_ms"] <= measured["p99_ms"] <= measured["max_ms"]
    assert measured["meets_target"] == (measured["p99_ms"] <= 33.0)
    assert not skipped["measured"] and "core(s)" in skipped["why"]
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temp file left
