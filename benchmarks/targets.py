"""The backends ``kwmlp bench`` compares: how to tell whether one is available, and how to run it.

Each loader returns ``run(audio) -> (timestamp_embeddings, scene_embeddings)``, numpy float32,
``audio`` float32 ``(B, L)``. Heavy packages are imported inside the loaders, so that a worker
process holds only its own backend's libraries (the ONNX Runtime worker never imports torch).
"""

from __future__ import annotations

import importlib.util
import shutil
from typing import Callable

import numpy as np

from kwmlp.artifact import EMBEDDING_INPUT, EMBEDDING_OUTPUTS

TARGETS = ("pytorch", "torch-compile", "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt")
REFERENCE = "pytorch"
TORCH_BACKENDS = ("pytorch", "torch-compile")  # the PyTorch model of the checkpoint, eager and compiled: fp32
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def unavailable(name: str, quick: bool = False, named: bool = False) -> str | None:
    """Why backend ``name`` cannot run here, or None when it can. ``named``: asked for explicitly."""
    has = lambda mod: importlib.util.find_spec(mod) is not None
    if name in TORCH_BACKENDS and not has("torch"):
        return "torch is not installed (pip install -e '.[export]')"
    if name == "torch-compile":
        if shutil.which("g++") is None and shutil.which("cc") is None:
            return "torch.compile's inductor needs a C++ compiler, none on PATH"
        if quick and not named:
            return "compiling takes longer than --quick allows (name it in --backends to run it anyway)"
    if name == "onnxruntime-cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "onnxruntime has no CUDAExecutionProvider here (pip install -e '.[gpu]' on a CUDA machine)"
    if name == "tensorrt":
        if not has("tensorrt"):
            return "tensorrt is not installed (pip install -e '.[gpu]' on a CUDA machine)"
        return "this version's runtime has no TensorRT engine runner yet"
    return None


def _torch_reference(checkpoint: str, threads: int, compiled: bool) -> Runner:
    import torch

    from kwmlp.models import HearReference, load_checkpoint

    torch.set_num_threads(threads)
    model = HearReference(load_checkpoint(checkpoint)).eval()
    fn = torch.compile(model, dynamic=False) if compiled else model

    def run(audio):
        with torch.inference_mode():
            out = fn(torch.from_numpy(audio))
        return out.timestamp_embeddings.numpy(), out.scene_embeddings.numpy()

    return run


def _onnxruntime(model: str, threads: int, provider: str, block_seconds: int | None) -> Runner:
    if provider == "CPUExecutionProvider":
        from kwmlp.runtime import Embedder

        emb = Embedder(model, backend="onnxruntime-cpu", threads=threads, block_seconds=block_seconds)

        def run(audio):
            r = emb.embed(audio)
            return r.timestamp_embeddings, r.scene_embeddings

        return run
    from kwmlp.runtime.onnxruntime_backend import OrtRunner

    runner = OrtRunner(model, providers=[provider], threads=threads)
    outputs = (EMBEDDING_OUTPUTS[0], EMBEDDING_OUTPUTS[2])
    return lambda audio: tuple(runner.run({EMBEDDING_INPUT: audio})[k] for k in outputs)


def load(name: str, checkpoint: str, model: str, threads: int, block_seconds: int | None) -> Runner:
    if name in TORCH_BACKENDS:
        return _torch_reference(checkpoint, threads, compiled=name == "torch-compile")
    if name == "onnxruntime-cpu":
        return _onnxruntime(model, threads, "CPUExecutionProvider", block_seconds)
    if name == "onnxruntime-cuda":
        return _onnxruntime(model, threads, "CUDAExecutionProvider", block_seconds)
    raise ValueError(f"no loader for backend {name!r}")
