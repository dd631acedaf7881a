"""Which backend runs a model, stated once.

``auto``: a TensorRT engine that loads on this GPU (the ``.engine`` given, or ``MODEL.engine``
beside ``MODEL.onnx``) -> ONNX Runtime's TensorRT provider -> its CUDA provider -> the CPU, where
:func:`cpu_choice` says why ONNX Runtime's CPU provider runs (OpenVINO runs by name). The one info log line names
what runs, with the reason for each step down that failed; steps with nothing to try (no GPU provider in this onnxruntime) go to the debug log. A forced backend
that cannot run raises :class:`~kwmlp.errors.KwmlpError` instead of falling back. Nothing here
imports TensorRT or CUDA bindings unless an engine file exists or ONNX Runtime offers a GPU
provider, so a CPU-only machine never loads them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable

from kwmlp.artifact import (
    EMBEDDING_INPUT, KEYWORD_INPUT, ModelInfo, engine_beside, engine_keywords_path, is_engine, keywords_model_path, onnx_behind,
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


def cpu_choice(live: bool = False) -> tuple[str, str]:
    """(backend, why) for ``auto`` on a CPU: ONNX Runtime, which runs whole one-second chunks over the
    cores (:mod:`kwmlp.runtime.chunk_parallel`); OpenVINO runs when asked for by name.

    Measured in one run, one process per backend (README, "Performance"), on a 2-core AMD EPYC
    (Zen 3): on a quiet machine the two are within about 10% (OpenVINO 705x realtime on 16 x 10 s
    against 665x, ONNX Runtime 3.72 against 4.19 ms for one 1 s clip); with another job busy on
    one core, ONNX Runtime leads, 416x against 371x and 5.8 against 7.0 ms (with its own intra-op
    threads, how it ran before: 283x, 8.4 ms).
    Before chunks went over the cores, OpenVINO was 1.2-1.3x ONNX Runtime on 16 x 10 s on quiet
    AVX-512 CPUs (a Zen 5, a Xeon), and ``auto`` ran it; it still may be the faster for batch work
    on an idle AVX-512 machine, and stays one ``backend="openvino"`` away. ``live``: one window at a
    time, with idle gaps, on one thread.
    """
    if live:
        return "onnxruntime-cpu", "one window at a time on one thread: ONNX Runtime measured cheaper per paced window"
    return "onnxruntime-cpu", ("ONNX Runtime, whole chunks over the cores: within 10% of OpenVINO on a quiet CPU, "
                               "faster on a busy one (measured)")


def _open_cpu(onnx_path: str, threads: int | None, why: _Reasons, live: bool) -> Opened:
    """``auto``'s last step: ONNX Runtime on the CPU (:func:`cpu_choice`)."""
    why.absent.append(cpu_choice(live)[1])
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


def _first_ort(onnx_path: str, device: str, threads: int | None, why: _Reasons, live: bool = False,
               cuda_graph: bool = True) -> Opened:
    """The first ONNX Runtime GPU provider that starts, in ``auto``'s order, then the CPU step."""
    available = ortb.available_providers()
    for name in _ort_order(device):
        if name == "onnxruntime-cpu":
            return _open_cpu(onnx_path, threads, why, live)
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
            backend, reason = cpu_choice()
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
        opened = _first_ort(onnx_path, device, threads, why, live=live, cuda_graph=cuda_graph)
    return _announce(opened, why)


def _announce(opened: Opened, why: _Reasons) -> Opened:
    name = os.path.basename(opened.runner.path)
    if why.absent:
        log.debug("kwmlp: not tried for %s: %s", name, "; ".join(why.absent))
    because = f" ({'; '.join(why.failed)})" if why.failed else ""
    log.info("kwmlp: running %s on %s%s", name, opened.runner.backend, because)
    return opened
