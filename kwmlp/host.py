"""What this machine's CPU is and which packages are installed, read without importing them.

Shared by ``kwmlp doctor``, the benchmark's machine record and the backend choice on a CPU.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import platform
import shutil
import subprocess
from functools import lru_cache
from importlib import metadata

# /proc/cpuinfo flag -> the name people know; NEON is "asimd" on 64-bit ARM, "neon" on 32-bit
ISA_FLAGS = {
    "avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI", "amx_tile": "AMX", "amx_bf16": "AMX-BF16", "amx_int8": "AMX-INT8",
    "asimd": "NEON", "neon": "NEON", "asimdhp": "NEON-FP16", "sve": "SVE",
}


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first value of each key in /proc/cpuinfo (the first processor's), or {} off Linux."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or info.get("Hardware") or platform.processor() or platform.machine()


def cpu_isa() -> list[str]:
    """The vector extensions of :data:`ISA_FLAGS` this CPU has, e.g. ``["AVX2", "AVX-512", ...]``."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    return list(dict.fromkeys(name for flag, name in ISA_FLAGS.items() if flag in flags))


def dist_version(dist: str) -> str | None:
    """An installed distribution's version from its metadata (nothing is imported), or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def module_installed(name: str) -> bool:
    """Whether ``import name`` would find a module, without importing it.

    A module already imported counts even when its ``__spec__`` is not set (a stand-in put into
    ``sys.modules``, e.g. by a test or a plugin), where ``find_spec`` raises ValueError; a
    ``None`` entry there (an import blocked on purpose) does not.
    """
    try:
        return importlib.util.find_spec(name) is not None
    except ValueError:
        return True


def nvidia_gpus(root: str = "/") -> list[str]:
    """The NVIDIA GPUs this machine has, found without CUDA bindings (so that a missing cuda-python
    is not taken for a missing GPU): the driver's ``/proc/driver/nvidia/gpus/*/information``, else
    ``nvidia-smi`` (containers may mount only that), else a Jetson's integrated GPU (``nvidia,tegra``
    in the device tree, which the nvgpu driver does not list there). ``root``: where ``/proc`` is."""
    names = []
    for info in sorted(glob.glob(os.path.join(root, "proc/driver/nvidia/gpus/*/information"))):
        fields = dict(line.partition(":")[::2] for line in _read(info).splitlines())
        names.append(fields.get("Model", "").strip() or "an NVIDIA GPU")
    if names:
        return names
    names = _nvidia_smi_names()
    if names:
        return names
    if "nvidia,tegra" in _read(os.path.join(root, "proc/device-tree/compatible")):
        return [_read(os.path.join(root, "proc/device-tree/model")).strip("\x00 \n") or "NVIDIA Jetson"]
    return []


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _nvidia_smi_names() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        r = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in r.stdout.splitlines() if line.strip()] if r.returncode == 0 else []
