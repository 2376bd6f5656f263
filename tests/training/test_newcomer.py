"""A newcomer's first hour (issue 22): preset runs keep their own work dir, warnings and suggestions
for the usual slips (LR steps past the end, mistyped flags and keys), elapsed time across resumes."""
from __future__ import annotations

from pathlib import Path

import pytest

from amanet_fast.training import config as C

from .conftest import run_cli, tiny_args


def test_preset_runs_get_their_own_default_work_dir() -> None:
    args = C.build_arg_parser().parse_args(["--preset", "tiny"])
    assert C.resolve_config(args)["work_dir"] == str(Path("work_dirs") / "synthetic_tiny_amanet_joint")
    args = C.build_arg_parser().parse_args(["--dataset", "ucla", "--preset", "cpu", "--stream", "bone"])
    assert C.resolve_config(args)["work_dir"] == str(Path("work_dirs") / "ucla_cpu_amanet_bone")
    args = C.build_arg_parser().parse_args([])
    assert C.resolve_config(args)["work_dir"] is None  # the full run: work_dirs/synthetic_amanet_joint
    args = C.build_arg_parser().parse_args(["--preset", "tiny", "--work-dir", "mine"])
    assert C.resolve_config(args)["work_dir"] == "mine"


def test_lr_step_at_or_past_the_last_epoch_is_warned(synthetic_root, tmp_path, capsys):
    rc, err = run_cli(tiny_args(synthetic_root, tmp_path / "wd", "--epochs", "1", "optim.lr_steps=[1]"), capsys)
    assert rc == 0, err
    text = (tmp_path / "wd" / "log.txt").read_text()
    assert "optim.lr_steps [1]: step 1 at or past the last epoch (1 epochs" in text and "never decays" in text
    rc, err = run_cli(tiny_args(synthetic_root, tmp_path / "wd2", "--epochs", "1", "optim.lr_steps=[0]"), capsys)
    assert rc == 0 and "at or past the last epoch" not in (tmp_path / "wd2" / "log.txt").read_text()


def test_results_elapsed_counts_every_leg_of_a_resumed_run(synthetic_root, tmp_path, capsys):
    import json

    from amanet_fast.training.checkpoint import load_checkpoint, save_checkpoint

    wd = tmp_path / "wd"
    rc, err = run_cli(tiny_args(synthetic_root, wd, "train.stop_after_epoch=1"), capsys)
    assert rc == 0, err
    state = load_checkpoint(wd / "latest.pt")
    assert 0 < state["elapsed_s"] < 1000
    state["elapsed_s"] = 1000.0  # as if the first leg had taken 1000 s
    save_checkpoint(wd / "latest.pt", state)
    rc, err = run_cli(tiny_args(synthetic_root, wd), capsys)
    assert rc == 0, err
    results = json.loads((wd / "results.json").read_text())
    assert results["epoch"] == 2 and 1000 < results["elapsed_s"] < 1000 + 600
    assert load_checkpoint(wd / "latest.pt")["elapsed_s"] > 1000


@pytest.mark.parametrize("argv, want", [
    (["--epcohs", "6"], "unrecognized arguments: --epcohs (--epcohs: did you mean --epochs?)"),
    (["--epoch", "6"], "--epoch: did you mean --epochs?"),  # no abbreviations: --epoch is not --epochs
    (["--data-rot", "x"], "did you mean --data-root?"),
    (["lr=0.1"], "unknown config key 'lr' (did you mean optim.base_lr?)"),
    (["epochs=3"], "unknown config key 'epochs' (did you mean train.epochs"),
    (["train.batch_size=8"], "unknown config key 'train.batch_size' (did you mean optim.batch_size"),
])
def test_mistyped_flags_and_keys_get_a_suggestion(argv, want, tmp_path, capsys):
    from amanet_fast.training.cli import main

    try:
        rc = main([*argv, "--work-dir", str(tmp_path / "wd")])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("train.py: error: ") and want in err[-1], err[-1:]
    assert not (tmp_path / "wd").exists()


def test_no_cli_accepts_abbreviated_flags(capsys):
    from amanet_fast.data.prepare import main as prepare_main
    from amanet_fast.ensemble import main as ensemble_main

    for main, argv in ((prepare_main, ["ucla", "--ra", "x", "--out", "y"]), (ensemble_main, ["a", "b", "--weig", "1"])):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and "did you mean" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["all_sqe", "inside"])
def test_data_root_at_the_clip_folder_never_prepares_into_the_raw_data(standin_data, where, monkeypatch, capsys):
    raw = (standin_data / "nw_ucla").resolve()
    if where == "inside":
        monkeypatch.chdir(raw / "all_sqe")  # the default ./data/ucla would land inside the raw data
        argv = ["--data-root", "."]
    else:
        argv = ["--data-root", str(raw / "all_sqe")]
    rc, err = run_cli(argv, capsys)
    assert rc == 2 and f"prepare ucla --raw {raw} --out" in err
    out = Path(err.split(f"--raw {raw} --out ")[1].split()[0])
    assert raw not in (Path.cwd() / out).resolve().parents and (Path.cwd() / out).resolve() != raw, err
