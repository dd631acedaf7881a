"""Backend selection on a CPU-only machine: `auto` picks ONNX Runtime CPU and says why, forced GPU
backends fail with one sentence, an engine that cannot load falls back to its ONNX with a warning,
and nothing imports TensorRT or CUDA bindings."""

import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kwmlp.errors import KwmlpError

onnxruntime = pytest.importorskip("onnxruntime")
CPU_ONLY = not (set(onnxruntime.get_available_providers()) & {"CUDAExecutionProvider", "TensorrtExecutionProvider"})
cpu_only = pytest.mark.skipif(not CPU_ONLY, reason="this onnxruntime has GPU providers")


@cpu_only
def test_auto_on_cpu_picks_ort_cpu_and_says_why(random_exported, caplog):
    from kwmlp.runtime import Embedder

    from kwmlp.runtime.loader import cpu_choice

    cpu = cpu_choice()[0]  # test_openvino.py covers that rule
    with caplog.at_level(logging.DEBUG, logger="kwmlp"):
        e = Embedder(random_exported())
    assert e.backend == cpu
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info == [f"kwmlp: running random.onnx on {cpu}"]  # one short line: nothing failed here
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("no TensorRT engine beside it; TensorrtExecutionProvider is not in this onnxruntime; "
               "CUDAExecutionProvider is not in this onnxruntime" in m for m in debug)


@cpu_only
@pytest.mark.parametrize("backend,device,match", [
    ("onnxruntime-cuda", "auto", "backend onnxruntime-cuda needs onnxruntime-gpu with CUDAExecutionProvider"),
    ("onnxruntime-trt", "auto", "backend onnxruntime-trt needs onnxruntime-gpu with TensorrtExecutionProvider"),
    ("auto", "cuda", "no backend can run"),
    ("tensorrt", "auto", "backend tensorrt needs an engine"),
    ("onnxruntime-cuda", "cpu", "runs on a GPU, not with device='cpu'"),
    ("onnxruntime-cpu", "cuda", "runs on the CPU, not with device='cuda'"),
    ("gpu", "auto", "backend must be one of"),
    ("auto", "tpu", "device must be one of"),
])
def test_forced_backends_fail_in_one_sentence(random_exported, backend, device, match):
    from kwmlp.runtime import Embedder

    with pytest.raises(KwmlpError, match=match):
        Embedder(random_exported(), backend=backend, device=device)


def _fake_engine(tmp_path, onnx_path):
    """An engine file and sidecar for another machine, pointing at ``onnx_path``."""
    import os

    from kwmlp.export.tensorrt_build import profiles_from_options
    from kwmlp.artifact.sidecar import Device, EngineInfo, write_sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a plan")
    info = EngineInfo(Device("Orin", "8.7", "10.3.0", "12.6"), "audio", profiles_from_options(), "fp32",
                      "strongly-typed", os.path.relpath(onnx_path, tmp_path), "0" * 64, keywords_engine="m.keywords.engine")
    write_sidecar(str(engine), info)
    return str(engine)


def test_engine_that_cannot_load_falls_back_to_its_onnx(random_exported, tmp_path, caplog):
    from kwmlp.runtime import Embedder

    engine = _fake_engine(tmp_path, random_exported())
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        e = Embedder(engine, device="auto")
    assert e.backend.startswith("onnxruntime") or e.backend == "openvino"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("kwmlp: ") and f"falling back to {random_exported()}" in warnings[0]
    r = e.embed(np.zeros(20000, np.float32))
    assert r.scene_embeddings.shape == (1024,)
    assert e.keyword_logits(np.zeros((2, 16000), np.float32)).shape == (2, 35)
    with pytest.raises(KwmlpError):  # forced: no fallback
        Embedder(engine, backend="tensorrt")


@cpu_only
def test_cpu_machine_never_imports_tensorrt_or_cuda(random_exported, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from kwmlp.runtime import Embedder
        e = Embedder({random_exported()!r})
        e.embed(np.zeros(16000, np.float32)); e.keyword_logits(np.zeros((1, 16000), np.float32))
        bad = [m for m in sys.modules if m.split(".")[0] in ("tensorrt", "cuda", "pycuda")]
        assert not bad, bad
        print(e.backend)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("onnxruntime-cpu", "openvino")


def test_cuda_provider_runs_fp32_without_tf32(monkeypatch, caplog):
    from kwmlp.runtime.onnxruntime_backend import cuda_options

    # TF32 would round FP32 products to 10-bit mantissas on Ampere+: off where ORT has the switch
    # HEURISTIC: EXHAUSTIVE would benchmark every convolution algorithm on each new shape's first call
    assert cuda_options("1.32.0") == {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC", "use_tf32": 0}
    assert cuda_options("1.18.1+cu118")["use_tf32"] == 0
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE", raising=False)
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        assert cuda_options("1.17.3") == {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}  # no use_tf32 in 1.17
    assert "NVIDIA_TF32_OVERRIDE=0" in caplog.text


def test_cpu_provider_list_says_nothing_of_gpus(monkeypatch, caplog):
    from kwmlp.runtime import onnxruntime_backend

    monkeypatch.setattr(onnxruntime, "__version__", "1.17.3")  # an ORT that would warn about TF32
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        assert onnxruntime_backend.providers_for("onnxruntime-cpu") == ["CPUExecutionProvider"]
    assert caplog.text == ""
