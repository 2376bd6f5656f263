"""Skeleton layouts and the graph matrices MS-G3D / AMANet are built from.

A layout holds everything about a skeleton that the model, the streams and the
data pipeline need to agree on: joint count, the bone edges, the center joint
(Table 2 "ori_rel"), the bone-stream root, optional joint names, and the body
parts of the DP module's alien (moving-frame) coordinates.

Built-in layouts and custom ones are the same kind of object and share one
JSON form (docs/design.md §4), which prepared manifests and checkpoints carry:

    {"name": "my20", "num_joints": 20, "edges": [[0, 1], ...], "center": 1,
     "root": 2, "joint_names": [...], "parts": [{"name": "left_arm", "origin": 4,
     "axis": 2, "side": 1, "members": [4, 5, 6, 7]}, ...]}

`root` defaults to `center`; `joint_names` and `parts` are optional. Without
parts, DP's default "alien" mode cannot run: the model refuses to build and
says to add parts or pick dp_mode center/none (no parts are guessed).

    python -m amanet_fast.graphs list             # built-in layouts
    python -m amanet_fast.graphs dump ntu25 > ntu25.json
    python -m amanet_fast.graphs check my20.json  # validate a layout file

Joint indices are 0-based everywhere.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import json
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from .argparse_util import ArgumentParser

__all__ = [
    "BodyPart",
    "SkeletonLayout",
    "Layout",
    "LayoutError",
    "layout_from_dict",
    "load_layout",
    "resolve_layout",
    "layout_json",
    "LAYOUTS",
    "get_layout",
    "layout_for_dataset",
    "adjacency",
    "normalize_adjacency",
    "k_adjacency",
    "k_adjacency_stack",
    "spatio_temporal_adjacency",
]


@dataclass(frozen=True)
class BodyPart:
    """One rigid-ish body part of the DP module (paper Alg. 1).

    The part's moving frame sits at `origin`; its first axis points at `axis`,
    its second lies in the plane spanned with `side`. Every joint in `members`
    is expressed in that frame.
    """

    name: str
    origin: int
    axis: int
    side: int
    members: tuple[int, ...]


@dataclass(frozen=True)
class SkeletonLayout:
    name: str
    num_joints: int
    edges: tuple[tuple[int, int], ...]
    center: int
    root: int
    parents: tuple[int, ...] = field(default=())
    parts: tuple[BodyPart, ...] = field(default=())
    joint_names: tuple[str, ...] = field(default=())  # optional; plots label axes with them

    def __post_init__(self) -> None:
        v = self.num_joints
        if self.joint_names and len(self.joint_names) != v:
            raise ValueError(f"layout {self.name!r}: {len(self.joint_names)} joint names for {v} joints")
        for a, b in self.edges:
            if not (0 <= a < v and 0 <= b < v) or a == b:
                raise ValueError(f"layout {self.name!r}: bad edge ({a}, {b}) for {v} joints")
        for name, j in (("center", self.center), ("root", self.root)):
            if not 0 <= j < v:
                raise ValueError(f"layout {self.name!r}: {name}={j} out of range 0..{v - 1}")
        if not self.parents:
            object.__setattr__(self, "parents", _parents_from_root(v, self.edges, self.root))
        if len(self.parents) != v or self.parents[self.root] != self.root:
            raise ValueError(f"layout {self.name!r}: parents must have {v} entries, root's parent = root")
        covered: list[int] = []
        for part in self.parts:
            ids = (part.origin, part.axis, part.side, *part.members)
            if any(not 0 <= j < v for j in ids):
                raise ValueError(f"layout {self.name!r}: part {part.name!r} has a joint out of range")
            if len({part.origin, part.axis, part.side}) != 3:
                raise ValueError(f"layout {self.name!r}: part {part.name!r} needs distinct origin/axis/side")
            covered.extend(part.members)
        if self.parts and sorted(covered) != list(range(v)):
            raise ValueError(f"layout {self.name!r}: parts must cover every joint exactly once")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (docs/design.md §4); `layout_from_dict(l.to_dict()) == l`."""
        d: dict[str, Any] = {
            "name": self.name, "num_joints": self.num_joints, "edges": [[a, b] for a, b in self.edges],
            "center": self.center, "root": self.root,
        }
        if self.joint_names:
            d["joint_names"] = list(self.joint_names)
        d["parts"] = [{"name": p.name, "origin": p.origin, "axis": p.axis, "side": p.side,
                       "members": list(p.members)} for p in self.parts]
        return d

    @classmethod
    def from_dict(cls, d: Any, source: str = "layout") -> "SkeletonLayout":
        return layout_from_dict(d, source)

    def joint_labels(self) -> list[str]:
        """A readable name per joint: the layout's names, else the 0-based indices."""
        return list(self.joint_names) if self.joint_names else [str(j) for j in range(self.num_joints)]

    def adjacency(self) -> np.ndarray:
        """Binary symmetric (V, V) adjacency without self loops."""
        return adjacency(self.num_joints, self.edges)

    def neighbour_mean_matrix(self) -> np.ndarray:
        """Row-stochastic (V, V) matrix averaging each joint with its 1-hop neighbours."""
        a = self.adjacency() + np.eye(self.num_joints, dtype=np.float64)
        return a / a.sum(axis=1, keepdims=True)


