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


def _broken_models(tmp_path, exported_path):
    """{case: (path, what the problem line says)} for models `kwmlp doctor` must report, not crash on."""
    import shutil

    (tmp_path / "empty.onnx").write_bytes(b"")
    data = open(exported_path, "rb").read()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) // 3])
    (tmp_path / "folder.onnx").mkdir()
    (tmp_path / "garbage.engine").write_bytes(b"not a TensorRT plan")
    shutil.copy(exported_path, tmp_path / "unreadable.onnx")
    keywords = str(exported_path).replace(".onnx", ".keywords.onnx")
    return {
        "empty": (tmp_path / "empty.onnx", "could not be loaded as an ONNX model"),
        "truncated": (tmp_path / "truncated.onnx", "could not be loaded as an ONNX model"),
        "missing": (tmp_path / "missing.onnx", "does not exist"),
        "unreadable": (tmp_path / "unreadable.onnx", r"cannot be read \(permission denied\)"),
        "folder": (tmp_path / "folder.onnx", "is a folder, not a file"),
        "garbage engine": (tmp_path / "garbage.engine", "garbage.engine has no sidecar"),
        "keyword graph": (keywords, "is the keyword model of an export, not the one expected here"),
    }


@pytest.mark.parametrize("case", ["empty", "truncated", "missing", "unreadable", "folder", "garbage engine",
                                  "keyword graph"])
def test_doctor_reports_a_model_that_does_not_load(capsys, random_exported, tmp_path, monkeypatch, case):
    import os
    import re

    path, problem = _broken_models(tmp_path, random_exported())[case]
    path = str(path)
    real_access = os.access  # as for a user who may not read it (root may read anything)
    monkeypatch.setattr(os, "access", lambda p, mode, **k: not p.endswith("unreadable.onnx") and real_access(p, mode, **k))
    assert main(["doctor", path]) == 0
    out = capsys.readouterr().out.splitlines()
    i = out.index(f"model        {path}: does not load")
    assert re.search(problem, out[i + 1]) and out[i + 1].startswith("  problem    ") and out[i + 2] == "  auto runs  nothing"
    assert main(["doctor", path, "--json"]) == 0
    model = json.loads(capsys.readouterr().out)["model"]
    assert model["path"] == path and re.search(problem, model["problem"]) and "auto" not in model


def _no_cuda_bindings(monkeypatch):
    import sys

    from kwmlp import cuda

    monkeypatch.setattr(cuda, "_cudart", lambda: None)
    for name in ("pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, name, None)


def test_a_gpu_without_cuda_python_is_not_called_none(monkeypatch, capsys, tmp_path):
    from kwmlp import host
    from kwmlp.apps.commands import doctor

    _no_cuda_bindings(monkeypatch)
    gpu = tmp_path / "proc" / "driver" / "nvidia" / "gpus" / "0000:18:00.0"
    gpu.mkdir(parents=True)
    (gpu / "information").write_text("Model: \t\t NVIDIA H200\nIRQ:   \t\t 91\nGPU UUID: \t GPU-0\n")
    monkeypatch.setattr(doctor, "nvidia_gpus", lambda: host.nvidia_gpus(str(tmp_path)))
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out.splitlines()
    i = out.index("GPU          NVIDIA H200 present, cuda-python missing")
    assert out[i + 1] == "  install    install it with: pip install -e '.[gpu]' (x86), or on a Jetson use JetPack's CUDA " \
                         "with cuda-python matching its CUDA version"
    monkeypatch.setattr(doctor, "nvidia_gpus", lambda: [])  # no GPU either: as before
    assert main(["doctor"]) == 0
    assert "GPU          none (cuda-python is not installed (nor pycuda))" in capsys.readouterr().out.splitlines()


def test_gpus_are_found_without_cuda_bindings(tmp_path, monkeypatch):
    import os

    from kwmlp import host

    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert host.nvidia_gpus(str(tmp_path)) == []  # no driver, no nvidia-smi, no Jetson
    (tmp_path / "bin").mkdir()
    smi = tmp_path / "bin" / "nvidia-smi"  # a container that mounts nvidia-smi but not /proc/driver/nvidia
    smi.write_text("#!/bin/sh\n[ \"$1 $2\" = '--query-gpu=name --format=csv,noheader' ] && echo 'NVIDIA L4' && echo 'NVIDIA L4'\n")
    os.chmod(smi, 0o755)
    assert host.nvidia_gpus(str(tmp_path)) == ["NVIDIA L4", "NVIDIA L4"]
    smi.unlink()
    tree = tmp_path / "proc" / "device-tree"  # a Jetson: the nvgpu driver is not in /proc/driver/nvidia
    tree.mkdir(parents=True)
    (tree / "compatible").write_bytes(b"nvidia,p3737-0000+p3701-0000\x00nvidia,tegra234\x00")
    (tree / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\x00")
    assert host.nvidia_gpus(str(tmp_path)) == ["NVIDIA Jetson AGX Orin Developer Kit"]
