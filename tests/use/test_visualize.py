"""`python -m amanet_fast.visualize attention`: the PNG panels are written, and the matrices
drawn are the ones the attention ops compute (checked against the ops themselves by
feeding one-hot values, so out = the attention matrix)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kernels
from amanet_fast.predict import load_trained_model
from amanet_fast.visualize import attention_maps, load_sample, main


def test_cli_writes_fig8_panels(trained, tmp_path, capsys):
    name = sorted(p.name for p in trained.raw_val())[2]
    rc = main(["attention", "--checkpoint", str(trained.joint / "latest.pt"), "--sample", name,
               "--out", str(tmp_path), "--frame", "6"])
    out = capsys.readouterr().out.split()
    assert rc == 0
    expected = {"sfem_layer3_frame6.png", "stfem_layer3_frame6_tau3.png", "stfem_layer3_frame6_tau5.png",
                "ff_layer3.png", "attention_layer3_frame6.npz"}
    assert {p.rsplit("/", 1)[-1] for p in out} == expected
    for f in expected - {"attention_layer3_frame6.npz"}:
        assert (tmp_path / f).read_bytes()[:4] == b"\x89PNG"
    saved = np.load(tmp_path / "attention_layer3_frame6.npz")
    assert list(saved["joint_names"][:2]) == ["nose", "neck"]
    assert np.allclose(saved["sfem_fused"].sum(-1), 1) and np.allclose(saved["sfem_correlation"].sum(-1), 1)


def _attend(op, q, k, onehot, *args, scale):
    """The op with one-hot values: its output rows are the attention rows. q/k/v are zero-padded to one
    width (the ops want equal shapes); zero features change neither QK^T nor, with `scale` given, the scores."""
    width = max(q.shape[-1], onehot.shape[-1])
    q, k, v = (torch.nn.functional.pad(t, (0, width - t.shape[-1])) for t in (q, k, onehot))
    return op(q, k, v, *args, scale=scale, backend="eager")[..., :onehot.shape[-1]]


def test_maps_equal_the_attention_ops(trained):
    tm = load_trained_model(trained.joint / "latest.pt", kernel_backend="eager")
    _, x, _ = load_sample(tm, str(trained.raw_val()[4]))  # a raw file, through prepare's reader
    maps = attention_maps(tm, x, layer=1, frame=5, person=0)
    block = tm.model.blocks[0]
    sfem = block.factorized[0]
    stfem = block.g3d[0]

    q, k = (torch.from_numpy(maps.sfem[n]) for n in ("q", "k"))               # (H, V, D)
    H, V, D = q.shape
    onehot = torch.eye(V, dtype=q.dtype).expand(1, H, 1, V, V)
    ref = _attend(kernels.window_attention, q[None, :, None], k[None, :, None], onehot, sfem.bias.double(), 1,
                  scale=D ** -0.5)
    assert np.allclose(maps.sfem["fused"], ref[0, :, 0, 0].numpy(), atol=1e-10)
    assert not np.allclose(maps.sfem["fused"], maps.sfem["correlation"], atol=1e-3)  # α·Â matters
    ref0 = _attend(kernels.window_attention, q[None, :, None], k[None, :, None], onehot,
                   torch.zeros(V, V, dtype=q.dtype), 1, scale=D ** -0.5)
    assert np.allclose(maps.sfem["correlation"], ref0[0, :, 0, 0].numpy(), atol=1e-10)

    assert sorted(maps.stfem) == [3, 5]
    for tau, m in maps.stfem.items():
        q, k = (torch.from_numpy(m[n]) for n in ("q", "k"))                      # (H, τV, D)
        Hs, n_tok, D = q.shape
        qs, ks = (t.reshape(1, Hs, tau, V, D) for t in (q, k))                    # the window as a τ-frame clip
        onehot = torch.eye(n_tok, dtype=q.dtype).view(tau, V, n_tok).expand(1, Hs, tau, V, n_tok)
        ref = _attend(kernels.window_attention, qs, ks, onehot, stfem.bias.double(), tau, scale=D ** -0.5)
        assert np.allclose(m["fused"], ref[0, :, 0].reshape(Hs, n_tok, n_tok).numpy(), atol=1e-10)

    q, k = (torch.from_numpy(maps.ff[n][0]) for n in ("q", "k"))                 # (T', V*D)
    T, F = q.shape
    onehot = torch.eye(T, dtype=q.dtype).view(1, 1, T, 1, T)
    ref = _attend(kernels.frame_group_attention, q.view(1, 1, T, 1, F), k.view(1, 1, T, 1, F), onehot,
                  maps.ff_group, scale=F ** -0.5)
    assert np.allclose(maps.ff["scores"][0], ref[0, 0, :, 0].numpy(), atol=1e-10)
    assert maps.ff_group == 5 and np.allclose(maps.ff["scores"][0].sum(-1), 1)


@pytest.mark.parametrize("extra, message", [
    (["--sample", "no_such_clip"], "neither a file nor a sample name"),
    (["--layer", "7"], "--layer: expected 1..3"),
    (["--frame", "99"], "--frame: expected 0..15"),
])
def test_bad_arguments_are_one_line_errors(trained, tmp_path, capsys, extra, message):
    args = {"--sample": trained.raw_val()[0].name}
    argv = ["attention", "--checkpoint", str(trained.joint / "latest.pt"), "--out", str(tmp_path)]
    for k, v in zip(extra[::2], extra[1::2]):
        args[k] = v
    for k, v in args.items():
        argv += [k, v]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]


def test_model_without_attention_is_refused(trained):
    from dataclasses import replace

    from amanet_fast import build_model
    from amanet_fast.predict import PredictError

    tm = load_trained_model(trained.joint / "latest.pt", kernel_backend="eager")
    msg3d = build_model("msg3d", "synthetic", channels=(6, 12, 24), num_gcn_scales=2, num_g3d_scales=2).eval()
    _, x, _ = load_sample(tm, trained.raw_val()[0].name)
    with pytest.raises(PredictError, match="block 3 has no SFEM, STFEM or FF attention"):
        attention_maps(replace(tm, model=msg3d), x)


def test_padding_and_pictures_it_cannot_draw_are_said(trained, tmp_path, capsys, caplog):
    """A clip shorter than the model input: the padded frame is flagged; a model without STFEM/FF
    names the pictures it leaves out and why; STFEM ticks stay short and legible at tau = 5."""
    from amanet_fast.training.cli import main as train_main
    from amanet_fast.visualize import stfem_ticks

    caplog.set_level("WARNING")
    tm = load_trained_model(trained.joint / "latest.pt", kernel_backend="eager")
    _, x, _ = load_sample(tm, str(trained.raw_val()[0]))
    short = np.zeros_like(x)
    short[:, :8] = x[:, :8]  # 8 real frames, then zeros: the 16-frame model input is half padding
    np.save(tmp_path / "short.npy", short)
    rc = main(["attention", "--checkpoint", str(trained.joint / "latest.pt"), "--sample", str(tmp_path / "short.npy"),
               "--out", str(tmp_path / "v"), "--frame", "12"])
    assert rc == 0 and "--frame 12 is padding: the clip fills frames 0..7 of the 16-frame model input" in caplog.text
    caplog.clear()
    wd = tmp_path / "nostfem"
    assert train_main(["--preset", "tiny", "data.synthetic.num_train=24", "data.synthetic.num_val=12",
                       f"data.root={trained.data}", "--work-dir", str(wd), "train.epochs=1", "runtime.threads=1",
                       "runtime.tensorboard=false", "model.args.stfem=false", "model.args.tfem=false"]) == 0
    capsys.readouterr()
    rc = main(["attention", "--checkpoint", str(wd / "latest.pt"), "--sample", trained.raw_val()[0].name,
               "--out", str(tmp_path / "w"), "--frame", "6"])
    out = capsys.readouterr().out
    assert rc == 0 and "stfem" not in out and "sfem_layer3_frame6.png" in out
    assert "not drawn: stfem_layer3_frame6_tau*.png: block 3 of this amanet model has no STFEM" in caplog.text
    assert "not drawn: ff_layer3.png: block 3 of this amanet model has no TFEM" in caplog.text
    labels, fontsize = stfem_ticks(5, 25)
    assert len(labels) == 125 and max(map(len, labels)) <= 2 and fontsize >= 5
