"""Every fact about a dataset, in one torch-free table.

The model, the data readers, the prepare CLI, the training config and the
error messages all read `DATASETS` here; adding a dataset means adding one
entry (plus its reader and its recipe file under configs/). The skeleton
graphs themselves live in `amanet_fast.graphs` (built-in layouts by name);
what a prepared folder actually holds is recorded in its manifest, which wins
over this table once data exists (docs/design.md §4, §5).

Fields of `DatasetInfo`:
- `kind`: the `python -m amanet_fast.data.prepare KIND` that produces it.
- `layout`: built-in layout name; None = chosen at prepare time (custom data).
- `channels`: meaning of the C axis; "z" present = 3D coordinates, a trailing
  "score" = 2D with a confidence channel.
- `num_class`, `class_names`: None when the data decides (custom data).
- `num_gcn_scales` / `num_g3d_scales`: MS-G3D's K per dataset (NTU 13/6,
  Kinetics 8/8); NW-UCLA is Kinect 3D like NTU, the synthetic demo mimics
  Kinetics, custom data takes Kinetics' values (a short-range default that
  suits any graph; override with model.args.num_gcn_scales=...).
- `benchmarks`: sub-folders of the data root (NTU: one per split protocol).
- `raw`, `raw_hint`: what the raw input is, for prepare commands in messages.
- `recipe`: the training recipe file in configs/.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetInfo", "DATASETS", "KINDS", "get_dataset", "dataset_for_kind", "coord_dims",
           "UCLA_CLASS_NAMES",
           "SYNTHETIC_ACTIONS"]

# NW-UCLA action ids a01..a12 of the release (a07 and a10 do not exist) in label order 1..10.
UCLA_CLASS_NAMES = ("pick up with one hand", "pick up with two hands", "drop trash", "walk around", "sit down",
                    "stand up", "donning", "doffing", "throw", "carry")


# The synthetic demo's actions, in label order (amanet_fast.data.synthetic animates them).
SYNTHETIC_ACTIONS = ("wave", "clap", "jump", "squat", "kick", "walk")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    kind: str
    layout: str | None
    channels: tuple[str, ...] | None
    num_class: int | None
    num_gcn_scales: int
    num_g3d_scales: int
    benchmarks: tuple[str, ...] = ()
    raw: str = "raw files"
    raw_hint: str = "--raw /path/to/raw"
    recipe: str = ""
    class_names: tuple[str, ...] | None = None

    @property
    def default_benchmark(self) -> str | None:
        return self.benchmarks[0] if self.benchmarks else None


_XYZ = ("x", "y", "z")
_XYS = ("x", "y", "score")

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("synthetic", "built-in synthetic demo", "synthetic", "openpose18", _XYS, len(SYNTHETIC_ACTIONS),
                8, 8, raw="nothing (generated on first use)", raw_hint="", recipe="synthetic.yaml",
                class_names=SYNTHETIC_ACTIONS),
    DatasetInfo("ntu60", "NTU RGB+D 60", "ntu60", "ntu25", _XYZ, 60, 13, 6, benchmarks=("xsub", "xview"),
                raw="NTU RGB+D 60 .skeleton files", raw_hint="--raw /path/to/nturgb+d_skeletons",
                recipe="ntu60.yaml"),
    DatasetInfo("ntu120", "NTU RGB+D 120", "ntu120", "ntu25", _XYZ, 120, 13, 6, benchmarks=("xsub", "xset"),
                raw="NTU RGB+D 120 .skeleton files (both halves)", raw_hint="--raw /path/to/nturgb+d_skeletons",
                recipe="ntu120.yaml"),
    DatasetInfo("kinetics", "Kinetics-Skeleton 400", "kinetics", "openpose18", _XYS, 400, 8, 8,
                raw="Kinetics-Skeleton (kinetics_train/, kinetics_val/ and the label json files)",
                raw_hint="--raw /path/to/kinetics-skeleton", recipe="kinetics.yaml"),
    DatasetInfo("ucla", "NW-UCLA", "ucla", "ucla20", _XYZ, 10, 13, 6,
                raw="NW-UCLA (all_sqe/ and val_label.pkl)", raw_hint="--raw /path/to/NW-UCLA",
                recipe="ucla.yaml", class_names=UCLA_CLASS_NAMES),
    DatasetInfo("custom", "your own data (pyskl pickle)", "pyskl", None, None, None, 8, 8,
                raw="a pyskl annotation pickle", raw_hint="--raw /path/to/annotations.pkl --layout LAYOUT.json",
                recipe="custom.yaml"),
)}

# prepare KIND -> the dataset (recipe) it produces.
KINDS: dict[str, str] = {d.kind: d.name for d in DATASETS.values()}
# Per-clip .npy/.csv arrays + labels.csv (amanet_fast.data.arrays): the same custom recipe as pyskl data.
KINDS["arrays"] = "custom"


def get_dataset(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}") from None


def dataset_for_kind(kind: str | None) -> str | None:
    """The dataset (recipe) of a prepared folder's manifest `kind`; None for folders of unknown origin."""
    return KINDS.get(kind) if isinstance(kind, str) else None


def coord_dims(channels: tuple[str, ...] | list[str]) -> int:
    """3 for x, y, z data; 2 for x, y (+ score) data."""
    return 3 if "z" in channels else 2
