"""One config system for training: defaults <- YAML file <- preset <- CLI flags <- key=value.

Every knob lives in one nested dict so that the resolved config saved in the
work dir is the complete recipe of a run: re-running with
`--config WORK_DIR/config.yaml` reproduces it, and nothing is inferred from
file names or hidden in code paths.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..registry import DATASETS as _REGISTRY
from ..argparse_util import ArgumentParser

DATASETS = tuple(_REGISTRY)  # recipe names (configs/<recipe>); the data itself is described by its manifest
from ..streams import STREAMS  # noqa: E402  the one definition of each word, imported
from ..model.build import ARCHS, KERNEL_BACKENDS  # noqa: E402
AMP_MODES = ("auto", "bf16", "fp16", "off")

# The complete set of keys. A value of None means "no default / decided at
# run time"; such keys accept any YAML value.
DEFAULTS: dict[str, Any] = {
    "dataset": "synthetic",
    "seed": 0,
    "work_dir": None,
    "data": {
        "root": None,  # prepared data dir; None -> $AMANET_DATA/<dataset> or ./data/<dataset>
        "split": None,  # benchmark sub-dir of root, e.g. xsub / xview / xset
        "stream": "joint",
        "clip_len": None,  # frames fed to the model; None -> the prepared length (300)
        # clips shorter than clip_len/300: zero | replay; None -> the dataset's default
        # (amanet_fast.data.augment.DEFAULT_PAD: replay for NTU and NW-UCLA as the paper, zero for Kinetics as MS-G3D)
        "pad": None,
        "random_choose": False,
        "random_shift": False,
        "random_move": False,
        # Whole-clip protocol of the CTR-GCN family (amanet_fast.data.protocol; all off by default):
        "persons": None,  # keep the first N bodies (NW-UCLA: 1); None -> all prepared slots
        "center_joint": None,  # translate so this joint of the first frame is the origin
        "view_rotate_deg": 0,  # training: random rotation about x and y, integer degrees in [-a, a]
        "view_scale": None,  # training: random uniform scale [low, high]
        "minmax_normalize": False,  # each axis of the clip to [-1, 1]
        "resample": None,  # the whole clip resampled to N frames (replaces clip_len / pad / random_choose)
        "train_repeat": 1,  # passes over the training set per epoch
        "num_workers": 0,  # DataLoader workers per process; capped to the CPU cores available (logged)
        "limit_train": None,  # use a seeded subset of this many train samples (smoke runs)
        "limit_val": None,
        "holdout_fraction": 0.0,  # keep this part of train out of training; its scores feed ensemble --search
        "synthetic": {"seed": 0, "num_train": 600, "num_val": 180},  # the generated demo set (dataset: synthetic)
    },
    "model": {
        "arch": "amanet",
        "args": {},  # extra keyword overrides for amanet_fast.build_model
    },
    "optim": {
        "batch_size": 32,  # global batch per optimizer step (all ranks together)
        "forward_batch_size": None,  # per-rank micro-batch; None -> no accumulation
        "base_lr": 0.05,
        "base_batch_size": 32,  # lr = base_lr * batch_size / base_batch_size
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 0.0005,
        "lr_steps": [30, 40],
        "lr_gamma": 0.1,
        "warmup_epochs": 0,
        "label_smoothing": 0.0,
        "grad_clip": None,
    },
    "train": {
        "epochs": 50,
        "eval_every": 1,
        "stop_after_epoch": None,  # end this run after that epoch (time-sliced jobs); resume continues
        "eval_batch_size": None,  # None -> per-rank train batch
    },
    "runtime": {
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "compile": "auto",  # auto (on for CUDA) | true | false
        "amp": "auto",  # auto (bf16 on CUDA and on CPUs with native bf16, else fp32) | bf16 | fp16 | off
        "kernel_backend": "auto",
        "threads": None,  # intra-op threads per process; None/0 -> the cores others leave free (threads.py)
        "deterministic": False,
        "progress": True,  # tqdm bars on rank 0 when stderr is a terminal, else periodic log lines
        "log_interval_s": 30.0,  # seconds between in-epoch progress lines when there is no bar (0: every step)
        "tensorboard": True,
    },
    "eval": {
        "save_scores": True,
        "confusion_matrix": True,
    },
}

# CLI flags and the config key each one sets.
FLAG_KEYS: dict[str, str] = {
    "dataset": "dataset",
    "split": "data.split",
    "stream": "data.stream",
    "arch": "model.arch",
    "data_root": "data.root",
    "work_dir": "work_dir",
    "forward_batch_size": "optim.forward_batch_size",
    "batch_size": "optim.batch_size",
    "epochs": "train.epochs",
    "amp": "runtime.amp",
    "device": "runtime.device",
    "seed": "seed",
    "kernel_backend": "runtime.kernel_backend",
}


def configs_dir() -> Path:
    """The repository's configs/ folder (sits next to the package)."""
    env = os.environ.get("AMANET_CONFIGS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "configs"


def default_config_file(dataset: str) -> Path:
    if dataset not in DATASETS:
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {dataset!r}")
    return configs_dir() / _REGISTRY[dataset].recipe


def presets_by_dataset() -> dict[str, list[str]]:
    """Preset names of each dataset's recipe file (for --help); unreadable files list nothing."""
    out: dict[str, list[str]] = {}
    for ds in DATASETS:
        try:
            presets = load_yaml(default_config_file(ds)).get("presets") or {}
        except (OSError, ValueError):
            presets = {}
        out[ds] = sorted(presets) if isinstance(presets, dict) else []
    return out


# A config has a few hundred values; an alias bomb ("billion laughs") expands to billions.
MAX_YAML_NODES = 100_000


def safe_yaml(text: str, source: str) -> Any:
    """yaml.safe_load that refuses documents whose aliases expand past MAX_YAML_NODES."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}

        def expanded(n: yaml.Node) -> int:
            if id(n) in sizes:
                return sizes[id(n)]
            sizes[id(n)] = 1  # a recursive alias counts once here; the constructor handles the cycle
            if isinstance(n, yaml.SequenceNode):
                total = 1 + sum(expanded(c) for c in n.value)
            elif isinstance(n, yaml.MappingNode):
                total = 1 + sum(expanded(k) + expanded(v) for k, v in n.value)
            else:
                total = 1
            sizes[id(n)] = min(total, MAX_YAML_NODES + 1)
            return sizes[id(n)]

        if expanded(node) > MAX_YAML_NODES:
            raise ValueError(f"{source}: YAML aliases expand to more than {MAX_YAML_NODES:,} values "
                             "(an alias bomb?); write the values out")
        return loader.construct_document(node)
    except RecursionError:
        raise ValueError(f"{source}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def _yaml_where(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    return f":{mark.line + 1}" if mark is not None else ""


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where (line, column)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else problem


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        raw = path.read_bytes()
    except OSError as err:  # a directory, unreadable
        raise ValueError(f"{path}: cannot read the config file: {err.strerror or err}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: config file is not UTF-8 text") from None
    try:
        data = safe_yaml(text, str(path))
    except yaml.YAMLError as err:
        raise ValueError(f"{path}{_yaml_where(err)}: config file is not valid YAML: {_yaml_problem(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path}: expected a mapping at top level, got {type(data).__name__}")
    return data


def _all_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, dict) and v:
            keys.extend(_all_keys(v, full + "."))
    return keys


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Check `value` against the default's type; accept what YAML 1.1 leaves as text (5e-4)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise TypeError(f"config key {key}: expected true/false, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, str):
            try:
                value = float(value) if isinstance(default, float) or any(c in value for c in ".eE") else int(value)
            except ValueError:
                raise TypeError(f"config key {key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"config key {key}: expected a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config key {key}: expected a finite number, got {value!r}")
        if isinstance(default, int) and isinstance(value, float) and not value.is_integer():
            raise TypeError(f"config key {key}: expected an integer, got {value!r}")
        return type(default)(value)
    if isinstance(default, str):
        if isinstance(value, bool):
            # YAML 1.1 reads on/off/yes/no as booleans: `amp: off` means the text "off".
            return value if key == "runtime.compile" else ("on" if value else "off")
        if not isinstance(value, str):
            raise TypeError(f"config key {key}: expected text, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"config key {key}: expected a list, got {value!r}")
        return list(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise TypeError(f"config key {key}: expected a mapping, got {value!r}")
        return value
    return value


def _unknown_key_error(key: str) -> ValueError:
    # Whole-key look-alikes (optim.base_l), and for a bare or misplaced leaf (lr=0.1, train.batch_size=8)
    # the keys with that last part first, then those ending in it (lr -> base_lr), then leaf look-alikes.
    keys = _all_keys(DEFAULTS)
    leaf = key.rsplit(".", 1)[-1]
    leaves = {k: k.rsplit(".", 1)[-1] for k in keys}
    close = ([k for k, l in leaves.items() if l == leaf] + difflib.get_close_matches(key, keys, n=3)
             + [k for k, l in leaves.items() if l.endswith("_" + leaf)]
             + [k for k, l in leaves.items() if difflib.get_close_matches(leaf, [l], cutoff=0.75)])
    close = list(dict.fromkeys(close))[:3]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ValueError(f"unknown config key {key!r}{hint}")


def set_key(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted key, checked against DEFAULTS (model.args.* is free-form)."""
    parts = dotted.split(".")
    if not all(parts):
        raise ValueError(f"config key {dotted!r} is malformed")
    node, default_node = cfg, DEFAULTS
    for i, part in enumerate(parts[:-1]):
        free = default_node is None  # inside a free-form mapping
        if not free:
            if not isinstance(default_node, dict) or part not in default_node:
                raise _unknown_key_error(dotted)
            default_node = default_node[part]
            if isinstance(default_node, dict) and not default_node:
                default_node = None  # free-form below (model.args)
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"config key {'.'.join(parts[: i + 1])} is not a mapping")
        node = child
    last = parts[-1]
    if default_node is None:
        node[last] = value
        return
    if not isinstance(default_node, dict) or last not in default_node:
        raise _unknown_key_error(dotted)
    default = default_node[last]
    if isinstance(default, dict) and default:
        if not isinstance(value, dict):
            raise TypeError(f"config key {dotted}: expected a mapping, got {value!r}")
        for k, v in value.items():
            set_key(cfg, f"{dotted}.{k}", v)
        return
    node[last] = _coerce(dotted, value, default)


