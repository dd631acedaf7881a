"""The runtime imports and runs with torch absent: edge devices carry no torch."""

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
