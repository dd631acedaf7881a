"""The README's quick start, as a newcomer runs it: its first command, exactly as written, in a fresh
copy of the clone (the files git tracks) next to a ``../shared`` holding the checkpoint, with a
fresh venv that it makes itself, from this machine's base Python (not the test environment).

It installs kwmlp-rt's base requirements from the package index (about a minute, once pip's cache
is warm), and then must export and embed without torch ever being installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from test_readme import BLOCKS

QUICK_START = "the quick start's first command"


def first_command():
    """The README's first bash block: the quick start's first command."""
    block = next(b for b in BLOCKS if b.language == "bash")
    assert "tests/test_quickstart.py" in (block.not_run or ""), \
        f"{block.name} is the first command; the README harness must leave it to this test"
    return block


def fresh_clone(dest: Path) -> Path:
    """The files git tracks, copied (what `git clone` would give), or everything but what git ignores."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    return dest


def base_environment() -> dict[str, str]:
    """This environment without its venv: PATH led by the base interpreter's folder, so that the
    command's ``python3`` is the machine's, as on a fresh machine."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv_bin = os.path.dirname(sys.executable)
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and os.path.realpath(p) != os.path.realpath(venv_bin)]
    base = os.path.dirname(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    env["PATH"] = os.pathsep.join([base] + path)
    return env


@pytest.mark.slow
def test_the_first_command_runs_as_written_without_torch(checkpoint, tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the files of a fresh clone are not known")
    block = first_command()
    shared = tmp_path / "shared" / "models"
    shared.mkdir(parents=True)
    (shared / "kwmlp.pth").symlink_to(os.path.abspath(checkpoint))
    clone = fresh_clone(tmp_path / "clone")
    env = {**base_environment(), "KWMLP_HOME": str(tmp_path / "data")}
    r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=clone, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{block.name} exited with {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    assert "wrote exports/kwmlp.onnx" in r.stdout and r.stdout.rstrip().endswith("(2, 1024)"), r.stdout
    python = clone / ".venv" / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('torch'))"],
                           capture_output=True, text=True, env=env)
    assert probe.stdout.strip() == "None", f"torch is installed in the quick start's venv: {probe.stdout}"
