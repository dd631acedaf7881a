"""The wheel must carry every subpackage: pyproject's explicit package list against the tree; and
building it prints no warning about our pyproject.toml."""

import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = set()
    for pkg, folder in cfg["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([pkg, *rel.parts]))
    assert found == listed, f"in the tree but not in pyproject: {found - listed}; listed but absent: {listed - found}"


def test_building_warns_of_nothing_of_ours(tmp_path):
    """`pip install` runs setuptools on pyproject.toml; a deprecated field (`license` as a table) printed
    13 lines of warning three times per install. Built here from a copy, every setuptools warning an error."""
    import shutil
    import subprocess
    import sys

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is older than the >=77 pyproject.toml builds with")
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    for folder in set(cfg["package-dir"].values()):
        shutil.copytree(REPO / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "meta").mkdir()
    code = ("import sys, warnings; import setuptools.warnings as w; "
            "warnings.filterwarnings('error', category=w.SetuptoolsWarning); "
            "from setuptools import build_meta; build_meta.prepare_metadata_for_build_wheel(sys.argv[1])")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "meta")], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
