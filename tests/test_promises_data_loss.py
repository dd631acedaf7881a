"""Issue 11, data loss: nothing the user had is lost (triton-repo, export, --skip-existing, download)."""

import os

import numpy as np
import pytest

from kwmlp.apps.cli import main


# --- 1. triton-repo replaces only a model folder it wrote -----------------------------------

def test_triton_repo_keeps_a_folder_it_did_not_write(random_exported, tmp_path, capsys):
    pytest.importorskip("tritonclient.grpc")
    mine = tmp_path / "tr" / "kwmlp" / "mine.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("x")
    assert main(["triton-repo", random_exported(), "-o", str(tmp_path / "tr")]) == 1
    assert mine.read_text() == "x"
    err = capsys.readouterr().err
    assert "not a model folder written by `kwmlp triton-repo`" in err and len(err.strip().splitlines()) == 1


def test_triton_repo_name_pointing_at_the_exports_folder(random_exported, tmp_path):
    pytest.importorskip("tritonclient.grpc")
    folder = os.path.dirname(random_exported())
    before = sorted(os.listdir(folder))
    assert main(["triton-repo", random_exported(), "-o", os.path.dirname(folder),
                 "--name", os.path.basename(folder)]) == 1
    assert sorted(os.listdir(folder)) == before
    assert main(["triton-repo", random_exported(), "-o", str(tmp_path), "--name", "../x"]) == 1


def test_triton_repo_replaces_its_own_folder(random_exported, tmp_path):
    pytest.importorskip("tritonclient.grpc")
    repo = tmp_path / "tr"
    assert main(["triton-repo", random_exported(), "-o", str(repo)]) == 0
    assert main(["triton-repo", random_exported(), "-o", str(repo), "--backend", "python"]) == 0
    assert (repo / "kwmlp" / "1" / "model.py").is_file()
    (repo / "kwmlp" / "1" / "notes.txt").write_text("mine")  # now it holds a file of the user's
    assert main(["triton-repo", random_exported(), "-o", str(repo)]) == 1
    assert (repo / "kwmlp" / "1" / "notes.txt").read_text() == "mine"


# --- 2. export never overwrites its input or another export's keyword graph -----------------

def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    return err


def test_export_refuses_its_own_input(random_checkpoint, tmp_path, capsys):
    ckpt = tmp_path / "kwmlp.pth"
    ckpt.write_bytes(open(random_checkpoint, "rb").read())
    assert main(["export", str(ckpt), "-o", str(ckpt)]) == 1
    _one_line_error(capsys, ".onnx")
    renamed = tmp_path / "weights.onnx"  # a checkpoint whose name ends in .onnx
    os.replace(ckpt, renamed)
    assert main(["export", str(renamed), "-o", str(renamed)]) == 1
    _one_line_error(capsys, "overwrite the checkpoint")
    assert open(renamed, "rb").read() == open(random_checkpoint, "rb").read()


def test_export_refuses_a_keywords_companion_name(random_checkpoint, random_exported, tmp_path, capsys):
    from kwmlp.artifact import keywords_path_for

    kw = keywords_path_for(random_exported())
    before = open(kw, "rb").read()
    assert main(["export", random_checkpoint, "-o", kw]) == 1
    _one_line_error(capsys, "keyword graph of another export")
    assert open(kw, "rb").read() == before


def test_export_to_a_folder_is_a_clear_error(random_checkpoint, tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    assert main(["export", random_checkpoint, "-o", str(out) + "/"]) == 1
    _one_line_error(capsys, "is a folder")
    assert main(["export", random_checkpoint, "-o", str(out)]) == 1
    _one_line_error(capsys, "is a folder")
    assert os.listdir(out) == [] and sorted(os.listdir(tmp_path)) == ["m"]


# --- 3. --skip-existing skips only outputs made from the same audio and model ---------------

@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_skip_existing_redoes_outputs_of_other_audio(random_exported, tmp_path, capsys, fmt):
    sf = pytest.importorskip("soundfile")
    src, out = tmp_path / "clip.wav", tmp_path / "out"
    rng = np.random.default_rng(0)
    sf.write(src, 0.1 * rng.standard_normal(16000).astype(np.float32), 16000)
    args = ["embed", random_exported(), str(src), "-o", str(out), "--format", fmt, "--skip-existing"]
    assert main(args) == 0
    scene = lambda: np.load(out / "clip.npz")["scene_embedding"] if fmt == "npz" else np.load(out / "clip" / "scene_embedding.npy")
    first = scene()
    assert main(args) == 0 and "1 skipped" in capsys.readouterr().out  # same audio: skipped
    sf.write(src, 0.1 * rng.standard_normal(24000).astype(np.float32), 16000)  # other audio, same name
    assert main(args) == 0
    assert "skipped" not in capsys.readouterr().out and not np.array_equal(scene(), first)


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_skip_existing_redoes_outputs_of_another_model(random_exported, tmp_path, capsys, fmt):
    sf = pytest.importorskip("soundfile")
    src, out = tmp_path / "clip.wav", tmp_path / "out"
    sf.write(src, 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)
    scene = lambda: np.load(out / "clip.npz")["scene_embedding"] if fmt == "npz" else np.load(out / "clip" / "scene_embedding.npy")
    run = lambda model: main(["embed", model, str(src), "-o", str(out), "--format", fmt, "--skip-existing"])
    assert run(random_exported()) == 0
    first = scene()
    capsys.readouterr()
    assert run(random_exported(depth=4)) == 0  # the same audio, another model
    assert "skipped" not in capsys.readouterr().out and not np.array_equal(scene(), first)
    assert run(random_exported(depth=4)) == 0 and "1 skipped" in capsys.readouterr().out  # now it is done
