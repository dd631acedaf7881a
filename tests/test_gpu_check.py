"""benchmarks/gpu_check.sh, the one script a person with a GPU runs: valid bash, every Python step
it calls exists, and the PyTorch numerics step runs here on the CPU."""

import json
import re
import shutil
import subprocess

import pytest

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on PATH")
def test_script_is_valid_bash():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_script_steps_fit_8_and_a_half_minutes_and_call_what_exists():
    from kwmlp.apps.cli import COMMANDS
    from kwmlp.benchmarks import targets

    text = SCRIPT.read_text()
    limits = [int(n) for n in re.findall(r"\bstep [\w-]+ (\d+) ", text)]
    assert limits and sum(limits) <= 510
    for command in re.findall(r"\$PY -m kwmlp (\w[\w-]*)", text):
        assert command in COMMANDS
    backends = re.search(r"--backends ([\w,-]+)", text).group(1).split(",")
    assert set(backends) <= set(targets.TARGETS) and "tensorrt" in backends and "pytorch-cuda-fp16" in backends


def test_torch_numerics_step_on_the_cpu(random_checkpoint, tmp_path):
    pytest.importorskip("torch")
    from kwmlp.benchmarks import gpu_check

    out = tmp_path / "torch.json"
    assert gpu_check.main(["torch", str(out), "--checkpoint", random_checkpoint, "--device", "cpu"]) == 0
    r = json.loads(out.read_text())
    assert r["ok"] and r["max_abs_err_tf32_off"] <= 1e-5
    assert 0.99 < r["fp16_blocks_min_cosine"] < 1.0  # fp16 blocks differ from fp32, slightly


def test_a_failing_step_is_written_down(tmp_path, monkeypatch):
    from kwmlp import cuda
    from kwmlp.benchmarks import gpu_check
    from kwmlp.errors import KwmlpError

    def no_gpu():
        raise KwmlpError("no CUDA GPU is visible on this machine")

    monkeypatch.setattr(cuda, "load", no_gpu)
    out = tmp_path / "cuda.json"
    assert gpu_check.main(["cuda", str(out)]) == 1
    assert json.loads(out.read_text()) == {"error": "KwmlpError: no CUDA GPU is visible on this machine", "ok": False}
