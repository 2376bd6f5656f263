"""The stream on replayed NTU .skeleton files: 25 joints, two persons, frames without a body.

A tiny NTU-60 model is trained for one epoch on the real sample files (prepare's real reader
and pre-normalization); it need not be accurate, only real. Skipped without the shared data.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amanet_fast import Predictor, Stream
from amanet_fast.data.ntu import read_skeleton_file
from amanet_fast.data.prepare import main as prepare_main
from amanet_fast.stream import main, replay_frames
from amanet_fast.training.cli import main as train_main

CLIP = 32
TINY = ["runtime.threads=1", "runtime.tensorboard=false", "runtime.progress=false", "--amp", "off",
        "train.epochs=1", "model.args.channels=[6,12,24]", "model.args.num_gcn_scales=2",
        "model.args.num_g3d_scales=2", "data.num_workers=0", "optim.batch_size=2", "optim.lr_steps=[]",
        "seed=0", "data.split=null", f"data.clip_len={CLIP}"]
ONE, TWO = "S001C001P001R001A001.skeleton", "S001C001P001R001A050.skeleton"  # 1 body; 2 bodies
FIELDS = {"frame", "t", "frames", "topk", "latency_ms"}


@pytest.fixture(scope="module")
def ntu(shared_data: Path, tmp_path_factory) -> tuple[Path, Path]:
    raw = shared_data / "ntu_raw"
    if not all((raw / name).is_file() for name in (ONE, TWO)):
        pytest.skip(f"needs the NTU sample files {ONE} and {TWO} under {raw}")
    tmp = tmp_path_factory.mktemp("ntu_stream")
    assert prepare_main(["ntu60", "--split", "xview", "--raw", str(raw), "--out", str(tmp / "prepared")]) == 0
    assert train_main(["--data-root", str(tmp / "prepared"), "--work-dir", str(tmp / "run"), *TINY]) == 0
    return tmp / "run" / "latest.pt", raw


def _messy_skeleton(src: Path, dst: Path, empty, first_only) -> Path:
    """A copy of a 2-body .skeleton file whose frames in `empty` list no body and in `first_only` one."""
    lines = src.read_text().splitlines()
    out, i = [lines[0]], 1
    for t in range(int(lines[0])):
        bodies = int(lines[i])
        blocks = [lines[i + 1 + 27 * m:i + 1 + 27 * (m + 1)] for m in range(bodies)]
        i += 1 + 27 * bodies
        keep = blocks[:0] if t in empty else blocks[:1] if t in first_only else blocks
        out += [str(len(keep)), *[line for b in keep for line in b]]
    dst.write_text("\n".join(out) + "\n")
    return dst


def _replay(capsys, ck: Path, path: Path, every: int) -> tuple[list[dict], list[str]]:
    rc = main(["--checkpoint", str(ck), "--replay", str(path), "--fps", "0", "--every", str(every), "--topk", "3"])
    out, err = capsys.readouterr()
    assert rc == 0 and "Traceback" not in err, err
    updates = [json.loads(line) for line in out.splitlines()]
    for u in updates:
        assert set(u) == FIELDS and u["t"] is None and u["latency_ms"] > 0
        assert len(u["topk"]) == 3 and all(set(k) == {"label", "class", "probability"} for k in u["topk"])
        assert u["topk"][0]["probability"] >= u["topk"][1]["probability"] >= u["topk"][2]["probability"]
    return updates, [e for e in err.splitlines() if e.startswith("warning")]


def _expected(predictor: Predictor, frames: np.ndarray, upto: int) -> np.ndarray:
    """Predictor on the window a stream holds after the first `upto` of `frames` (C, T, V, M)."""
    return predictor.predict_arrays([frames[:, max(0, upto - CLIP):upto]])[0]


@pytest.mark.parametrize("name", [ONE, TWO])
def test_replay_cli_on_ntu_equals_predictor(ntu, capsys, name):
    ck, raw = ntu
    predictor = Predictor(ck)
    (sample,) = predictor.read(raw / name)
    recorded = read_skeleton_file(raw / name)[0].shape[1]
    frames = sample.data[:, :recorded]
    assert frames.shape[2] == 25 and (frames[..., 1].any() == (name == TWO))
    updates, warnings = _replay(capsys, ck, raw / name, every=8)
    assert not warnings
    assert [u["frame"] for u in updates] == list(range(7, recorded, 8))
    assert recorded > CLIP and sum(u["frames"] == CLIP for u in updates) >= 3  # the window wrapped
    for u in updates:
        expected = _expected(predictor, frames, u["frame"] + 1)
        assert u["frames"] == min(u["frame"] + 1, CLIP)
        top = [k["label"] for k in u["topk"]]
        assert top == list(np.argsort(-expected, kind="stable")[:3])
        assert np.allclose([k["probability"] for k in u["topk"]], np.sort(expected)[::-1][:3], atol=2e-6)


def test_api_on_ntu_two_persons_equals_predictor(ntu):
    ck, raw = ntu
    predictor = Predictor(ck)
    stream = Stream(predictor=predictor, every=5, topk=3)
    assert (stream.window, stream.joints, stream.persons, stream.channels) == (CLIP, 25, 2, 3)
    (sample,) = predictor.read(raw / TWO)
    frames = sample.data[:, :read_skeleton_file(raw / TWO)[0].shape[1]]
    full = 0
    for f in range(frames.shape[1]):
        update = stream.push(frames[:, f])
        if update is not None:
            assert np.allclose(update.probabilities, _expected(predictor, frames, f + 1), atol=1e-6)
            full += update.frames == CLIP
    assert full >= 3


def test_replay_skips_bodyless_frames_and_keeps_person_slots(ntu, tmp_path, capsys):
    """Frames listing no body: one warning each, skipped; frames with one of two bodies: that
    person stays in its slot, as in the prepared clip (not moved into slot 0)."""
    ck, raw = ntu
    empty, first_only = range(40, 43), range(50, 60)
    path = _messy_skeleton(raw / TWO, tmp_path / TWO, empty, first_only)
    predictor = Predictor(ck)
    (sample,) = predictor.read(path)
    recorded = read_skeleton_file(path)[0].shape[1]
    x = sample.data[:, :recorded]
    present = x.any(axis=(0, 2))  # (T, M)
    assert not present[list(empty)].any() and present[list(first_only)].sum(1).tolist() == [1] * len(first_only)
    # The most active body becomes slot 0: here the second listed one, so slot 0 is the absent one.
    moved = [f for f in first_only if not present[f, 0]]
    assert moved, "the test needs frames whose single person is in slot 1"

    # Replay through the same frame source the CLI uses: the single person stays in slot 1.
    stream = Stream(predictor=predictor, every=1000)
    got = [frame for frame, _ in replay_frames(stream, path, fps=0)]
    assert len(got) == recorded and all(got[f]["joints"][0] is None and len(got[f]["joints"]) == 2 for f in moved)
    assert all(got[f]["joints"] == [] for f in empty)
    kept = [f for f in range(recorded) if f not in empty]

    updates, warnings = _replay(capsys, ck, path, every=1)
    assert len(warnings) == len(empty) and all("no person" in w and "frame skipped" in w for w in warnings)
    assert [u["frame"] for u in updates] == kept
    frames = x[:, kept]  # the frames the stream accepted, in order
    for k, u in enumerate(updates):
        if u["frame"] in moved or u["frame"] == kept[-1]:
            expected = _expected(predictor, frames, k + 1)
            assert np.allclose([p["probability"] for p in u["topk"]], np.sort(expected)[::-1][:3], atol=2e-6)
            assert [p["label"] for p in u["topk"]] == list(np.argsort(-expected, kind="stable")[:3])


def test_replay_covers_the_frames_with_bodies_only(ntu, tmp_path, capsys):
    """Bodyless frames at the start (dropped by prepare) and at the end (filled by its replay
    padding) are not replayed: the stream sees the recorded action, nothing more."""
    ck, raw = ntu
    recorded = read_skeleton_file(raw / ONE)[0].shape[1]
    lead, tail = range(0, 3), range(recorded - 4, recorded)
    path = _messy_skeleton(raw / ONE, tmp_path / ONE, [*lead, *tail], range(0))
    updates, warnings = _replay(capsys, ck, path, every=1)
    n = recorded - len(lead) - len(tail)
    assert not warnings and len(updates) == n
    predictor = Predictor(ck)
    (sample,) = predictor.read(path)
    expected = _expected(predictor, sample.data, n)
    assert np.allclose([p["probability"] for p in updates[-1]["topk"]], np.sort(expected)[::-1][:3], atol=2e-6)