def merge(cfg: dict[str, Any], overrides: dict[str, Any], prefix: str = "") -> None:
    """Merge a nested mapping into cfg, key by key (so each key is checked)."""
    for k, v in overrides.items():
        dotted = f"{prefix}{k}"
        if isinstance(v, dict) and not dotted.startswith("model.args") and dotted != "model.args":
            merge(cfg, v, dotted + ".")
        else:
            set_key(cfg, dotted, v)


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ValueError(f"override {text!r}: expected key=value (e.g. optim.base_lr=0.1)")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = safe_yaml(raw, f"override {key}") if raw.strip() else None
    except yaml.YAMLError as err:
        raise ValueError(f"override {text!r}: value is not valid YAML: {_yaml_problem(err)}") from None
    return key, value


def get_key(cfg: dict[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _epilog() -> str:
    lines = ["Recipes (--dataset) and their presets (--preset):"]
    for ds, presets in presets_by_dataset().items():
        info = _REGISTRY[ds]
        lines.append(f"  {ds:<10} {info.title}; presets: {', '.join(presets) if presets else 'none'}")
    lines += [
        "",
        "Any config key can be overridden as key=value (values parsed as YAML), e.g.",
        "  optim.base_lr=0.1 train.epochs=5 model.args.dp_mode=center data.num_workers=4",
        "See configs/*.yaml for every key. Examples:",
        "  python train.py                                     # synthetic CPU demo",
        "  python train.py --dataset ucla --data-root data/ucla --preset cpu",
        "  python train.py --data-root data/mine               # any prepared folder; recipe from its manifest",
        "  python train.py --eval-only --checkpoint work_dirs/RUN/best.pt",
    ]
    return "\n".join(lines)


def build_arg_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="train.py",
        description="Train / evaluate AMANet and MS-G3D on prepared skeleton data. With no arguments: the "
        "synthetic CPU demo. The network is built from the prepared data's manifest (layout, classes, "
        "channels); --dataset only picks the training recipe.",
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS,
                   help="training recipe configs/<dataset>.yaml (default: the recipe of the --data-root "
                   "folder's manifest, else synthetic)")
    p.add_argument("--split", help="benchmark sub-folder of the data root (" + ", ".join(
        f"{d.name}: {'|'.join(d.benchmarks)}" for d in _REGISTRY.values() if d.benchmarks) + ")")
    p.add_argument("--stream", choices=STREAMS, help="input stream (MS-DS): joint, bone, or their fused forms")
    p.add_argument("--arch", choices=ARCHS, help="amanet (DP+SFEM+TFEM+STFEM) or the msg3d baseline")
    p.add_argument("--config", help="YAML config file (replaces configs/<dataset>.yaml)")
    p.add_argument("--preset", help="named preset from the recipe's `presets:` section (listed below)")
    p.add_argument("--data-root", dest="data_root",
                   help="prepared data folder (made by python -m amanet_fast.data.prepare); with --split, "
                   "DATA_ROOT/<split>. Default: $AMANET_DATA/<dataset> or ./data/<dataset>")
    p.add_argument("--work-dir", dest="work_dir",
                   help="output folder (log, checkpoints, results); a rerun resumes from its latest.pt. "
                   "Default: work_dirs/<dataset>[_<split>][_<preset>]_<arch>_<stream>")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="global batch per optimizer step")
    p.add_argument("--forward-batch-size", dest="forward_batch_size", type=int,
                   help="per-rank micro-batch; gradients are accumulated up to the batch size")
    p.add_argument("--epochs", type=int, help="number of training epochs (train.epochs)")
    p.add_argument("--amp", choices=AMP_MODES, help="mixed precision: auto (bf16 on CUDA and on CPUs with native bf16, else off), bf16, "
                   "fp16 (CUDA), off (exact fp32)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--seed", type=int, help="seed of weights, data order and augmentation")
    p.add_argument("--kernel-backend", dest="kernel_backend", choices=KERNEL_BACKENDS,
                   help="attention kernels: auto (Triton on CUDA, eager otherwise), triton, eager")
    p.add_argument("--compile", dest="compile", action="store_true", default=None, help="force torch.compile")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="disable torch.compile")
    p.add_argument("--eval-only", action="store_true", help="evaluate --checkpoint on the val split")
    p.add_argument("--checkpoint", help="checkpoint for --eval-only (model config is taken from it)")
    p.add_argument("--no-resume", action="store_true", help="ignore WORK_DIR/latest.pt")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="any config key, dotted, e.g. optim.base_lr=0.1 (see below)")
    return p


