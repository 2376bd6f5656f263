"""A newcomer's first hour (issue 22): preset runs keep their own work dir, warnings and suggestions
for the usual slips (LR steps past the end, mistyped flags and keys), elapsed time across resumes."""
from __future__ import annotations

from pathlib import Path

import pytest

from amanet_fast.training import config as C

from .conftest import run_cli, tiny_args


def test_preset_runs_get_their_own_default_work_dir() -> None:
    args = C.build_arg_parser().parse_args(["--preset", "tiny"])
    assert C.resolve_config(args)["work_dir"] == str(Path("work_dirs") / "synthetic_tiny_amanet_joint")
    args = C.build_arg_parser().parse_args(["--dataset", "ucla", "--preset", "cpu", "--stream", "bone"])
    assert C.resolve_config(args)["work_dir"] == str(Path("work_dirs") / "ucla_cpu_amanet_bone")
    args = C.build_arg_parser().parse_args([])
    assert C.resolve_config(args)["work_dir"] is None  # the full run: work_dirs/synthetic_amanet_joint
    args = C.build_arg_parser().parse_args(["--preset", "tiny", "--work-dir", "mine"])
    assert C.resolve_config(args)["work_dir"] == "mine"
