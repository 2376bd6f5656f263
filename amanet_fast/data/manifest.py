"""What a prepared folder says about itself: the manifest is the source of truth.

Torch-free helpers shared by the Dataset, the training loop and the checker.
Manifests written before layouts were recorded in full carry only a built-in
layout name; those still read (the name resolves to the built-in layout).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..graphs import LAYOUTS, LayoutError, SkeletonLayout, layout_from_dict
from ..registry import coord_dims
from .io import MANIFEST_NAME

__all__ = ["manifest_layout", "manifest_classes", "manifest_coord_dims", "ManifestError"]


class ManifestError(ValueError):
    """A manifest.json field is missing or malformed; the message names the file and field."""


def manifest_layout(manifest: dict[str, Any], data_dir: str | Path | None = None) -> SkeletonLayout:
    where = f"{Path(data_dir) / MANIFEST_NAME}" if data_dir is not None else MANIFEST_NAME
    value = manifest.get("layout")
    if isinstance(value, str):
        if value not in LAYOUTS:
            raise ManifestError(f"{where}: layout: {value!r} is not a built-in layout ({', '.join(LAYOUTS)}); "
                                "prepare the data again to record the full layout")
        return LAYOUTS[value]
    if isinstance(value, dict):
        try:
            return layout_from_dict(value, f"{where}: layout")
        except LayoutError as err:
            raise ManifestError(str(err)) from None
    raise ManifestError(f"{where}: layout: missing (expected the layout's JSON object)")


def manifest_classes(manifest: dict[str, Any]) -> list[str]:
    """Class names in label order; unnamed classes are called by their index.

    A class count raised above the names listed keeps the names (the rest by
    index); more names than classes contradict the count and are refused.
    """
    n = int(manifest["num_classes"])
    classes = manifest.get("classes")
    if not isinstance(classes, list):
        return [str(i) for i in range(n)]
    if len(classes) > n:
        raise ManifestError(f"manifest: {len(classes)} class names but num_classes {n}; make them agree")
    named = [str(c) if c is not None else str(i) for i, c in enumerate(classes)]
    return named + [str(i) for i in range(len(named), n)]


def manifest_coord_dims(manifest: dict[str, Any]) -> int:
    if "coord_dims" in manifest:
        return int(manifest["coord_dims"])
    return coord_dims(manifest.get("channels") or ("x", "y", "z"))
