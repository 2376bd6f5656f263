"""train.py end to end on CPU with a tiny preset: outputs, eval-only, resume, errors."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from amanet_fast.training.checkpoint import load_checkpoint
from amanet_fast.training.hardware import cpu_bf16_native

from .conftest import NUM_VAL, run_cli, run_subprocess, tiny_args

RESULT_KEYS = {"top1", "top5", "mean_class_acc", "epoch", "dataset", "stream", "arch"}


@pytest.mark.slow
def test_demo_command_end_to_end(synthetic_root, tmp_path):
    wd = tmp_path / "demo"
    proc = run_subprocess(["train.py", *tiny_args(synthetic_root, wd, "runtime.tensorboard=true", "runtime.threads=1")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((wd / "tb").glob("events.out.tfevents.*")), "no TensorBoard event file"
    res = json.loads((wd / "results.json").read_text())
    assert RESULT_KEYS <= set(res)
    assert res["epoch"] == 2 and res["dataset"] == "synthetic" and res["stream"] == "joint" and res["arch"] == "amanet"
    assert res["num_val_samples"] == NUM_VAL and 0.0 <= res["top1"] <= res["top5"] <= 1.0
    # amp=auto on CPU: bf16 autocast exactly where the CPU has native bf16 (issue 14)
    expected = "bf16 autocast" if cpu_bf16_native()[0] else "fp32"
    assert res["precision"] == expected and res["compile"] is False and res["kernel_backend"] == "eager"

    log = (wd / "log.txt").read_text()
    first = log.splitlines()[1]
    assert "command:" in first and "train.py" in first
    assert "versions: torch" in log and "resolved config:" in log
    assert f"precision {expected}, torch.compile off, kernel backend eager" in log
    assert "cpu runtime: 1 intra-op threads (runtime.threads; fixed)" in log and "native bf16" in log

    assert (wd / "config.yaml").is_file() and "train.py" in (wd / "command.txt").read_text()
    with open(wd / "scores_val.pkl", "rb") as fh:
        scores = pickle.load(fh)
    with open(synthetic_root / "val_label.pkl", "rb") as fh:
        names, _ = pickle.load(fh)
    assert set(scores) == set(names) and all(v.shape == (6,) for v in scores.values())
    assert np.allclose(sum(scores.values()).sum(), NUM_VAL, atol=1e-3)  # softmax rows
    csv = (wd / "confusion_matrix.csv").read_text().splitlines()
    assert len(csv) == 7 and csv[1].startswith("wave")  # header + 6 classes, class names from the manifest
    assert (wd / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert load_checkpoint(wd / "latest.pt")["epoch"] == 2

    # --eval-only on the final checkpoint reproduces the final evaluation exactly.
    ev = wd / "eval"  # default for --eval-only: next to the checkpoint, the training results stay as they are
    proc = run_subprocess(["train.py", "--eval-only", "--checkpoint", str(wd / "latest.pt"), "runtime.threads=1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((wd / "results.json").read_text())["mode"] == "train"
    res_ev = json.loads((ev / "results.json").read_text())
    assert res_ev["mode"] == "eval" and res_ev["top1"] == res["top1"] and res_ev["epoch"] == 2
    with open(ev / "scores_val.pkl", "rb") as fh:
        scores_ev = pickle.load(fh)
    assert all(np.array_equal(scores[n], scores_ev[n]) for n in names)


def _weights(path):
    return load_checkpoint(path)["model"]


@pytest.mark.slow
def test_resume_is_bitwise_identical(synthetic_root, tmp_path, capsys):
    # Augmentations on, so the restored RNG streams matter.
    aug = ["data.random_choose=true", "data.random_move=true"]
    full, split = tmp_path / "full", tmp_path / "split"
    assert run_cli(tiny_args(synthetic_root, full, *aug), capsys)[0] == 0
    assert run_cli(tiny_args(synthetic_root, split, *aug, "train.stop_after_epoch=1"), capsys)[0] == 0
    after_one = _weights(split / "latest.pt")
    assert load_checkpoint(split / "latest.pt")["epoch"] == 1
    assert run_cli(tiny_args(synthetic_root, split, *aug), capsys)[0] == 0
    assert "resumed from" in (split / "log.txt").read_text()

    a, b = _weights(full / "latest.pt"), _weights(split / "latest.pt")
    assert a.keys() == b.keys()
    mismatched = [k for k in a if not torch.equal(a[k], b[k])]
    assert not mismatched, f"weights differ after resume: {mismatched[:5]}"
    # ...and the second epoch really changed the weights (the comparison is not vacuous).
    assert any(not torch.equal(after_one[k], b[k]) for k in b if b[k].is_floating_point())
    oa = load_checkpoint(full / "latest.pt")["optimizer"]["state"]
    ob = load_checkpoint(split / "latest.pt")["optimizer"]["state"]
    assert all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa)
    ra = json.loads((full / "results.json").read_text())
    rb = json.loads((split / "results.json").read_text())
    assert ra["top1"] == rb["top1"] and ra["val_loss"] == rb["val_loss"]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_checkpoint_gives_clear_error(synthetic_root, tmp_path, capsys, damage):
    wd = tmp_path / "run"
    assert run_cli(tiny_args(synthetic_root, wd, "train.stop_after_epoch=1"), capsys)[0] == 0
    ckpt = wd / "latest.pt"
    data = bytearray(ckpt.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    else:
        data[len(data) // 2] ^= 0x55
    ckpt.write_bytes(bytes(data))
    rc, err = run_cli(tiny_args(synthetic_root, wd), capsys)  # automatic resume
    assert rc == 2 and str(ckpt) in err and "Traceback" not in err
    assert ("corrupt" in err) or ("checksum" in err)
    rc, err = run_cli(["--eval-only", "--checkpoint", str(ckpt)], capsys)
    assert rc == 2 and str(ckpt) in err


class _NaNAfter(torch.nn.Module):
    """Stand-in network whose output turns NaN from its `bad_call`-th training forward on."""

    def __init__(self, num_class: int, bad_call: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, num_class)
        self.calls, self.bad_call = 0, bad_call

    def forward(self, x):
        if self.training:
            self.calls += 1
        out = self.fc(x.mean(dim=(2, 3, 4)))
        return out * float("nan") if self.training and self.calls >= self.bad_call else out


def test_nan_loss_stops_naming_the_step(synthetic_root, tmp_path, capsys, monkeypatch):
    from amanet_fast.training import loop

    monkeypatch.setattr(loop, "default_model_factory", lambda cfg, data: _NaNAfter(data.num_classes, 2))
    wd = tmp_path / "nan"
    rc, err = run_cli(tiny_args(synthetic_root, wd), capsys)
    assert rc == 1
    assert "loss became nan at epoch 1, step 2/3" in err and "Traceback" not in err
    assert not (wd / "latest.pt").exists()


class _Linear(torch.nn.Module):
    def __init__(self, num_class: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 18 * 2, num_class)

    def forward(self, x):
        return self.fc(x.mean(dim=2).flatten(1))


def test_gradient_accumulation_matches_full_batch(synthetic_root, tmp_path, capsys, monkeypatch):
    from amanet_fast.training import loop

    monkeypatch.setattr(loop, "default_model_factory", lambda cfg, data: _Linear(data.num_classes))
    full, acc = tmp_path / "full", tmp_path / "acc"
    # fp32 (amp=auto is bf16 on CPUs with native bf16): the check is about the accumulation math.
    assert run_cli(tiny_args(synthetic_root, full, "runtime.amp=off"), capsys)[0] == 0
    assert run_cli(tiny_args(synthetic_root, acc, "--forward-batch-size", "3", "runtime.amp=off"), capsys)[0] == 0  # 8 = 3 + 3 + 2
    assert "accumulated micro-batches of 3" in (acc / "log.txt").read_text()
    a, b = _weights(full / "latest.pt"), _weights(acc / "latest.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert not torch.equal(a["fc.weight"], _Linear(6).fc.weight)  # it trained


def test_missing_real_data_prints_prepare_command(tmp_path, capsys):
    rc, err = run_cli(["--dataset", "ucla", "--data-root", str(tmp_path / "nowhere"),
                       "--work-dir", str(tmp_path / "wd")], capsys)
    assert rc == 2 and "Traceback" not in err
    assert "python -m amanet_fast.data.prepare ucla" in err and str(tmp_path / "nowhere") in err
    rc, err = run_cli(["--dataset", "ntu60", "--data-root", str(tmp_path / "ntu"), "--split", "xview",
                       "--work-dir", str(tmp_path / "wd2")], capsys)
    assert rc == 2 and "--split xview" in err and str(tmp_path / "ntu" / "xview") in err


@pytest.mark.slow
def test_ddp_two_processes_gloo(synthetic_root, tmp_path):
    wd = tmp_path / "ddp"
    proc = run_subprocess(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
                           *tiny_args(synthetic_root, wd)], timeout=300)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    res = json.loads((wd / "results.json").read_text())
    assert res["world_size"] == 2 and res["num_val_samples"] == NUM_VAL  # every val sample scored once
    log = (wd / "log.txt").read_text()
    assert "distributed gloo x2" in log and "batch 8 = 2 ranks x 4" in log
    assert log.count("amanet-fast training") == 1  # one writer
    with open(wd / "scores_val.pkl", "rb") as fh:
        assert len(pickle.load(fh)) == NUM_VAL
    assert sorted(p.name for p in wd.iterdir() if p.name.startswith(".")) == []  # no temp leftovers
    state = load_checkpoint(wd / "latest.pt")
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2


def test_holdout_scores_feed_ensemble_search(synthetic_root, tmp_path, capsys):
    from amanet_fast import ensemble

    dirs = []
    for stream in ("joint", "bone"):
        wd = tmp_path / stream
        extra = ["--stream", stream, "data.holdout_fraction=0.25", "train.epochs=1"]
        assert run_cli(tiny_args(synthetic_root, wd, *extra), capsys)[0] == 0
        dirs.append(wd)
    with open(dirs[0] / "labels_holdout.pkl", "rb") as fh:
        held_names, _ = pickle.load(fh)
    with open(synthetic_root / "train_label.pkl", "rb") as fh:
        train_names, _ = pickle.load(fh)
    assert len(held_names) == 6 and set(held_names) <= set(train_names)
    log = (dirs[0] / "log.txt").read_text()
    assert "train 18, val 12, holdout 6 samples" in log  # held-out samples are not trained on
    assert ensemble.main([str(d) for d in dirs] + ["--search", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["search"]["num_samples"] == 6 and rep["num_samples"] == NUM_VAL and len(rep["weights"]) == 2
