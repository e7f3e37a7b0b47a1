"""The wheel carries every subpackage and the search spaces and configs the commands look up."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_every_package_and_the_yaml_files(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: setuptools' build/ folder in the checkout may hold old files
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "__pycache__", "runs", "reports", ".venv", "venv"))
    # build isolation: the build backend comes from pyproject's build-system, as for a user
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(tmp_path), str(src)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next(tmp_path.glob("nas_prune-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for init in (ROOT / "nas_prune").rglob("__init__.py"):
        assert init.relative_to(ROOT).as_posix() in names, f"{init} is not in the wheel"
    for module in (ROOT / "nas_prune").rglob("*.py"):
        assert module.relative_to(ROOT).as_posix() in names
    for folder in ("search_spaces", "configs"):
        for yaml_file in (ROOT / folder).glob("*.yaml"):
            assert f"nas_prune/{folder}/{yaml_file.name}" in names


def test_data_dirs_resolve_in_a_checkout() -> None:
    from nas_prune.config import CONFIGS_DIR
    from nas_prune.widths import SPACES_DIR

    assert (SPACES_DIR / "vgg_small_fmnist.yaml").is_file()
    assert (CONFIGS_DIR / "default.yaml").is_file()


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_loads_and_its_search_settings_check(name: str) -> None:
    from nas_prune.config import load_config
    from nas_prune.search.run import check_search_config
    from nas_prune.widths import SearchSpace

    cfg = load_config(name)
    check_search_config(cfg)
    SearchSpace.load(cfg.space)
