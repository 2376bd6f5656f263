"""What the attention learned, drawn like the paper's Fig. 8.

    python -m amanet_fast.visualize attention --checkpoint work_dirs/ntu60_joint/best.pt \\
        --sample S001C001P001R001A010.skeleton --out viz/ [--layer 3 --frame 40 --person 0 --head mean]

`--sample` is a raw file (any format `predict` reads) or the name of a sample
of the prepared data the checkpoint was trained on (val split first, then
train). For one block (`--layer`, 1-based, default the last as in Fig. 8) and
one input frame it writes:

- `sfem_layer{L}_frame{F}.png`: SFEM's (a) normalized adjacency
  Â = D^-1/2 (A+I) D^-1/2, (b) learned correlation softmax(QK^T/√d) without the
  bias (Fig. 8b, α = 0), (c) the matrix the model uses, softmax(QK^T/√d + α·Â)
  (Fig. 8c), joint names on both axes;
- `stfem_layer{L}_frame{F}_tau{τ}.png`: STFEM's window matrix over the τ·V
  tokens of frames F..F+τ-1 (with β·tile(Â)), one per window size;
- `ff_layer{L}.png`: the FF frame-group scores, softmax inside each group of g
  frames (block diagonal), at the block's frame rate;
- `attention_layer{L}_frame{F}.npz`: every matrix drawn, per head.

Heads are averaged unless `--head H` picks one. Rows are queries, columns keys.
The maps are recomputed from the Q/K projections that forward hooks capture on
the eager path; the kernels are not touched.
"""
from __future__ import annotations

import argparse
import io
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

from .data.errors import DataFormatError
from .data.inputs import check_clip
from .graphs import normalize_adjacency
from .predict import PredictError, TrainedModel, load_trained_model, model_input, read_raw_file, run_cli
from .argparse_util import ArgumentParser

__all__ = ["AttentionMaps", "attention_maps", "load_sample", "plot_attention", "main"]

log = logging.getLogger("amanet_fast.visualize")


@dataclass
class AttentionMaps:
    layer: int                     # 1-based block
    frame: int                     # input frame asked for
    layer_frame: int               # the same moment at the block's frame rate
    person: int
    joint_names: list[str]
    # Each entry: (H, rows, cols) float64 arrays; q/k are the captured projections they come from.
    sfem: dict[str, np.ndarray] = field(default_factory=dict)
    stfem: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)   # per window size τ
    ff: dict[str, np.ndarray] = field(default_factory=dict)
    ff_group: int = 0
    alpha: float = 0.0
    beta: float = 0.0
    probabilities: np.ndarray | None = None
    valid_frames: tuple[int, int] = (0, 0)  # [begin, end) of the model input's non-padding frames
    input_frames: int = 0
    missing: dict[str, str] = field(default_factory=dict)  # picture -> why it cannot be drawn


def _joint_names(layout) -> list[str]:
    """The layout's joint names for the axes, else the 0-based indices."""
    names = getattr(layout, "joint_names", ())
    return list(names) if names else [str(j) for j in range(layout.num_joints)]


def _softmax(x: torch.Tensor) -> np.ndarray:
    return torch.softmax(x.double(), dim=-1).numpy()


def _modules(block: nn.Module) -> tuple[nn.Module | None, nn.Module | None, nn.Module | None]:
    from .model.attention import SFEM, STFEM, FrameFeatures

    sfem = next((m for m in block.modules() if isinstance(m, SFEM)), None)
    stfem = next((m for m in block.modules() if isinstance(m, STFEM)), None)
    ff = next((m for m in block.modules() if isinstance(m, FrameFeatures)), None)
    return sfem, stfem, ff


