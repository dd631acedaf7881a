"""Issue 16 item 6: a user's stderr holds the runtime's own lines only, not ONNX Runtime's log
(on a GPU it printed "No registered plugin EP device found for 'CUDAExecutionProvider'" for every
session); ``kwmlp --debug`` lets ONNX Runtime's warnings through."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
sf = pytest.importorskip("soundfile")
from onnx import TensorProto, helper  # noqa: E402


def _refused_by_onnx_runtime(model: str, folder) -> str:
    """``model`` with one more node, a cubic Resize of a 3-D tensor: valid ONNX, which ONNX Runtime's
    CPU kernel refuses when the session initialises (it logs the refusal at length, then raises)."""
    m = onnx.load(model)
    m.graph.initializer.extend([helper.make_tensor("refused_axes", TensorProto.INT64, [1], [0]),
                                helper.make_tensor("refused_scales", TensorProto.FLOAT, [3], [1.0, 1.0, 1.0])])
    m.graph.node.extend([helper.make_node("Unsqueeze", ["audio", "refused_axes"], ["refused_3d"]),
                         helper.make_node("Resize", ["refused_3d", "", "refused_scales"], ["refused"], mode="cubic")])
    out = folder / "refused.onnx"
    onnx.save(m, out)
    shutil.copy(model.replace(".onnx", ".keywords.onnx"), folder / "refused.keywords.onnx")
    return str(out)


def _kwmlp(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kwmlp", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", ["classify", "embed"])
def test_a_model_onnx_runtime_refuses_costs_one_line_of_ours(random_exported, tmp_path, command):
    model = _refused_by_onnx_runtime(random_exported(), tmp_path)
    clip = tmp_path / "clip.wav"
    sf.write(clip, np.zeros(16000, np.float32), 16000)
    extra = ["-o", str(tmp_path / "out")] if command == "embed" else []
    r = _kwmlp(command, model, str(clip), *extra)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and lines, r.stderr
    assert all(line.startswith("kwmlp") for line in lines), r.stderr
    assert f"kwmlp {command}: error: {model} could not be loaded as an ONNX model" in r.stderr


def _warning_model(folder) -> str:
    """A model ONNX Runtime warns about while loading it: an initializer that no node uses."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                          initializer=[helper.make_tensor("unused", TensorProto.FLOAT, [1], [1.0])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = folder / "warns.onnx"
    onnx.save(m, path)
    return str(path)


_PLAIN_SESSION = """
import logging, sys
if sys.argv[2] == "debug":
    logging.basicConfig(level=logging.DEBUG)
from kwmlp.artifact import import_onnxruntime
ort = import_onnxruntime()
ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])  # no severity of its own: the process's
"""


@pytest.mark.parametrize("debug", [False, True])
def test_the_process_wide_logger_shows_onnx_runtime_warnings_only_under_debug(tmp_path, debug):
    """Provider registration logs through ONNX Runtime's default logger, which a session's own
    severity does not reach: a session that sets none shows what that logger lets through."""
    pytest.importorskip("onnxruntime")
    r = subprocess.run([sys.executable, "-c", _PLAIN_SESSION, _warning_model(tmp_path), "debug" if debug else "quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("Removing initializer 'unused'" in r.stderr) == debug, r.stderr


def test_our_sessions_log_their_warnings_under_debug_only():
    import logging

    from kwmlp.artifact import session_log_severity

    log = logging.getLogger("kwmlp")
    before = log.level
    try:
        log.setLevel(logging.INFO)
        assert session_log_severity() == 4  # fatal only: a failure is re-raised as our own sentence
        log.setLevel(logging.DEBUG)
        assert session_log_severity() == 2
    finally:
        log.setLevel(before)


def test_the_cuda_sessions_at_fixed_shapes_log_like_the_others():
    """ONNX Runtime's CUDA sessions at one shape (opened again without CUDA graphs where ONNX Runtime
    refuses them): the refusal is handled, so ONNX Runtime's own error line would only be noise."""
    ort = pytest.importorskip("onnxruntime")
    cuda = pytest.importorskip("kwmlp.runtime.onnxruntime_cuda")

    assert cuda.session_options(ort, "audio", (1, 16000), 1).log_severity_level == 4