def _parents_from_root(num_joints: int, edges: tuple[tuple[int, int], ...], root: int) -> tuple[int, ...]:
    """Bone direction = away from the root along the tree (as MS-G3D's bone pairs)."""
    nbrs: list[list[int]] = [[] for _ in range(num_joints)]
    for a, b in edges:
        nbrs[a].append(b)
        nbrs[b].append(a)
    parent = [-1] * num_joints
    parent[root] = root
    queue = deque([root])
    while queue:
        u = queue.popleft()
        for w in sorted(nbrs[u]):
            if parent[w] == -1:
                parent[w] = u
                queue.append(w)
    if -1 in parent:
        raise ValueError(f"skeleton graph is not connected: joints {[i for i, p in enumerate(parent) if p == -1]}")
    return tuple(parent)


def _one_based(pairs: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple((a - 1, b - 1) for a, b in pairs)


# NTU RGB+D, Kinect v2, 25 joints (SPEC section 4, 1-based there).
_NTU25 = SkeletonLayout(
    name="ntu25",
    num_joints=25,
    edges=_one_based([
        (1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9), (11, 10),
        (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18), (20, 19),
        (22, 23), (23, 8), (24, 25), (25, 12),
    ]),
    center=1,   # spine mid (1-based 2)
    root=20,    # spine shoulder (1-based 21), MS-G3D's bone root
    parts=(
        BodyPart("left_arm", 4, 20, 1, (4, 5, 6, 7, 21, 22)),
        BodyPart("right_arm", 8, 20, 1, (8, 9, 10, 11, 23, 24)),
        BodyPart("left_leg", 12, 0, 1, (12, 13, 14, 15)),
        BodyPart("right_leg", 16, 0, 1, (16, 17, 18, 19)),
        BodyPart("trunk_head", 20, 1, 4, (0, 1, 2, 3, 20)),
    ),
    joint_names=("spine base", "spine mid", "neck", "head", "L shoulder", "L elbow", "L wrist", "L hand",
                 "R shoulder", "R elbow", "R wrist", "R hand", "L hip", "L knee", "L ankle", "L foot",
                 "R hip", "R knee", "R ankle", "R foot", "spine shoulder", "L hand tip", "L thumb",
                 "R hand tip", "R thumb"),
)

# OpenPose COCO-18 (Kinetics-Skeleton): 0 nose, 1 neck, 2-4 right arm, 5-7 left arm,
# 8-10 right leg, 11-13 left leg, 14/15 eyes, 16/17 ears.
_OPENPOSE18 = SkeletonLayout(
    name="openpose18",
    num_joints=18,
    edges=((4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8), (11, 5), (8, 2),
           (5, 1), (2, 1), (0, 1), (15, 0), (14, 0), (17, 15), (16, 14)),
    center=1,   # neck
    root=0,     # nose, MS-G3D's Kinetics bone root
    parts=(
        BodyPart("left_arm", 5, 1, 11, (5, 6, 7)),
        BodyPart("right_arm", 2, 1, 8, (2, 3, 4)),
        BodyPart("left_leg", 11, 1, 8, (11, 12, 13)),
        BodyPart("right_leg", 8, 1, 11, (8, 9, 10)),
        BodyPart("head", 1, 0, 2, (0, 1, 14, 15, 16, 17)),
    ),
    joint_names=("nose", "neck", "R shoulder", "R elbow", "R wrist", "L shoulder", "L elbow", "L wrist",
                 "R hip", "R knee", "R ankle", "L hip", "L knee", "L ankle", "R eye", "L eye", "R ear", "L ear"),
)

# NW-UCLA, Kinect v1 order: 0 hip center, 1 spine, 2 shoulder center, 3 head,
# 4-7 left shoulder/elbow/wrist/hand, 8-11 right arm, 12-15 left hip/knee/ankle/foot,
# 16-19 right leg. Parts mirror NTU's: Kinect v1's shoulder center plays NTU's
# spine shoulder (arm axis target and bone root), the spine joint plays NTU's spine
# mid (center and side joint), the hip center plays NTU's spine base.
_UCLA20 = SkeletonLayout(
    name="ucla20",
    num_joints=20,
    edges=_one_based([
        (1, 2), (2, 3), (3, 4), (3, 5), (5, 6), (6, 7), (7, 8), (3, 9), (9, 10), (10, 11), (11, 12),
        (1, 13), (13, 14), (14, 15), (15, 16), (1, 17), (17, 18), (18, 19), (19, 20),
    ]),
    center=1,   # spine
    root=2,     # shoulder center
    parts=(
        BodyPart("left_arm", 4, 2, 1, (4, 5, 6, 7)),
        BodyPart("right_arm", 8, 2, 1, (8, 9, 10, 11)),
        BodyPart("left_leg", 12, 0, 1, (12, 13, 14, 15)),
        BodyPart("right_leg", 16, 0, 1, (16, 17, 18, 19)),
        BodyPart("trunk_head", 2, 1, 4, (0, 1, 2, 3)),
    ),
    joint_names=("hip center", "spine", "shoulder center", "head", "L shoulder", "L elbow", "L wrist", "L hand",
                 "R shoulder", "R elbow", "R wrist", "R hand", "L hip", "L knee", "L ankle", "L foot",
                 "R hip", "R knee", "R ankle", "R foot"),
)

# COCO-17 keypoints (pyskl 2D annotations): 0 nose, 1/2 eyes, 3/4 ears,
# 5/6 shoulders, 7/8 elbows, 9/10 wrists, 11/12 hips, 13/14 knees, 15/16 ankles
# (odd = left). COCO has no neck, so arm and leg axes point at the other shoulder /
# the same-side shoulder, and the head frame runs nose -> left shoulder.
_COCO17 = SkeletonLayout(
    name="coco17",
    num_joints=17,
    edges=((15, 13), (13, 11), (16, 14), (14, 12), (11, 5), (12, 6), (9, 7), (7, 5), (10, 8), (8, 6),
           (5, 0), (6, 0), (1, 0), (3, 1), (2, 0), (4, 2)),
    center=0,   # nose, as pyskl's coco graph
    root=0,
    parts=(
        BodyPart("left_arm", 5, 6, 11, (5, 7, 9)),
        BodyPart("right_arm", 6, 5, 12, (6, 8, 10)),
        BodyPart("left_leg", 11, 5, 12, (11, 13, 15)),
        BodyPart("right_leg", 12, 6, 11, (12, 14, 16)),
        BodyPart("head", 0, 5, 6, (0, 1, 2, 3, 4)),
    ),
    joint_names=("nose", "L eye", "R eye", "L ear", "R ear", "L shoulder", "R shoulder", "L elbow", "R elbow",
                 "L wrist", "R wrist", "L hip", "R hip", "L knee", "R knee", "L ankle", "R ankle"),
)

LAYOUTS: dict[str, SkeletonLayout] = {l.name: l for l in (_NTU25, _OPENPOSE18, _UCLA20, _COCO17)}

Layout = SkeletonLayout  # the short name the tools use (docs/design.md §4)


class LayoutError(ValueError):
    """A layout file or dict is malformed; the message names the file and the field."""


def get_layout(name: str | SkeletonLayout | dict) -> SkeletonLayout:
    """Layout by built-in name or from its JSON dict; a SkeletonLayout passes through."""
    if isinstance(name, SkeletonLayout):
        return name
    if isinstance(name, dict):
        return layout_from_dict(name)
    try:
        return LAYOUTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown skeleton layout {name!r}; expected one of {sorted(LAYOUTS)} "
                         "or a layout JSON file") from None


