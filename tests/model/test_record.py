"""A checkpoint records what the network is, never how a run executed it (model/record.py)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from amanet_fast import build_model
from amanet_fast.model.build import model_from_dict, resolve_config
from amanet_fast.model.config import RUN_TIME_CHOICES, ModelConfig
from amanet_fast.model.record import model_from_checkpoint, model_record
from amanet_fast.predict import load_trained_model
from amanet_fast.training.checkpoint import save_checkpoint

TINY = dict(channels=(6, 12, 12), num_gcn_scales=2, num_g3d_scales=2, num_person=1)


def _state(model: torch.nn.Module) -> dict:
    config = {"dataset": "ntu60", "data": {"stream": "joint", "clip_len": 8, "split": None, "root": None},
              "model": {"arch": "amanet", "args": {}}}
    return {"model": model.state_dict(), "optimizer": {}, "scheduler": {}, "scaler": {}, "epoch": 3, "rng": {},
            "config": config, **model_record(model, model.config.layout, [f"c{i}" for i in range(60)],
                                             ["x", "y", "z"])}


def test_model_config_holds_only_the_network():
    model = build_model("amanet", "ntu60", kernel_backend="eager", **TINY)
    assert model.kernel_backend == "eager"
    assert not set(RUN_TIME_CHOICES) & {f.name for f in dataclasses.fields(ModelConfig)}
    assert not set(RUN_TIME_CHOICES) & set(_state(model)["model_config"])
    with pytest.raises(TypeError, match="kernel_backend chooses how the network runs"):
        resolve_config("amanet", "ntu60", kernel_backend="eager", **TINY)


def test_old_checkpoint_with_a_run_time_choice_still_loads(tmp_path):
    torch.manual_seed(0)
    model = build_model("amanet", "ntu60", kernel_backend="eager", **TINY).eval()
    state = _state(model)
    state["model_config"]["kernel_backend"] = "triton"  # what checkpoints before the split stored
    rebuilt = model_from_checkpoint(state, "eager").eval()
    assert rebuilt.kernel_backend == "eager" and rebuilt.config == model.config
    x = torch.randn(2, 3, 8, 25, 1)
    assert torch.equal(rebuilt(x), model(x))
    assert model_from_dict(state["model_config"]).kernel_backend == "auto"  # the stored choice is not used
    tm = load_trained_model(save_checkpoint(tmp_path / "old.pt", state), kernel_backend="eager")
    assert tm.model.kernel_backend == "eager" and tm.epoch == 3 and torch.equal(tm.model(x), model(x))


def test_checkpoint_without_model_config_rebuilds_from_its_training_config():
    torch.manual_seed(0)
    model = build_model("amanet", "ntu60", kernel_backend="eager", **TINY).eval()
    state = _state(model)
    del state["model_config"]
    state["config"]["model"]["args"] = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()}
    x = torch.randn(1, 3, 8, 25, 1)
    assert torch.equal(model_from_checkpoint(state, "eager").eval()(x), model(x))