def _apply_presets(cfg: dict[str, Any], file_cfg: dict[str, Any], preset: str | None, source: str) -> None:
    presets = file_cfg.pop("presets", None) or {}
    if not isinstance(presets, dict):
        raise ValueError(f"{source}: `presets` must be a mapping of name -> overrides")
    merge(cfg, file_cfg)
    if preset is not None:
        if preset not in presets:
            avail = ", ".join(sorted(presets)) or "none"
            raise ValueError(f"--preset {preset!r}: not defined in {source} (available: {avail})")
        merge(cfg, presets[preset] or {})


def explicit_overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """The (key, value) pairs the command line sets, flags first, then key=value in order."""
    pairs: list[tuple[str, Any]] = []
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if value is not None:
            pairs.append((key, value))
    if getattr(args, "compile", None) is not None:
        pairs.append(("runtime.compile", bool(args.compile)))
    pairs.extend(parse_override(o) for o in args.overrides)
    return pairs


def resolve_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve the run's config. `base` (a checkpoint's config) replaces the YAML layer."""
    cfg = copy.deepcopy(DEFAULTS)
    if base is not None:
        merge(cfg, {k: v for k, v in base.items() if k != "presets"})
        if args.config:
            _apply_presets(cfg, load_yaml(args.config), args.preset, args.config)
    else:
        if args.config:
            source = Path(args.config)
        else:
            source = default_config_file(args.dataset or DEFAULTS["dataset"])
            if not source.is_file():
                raise FileNotFoundError(
                    f"default config {source} not found; pass --config FILE.yaml (or set AMANET_CONFIGS)"
                )
        _apply_presets(cfg, load_yaml(source), args.preset, str(source))
    for key, value in explicit_overrides(args):
        set_key(cfg, key, value)
    if cfg["work_dir"] is None and args.preset:
        # A preset run (a smoke test, a CPU-sized run) must not take the full run's default folder: the
        # full run would then resume from it or be refused as a different setup.
        cfg["work_dir"] = str(default_work_dir(cfg, args.preset))
    validate(cfg)
    return cfg


def validate(cfg: dict[str, Any]) -> None:
    if cfg["dataset"] not in DATASETS:
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {cfg['dataset']!r}")
    if cfg["data"]["stream"] not in STREAMS:
        raise ValueError(f"data.stream: expected one of {', '.join(STREAMS)}, got {cfg['data']['stream']!r}")
    if cfg["model"]["arch"] not in ARCHS:
        raise ValueError(f"model.arch: expected one of {', '.join(ARCHS)}, got {cfg['model']['arch']!r}")
    amp = cfg["runtime"]["amp"]
    if amp not in AMP_MODES:
        raise ValueError(f"runtime.amp: expected one of {', '.join(AMP_MODES)}, got {amp!r}")
    comp = cfg["runtime"]["compile"]
    if comp not in ("auto", True, False):
        raise ValueError(f"runtime.compile: expected auto, true or false, got {comp!r}")
    o = cfg["optim"]
    for key in ("batch_size", "base_batch_size"):
        if o[key] < 1:
            raise ValueError(f"optim.{key}: expected >= 1, got {o[key]}")
    if o["forward_batch_size"] is not None and (not isinstance(o["forward_batch_size"], int) or o["forward_batch_size"] < 1):
        raise ValueError(f"optim.forward_batch_size: expected a positive integer, got {o['forward_batch_size']!r}")
    if o["base_lr"] <= 0:
        raise ValueError(f"optim.base_lr: expected > 0, got {o['base_lr']}")
    if not all(isinstance(s, int) for s in o["lr_steps"]) or sorted(o["lr_steps"]) != list(o["lr_steps"]):
        raise ValueError(f"optim.lr_steps: expected increasing integers, got {o['lr_steps']!r}")
    if cfg["train"]["epochs"] < 1:
        raise ValueError(f"train.epochs: expected >= 1, got {cfg['train']['epochs']}")
    hf = cfg["data"]["holdout_fraction"]
    if not 0.0 <= hf < 1.0:
        raise ValueError(f"data.holdout_fraction: expected 0 <= f < 1, got {hf}")
    nw = cfg["data"]["num_workers"]
    if not isinstance(nw, int) or nw < 0:
        raise ValueError(f"data.num_workers: expected an integer >= 0, got {nw!r}")
    if cfg["runtime"]["log_interval_s"] < 0:
        raise ValueError(f"runtime.log_interval_s: expected >= 0, got {cfg['runtime']['log_interval_s']}")
    cl = cfg["data"]["clip_len"]
    if cl is not None and (not isinstance(cl, int) or cl < 1):
        raise ValueError(f"data.clip_len: expected a positive integer or null, got {cl!r}")
    if cfg["data"]["pad"] not in (None, "zero", "replay"):
        raise ValueError(f"data.pad: expected zero, replay or null (the dataset's default), got {cfg['data']['pad']!r}")
    for key in ("limit_train", "limit_val"):
        v = cfg["data"][key]
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"data.{key}: expected a positive integer or null, got {v!r}")
    if not isinstance(cfg["model"]["args"], dict):
        raise ValueError("model.args: expected a mapping of build_model keyword overrides")
    _validate_values(cfg)


def _number(cfg: dict[str, Any], key: str) -> Any:
    v = get_key(cfg, key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
        raise ValueError(f"{key}: expected a finite number, got {v!r}")
    return v


def _validate_values(cfg: dict[str, Any]) -> None:
    """Ranges of the numeric knobs, checked before anything runs (not after an epoch, not by torch)."""
    def need(key: str, ok: Any, expected: str) -> None:
        if not ok:
            raise ValueError(f"{key}: expected {expected}, got {get_key(cfg, key)!r}")

    def pos_int_or_null(key: str, allow_zero: bool = False) -> None:
        v = get_key(cfg, key)
        need(key, v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= (0 if allow_zero else 1)),
             f"{'a non-negative' if allow_zero else 'a positive'} integer or null")

    need("optim.base_lr", _number(cfg, "optim.base_lr") > 0, "a finite number > 0")
    m = _number(cfg, "optim.momentum")
    need("optim.momentum", 0 <= m < 1, "0 <= momentum < 1")
    need("optim.weight_decay", _number(cfg, "optim.weight_decay") >= 0, "a finite number >= 0")
    need("optim.lr_gamma", _number(cfg, "optim.lr_gamma") > 0, "a finite number > 0")
    need("optim.label_smoothing", 0 <= _number(cfg, "optim.label_smoothing") < 1, "0 <= value < 1")
    gc = _number(cfg, "optim.grad_clip")
    need("optim.grad_clip", gc is None or gc > 0, "a number > 0 or null")
    need("optim.warmup_epochs", get_key(cfg, "optim.warmup_epochs") >= 0, "an integer >= 0")
    need("optim.lr_steps", all(s >= 0 for s in cfg["optim"]["lr_steps"]), "epochs >= 0")
    need("train.eval_every", get_key(cfg, "train.eval_every") >= 1, "an integer >= 1 (evaluate every N epochs)")
    pos_int_or_null("train.stop_after_epoch")
    pos_int_or_null("train.eval_batch_size")
    pos_int_or_null("runtime.threads", allow_zero=True)
    need("data.num_workers", get_key(cfg, "data.num_workers") >= 0, "an integer >= 0")
    need("data.train_repeat", get_key(cfg, "data.train_repeat") >= 1, "an integer >= 1 (passes per epoch)")
    pos_int_or_null("data.resample")
    pos_int_or_null("data.persons")
    need("data.random_choose", not (cfg["data"]["resample"] and cfg["data"]["random_choose"]),
         "false when data.resample is set (the resampled clip is the whole sequence)")
    for key in ("data.synthetic.num_train", "data.synthetic.num_val"):
        need(key, get_key(cfg, key) >= 1, "an integer >= 1")
    dev = cfg["runtime"]["device"]
    need("runtime.device", isinstance(dev, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", dev),
         "auto, cpu, cuda or cuda:N")


def scaled_lr(cfg: dict[str, Any]) -> float:
    """Linear scaling rule: the paper's 0.05 at batch 32."""
    o = cfg["optim"]
    return float(o["base_lr"]) * o["batch_size"] / o["base_batch_size"]


def default_work_dir(cfg: dict[str, Any], preset: str | None = None) -> Path:
    parts = [cfg["dataset"]]
    if cfg["data"]["split"]:
        parts.append(str(cfg["data"]["split"]))
    if preset:
        parts.append(str(preset))
    parts += [cfg["model"]["arch"], cfg["data"]["stream"]]
    return Path("work_dirs") / "_".join(parts)


def dump_yaml(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def iter_flat(cfg: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in cfg.items():
        if isinstance(v, dict) and v:
            yield from iter_flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