def layout_for_dataset(dataset: str) -> SkeletonLayout:
    """The built-in layout of a registry dataset (custom data has none: its manifest holds it)."""
    from .registry import get_dataset

    info = get_dataset(dataset)
    if info.layout is None:
        raise ValueError(f"dataset {dataset!r} has no fixed layout: it comes from the prepared data's manifest")
    return LAYOUTS[info.layout]


# Far above any skeleton (COCO-WholeBody has 133 keypoints); the graph matrices are V x V, so an
# absurd count would try to allocate terabytes before any other check.
MAX_JOINTS = 1024
_KNOWN_KEYS = {"name", "num_joints", "edges", "center", "root", "joint_names", "parts", "description"}
_PART_KEYS = {"name", "origin", "axis", "side", "members"}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def layout_from_dict(d: Any, source: str = "layout") -> SkeletonLayout:
    """Build and validate a layout from its JSON form; every error names `source` and the bad field."""

    def bad(fld: str, expected: str, got: Any = None, show: bool = True) -> LayoutError:
        return LayoutError(f"{source}: {fld}: expected {expected}" + (f", got {got!r}" if show else ""))

    if not isinstance(d, dict):
        raise LayoutError(f"{source}: expected a JSON object with name, num_joints, edges, center; "
                          f"got {type(d).__name__}")
    unknown = sorted(set(d) - _KNOWN_KEYS)
    if unknown:
        raise LayoutError(f"{source}: unknown field(s) {unknown}; allowed: {sorted(_KNOWN_KEYS)}")
    for key in ("name", "num_joints", "edges", "center"):
        if key not in d:
            raise LayoutError(f"{source}: {key}: missing (required: name, num_joints, edges, center)")
    name = d["name"]
    if not isinstance(name, str) or not name.strip():
        raise bad("name", "a non-empty string", name)
    v = d["num_joints"]
    if not _is_int(v) or not 1 <= v <= MAX_JOINTS:
        raise bad("num_joints", f"an integer in 1..{MAX_JOINTS}", v)

    def joint(fld: str, j: Any) -> int:
        if not _is_int(j) or not 0 <= j < v:
            raise bad(fld, f"a joint index in 0..{v - 1} (0-based)", j)
        return j

    edges_in = d["edges"]
    if not isinstance(edges_in, list) or not edges_in:
        raise bad("edges", "a non-empty list of [i, j] joint pairs", edges_in if not isinstance(edges_in, list)
                  else "[]")
    edges: list[tuple[int, int]] = []
    seen: set[frozenset[int]] = set()
    for k, e in enumerate(edges_in):
        if not isinstance(e, (list, tuple)) or len(e) != 2:
            raise bad(f"edges[{k}]", "a pair [i, j]", e)
        a, b = joint(f"edges[{k}][0]", e[0]), joint(f"edges[{k}][1]", e[1])
        if a == b:
            raise bad(f"edges[{k}]", "two different joints (no self loops)", e)
        if frozenset((a, b)) in seen:
            raise bad(f"edges[{k}]", "each bone once", e)
        seen.add(frozenset((a, b)))
        edges.append((a, b))
    center = joint("center", d["center"])
    root = joint("root", d.get("root", center))
    names_in = d.get("joint_names")
    names: tuple[str, ...] = ()
    if names_in is not None:
        if (not isinstance(names_in, list) or len(names_in) != v
                or not all(isinstance(n, str) and n for n in names_in)):
            raise bad("joint_names", f"a list of {v} non-empty strings", names_in)
        if len(set(names_in)) != v:
            dup = next(n for n in names_in if names_in.count(n) > 1)
            raise bad("joint_names", "unique names", f"{dup!r} twice", show=False)
        names = tuple(names_in)
    try:
        parents = _parents_from_root(v, tuple(edges), root)
    except ValueError:
        parents = None
    if parents is None:
        nbrs: list[set[int]] = [set() for _ in range(v)]
        for a, b in edges:
            nbrs[a].add(b)
            nbrs[b].add(a)
        reach, todo = {root}, [root]
        while todo:
            for w in nbrs[todo.pop()] - reach:
                reach.add(w)
                todo.append(w)
        lost = sorted(set(range(v)) - reach)
        raise LayoutError(f"{source}: edges: the graph must connect every joint to the root ({root}); "
                          f"not connected: {lost[:10]}{' ...' if len(lost) > 10 else ''}")
    parts_in = d.get("parts", [])
    if not isinstance(parts_in, list):
        raise bad("parts", 'a list of {"name", "origin", "axis", "side", "members"}', parts_in)
    parts: list[BodyPart] = []
    owner: dict[int, str] = {}
    for k, p in enumerate(parts_in):
        fld = f"parts[{k}]"
        if not isinstance(p, dict):
            raise bad(fld, 'an object {"name", "origin", "axis", "side", "members"}', p)
        missing = sorted(_PART_KEYS - set(p))
        extra = sorted(set(p) - _PART_KEYS)
        if missing or extra:
            raise LayoutError(f"{source}: {fld}: " + (f"missing {missing}" if missing else f"unknown {extra}")
                              + f" (a part has exactly {sorted(_PART_KEYS)})")
        if not isinstance(p["name"], str) or not p["name"]:
            raise bad(f"{fld}.name", "a non-empty string", p["name"])
        o, r, c = (joint(f"{fld}.{key}", p[key]) for key in ("origin", "axis", "side"))
        if len({o, r, c}) != 3:
            raise bad(f"{fld}", "three different joints as origin, axis and side", [o, r, c])
        members = p["members"]
        if not isinstance(members, list) or not members:
            raise bad(f"{fld}.members", "a non-empty list of joint indices", members)
        for i, j in enumerate(members):
            joint(f"{fld}.members[{i}]", j)
            if j in owner:
                raise LayoutError(f"{source}: {fld}.members[{i}]: joint {j} is already in part {owner[j]!r} "
                                  "(each joint belongs to exactly one part)")
            owner[j] = p["name"]
        parts.append(BodyPart(p["name"], o, r, c, tuple(members)))
    if parts and len(owner) != v:
        lost = sorted(set(range(v)) - set(owner))
        raise LayoutError(f"{source}: parts: every joint must be in exactly one part; joints {lost} are in none")
    return SkeletonLayout(name.strip(), v, tuple(edges), center, root, parents=parents, parts=tuple(parts),
                          joint_names=names)


