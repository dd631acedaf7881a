"""`kwmlp doctor`: one screen, exit 0, on this CPU machine and (with fakes) on a GPU one; and
the CUDA errors a first run meets named, not turned into "no GPU"."""

import json
import types

import pytest

from kwmlp.apps.cli import main
from kwmlp.errors import KwmlpError


@pytest.mark.parametrize("providers", [["CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]],
                         ids=["cpu", "gpu"])
def test_doctor_fits_one_screen_and_exits_0(capsys, random_exported, monkeypatch, providers):
    from kwmlp.runtime import onnxruntime_backend as ortb
    from kwmlp.runtime.loader import cpu_choice

    monkeypatch.setattr(ortb, "available_providers", lambda: providers)  # this machine's, or a GPU machine's
    assert main(["doctor", random_exported()]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) <= 24 and all(len(line) <= 160 for line in out)
    heads = [line.split()[0] for line in out if line and not line.startswith(" ")]
    assert heads[:8] == ["kwmlp-rt", "CPU", "GPU", "TensorRT", "CUDA", "onnxruntime", "OpenVINO", "model"]
    # no engine beside the model: ONNX Runtime's CUDA provider where it is offered, else auto's CPU step
    want = "onnxruntime-cuda" if "CUDAExecutionProvider" in providers else cpu_choice()[0]
    assert f"  auto runs  {want}" in out


def test_doctor_json(capsys):
    assert main(["doctor", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) >= {"cpu", "gpu", "tensorrt", "cuda_bindings", "onnxruntime", "openvino"}
    assert d["cpu"]["cores"] >= 1 and "CPUExecutionProvider" in d["onnxruntime"]["providers"]


def test_doctor_names_why_an_engine_does_not_run(capsys, random_exported, tmp_path, monkeypatch):
    import shutil
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # as on a machine without TensorRT, GPU or not

    from test_backends import _fake_engine

    onnx = tmp_path / "m.onnx"  # the engine beside it: m.engine, built for an Orin
    shutil.copy(random_exported(), onnx)
    engine = _fake_engine(tmp_path, str(onnx))
    assert main(["doctor", str(onnx)]) == 0
    out = capsys.readouterr().out
    assert f"  engine     {engine}: TensorRT is not installed" in out  # why it cannot run, in one line
    assert "    because  TensorRT is not installed" in out


class _GpuCuda:
    name = "cuda-python"

    def context(self):
        import contextlib

        return contextlib.nullcontext()

    def device(self):
        return "NVIDIA L4", "8.9", "12.6"

    def memory(self):
        return 20 * 2**30, 24 * 2**30

    def driver_version(self):
        return "12.8"


@pytest.mark.parametrize("version,verdict", [("10.3.0", "supported"), ("11.4.1", "supported"),
                                             ("10.2.0", "NOT supported"), ("12.0.0", "NOT supported")])
def test_doctor_on_a_gpu_machine(monkeypatch, capsys, version, verdict):
    from kwmlp import cuda, trt

    monkeypatch.setattr(cuda, "load", lambda: _GpuCuda())
    monkeypatch.setattr(trt, "installed_version", lambda: version)
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "GPU          NVIDIA L4, compute 8.9, 24.0 GB, driver CUDA 12.8, runtime CUDA 12.6 (cuda-python)" in out
    assert f"TensorRT     {version}: {verdict}" in out + "\n"


def _fake_cudart(count_error: str):
    """A cuda-python runtime whose cudaGetDeviceCount fails with ``count_error``."""
    errors = types.SimpleNamespace(cudaSuccess="cudaSuccess", cudaErrorNoDevice="cudaErrorNoDevice",
                                   cudaErrorInsufficientDriver="cudaErrorInsufficientDriver")
    return types.SimpleNamespace(cudaError_t=errors, cudaGetDeviceCount=lambda: (getattr(errors, count_error), 0),
                                 cudaGetErrorName=lambda err: (errors.cudaSuccess, err.encode()))


def test_cuda_errors_are_named_not_called_no_gpu(monkeypatch):
    from kwmlp import cuda

    monkeypatch.setattr(cuda, "_cudart", lambda: _fake_cudart("cudaErrorInsufficientDriver"))
    with pytest.raises(KwmlpError, match=r"CUDA is not usable here \(cudaErrorInsufficientDriver\): the NVIDIA driver "
                                         r"is older than this cuda-python's CUDA"):
        cuda.load()
    monkeypatch.setattr(cuda, "_cudart", lambda: _fake_cudart("cudaErrorNoDevice"))
    with pytest.raises(KwmlpError, match="no CUDA GPU is visible on this machine"):
        cuda.load()
