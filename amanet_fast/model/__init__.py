"""MS-G3D and AMANet networks. Entry point: `build_model` (see build.py)."""
from .build import ARCHS, DATASETS, ModelConfig, build_model, resolve_config

__all__ = ["ARCHS", "DATASETS", "ModelConfig", "build_model", "resolve_config"]
