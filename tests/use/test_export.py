"""`python -m amanet_fast.export onnx`: the file runs in onnxruntime on CPU with other batch
sizes and frame counts than the tracing example, and matches PyTorch's logits to 1e-4."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="ONNX export needs the export extra (pip install -e '.[export]')")
pytest.importorskip("onnxscript", reason="ONNX export needs the export extra (pip install -e '.[export]')")
ort = pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra (pip install -e '.[export]')")

from amanet_fast.export import main  # noqa: E402
from amanet_fast.predict import load_trained_model, model_input  # noqa: E402


def test_onnx_matches_pytorch_with_dynamic_batch_and_frames(trained, tmp_path, capsys):
    # The bone stream: DP on, and its input transform must happen before the graph, as documented.
    out = tmp_path / "bone.onnx"
    assert main(["onnx", "--checkpoint", str(trained.bone / "latest.pt"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max |logit difference|" in printed

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["amanet_fast.class_names"])[:2] == ["wave", "clap"] and meta["amanet_fast.stream"] == "bone"

    tm = load_trained_model(trained.bone / "latest.pt", kernel_backend="eager")
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    data = np.load(trained.data / "val_data_joint.npy", mmap_mode="r")
    real = np.stack([model_input(np.asarray(data[i]), tm) for i in range(3)])      # (3, C, 16, V, M), real clips
    rng = np.random.default_rng(0)
    # Frame counts that are and are not multiples of the FF group (5) and of the strides.
    for x in (real, real[:1, :, :11], rng.standard_normal((2, 3, 37, 18, 2)).astype(np.float32)):
        with torch.no_grad():
            ref = tm.model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        got = session.run(["logits"], {"x": np.ascontiguousarray(x)})[0]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-4


def test_missing_checkpoint_is_one_line_error(tmp_path, capsys):
    assert main(["onnx", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: checkpoint") and "does not exist" in err[-1]
    assert not (tmp_path / "m.onnx").exists()
