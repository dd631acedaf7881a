"""Which backend runs a model, stated once.

``auto``: a TensorRT engine that loads on this GPU (the ``.engine`` given, or ``MODEL.engine``
beside ``MODEL.onnx``) -> ONNX Runtime's TensorRT provider -> its CUDA provider -> the CPU, where
:func:`cpu_choice` picks OpenVINO or ONNX Runtime's CPU provider. The one info log line names what runs, with the reason for each step down that
failed; steps with nothing to try (no GPU provider in this onnxruntime) go to the debug log. A forced backend
that cannot run raises :class:`~kwmlp.errors.KwmlpError` instead of falling back. Nothing here
imports TensorRT or CUDA bindings unless an engine file exists or ONNX Runtime offers a GPU
provider, so a CPU-only machine never loads them.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field
from typing import Callable

from kwmlp.artifact import (
    EMBEDDING_INPUT, KEYWORD_INPUT, ModelInfo, engine_beside, engine_keywords_path, is_engine, keywords_model_path, onnx_behind, read_model_info,
    require_file,
)
from kwmlp.errors import KwmlpError
from kwmlp.host import module_installed
from kwmlp.runtime import onnxruntime_backend as ortb
from kwmlp.runtime.runner import Runner

log = logging.getLogger("kwmlp")

BACKENDS = ("auto", "tensorrt", "onnxruntime", "onnxruntime-trt", "onnxruntime-cuda", "onnxruntime-cpu", "openvino")
DEVICES = ("auto", "cpu", "cuda")
_GPU_ORT = ("onnxruntime-trt", "onnxruntime-cuda")


@dataclass
class Opened:
    """A model opened on a backend: its runner, and how to open the keyword graph that goes with it."""

    runner: Runner
    open_keywords: Callable[[ModelInfo], Runner]  # the embedding model's info -> the keyword graph's runner
    onnx_path: str  # the ONNX model behind the runner (the engine's source for TensorRT)


@dataclass
class _Reasons:
    """Why each step above what runs did not: ``absent`` (nothing to try, e.g. no GPU provider in
    this onnxruntime) goes to the debug log, ``failed`` (something there did not start) to the
    one info line."""

    absent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _open_engine(engine_path: str, cuda_graph: bool) -> Opened:
    from kwmlp.runtime.tensorrt_backend import TrtRunner

    runner = TrtRunner(engine_path, cuda_graph=cuda_graph)
    kw_engine = engine_keywords_path(engine_path, runner.info)
    return Opened(runner, lambda _info: TrtRunner(kw_engine, cuda_graph=cuda_graph), onnx_behind(engine_path, runner.info))


def _ort_runner(path: str, backend: str, graph_input: str, threads: int | None, cuda_graph: bool) -> Runner:
    runner = ortb.OrtRunner(path, providers=ortb.providers_for(backend, graph_input), threads=threads)
    if runner.backend not in _GPU_ORT:
        return runner
    from kwmlp.runtime.onnxruntime_cuda import on_device

    return on_device(runner, graphs=cuda_graph)


def _open_ort(onnx_path: str, backend: str, threads: int | None, forced: bool, cuda_graph: bool = True) -> Opened:
    if backend != "onnxruntime-cpu":
        wanted = ortb.ORT_BACKENDS[backend]
        available = ortb.available_providers()
        if wanted not in available:
            raise KwmlpError(f"backend {backend} needs onnxruntime-gpu with {wanted}; this onnxruntime offers "
                             f"{', '.join(available)} (see README: Deploy on a GPU or a Jetson)")
    runner = _ort_runner(onnx_path, backend, EMBEDDING_INPUT, threads, cuda_graph)
    if forced and runner.backend != backend:
        raise KwmlpError(f"backend {backend} was asked for but ONNX Runtime could only start {runner.backend} "
                         f"(providers {runner.providers})")
    return Opened(runner, lambda info: _ort_runner(keywords_model_path(onnx_path, info), backend, KEYWORD_INPUT,
                                                   threads, cuda_graph), onnx_path)


def _open_openvino(onnx_path: str, threads: int | None) -> Opened:
    from kwmlp.runtime.openvino_backend import OvRunner

    return Opened(OvRunner(onnx_path, threads=threads),
                  lambda info: OvRunner(keywords_model_path(onnx_path, info), threads=threads), onnx_path)


def _check_choice(backend: str, device: str) -> tuple[str, str]:
    if backend == "cpu":  # accepted as a synonym: the user wants ONNX Runtime on the CPU
        backend, device = "onnxruntime-cpu", "cpu"
    if backend not in BACKENDS:
        raise KwmlpError(f"backend must be one of {', '.join(BACKENDS + ('cpu',))}, got {backend!r}")
    if device not in DEVICES:
        raise KwmlpError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu" and backend in ("tensorrt",) + _GPU_ORT:
        raise KwmlpError(f"backend {backend} runs on a GPU, not with device='cpu'")
    if device == "cuda" and backend in ("onnxruntime-cpu", "openvino"):
        raise KwmlpError(f"backend {backend} runs on the CPU, not with device='cuda'")
    return backend, device


def _locate(path: str, backend: str, device: str, why: _Reasons) -> tuple[str, str | None]:
    """(the ONNX export, the engine to try first or None) for what was given."""
    if is_engine(path):
        if backend not in ("auto", "tensorrt"):
            raise KwmlpError(f"{path} is a TensorRT engine: use backend 'tensorrt' or 'auto', or pass its .onnx")
        return onnx_behind(path), (path if device != "cpu" else None)
    engine = engine_beside(path) if backend in ("auto", "tensorrt") and device != "cpu" else None
    if backend == "tensorrt" and engine is None:
        raise KwmlpError(f"backend tensorrt needs an engine: build {os.path.splitext(path)[0]}.engine with "
                         "`kwmlp build`, or pass an .engine file")
    if engine is None and backend == "auto" and device != "cpu":
        why.absent.append("no TensorRT engine beside it")
    return path, engine


def _try_engine(engine: str, onnx_path: str, backend: str, cuda_graph: bool, why: _Reasons) -> Opened | None:
    """The engine opened, or None after a warning when ``auto`` may fall back to its ONNX."""
    from kwmlp.runtime.tensorrt_backend import EngineMismatch

    try:
        return _open_engine(engine, cuda_graph)
    except EngineMismatch as e:
        if backend == "tensorrt":
            raise
        if not os.path.isfile(onnx_path):
            raise KwmlpError(f"{e}; and its ONNX {onnx_path} is missing to fall back to") from None
        log.warning("kwmlp: %s; falling back to %s", e, onnx_path)
        why.failed.append(f"engine {os.path.basename(engine)} does not load here")
        return None


def cpu_choice(scene: str = "iterative", live: bool = False) -> tuple[str, str]:
    """(backend, why) for ``auto`` on a CPU: OpenVINO where it is installed on an x86-64 CPU, for
    an export whose scene is not ``single`` and work that is not ``live``; ONNX Runtime otherwise.

    Measured side by side on the same export (benchmarks/README.md, "OpenVINO and ONNX Runtime on
    a CPU"): equal 1 x 1 s latency, and OpenVINO's 16 x 10 s throughput 1.3x ONNX Runtime's on a
    2-core AVX-512 Xeon, 1.0x (quiet) to 2.2x (loaded) on a 2-core AMD EPYC. OpenVINO's Resize
    misses the 1e-3 parity bar (1.9e-3) on the ``single`` scene, one interpolation from every frame
    of a long clip straight to 16. Not measured on ARM, where ONNX Runtime stays. ``live``: one
    window at a time with idle gaps between them (``kwmlp listen``), where a window after an 80 ms
    gap took 1.62 ms of CPU on ONNX Runtime and 1.98 ms on OpenVINO (warm, back to back: 0.84 and
    0.74 ms; same AMD EPYC).
    """
    if live:
        return "onnxruntime-cpu", "one window at a time: ONNX Runtime measured cheaper per paced window"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "onnxruntime-cpu", f"OpenVINO is not measured on {platform.machine()} CPUs"
    if not module_installed("openvino"):
        return "onnxruntime-cpu", "openvino is not installed"
    if scene == "single":
        return "onnxruntime-cpu", "OpenVINO misses the parity bar on the single scene (1.9e-3 > 1e-3)"
    return "openvino", "openvino is installed, and measured faster than ONNX Runtime on x86-64 CPUs"


def _open_cpu(onnx_path: str, threads: int | None, any_engine: bool, why: _Reasons, live: bool) -> Opened:
    """``auto``'s last step: :func:`cpu_choice` (ONNX Runtime only when ``any_engine`` is False)."""
    backend, reason = cpu_choice("", live) if any_engine else ("onnxruntime-cpu", "")
    if backend == "openvino":  # only then does the scene decide: read the export's metadata only then
        backend, reason = cpu_choice(read_model_info(onnx_path).scene, live)
    if backend == "openvino":
        try:
            return _open_openvino(onnx_path, threads)
        except KwmlpError as e:
            why.failed.append(f"openvino: {e}")
    elif reason:
        why.absent.append(reason)
    return _open_ort(onnx_path, "onnxruntime-cpu", threads, forced=False)


def _ort_order(device: str) -> list[str]:
    return ["onnxruntime-cpu"] if device == "cpu" else list(_GPU_ORT) + ([] if device == "cuda" else ["onnxruntime-cpu"])


def _gpu_provider_absent(name: str, available: list[str]) -> str | None:
    """Why ``auto`` does not try ONNX Runtime's GPU backend ``name`` at all, or None."""
    provider = ortb.ORT_BACKENDS[name]
    if provider not in available:
        return f"{provider} is not in this onnxruntime"
    if name == "onnxruntime-trt" and not module_installed("tensorrt"):
        # the provider needs TensorRT's libraries, and its cache key TensorRT's version
        return "TensorrtExecutionProvider needs the tensorrt package"
    return None


def _first_ort(onnx_path: str, device: str, threads: int | None, why: _Reasons, any_engine: bool = True,
               live: bool = False, cuda_graph: bool = True) -> Opened:
    """The first ONNX Runtime GPU provider that starts, in ``auto``'s order, then the CPU step."""
    available = ortb.available_providers()
    for name in _ort_order(device):
        if name == "onnxruntime-cpu":
            return _open_cpu(onnx_path, threads, any_engine, why, live)
        absent = _gpu_provider_absent(name, available)
        if absent:
            why.absent.append(absent)
            continue
        provider = ortb.ORT_BACKENDS[name]
        try:
            opened = _open_ort(onnx_path, name, threads, forced=False, cuda_graph=cuda_graph)
        except KwmlpError as e:  # e.g. no GPU visible, no CUDA bindings for the cache key
            why.failed.append(f"{provider}: {e}")
            continue
        if opened.runner.backend != name:
            why.failed.append(f"{provider} did not start")
        return opened
    raise KwmlpError(f"no backend can run {onnx_path} on device {device!r}: {'; '.join(why.absent + why.failed)}")


@dataclass
class Choice:
    """What ``backend="auto"`` would run, and why each step above it would not."""

    backend: str
    reasons: list[str]


def explain_auto(path: str, device: str = "auto") -> Choice:
    """What :func:`open_model` with ``backend="auto"`` would run here, found without opening a
    session or deserializing an engine: an offered ONNX Runtime GPU provider is assumed to start."""
    from kwmlp.runtime.tensorrt_backend import engine_problem, unchecked

    _, device = _check_choice("auto", device)
    require_file(path)
    why = _Reasons()
    onnx_path, engine = _locate(path, "auto", device, why)
    problem = engine_problem(engine) if engine else None
    if engine and problem is None:
        return Choice("tensorrt", [unchecked(engine) or f"engine {os.path.basename(engine)} matches this GPU and TensorRT"])
    if problem:
        why.failed.append(problem)
    available = ortb.available_providers()
    for name in _ort_order(device):
        if name == "onnxruntime-cpu":
            backend, reason = cpu_choice(read_model_info(onnx_path).scene)
            return Choice(backend, why.absent + why.failed + [reason])
        absent = _gpu_provider_absent(name, available)
        if absent is None:
            return Choice(name, why.absent + why.failed + [f"{ortb.ORT_BACKENDS[name]} is offered (if it does not "
                                                            "start, the next step runs)"])
        why.absent.append(absent)
    return Choice("none", why.absent + why.failed)


def open_model(path: str, backend: str = "auto", device: str = "auto", threads: int | None = None,
               cuda_graph: bool = True, live: bool = False) -> Opened:
    """Open ``path`` (an ``.onnx`` export or a ``.engine`` from ``kwmlp build``) as asked; ``live``
    tunes ``auto``'s CPU step for one window at a time (:func:`cpu_choice`); ``cuda_graph``: GPU
    runners replay CUDA graphs of the shapes they meet repeatedly."""
    backend, device = _check_choice(backend, device)
    require_file(path)
    why = _Reasons()
    onnx_path, engine = _locate(path, backend, device, why)
    opened = _try_engine(engine, onnx_path, backend, cuda_graph, why) if engine else None
    if opened is None and backend == "openvino":
        opened = _open_openvino(onnx_path, threads)
    if opened is None and backend not in ("auto", "onnxruntime", "tensorrt"):
        opened = _open_ort(onnx_path, backend, threads, forced=True, cuda_graph=cuda_graph)
    if opened is None:
        opened = _first_ort(onnx_path, device, threads, why, any_engine=backend != "onnxruntime", live=live,
                            cuda_graph=cuda_graph)
    return _announce(opened, why)


def _announce(opened: Opened, why: _Reasons) -> Opened:
    name = os.path.basename(opened.runner.path)
    if why.absent:
        log.debug("kwmlp: not tried for %s: %s", name, "; ".join(why.absent))
    because = f" ({'; '.join(why.failed)})" if why.failed else ""
    log.info("kwmlp: running %s on %s%s", name, opened.runner.backend, because)
    return opened
