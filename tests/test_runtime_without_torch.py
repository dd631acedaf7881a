"""The runtime imports and runs with torch absent: edge devices carry no torch. So does the main
job, `kwmlp download` -> `export` -> `embed`: exporting reads the checkpoint with numpy."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def test_runtime_runs_with_torch_blocked(random_exported):
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import numpy as np
        from kwmlp.runtime import Embedder, KEYWORDS
        e = Embedder({random_exported()!r})
        r = e.embed(np.zeros((2, 48000), np.float32))
        print(r.scene_embeddings.shape, e.keyword_logits(np.zeros((1, 16000), np.float32)).shape, len(KEYWORDS))
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(2, 1024) (1, 35) 35"


def test_no_module_level_torch_import_under_runtime():
    for path in (REPO / "runtime").rglob("*.py"):
        for line in path.read_text().splitlines():
            assert not line.startswith(("import torch", "from torch")), f"{path}: {line}"


def test_info_command_runs_without_torch(random_exported):
    code = f"import sys; sys.modules['torch'] = None; from kwmlp.apps.cli import main; sys.exit(main(['info', {random_exported()!r}]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert "scene_embeddings" in out.stdout


def _kwmlp_without_torch(*commands: list[str], cwd) -> subprocess.CompletedProcess:
    """``kwmlp`` commands, one after the other, in one interpreter where ``import torch`` fails."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        from kwmlp.apps.cli import main
        for argv in {[list(c) for c in commands]!r}:
            if main(argv):
                sys.exit(1)
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m] is not None)
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)


def _clip(folder) -> str:
    import soundfile as sf

    sf.write(folder / "clip.wav", 0.1 * np.random.default_rng(0).standard_normal(24000), 16000)
    return "clip.wav"


def test_export_and_embed_run_with_torch_blocked(random_checkpoint, tmp_path):
    r = _kwmlp_without_torch(["export", random_checkpoint, "-o", "m.onnx"],
                             ["embed", "m.onnx", _clip(tmp_path), "-o", "out"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("wrote m.onnx\nwrote m.keywords.onnx\nembedded 1 of 1 files")
    assert np.load(tmp_path / "out" / "clip.npz")["scene_embedding"].shape == (1024,)


def test_download_export_embed_with_torch_blocked(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("KWMLP_HOME", str(tmp_path / "home"))
    r = _kwmlp_without_torch(["download", "--url", f"file://{os.path.abspath(checkpoint)}"],
                             ["export", "-o", "exports/kwmlp.onnx"],
                             ["embed", "exports/kwmlp.onnx", _clip(tmp_path), "-o", "embeddings"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "home" / "kwmlp.pth").is_file() and (tmp_path / "embeddings" / "clip.npz").is_file()