def load_layout(path: str | Path) -> SkeletonLayout:
    """A layout JSON file (docs/design.md §4); errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path}: layout file not found")
    from .data.errors import DataFormatError, read_json_file

    try:  # the raw-data JSON reader: bounded nesting and number length
        d = read_json_file(path)
    except DataFormatError as err:
        raise LayoutError(str(err)) from None
    return layout_from_dict(d, str(path))


def layout_json(layout: SkeletonLayout) -> str:
    """The layout file text: indented, with each edge and member list on one line (easy to edit)."""
    import re

    text = json.dumps(layout.to_dict(), indent=1)
    return re.sub(r"\[\s+(-?\d+(?:,\s+-?\d+)*)\s+\]",
                  lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def resolve_layout(spec: str | Path | SkeletonLayout | dict) -> SkeletonLayout:
    """A built-in name, a JSON file path, a JSON dict or a layout object -> layout."""
    if isinstance(spec, (SkeletonLayout, dict)):
        return get_layout(spec)
    text = str(spec)
    if text in LAYOUTS:
        return LAYOUTS[text]
    if text.endswith(".json") or Path(text).exists() or "/" in text:
        return load_layout(text)
    raise LayoutError(f"--layout {text!r}: expected a built-in layout ({', '.join(LAYOUTS)}) or a layout JSON "
                      "file (write one from a built-in: python -m amanet_fast.graphs dump ntu25 > my.json)")


# ---------------------------------------------------------------------------
# Graph matrices (float64 numpy; the model converts to float32 buffers).


def adjacency(num_joints: int, edges) -> np.ndarray:
    a = np.zeros((num_joints, num_joints), dtype=np.float64)
    for i, j in edges:
        a[i, j] = a[j, i] = 1.0
    return a


def normalize_adjacency(a: np.ndarray) -> np.ndarray:
    """Symmetric normalization D^-1/2 A D^-1/2 (degrees from A's rows as given)."""
    deg = a.sum(axis=-1)
    with np.errstate(divide="ignore"):
        inv_sqrt = np.where(deg > 0, deg ** -0.5, 0.0)
    return inv_sqrt[:, None] * a * inv_sqrt[None, :]


def k_adjacency(a: np.ndarray, k: int, with_self: bool = True) -> np.ndarray:
    """Joints exactly k hops apart (MS-G3D's disentangled neighbourhood), plus I if with_self.

    Ã_k = min((A+I)^k, 1) - min((A+I)^(k-1), 1); k = 0 gives I.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    eye = np.eye(len(a), dtype=np.float64)
    if k == 0:
        return eye
    ai = a + eye
    ak = np.minimum(np.linalg.matrix_power(ai, k), 1) - np.minimum(np.linalg.matrix_power(ai, k - 1), 1)
    return ak + eye if with_self else ak


def k_adjacency_stack(a: np.ndarray, num_scales: int) -> np.ndarray:
    """(K*V, V): normalized k-adjacencies for k = 0..K-1, stacked row-wise as MS-GCN consumes them."""
    if num_scales < 1:
        raise ValueError(f"num_scales must be >= 1, got {num_scales}")
    return np.concatenate([normalize_adjacency(k_adjacency(a, k, with_self=True)) for k in range(num_scales)])


def spatio_temporal_adjacency(a: np.ndarray, window: int) -> np.ndarray:
    """G3D's (τV, τV) graph: every joint links to itself and its neighbours in all τ frames."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return np.tile(a + np.eye(len(a)), (window, window))


# ---------------------------------------------------------------------------
# CLI: python -m amanet_fast.graphs {list, dump NAME, check FILE}


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m amanet_fast.graphs",
                                description="Skeleton layouts: list the built-in ones, write one out as a JSON "
                                            "layout file, or validate a layout file.")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="built-in layouts")
    d = sub.add_parser("dump", help="print a built-in layout (or a checked layout file) as JSON")
    d.add_argument("layout", help=f"one of {', '.join(LAYOUTS)} or a layout .json file")
    c = sub.add_parser("check", help="validate a layout JSON file")
    c.add_argument("file")
    args = p.parse_args(argv)
    try:
        if args.cmd == "list":
            for l in LAYOUTS.values():
                print(f"{l.name:<12} {l.num_joints:>3} joints, center {l.center}, root {l.root}, "
                      f"{len(l.parts)} DP parts")
        elif args.cmd == "dump":
            print(layout_json(resolve_layout(args.layout)))
        else:
            l = load_layout(args.file)
            print(f"{args.file}: ok: layout {l.name!r}, {l.num_joints} joints, {len(l.edges)} edges, "
                  f"center {l.center}, root {l.root}, "
                  + (f"{len(l.parts)} DP parts" if l.parts else
                     "no DP parts (dp_mode alien needs them; use model.args.dp_mode=center or none otherwise)"))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
