"""The backends ``kwmlp bench`` compares: how to tell whether one is available, and how to run it.

Each loader returns ``run(audio) -> (timestamp_embeddings, scene_embeddings)``, numpy float32 on
the host (so a GPU row's time includes its synchronisation and copy back), ``audio`` float32
``(B, L)``. Every runtime row goes through the code a user calls (``Embedder``, or ``OvRunner`` for
OpenVINO in bf16). Heavy packages are imported inside the loaders, so that a worker process holds
only its own backend's libraries (the ONNX Runtime worker never imports torch).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from typing import Callable

import numpy as np

from kwmlp.artifact import EMBEDDING_INPUT, EMBEDDING_OUTPUTS
from kwmlp.errors import install_command

TARGETS = (
    "pytorch", "torch-compile", "onnxruntime-cpu", "openvino", "openvino-bf16",
    "pytorch-cuda", "pytorch-cuda-fp16", "onnxruntime-cuda", "onnxruntime-trt", "tensorrt", "tensorrt-cuda-graph",
)
REFERENCE = "pytorch"
TORCH_BACKENDS = ("pytorch", "torch-compile")  # the PyTorch model of the checkpoint on the CPU, eager and compiled: fp32
TORCH_CUDA = ("pytorch-cuda", "pytorch-cuda-fp16")
ENGINE_BACKENDS = ("tensorrt", "tensorrt-cuda-graph")  # run the engine the suite builds (or --engine)
GPU_BACKENDS = TORCH_CUDA + ("onnxruntime-cuda", "onnxruntime-trt") + ENGINE_BACKENDS
# a row's precision when it is not the export's (or the engine's)
FIXED_PRECISION = {**dict.fromkeys(TORCH_BACKENDS + ("pytorch-cuda",), "fp32"), "openvino-bf16": "bf16",
                   "pytorch-cuda-fp16": "fp16 blocks, fp32 front end"}
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _no_cuda_device() -> str | None:
    """Why no CUDA device is usable through the CUDA bindings, or None."""
    from kwmlp import cuda
    from kwmlp.errors import KwmlpError

    try:
        cuda.load()
    except KwmlpError as e:
        return f"no CUDA device ({str(e).split('; ')[0]})"
    return None


def _unavailable_gpu(name: str, named: bool, cuda_graph: bool) -> str | None:
    if name in TORCH_CUDA:
        if not _has("torch"):
            return f"torch is not installed ({install_command('reference')})"
        import torch

        return None if torch.cuda.is_available() else "no CUDA device (torch.cuda.is_available() is False)"
    if name in ("onnxruntime-cuda", "onnxruntime-trt"):
        from kwmlp.runtime.onnxruntime_backend import ORT_BACKENDS, available_providers

        if ORT_BACKENDS[name] not in available_providers():
            return f"onnxruntime has no {ORT_BACKENDS[name]} here (onnxruntime-gpu on a CUDA machine: README)"
        if name == "onnxruntime-trt" and not _has("tensorrt"):
            return f"tensorrt is not installed ({install_command('gpu')} on a CUDA machine)"
        return None
    if not _has("tensorrt"):
        return f"tensorrt is not installed ({install_command('gpu')} on a CUDA machine)"
    if name == "tensorrt-cuda-graph" and not (cuda_graph or named):
        return "the CUDA-graph row runs with --cuda-graph"
    return _no_cuda_device()


def unavailable(name: str, quick: bool = False, named: bool = False, cuda_graph: bool = False) -> str | None:
    """Why backend ``name`` cannot run here, or None when it can. ``named``: asked for explicitly."""
    if name in TORCH_BACKENDS and not _has("torch"):
        return f"torch is not installed ({install_command('reference')})"
    if name == "torch-compile":
        if shutil.which("g++") is None and shutil.which("cc") is None:
            return "torch.compile's inductor needs a C++ compiler, none on PATH"
        if quick and not named:
            return "compiling takes longer than --quick allows (name it in --backends to run it anyway)"
    if name.startswith("openvino") and not _has("openvino"):
        return f"openvino is not installed ({install_command('openvino')})"
    if name in GPU_BACKENDS:
        return _unavailable_gpu(name, named, cuda_graph)
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


def _torch_cuda(checkpoint: str, half_blocks: bool) -> Runner:
    """The reference on the GPU: fp32 with TF32 off (it is on for cuDNN convolutions by default and
    rounds products to 10-bit mantissas), or the KW-MLP blocks in fp16 with the MFCC front end in
    fp32, the PyTorch counterpart of the fp16 engine (the front end overflows fp16)."""
    import torch

    from kwmlp.models import HearReference, load_checkpoint

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref = HearReference(load_checkpoint(checkpoint)).eval()
    if half_blocks:
        ref.model = _half_blocks(ref.model)
    ref = ref.cuda()

    def run(audio):
        with torch.inference_mode():
            out = ref(torch.from_numpy(audio).cuda())
            ts, scene = out.timestamp_embeddings.float().cpu(), out.scene_embeddings.float().cpu()
        torch.cuda.synchronize()
        return ts.numpy(), scene.numpy()

    return run


def _half_blocks(model):
    """``model`` (a KW-MLP) with its blocks in fp16 between fp32 MFCCs and fp32 embeddings."""
    import torch

    class HalfBlocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.dims = model.half(), model.dims

        def embed(self, mfcc, depth):
            return self.inner.embed(mfcc.half(), depth).float()

        def forward(self, mfcc):  # keyword logits
            return self.inner(mfcc.half()).float()

    return HalfBlocks()


def _embedder(path: str, backend: str, threads: int, block_seconds: int | None, cuda_graph: bool = False) -> Runner:
    from kwmlp.runtime import Embedder

    emb = Embedder(path, backend=backend, threads=threads, block_seconds=block_seconds, cuda_graph=cuda_graph)

    def run(audio):
        r = emb.embed(audio)
        return r.timestamp_embeddings, r.scene_embeddings

    return run


def _openvino_bf16(model: str, threads: int) -> Runner:
    from kwmlp.runtime.openvino_backend import OvRunner

    runner = OvRunner(model, threads=threads, precision="bf16")
    outputs = (EMBEDDING_OUTPUTS[0], EMBEDDING_OUTPUTS[2])
    return lambda audio: tuple(runner.run({EMBEDDING_INPUT: audio})[k] for k in outputs)


@dataclass(frozen=True)
class Paths:
    checkpoint: str
    model: str  # the fp32 export
    engine: str | None = None  # the engine the tensorrt rows run


def load(name: str, paths: Paths, threads: int, block_seconds: int | None = None) -> Runner:
    if name in TORCH_BACKENDS:
        return _torch_reference(paths.checkpoint, threads, compiled=name == "torch-compile")
    if name in TORCH_CUDA:
        return _torch_cuda(paths.checkpoint, half_blocks=name == "pytorch-cuda-fp16")
    if name in ("onnxruntime-cpu", "openvino", "onnxruntime-cuda", "onnxruntime-trt"):
        return _embedder(paths.model, name, threads, block_seconds)
    if name == "openvino-bf16":
        return _openvino_bf16(paths.model, threads)
    if name in ENGINE_BACKENDS:
        return _embedder(paths.engine, "tensorrt", threads, block_seconds, cuda_graph=name == "tensorrt-cuda-graph")
    raise ValueError(f"no loader for backend {name!r}")
