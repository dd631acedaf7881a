"""What machine a benchmark ran on: CPU, cores, GPU, load, library versions."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu() -> str:
    if shutil.which("nvidia-smi") is None:
        return "none"
    r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return r.stdout.strip().replace("\n", "; ") or "none"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict:
    from kwmlp.runtime.onnxruntime_backend import physical_cores

    versions = {d: _version(d) for d in ("kwmlp-rt", "numpy", "onnxruntime", "onnxruntime-gpu", "torch", "tensorrt")}
    return {
        "cpu": _cpu_model(),
        "cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "gpu": _gpu(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {k: v for k, v in versions.items() if v},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
