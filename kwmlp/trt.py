"""TensorRT, imported on demand, and the process's one TensorRT logger: shared by ``kwmlp build``
(:mod:`kwmlp.export.tensorrt_build`) and the engine runner (:mod:`kwmlp.runtime.tensorrt_backend`)."""

from __future__ import annotations

from kwmlp.errors import KwmlpError, install_command

INSTALL_HINT = (f"install it with: {install_command('gpu')} (x86; {install_command('gpu-cu12')} on a CUDA 12 "
                "driver), or on a Jetson use JetPack's python3-libnvinfer in a venv made with --system-site-packages")

_LOGGER = None


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