@torch.no_grad()
def attention_maps(tm: TrainedModel, x: np.ndarray, layer: int | None = None, frame: int | None = None,
                   person: int = 0) -> AttentionMaps:
    """Run the model once on one prepared (C, T, V, M) joint sample and rebuild its attention matrices."""
    from kernels.reference import tile_bias, unfold_windows

    from .model.attention import _split_heads

    model = tm.model
    blocks = model.blocks
    layer = len(blocks) if layer is None else int(layer)
    if not 1 <= layer <= len(blocks):
        raise PredictError(f"--layer: expected 1..{len(blocks)} (the model has {len(blocks)} blocks), got {layer}")
    if not 0 <= person < tm.num_person:
        raise PredictError(f"--person: expected 0..{tm.num_person - 1}, got {person}")
    sfem, stfem, ff = _modules(blocks[layer - 1])
    if sfem is None and stfem is None and ff is None:
        raise PredictError(f"--checkpoint: {tm.checkpoint}: block {layer} has no SFEM, STFEM or FF attention "
                           f"(arch {tm.config['model']['arch']}); nothing to draw")
    inp = torch.from_numpy(model_input(x, tm))[None].to(next(model.parameters()).device)
    T_in = inp.shape[2]
    from .data.augment import valid_range

    b, e = valid_range(inp[0].cpu().numpy())
    if frame is None:
        frame = (b + e) // 2
    if not 0 <= frame < T_in:
        raise PredictError(f"--frame: expected 0..{T_in - 1} (the model input has {T_in} frames), got {frame}")
    if not b <= frame < e:
        log.warning("--frame %d is padding: the clip fills frames %d..%d of the %d-frame model input; its maps "
                    "show what the model does with padding", frame, b, e - 1, T_in)

    captured: dict[str, torch.Tensor] = {}
    hooks = []

    def keep(name: str):
        def hook(_module, _inputs, output):
            captured[name] = output.detach().float().cpu()
        return hook

    if sfem is not None:
        hooks.append(sfem.qkv.register_forward_hook(keep("sfem")))
    if ff is not None:
        hooks.append(ff.qkv.register_forward_hook(keep("ff")))
    if stfem is not None:
        for w in stfem.windows:
            hooks.append(w.qkv.register_forward_hook(keep(f"stfem{w.window}")))
    try:
        probs = torch.softmax(model(inp).float(), dim=1)[0].cpu().numpy()
    finally:
        for h in hooks:
            h.remove()

    cfg = model.config
    maps = AttentionMaps(layer=layer, frame=frame, layer_frame=0, person=person,
                         joint_names=_joint_names(tm.layout), alpha=float(cfg.alpha), beta=float(cfg.beta),
                         probabilities=probs, valid_frames=(b, e), input_frames=T_in)
    # Named here so a missing picture is reported, not just absent from the output folder.
    why = f"block {layer} of this {tm.config['model']['arch']} model has no"
    if sfem is None:
        maps.missing[f"sfem_layer{layer}_frame{frame}.png"] = f"{why} SFEM (model.args.sfem)"
    if stfem is None:
        maps.missing[f"stfem_layer{layer}_frame{frame}_tau*.png"] = f"{why} STFEM (model.args.stfem)"
    if ff is None:
        maps.missing[f"ff_layer{layer}.png"] = f"{why} TFEM frame grouping (model.args.tfem)"
    a_hat = normalize_adjacency(tm.layout.adjacency() + np.eye(tm.layout.num_joints))
    row = person  # persons fold into the batch as n * M + m, and n = 0

    def layer_frame(t_layer: int) -> int:
        return min(frame * t_layer // T_in, t_layer - 1)

    if sfem is not None:
        q, k, _ = _split_heads(captured["sfem"], sfem.heads)
        f = maps.layer_frame = layer_frame(q.shape[2])
        qf, kf = q[row, :, f].double(), k[row, :, f].double()           # (H, V, D)
        logits = qf @ kf.transpose(-1, -2) * qf.shape[-1] ** -0.5
        bias = sfem.bias.double().cpu()
        # The model's bias must be the α·Â drawn in panel (a): one formula, checked, not assumed.
        if not np.allclose(bias.numpy(), maps.alpha * a_hat, atol=1e-6):
            raise RuntimeError("SFEM bias differs from alpha * normalized adjacency")
        maps.sfem = {"adjacency": a_hat[None], "correlation": _softmax(logits), "fused": _softmax(logits + bias),
                     "q": qf.numpy(), "k": kf.numpy()}
    if stfem is not None:
        for w in stfem.windows:
            q, k, _ = _split_heads(captured[f"stfem{w.window}"], w.heads)
            f = maps.layer_frame = layer_frame(q.shape[2])  # STFEM and SFEM both see the block's input
            qw = unfold_windows(q[row:row + 1].double(), w.window)[0, :, f]   # (H, τV, D)
            kw = unfold_windows(k[row:row + 1].double(), w.window)[0, :, f]
            logits = qw @ kw.transpose(-1, -2) * qw.shape[-1] ** -0.5
            bias = tile_bias(stfem.bias.double().cpu(), w.window)[0, 0]
            maps.stfem[w.window] = {"correlation": _softmax(logits), "fused": _softmax(logits + bias),
                                    "q": qw.numpy(), "k": kw.numpy()}
    if ff is not None:
        q, k, _ = _split_heads(captured["ff"], 1)
        n_frames = q.shape[2]
        qf = q[row, 0].reshape(n_frames, -1).double()                      # (T', V*D): a frame is one token
        kf = k[row, 0].reshape(n_frames, -1).double()
        logits = qf @ kf.T * qf.shape[-1] ** -0.5
        group = np.arange(n_frames) // ff.group
        same = torch.from_numpy(group[:, None] == group[None, :])
        scores = _softmax(logits.masked_fill(~same, float("-inf")))
        maps.ff = {"scores": scores[None], "q": qf.numpy()[None], "k": kf.numpy()[None]}
        maps.ff_group = int(ff.group)
        if sfem is None and stfem is None:
            maps.layer_frame = layer_frame(n_frames)
    return maps


# ----------------------------------------------------------------------------- samples


def load_sample(tm: TrainedModel, sample: str) -> tuple[str, np.ndarray, int | None]:
    """(name, prepared (C, T, V, M) joint data, true label or None) for a raw file or a prepared sample name."""
    path = Path(sample)
    if path.is_file():
        samples = read_raw_file(path)
        if len(samples) > 1:
            log.info("%s holds %d samples: drawing the first, %s", path, len(samples), samples[0].name)
        s = samples[0]
        if s.layout is not None and s.layout != tm.layout.name:
            raise DataFormatError(f"a {s.layout} skeleton, but the checkpoint's model expects {tm.layout.name}", path)
        return s.name, check_clip(s.data, tm.inputs, s.where, s.channels), None
    from .data.dataset import SkeletonDataset
    from .data.io import data_dir

    directory = data_dir(tm.config)
    searched = []
    for split in ("val", "train"):
        try:
            ds = SkeletonDataset(directory, split=split)
        except (FileNotFoundError, ValueError):
            continue
        searched.append(split)
        if sample in ds.sample_names:
            i = ds.sample_names.index(sample)
            return sample, np.array(ds.data[i], dtype=np.float32), int(ds.labels[i])
    where = f"the {'/'.join(searched)} split of {directory}" if searched else f"prepared data (none at {directory})"
    raise PredictError(f"--sample: {sample}: neither a file nor a sample name in {where}")


# ----------------------------------------------------------------------------- drawing


def _reduce(m: np.ndarray, head: int | None) -> np.ndarray:
    if head is None:
        return m.mean(axis=0)
    if not 0 <= head < m.shape[0]:
        raise PredictError(f"--head: expected 0..{m.shape[0] - 1} or mean, got {head}")
    return m[head]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from .atomic import write_bytes_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def stfem_ticks(tau: int, num_joints: int) -> tuple[list[str], float]:
    """Tick labels of an STFEM window matrix: the joint index of every token (names go in a legend), and
    a font size that keeps them legible (>= 5 pt) at τ = 5 on 25 joints."""
    tokens = tau * num_joints
    return [str(j) for _ in range(tau) for j in range(num_joints)], max(5.0, 7.0 - 0.01 * tokens)


def _matrix(ax, m: np.ndarray, title: str, labels: Sequence[str] | None, fontsize: float = 6.0) -> None:
    im = ax.imshow(m, cmap="viridis")  # own colour scale per panel: an untrained map is near-uniform
    ax.set_title(title, fontsize=9)
    if labels is not None:
        ax.set_xticks(range(len(labels)), labels=list(labels), rotation=90, fontsize=fontsize)
        ax.set_yticks(range(len(labels)), labels=list(labels), fontsize=fontsize)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def plot_attention(maps: AttentionMaps, out_dir: str | Path, *, title: str = "", head: int | None = None) -> list[Path]:
    """Write the PNG panels and the .npz of `maps` into `out_dir`; returns the files written."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    L, F = maps.layer, maps.frame
    where = f"layer {L}, frame {F} (block frame {maps.layer_frame}), person {maps.person}, " \
            f"{'mean over heads' if head is None else f'head {head}'}"
    names = maps.joint_names
    b, e = maps.valid_frames
    if maps.input_frames and not b <= F < e:
        where += f" — PADDING frame (clip frames {b}..{e - 1})"
    written: list[Path] = []
    for picture, why in maps.missing.items():
        log.warning("not drawn: %s: %s", picture, why)
    if maps.sfem:
        fig, axes = plt.subplots(1, 3, figsize=(18, 6.4))
        _matrix(axes[0], maps.sfem["adjacency"][0], "(a) normalized adjacency Â", names)
        _matrix(axes[1], _reduce(maps.sfem["correlation"], head), "(b) learned correlation softmax(QKᵀ/√d)", names)
        _matrix(axes[2], _reduce(maps.sfem["fused"], head), f"(c) fused softmax(QKᵀ/√d + α·Â), α = {maps.alpha:g}",
                names)
        fig.suptitle(f"SFEM {where}\n{title}", fontsize=10)
        fig.tight_layout()
        written.append(_save(fig, out / f"sfem_layer{L}_frame{F}.png"))
    for tau, m in maps.stfem.items():
        labels, fs = stfem_ticks(tau, len(names))
        size = min(6 + 0.08 * len(labels), 24)
        fig, axes = plt.subplots(1, 2, figsize=(2 * size, size + 1.5))
        _matrix(axes[0], _reduce(m["correlation"], head), f"correlation softmax(QKᵀ/√d), τ = {tau}", labels, fs)
        _matrix(axes[1], _reduce(m["fused"], head), f"fused softmax(QKᵀ/√d + β·tile(Â)), β = {maps.beta:g}",
                labels, fs)
        V = len(names)
        for ax in axes:  # frame boundaries inside the window (tokens are frame-major: s*V + joint)
            for s in range(1, tau):
                ax.axhline(s * V - 0.5, color="white", lw=0.6)
                ax.axvline(s * V - 0.5, color="white", lw=0.6)
            for s in range(tau):  # which window frame each block of joints is, above the matrix
                ax.text(s * V + V / 2 - 0.5, -1.5, f"t+{s}", ha="center", va="bottom", fontsize=8)
        fig.suptitle(f"STFEM window frames t+0..t+{tau - 1} (ticks: joint index per frame), {where}\n{title}",
                     fontsize=10)
        # Joint index -> name once, below, instead of τ·V long tick labels nobody can read at τ = 5.
        fig.text(0.01, 0.005, "joints: " + ", ".join(f"{j} {n}" for j, n in enumerate(names)), fontsize=7,
                 wrap=True, va="bottom")
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        written.append(_save(fig, out / f"stfem_layer{L}_frame{F}_tau{tau}.png"))
    if maps.ff:
        scores = maps.ff["scores"][0]
        n = scores.shape[0]
        size = min(5 + 0.05 * n, 20)
        fig, ax = plt.subplots(figsize=(size + 1, size))
        labels = [str(t) for t in range(n)] if n <= 64 else None
        _matrix(ax, scores, f"FF frame-group scores, g = {maps.ff_group} ({n} frames at this block's rate)", labels)
        if maps.input_frames:  # grey out padding, at this block's frame rate
            pb, pe = b * n // maps.input_frames, -(-e * n // maps.input_frames)  # block frames touching the clip
            for lo, hi in ((0, pb), (pe, n)):
                if hi > lo:
                    for rect in ((lo - 0.5, -0.5, hi - lo, n), (-0.5, lo - 0.5, n, hi - lo)):
                        ax.add_patch(matplotlib.patches.Rectangle(rect[:2], rect[2], rect[3], color="grey",
                                                                  alpha=0.55, lw=0, hatch="//"))
            ax.set_xlabel(f"grey: padding frames (clip at input frames {b}..{e - 1} of {maps.input_frames})",
                          fontsize=8)
        g0 = (maps.layer_frame // maps.ff_group) * maps.ff_group
        g1 = min(g0 + maps.ff_group, n)
        ax.add_patch(matplotlib.patches.Rectangle((g0 - 0.5, g0 - 0.5), g1 - g0, g1 - g0, fill=False,
                                                  edgecolor="red", lw=1.2))
        fig.suptitle(f"FF layer {L}, person {maps.person} (red: the group of block frame {maps.layer_frame})\n{title}",
                     fontsize=10)
        fig.tight_layout()
        written.append(_save(fig, out / f"ff_layer{L}.png"))
    arrays: dict[str, np.ndarray] = {}
    for k, v in maps.sfem.items():
        arrays[f"sfem_{k}"] = v
    for tau, m in maps.stfem.items():
        for k, v in m.items():
            arrays[f"stfem_tau{tau}_{k}"] = v
    for k, v in maps.ff.items():
        arrays[f"ff_{k}"] = v
    arrays["joint_names"] = np.asarray(names)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    from .atomic import write_bytes_atomic

    written.append(write_bytes_atomic(out / f"attention_layer{L}_frame{F}.npz", buf.getvalue()))
    return written


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m amanet_fast.visualize",
                                description="Draw what a trained AMANet's attention modules learned (paper Fig. 8).")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attention", help="SFEM / STFEM / FF attention matrices of one sample")
    a.add_argument("--checkpoint", required=True, type=Path)
    a.add_argument("--sample", required=True, help="a raw skeleton file, or a sample name of the training data")
    a.add_argument("--out", required=True, type=Path, help="output folder for the PNGs and the .npz")
    a.add_argument("--layer", type=int, help="block, 1-based (default: the last, as in Fig. 8)")
    a.add_argument("--frame", type=int, help="input frame (default: the middle of the valid frames)")
    a.add_argument("--person", type=int, default=0, help="person slot (default 0, the most active)")
    a.add_argument("--head", default="mean", help="attention head index, or mean (default)")
    return p


def run(args: argparse.Namespace) -> list[Path]:
    try:
        head = None if args.head == "mean" else int(args.head)
    except ValueError:
        raise PredictError(f"--head: expected an integer or mean, got {args.head!r}") from None
    from .atomic import check_output_path

    check_output_path(args.out, "--out", inputs=[args.checkpoint, Path(args.sample)], directory=True)
    tm = load_trained_model(args.checkpoint, device="cpu", kernel_backend="eager")
    name, x, label = load_sample(tm, args.sample)
    maps = attention_maps(tm, x, args.layer, args.frame, args.person)
    assert maps.probabilities is not None
    pred = int(np.argmax(maps.probabilities))
    title = f"{name}: predicted {tm.class_names[pred]} ({maps.probabilities[pred]:.2f})"
    if label is not None:
        title += f", true {tm.class_names[label]}"
    files = plot_attention(maps, args.out, title=title, head=head)
    log.info("%s, %s stream, eager attention path", title, tm.stream)
    return files


def _show_files(_args: argparse.Namespace, files: list[Path]) -> None:
    for f in files:
        print(f)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), run, _show_files, argv)


if __name__ == "__main__":
    sys.exit(main())
