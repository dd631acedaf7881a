"""benchmarks/gpu_check.sh, the one script a person with a GPU runs: valid bash, every Python step
it calls exists, its own logic runs here on the CPU (with a stand-in Python), and so do the PyTorch
numerics and ONNX Runtime copy-node steps."""

import json
import os
import re
import shutil
import subprocess
import sys

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
    assert {"pytorch-cuda-graph", "pytorch-cuda-graph-fp16", "onnxruntime-cuda"} <= set(backends)


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


# Stands in for Python in gpu_check.sh: logs each call, writes the files `kwmlp export` would
# (with --fixed-shape only where STUB_FIXED says this kwmlp has it), fails `kwmlp build` (no TensorRT).
_STUB = """
import os, sys
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(" ".join(args) + "\\n")
if args[:3] == ["-m", "kwmlp", "export"]:
    if "--help" in args:
        fixed = " [--fixed-shape BxS]" if os.environ.get("STUB_FIXED") else ""
        print("usage: kwmlp export CHECKPOINT -o OUT" + fixed)
        sys.exit(0)
    if "--fixed-shape" in args and not os.environ.get("STUB_FIXED"):
        sys.exit(2)
    root = args[args.index("-o") + 1][: -len(".onnx")]
    for name in [".onnx", ".keywords.onnx"] + ([".1x16000.onnx"] if "--fixed-shape" in args else []):
        open(root + name, "w").close()
sys.exit(1 if args[:3] == ["-m", "kwmlp", "build"] else 0)
"""


def _run_script(tmp_path, cwd, fixed: bool, **env):
    stub = tmp_path / "python"
    stub.write_text(f"#!{sys.executable}\n{_STUB}")
    stub.chmod(0o755)
    out, log = tmp_path / "results", tmp_path / "calls.log"
    base = {k: v for k, v in os.environ.items() if k != "KWMLP_COMMIT"}
    env = {**base, "PYTHON": str(stub), "STUB_LOG": str(log), "STUB_FIXED": "1" if fixed else "",
           "KWMLP_CHECKPOINT": "ck.pth", "GIT_CEILING_DIRECTORIES": str(tmp_path), **env}
    r = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return out, log.read_text().splitlines()


def _git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("git") is None, reason="needs bash and git")
def test_script_records_the_commit_and_opens_every_export_for_its_copy_nodes(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    sha = _git(repo, "rev-parse", "HEAD")
    out, calls = _run_script(tmp_path, repo, fixed=True)
    assert (out / "commit.txt").read_text() == f"commit {sha}\ntree clean\n"
    assert (out / "steps.txt").read_text().splitlines()[0] == f"commit {sha} (clean)"
    models = out / "models"
    (memcpy,) = [c for c in calls if " memcpy " in c]
    assert memcpy.split()[4:] == [str(models / n) for n in ("kwmlp-fp16.1x16000.onnx", "kwmlp-fp16.keywords.onnx",
                                                            "kwmlp-fp16.onnx", "kwmlp.1x16000.onnx",
                                                            "kwmlp.keywords.onnx", "kwmlp.onnx")]
    (bench,) = [c for c in calls if c.startswith("-m kwmlp bench")]
    assert f"--model {models / 'kwmlp.onnx'}" in bench and "pytorch-cuda-graph," in bench
    assert "TensorRT steps skipped" in (out / "steps.txt").read_text()  # the stand-in has no TensorRT

    (repo / "a.py").write_text("x = 2\n")
    out, _ = _run_script(tmp_path, repo, fixed=True)
    assert (out / "commit.txt").read_text() == f"commit {sha}\ntree dirty\n M a.py\n"


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on PATH")
def test_script_outside_git_and_before_fixed_shapes(tmp_path):
    """A copy without .git (a lent machine) takes the commit from KWMLP_COMMIT; a kwmlp export
    without --fixed-shape is not asked for it."""
    copy = tmp_path / "copy"
    copy.mkdir()
    out, calls = _run_script(tmp_path, copy, fixed=False, KWMLP_COMMIT="abc123")
    assert (out / "commit.txt").read_text() == "commit abc123\ntree unknown (not a git checkout)\n"
    exports = [c for c in calls if c.startswith("-m kwmlp export") and "--help" not in c]
    assert len(exports) == 2 and not any("--fixed-shape" in c for c in exports)
    (memcpy,) = [c for c in calls if " memcpy " in c]
    assert len(memcpy.split()[4:]) == 4


def test_memcpy_counts_copy_nodes(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from kwmlp.benchmarks import gpu_check

    nodes = [helper.make_node("MemcpyToHost", ["x"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MemcpyFromHost", ["r"], ["d"]), helper.make_node("MemcpyToHost", ["d"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    path = tmp_path / "copies.onnx"
    onnx.save(helper.make_model(g), path)
    assert gpu_check.count_nodes(str(path)) == {"saved_nodes": 4, "MemcpyToHost": 2, "MemcpyFromHost": 1}


def test_memcpy_step_on_the_cpu(random_exported, tmp_path):
    """The memcpy step's code with the CPU provider: every graph opens as the runtime opens it,
    without copies; on the CUDA provider it needs onnxruntime-gpu, and says so."""
    pytest.importorskip("onnx")
    from kwmlp.artifact import keywords_path_for
    from kwmlp.benchmarks import gpu_check

    model = random_exported()
    out = tmp_path / "memcpy.json"
    assert gpu_check.main(["memcpy", str(out), model, keywords_path_for(model), "--backend", "onnxruntime-cpu"]) == 0
    r = json.loads(out.read_text())
    assert r["ok"] and r["every_session_opened"] and set(r["sessions"]) == {model, keywords_path_for(model)}
    for opened, graph_input in zip(r["sessions"].values(), ("audio", "windows")):
        assert opened["input"] == graph_input
        for kind in ("any shape", "at 1x16000"):
            assert opened[kind]["providers"] == ["CPUExecutionProvider"] and opened[kind]["memcpy"] == 0
            assert opened[kind]["saved_nodes"] > 50 and opened[kind]["nodes_per_provider"]["CPUExecutionProvider"] > 50
    # fixed free dimensions fold the shape arithmetic away
    assert r["sessions"][model]["at 1x16000"]["saved_nodes"] < r["sessions"][model]["any shape"]["saved_nodes"]
    missing = tmp_path / "missing.onnx"
    assert gpu_check.main(["memcpy", str(out), str(missing), "--backend", "onnxruntime-cpu"]) == 1
    assert json.loads(out.read_text())["sessions"][str(missing)] == {"error": f"model file {missing} does not exist"}
    from kwmlp.runtime.onnxruntime_backend import available_providers

    if "CUDAExecutionProvider" not in available_providers():
        assert gpu_check.main(["memcpy", str(out), model]) == 1
        assert "has no CUDAExecutionProvider here" in json.loads(out.read_text())["error"]
