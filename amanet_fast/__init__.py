"""amanet-fast: AMANet / MS-G3D skeleton action recognition in PyTorch + Triton.

`build_model` and `Predictor` (classify raw skeleton files with trained
checkpoints, `amanet_fast.predict`) and `Stream`
(live recognition, `amanet_fast.stream`) are resolved lazily so that light users
(the data pipeline, `amanet_fast.graphs`, `amanet_fast.streams`) do not import
the model and the kernels package.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["build_model", "Predictor", "Stream"]
__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .model.build import build_model
    from .predict import Predictor
    from .stream import Stream


def __getattr__(name: str) -> Any:
    if name == "build_model":
        from .model.build import build_model

        return build_model
    if name == "Predictor":
        from .predict import Predictor

        return Predictor
    if name == "Stream":
        from .stream import Stream

        return Stream
    raise AttributeError(f"module 'amanet_fast' has no attribute {name!r}")
