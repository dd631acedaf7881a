"""The ``kwmlp`` command line: export, info, and one-line errors with exit code 1."""

import json
import subprocess
import sys

import numpy as np
import pytest

from kwmlp.apps.cli import main


def test_export_and_info(random_checkpoint, tmp_path, capsys):
    out = tmp_path / "m" / "model.onnx"
    assert main(["export", random_checkpoint, "-o", str(out), "--depth", "6", "--scene", "mean"]) == 0
    assert out.is_file() and (tmp_path / "m" / "model.keywords.onnx").is_file()
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    s = d["settings"]
    assert s["precision"] == "fp32" and s["scene"] == "mean" and s["dims"]["embed_depth"] == 6
    assert len(s["checkpoint_sha256"]) == 64 and s["version"]
    assert [i["name"] for i in d["inputs"]] == ["audio"]
    assert [o["name"] for o in d["outputs"]] == ["timestamp_embeddings", "timestamps", "scene_embeddings"]
    assert d["inputs"][0]["shape"] == ["batch", "samples"]


def test_export_with_a_later_opset(random_checkpoint, tmp_path):
    from kwmlp.runtime import Embedder

    out = tmp_path / "o18.onnx"
    assert main(["export", random_checkpoint, "-o", str(out), "--opset", "18"]) == 0
    import onnx

    assert onnx.load(out).opset_import[0].version == 18
    assert Embedder(str(out)).embed(np.zeros(3000, np.float32)).scene_embeddings.shape == (1024,)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kwmlp", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "args,match",
    [
        (["export", "/nonexistent.pth", "-o", "x.onnx"], "checkpoint /nonexistent.pth does not exist"),
        (["export", __file__, "-o", "x.onnx"], "is not a PyTorch checkpoint"),
        (["info", "/nonexistent.onnx"], "model file /nonexistent.onnx does not exist"),
        (["info", __file__], "could not be loaded as an ONNX model"),
    ],
)
def test_user_errors_are_one_line(args, match, tmp_path):
    r = _cli(*args)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and match in lines[0], r.stderr


def test_export_depth_out_of_range(random_checkpoint, tmp_path):
    r = _cli("export", random_checkpoint, "-o", str(tmp_path / "x.onnx"), "--depth", "13")
    assert r.returncode == 1 and "depth 13 is out of range" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_failed_export_keeps_the_previous_file(random_checkpoint, tmp_path, monkeypatch, capsys):
    # the disk fills up half way through writing the embedding graph: the old file must survive
    import errno

    from kwmlp.export import onnx_export
    from kwmlp.fileio import atomic_path

    out = tmp_path / "x.onnx"
    out.write_bytes(b"previous")

    def write_half_then_fail(path, data):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(data[: len(data) // 2])
            if str(path) == str(out):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(onnx_export, "write_bytes_atomic", write_half_then_fail)
    assert main(["export", random_checkpoint, "-o", str(out)]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.keywords.onnx", "x.onnx"]  # no temp file left behind


def test_export_with_a_too_early_opset_is_refused(random_checkpoint, tmp_path):
    r = _cli("export", random_checkpoint, "-o", str(tmp_path / "x.onnx"), "--opset", "12")
    assert r.returncode == 1 and "opset must be at least 17" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_traceback():
    r = _cli("--debug", "info", "/nonexistent.onnx")
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_every_command_and_option_is_described():
    import argparse

    from kwmlp.apps.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    undescribed = [name for name, p in sub.choices.items() if not p.description]
    unexplained = [f"{name} {a.option_strings[0] if a.option_strings else a.dest}"
                   for name, p in sub.choices.items() for a in p._actions if not a.help]
    assert (undescribed, unexplained) == ([], [])
