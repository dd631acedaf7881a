"""What machine a benchmark ran on: CPU, cores, GPU, load, library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

from kwmlp.host import cpu_isa, cpu_model, dist_version


def _gpu() -> str:
    if shutil.which("nvidia-smi") is None:
        return "none"
    r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return r.stdout.strip().replace("\n", "; ") or "none"


def describe() -> dict:
    from kwmlp.runtime.onnxruntime_backend import physical_cores

    versions = {d: dist_version(d) for d in (
        "kwmlp-rt", "numpy", "onnxruntime", "onnxruntime-gpu", "openvino", "torch", "tensorrt", "cuda-python")}
    return {
        "cpu": cpu_model(),
        "isa": cpu_isa(),
        "cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "gpu": _gpu(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {k: v for k, v in versions.items() if v},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
