"""Config resolution: YAML + presets + flags + key=value, with clear errors."""
from __future__ import annotations

import pytest

from amanet_fast.training import config as C


def _resolve(argv, base=None):
    args = C.build_arg_parser().parse_intermixed_args(argv)
    return C.resolve_config(args, base=base)


def test_every_shipped_config_resolves():
    for ds in C.DATASETS:
        cfg = _resolve(["--dataset", ds])
        assert cfg["dataset"] == ds


def test_paper_recipe_in_configs():
    ntu60 = _resolve(["--dataset", "ntu60"])
    assert ntu60["train"]["epochs"] == 50 and ntu60["optim"]["lr_steps"] == [30, 40]
    ntu120 = _resolve(["--dataset", "ntu120"])
    assert ntu120["train"]["epochs"] == 60 and ntu120["optim"]["lr_steps"] == [30, 50]
    kin = _resolve(["--dataset", "kinetics"])
    assert kin["train"]["epochs"] == 65 and kin["optim"]["lr_steps"] == [45, 55]
    for cfg in (ntu60, ntu120, kin):
        o = cfg["optim"]
        assert (o["base_lr"], o["batch_size"], o["momentum"], o["nesterov"], o["weight_decay"]) == (
            0.05, 32, 0.9, True, 0.0005)


def test_overrides_dotted_and_yaml_parsed(tmp_path):
    cfg = _resolve(["--dataset", "ntu60", "--stream", "bone", "--batch-size", "64",
                    "optim.lr_steps=[10, 20]", "optim.weight_decay=5e-4", "runtime.amp=off",
                    "model.args.channels=[8, 16, 32]", "data.clip_len=64"])
    assert cfg["data"]["stream"] == "bone"
    assert cfg["optim"]["lr_steps"] == [10, 20]
    assert cfg["optim"]["weight_decay"] == pytest.approx(5e-4)  # YAML 1.1 leaves 5e-4 as text
    assert cfg["runtime"]["amp"] == "off"  # YAML reads `off` as false
    assert cfg["model"]["args"]["channels"] == [8, 16, 32]
    assert C.scaled_lr(cfg) == pytest.approx(0.1)  # linear scaling: 0.05 at 32


def test_config_file_and_preset(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("dataset: ucla\ntrain:\n  epochs: 7\npresets:\n  quick:\n    train:\n      epochs: 2\n")
    assert _resolve(["--config", str(f)])["train"]["epochs"] == 7
    assert _resolve(["--config", str(f), "--preset", "quick"])["train"]["epochs"] == 2
    assert _resolve(["--config", str(f), "--preset", "quick", "train.epochs=3"])["train"]["epochs"] == 3
    with pytest.raises(ValueError, match="preset 'nope'.*quick"):
        _resolve(["--config", str(f), "--preset", "nope"])


@pytest.mark.parametrize("override, match", [
    ("optim.base_l=0.1", "unknown config key 'optim.base_l'.*optim.base_lr"),
    ("train.epochs=many", "train.epochs: expected a number"),
    ("train.epochs=2.5", "expected an integer"),
    ("data.stream=limb", "data.stream: expected one of"),
    ("runtime.amp=fp8", "runtime.amp"),
    ("noequals", "expected key=value"),
    ("optim.lr_steps=[40, 30]", "increasing"),
    ("runtime.dist_timeout_s=2", "runtime.dist_timeout_s: expected a number of seconds >= 5"),
    ("runtime.dist_timeout_s=null", "runtime.dist_timeout_s: expected a number of seconds"),
])
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises((ValueError, TypeError), match=match):
        _resolve([override])


def test_base_config_from_checkpoint_wins_over_yaml():
    base = {"dataset": "ucla", "model": {"arch": "msg3d", "args": {"channels": [4, 8, 16]}}}
    cfg = _resolve(["train.eval_batch_size=3"], base=base)
    assert cfg["dataset"] == "ucla" and cfg["model"]["arch"] == "msg3d"
    assert cfg["model"]["args"]["channels"] == [4, 8, 16]
    assert cfg["train"]["eval_batch_size"] == 3


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _resolve(["--config", str(tmp_path / "absent.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        _resolve(["--config", str(bad)])
