"""The quick subset (`pytest -m quick`) must keep covering every package and name only real files."""
from __future__ import annotations

from tests.conftest import QUICK_MODULES, REPO_ROOT


def test_quick_modules_exist_and_cover_every_package() -> None:
    missing = sorted(m for m in QUICK_MODULES if not (REPO_ROOT / m).is_file())
    assert not missing, f"QUICK_MODULES names files that do not exist: {missing}"
    packages = {m.split("/")[1] for m in QUICK_MODULES if m.count("/") == 2}
    assert packages >= {"data", "model", "kernels", "training", "use"}, packages
