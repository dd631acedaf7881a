"""TensorRT, imported on demand, and the process's one TensorRT logger: shared by ``kwmlp build``
(:mod:`kwmlp.export.tensorrt_build`) and the engine runner (:mod:`kwmlp.runtime.tensorrt_backend`)."""

from __future__ import annotations

from kwmlp.errors import KwmlpError, install_command
from kwmlp.host import dist_version, module_installed

INSTALL_HINT = (f"install it with: {install_command('gpu')} (x86; {install_command('gpu-cu12')} on a CUDA 12 "
                "driver), or on a Jetson use JetPack's python3-libnvinfer in a venv made with --system-site-packages")

_LOGGER = None
# The TensorRT versions this project builds and runs engines with: 10.3 (JetPack 6, precision
# constraints) to 11.x (strongly typed only)
SUPPORTED = ((10, 3), (12, 0))  # [first, beyond)
# pip distributions that install the `tensorrt` module: the CUDA 13 build, the CUDA 12 and 11 ones
_DISTS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11")


def installed_version() -> str | None:
    """TensorRT's version, or None when it is not installed; from package metadata, so that the
    pip wheel does not preload its CUDA libraries into a process where onnxruntime-gpu loads its
    own. JetPack's python3-libnvinfer has no metadata: it is imported then."""
    for dist in _DISTS:
        version = dist_version(dist)
        if version:
            return version
    if not module_installed("tensorrt"):
        return None
    return import_tensorrt().__version__


def is_supported(version: str) -> bool:
    parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return SUPPORTED[0] <= parts < SUPPORTED[1]


def import_tensorrt():
    """The ``tensorrt`` module, or one sentence saying how to install it."""
    try:
        import tensorrt
    except ImportError:
        raise KwmlpError(f"TensorRT is not installed; {INSTALL_HINT}") from None
    return tensorrt


def logger(trt):
    """The process's one TensorRT logger: TensorRT warns when builders and runtimes get different ones."""
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER
