"""Which backend runs a model, stated once.

``auto``: a TensorRT engine that loads on this GPU (the ``.engine`` given, or ``MODEL.engine``
beside ``MODEL.onnx``) -> ONNX Runtime's TensorRT provider -> its CUDA provider -> its CPU
provider. Every step down says why in the one log line that names what runs. A forced backend
that cannot run raises :class:`~kwmlp.errors.KwmlpError` instead of falling back. Nothing here
imports TensorRT or CUDA bindings unless an engine file exists or ONNX Runtime offers a GPU
provider, so a CPU-only machine never loads them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Callable

from kwmlp.errors import KwmlpError
from kwmlp.runtime import onnxruntime_backend as ortb

log = logging.getLogger("kwmlp")

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-trt", "onnxruntime-cuda", "onnxruntime-cpu")
DEVICES = ("auto", "cpu", "cuda")
_GPU_ORT = ("onnxruntime-trt", "onnxruntime-cuda")


@dataclass
class Opened:
    """A model opened on a backend: its runner, the backend's name, and how to open the keyword graph."""

    runner: object  # OrtRunner or TrtRunner: .run(feeds), .metadata, .inputs, .outputs, .path
    backend: str
    open_keywords: Callable[[str], object]  # keyword model path (from the export metadata) -> runner
    onnx_path: str  # the ONNX model behind the runner (the engine's source for TensorRT)


def _engine_beside(onnx_path: str) -> str | None:
    path = os.path.splitext(onnx_path)[0] + ".engine"
    return path if os.path.isfile(path) else None


def _open_engine(engine_path: str, cuda_graph: bool) -> Opened:
    from kwmlp.runtime.tensorrt_backend import TrtRunner, keywords_engine_path

    runner = TrtRunner(engine_path, cuda_graph=cuda_graph)
    kw_engine = keywords_engine_path(engine_path, runner.info)
    return Opened(runner, "tensorrt", lambda _onnx: TrtRunner(kw_engine, cuda_graph=cuda_graph),
                  runner.info.onnx_abspath(engine_path))


def _open_ort(onnx_path: str, backend: str, threads: int | None, forced: bool) -> Opened:
    if backend != "onnxruntime-cpu":
        wanted = ortb.ORT_BACKENDS[backend]
        available = ortb.available_providers()
        if wanted not in available:
            raise KwmlpError(f"backend {backend} needs onnxruntime-gpu with {wanted}; this onnxruntime offers "
                             f"{', '.join(available)} (see README: Deploy on a GPU or a Jetson)")
    providers = ortb.providers_for(backend)
    runner = ortb.OrtRunner(onnx_path, providers=providers, threads=threads)
    actual = ortb.backend_of(runner.providers)
    if forced and actual != backend:
        raise KwmlpError(f"backend {backend} was asked for but ONNX Runtime could only start {actual} "
                         f"(providers {runner.providers})")
    return Opened(runner, actual, lambda path: ortb.OrtRunner(path, providers=providers, threads=threads), onnx_path)


def _is_engine(path: str) -> bool:
    return os.path.splitext(path)[1] in (".engine", ".plan")


def open_model(path: str, backend: str = "auto", device: str = "auto", threads: int | None = None,
               cuda_graph: bool = False) -> Opened:
    """Open ``path`` (an ``.onnx`` export or a ``.engine`` from ``kwmlp build``) as asked."""
    if backend == "cpu":  # accepted as a synonym: the user wants ONNX Runtime on the CPU
        backend, device = "onnxruntime-cpu", "cpu"
    if backend not in BACKENDS:
        raise KwmlpError(f"backend must be one of {', '.join(BACKENDS + ('cpu',))}, got {backend!r}")
    if device not in DEVICES:
        raise KwmlpError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu" and backend in ("tensorrt",) + _GPU_ORT:
        raise KwmlpError(f"backend {backend} runs on a GPU, not with device='cpu'")
    if device == "cuda" and backend == "onnxruntime-cpu":
        raise KwmlpError("backend onnxruntime-cpu runs on the CPU, not with device='cuda'")

    why: list[str] = []  # the reasons for each step down, for the one log line
    onnx_path = path
    if _is_engine(path):
        if backend not in ("auto", "tensorrt"):
            raise KwmlpError(f"{path} is a TensorRT engine: use backend 'tensorrt' or 'auto', or pass its .onnx")
        from kwmlp.runtime.engine_info import read_sidecar

        info = read_sidecar(path)
        onnx_path = info.onnx_abspath(path)
        engine = path
    else:
        engine = _engine_beside(path) if backend in ("auto", "tensorrt") and device != "cpu" else None
        if backend == "tensorrt" and engine is None:
            raise KwmlpError(f"backend tensorrt needs an engine: build {os.path.splitext(path)[0]}.engine with "
                             "`kwmlp build`, or pass an .engine file")
    if engine is not None and device != "cpu":
        from kwmlp.runtime.tensorrt_backend import EngineMismatch

        try:
            return _announce(_open_engine(engine, cuda_graph), why)
        except EngineMismatch as e:
            if backend == "tensorrt":
                raise
            if not os.path.isfile(onnx_path):
                raise KwmlpError(f"{e}; and its ONNX {onnx_path} is missing to fall back to") from None
            log.warning("kwmlp: %s; falling back to %s", e, onnx_path)
            why.append(f"engine {os.path.basename(engine)} does not load here")
    elif backend == "auto" and device != "cpu" and not _is_engine(path):
        why.append("no TensorRT engine beside it")

    if backend not in ("auto", "onnxruntime", "tensorrt"):
        return _announce(_open_ort(onnx_path, backend, threads, forced=True), why)
    order = ["onnxruntime-cpu"] if device == "cpu" else list(_GPU_ORT) + ([] if device == "cuda" else ["onnxruntime-cpu"])
    available = ortb.available_providers()
    for name in order:
        provider = ortb.ORT_BACKENDS[name]
        if provider not in available:
            if name != "onnxruntime-cpu":
                why.append(f"{provider} is not in this onnxruntime")
            continue
        if name == "onnxruntime-trt" and importlib.util.find_spec("tensorrt") is None:
            # the provider needs TensorRT's libraries, and its cache key TensorRT's version
            why.append("TensorrtExecutionProvider needs the tensorrt package")
            continue
        if name == "onnxruntime-cpu":
            opened = _open_ort(onnx_path, name, threads, forced=False)
        else:
            try:
                opened = _open_ort(onnx_path, name, threads, forced=False)
            except KwmlpError as e:  # e.g. no GPU visible, no CUDA bindings for the cache key
                why.append(f"{provider}: {e}")
                continue
        if opened.backend != name:
            why.append(f"{provider} did not start")
        return _announce(opened, why)
    raise KwmlpError(f"no backend can run {path} on device {device!r}: {'; '.join(why)}")


def _announce(opened: Opened, why: list[str]) -> Opened:
    because = f" ({'; '.join(why)})" if why else ""
    log.info("kwmlp: running %s on %s%s", os.path.basename(opened.runner.path), opened.backend, because)
    return opened
