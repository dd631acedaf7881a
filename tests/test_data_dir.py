"""The data folder (kwmlp.paths.data_dir): downloads, the HEAR API's exports and TensorRT timing caches go
there, never into a source folder; `kwmlp export` without a checkpoint uses the downloaded one."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kwmlp.paths import data_dir

VARIABLES = ("KWMLP_HOME", "KWMLP_CACHE", "XDG_CACHE_HOME")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A data folder of its own (``$KWMLP_HOME``), the other variables cleared."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "kwmlp-home"
    monkeypatch.setenv("KWMLP_HOME", str(folder))
    return folder


def test_data_dir_order(tmp_path, monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert data_dir() == str(tmp_path / "user" / ".cache" / "kwmlp")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_dir() == str(tmp_path / "xdg" / "kwmlp")
    monkeypatch.setenv("KWMLP_CACHE", str(tmp_path / "older-name"))
    assert data_dir() == str(tmp_path / "older-name")
    monkeypatch.setenv("KWMLP_HOME", str(tmp_path / "home"))
    assert data_dir() == str(tmp_path / "home")


def test_the_tests_have_a_data_folder_of_their_own(tmp_path_factory):
    """Whatever the user's KWMLP_HOME says, the suite reads and writes its own (conftest.own_data_folder)."""
    assert Path(data_dir()).is_relative_to(tmp_path_factory.getbasetemp())
    r = subprocess.run([sys.executable, "-c", "from kwmlp.paths import data_dir; print(data_dir())"],
                       capture_output=True, text=True)
    assert r.stdout.strip() == data_dir()  # and so do the commands tests run


def test_timing_caches_live_in_the_data_folder(home):
    from kwmlp.artifact.sidecar import Device, timing_cache_path

    path = timing_cache_path(Device("NVIDIA Orin", "8.7", "10.3.0"))
    assert os.path.dirname(path) == str(home / "tensorrt")


def _kwmlp(*args, cwd):
    return subprocess.run([sys.executable, "-m", "kwmlp", *args], capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ))


def test_download_writes_into_the_data_folder(checkpoint, home, tmp_path):
    r = _kwmlp("download", "--url", f"file://{os.path.abspath(checkpoint)}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (home / "kwmlp.pth").read_bytes() == open(checkpoint, "rb").read()
    assert r.stdout.startswith(f"wrote {home / 'kwmlp.pth'} ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kwmlp-home"]  # nothing written where it ran


def test_export_without_a_checkpoint_uses_the_downloaded_one(random_checkpoint, home, tmp_path):
    from kwmlp.artifact import read_model_info
    from kwmlp.fileio import sha256_file

    home.mkdir()
    shutil.copy(random_checkpoint, home / "kwmlp.pth")
    r = _kwmlp("export", "-o", "out/kwmlp.onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert read_model_info(str(tmp_path / "out" / "kwmlp.onnx")).checkpoint_sha256 == sha256_file(random_checkpoint)


def test_export_without_a_checkpoint_or_a_download_says_what_to_do(home, tmp_path):
    r = _kwmlp("export", "-o", "kwmlp.onnx", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"kwmlp export: error: no checkpoint named and none downloaded ({home / 'kwmlp.pth'} does not exist): "
        "run `kwmlp download`, or name one: kwmlp export CHECKPOINT -o OUT.onnx"
    ]
    assert list(tmp_path.iterdir()) == []
