"""The backends ``kwmlp bench`` compares: how to tell whether one is available, and how to run it.

Each loader returns a :class:`Runner`: ``runner(audio) -> (timestamp_embeddings, scene_embeddings)``,
numpy float32 on the host (so a GPU row's time includes its synchronisation and copy back), ``audio``
float32 ``(B, L)``; ``runner.note()`` says how the row ran where a reader needs it (CUDA graphs).
Every runtime row goes through the code a user calls (``Embedder``, or ``OvRunner`` for OpenVINO in
bf16). Heavy packages are imported inside the loaders, so that a worker process holds
only its own backend's libraries (the ONNX Runtime worker never imports torch).
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np

from kwmlp.artifact import EMBEDDING_INPUT, EMBEDDING_OUTPUTS
from kwmlp.errors import install_command

TARGETS = (
    "pytorch", "torch-compile", "onnxruntime-cpu", "onnxruntime-cpu-graph", "openvino", "openvino-bf16",
    "pytorch-cuda", "pytorch-cuda-fp16", "pytorch-cuda-graph", "pytorch-cuda-graph-fp16",
    "onnxruntime-cuda", "onnxruntime-trt", "tensorrt", "tensorrt-cuda-graph",
)
REFERENCE = "pytorch"
TORCH_BACKENDS = ("pytorch", "torch-compile")  # the PyTorch model of the checkpoint on the CPU, eager and compiled: fp32
TORCH_CUDA = ("pytorch-cuda", "pytorch-cuda-fp16", "pytorch-cuda-graph", "pytorch-cuda-graph-fp16")
HALF_BLOCKS = ("pytorch-cuda-fp16", "pytorch-cuda-graph-fp16")
ENGINE_BACKENDS = ("tensorrt", "tensorrt-cuda-graph")  # run the engine the suite builds (or --engine)
GPU_BACKENDS = TORCH_CUDA + ("onnxruntime-cuda", "onnxruntime-trt") + ENGINE_BACKENDS
# a row's precision when it is not the export's (or the engine's)
FIXED_PRECISION = {**dict.fromkeys(TORCH_BACKENDS + ("pytorch-cuda", "pytorch-cuda-graph"), "fp32"),
                   "openvino-bf16": "bf16", **dict.fromkeys(HALF_BLOCKS, "fp16 blocks, fp32 front end")}
Run = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class Runner:
    """One row's callable: ``runner(audio)`` runs it and counts the call; ``note()`` is what a
    reader of the row should know about how it ran, from ``note_of(calls)`` (None: nothing)."""

    def __init__(self, run: Run, note_of: Callable[[int], str | None] | None = None):
        self._run, self._note_of = run, note_of
        self.calls = 0

    def __call__(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        return self._run(audio)

    def note(self) -> str | None:
        return self._note_of(self.calls) if self._note_of else None


def graph_note(report, calls: int, what: str = "CUDA graph") -> str:
    """A row's CUDA-graph line from a report with ``captured``, ``replays``, ``plain_runs`` and
    ``refused`` ({shape: why}), as ``Embedder.graph_report()`` gives it (None: the runner has no
    device graphs). Replays and plain runs are counted per graph launch: a call that runs in pieces
    has several."""
    if report is None:
        return "no CUDA graph (this runner has none)"
    note = (f"{what}: {report.captured} captured; {report.replays} replays, {report.plain_runs} plain runs "
            f"in {calls} calls")
    if report.refused:
        note += "; refused: " + "; ".join(f"{shape}: {why}" for shape, why in report.refused.items())
    return note


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

    return Runner(run)


def _reference_on(checkpoint: str, half_blocks: bool, device: str):
    """The reference on ``device``: fp32 with TF32 off (it is on for cuDNN convolutions by default
    and rounds products to 10-bit mantissas), or the KW-MLP blocks in fp16 with the MFCC front end
    in fp32, the PyTorch counterpart of the fp16 engine (the front end overflows fp16)."""
    import torch

    from kwmlp.models import HearReference, load_checkpoint

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref = HearReference(load_checkpoint(checkpoint)).eval()
    if half_blocks:
        ref.model = _half_blocks(ref.model)
    return ref.to(device)


def _torch_cuda(checkpoint: str, half_blocks: bool) -> Runner:
    """The reference on the GPU, run eagerly (:func:`_reference_on`)."""
    import torch

    ref = _reference_on(checkpoint, half_blocks, "cuda")

    def run(audio):
        with torch.inference_mode():
            out = ref(torch.from_numpy(audio).cuda())
            ts, scene = out.timestamp_embeddings.float().cpu(), out.scene_embeddings.float().cpu()
        torch.cuda.synchronize()
        return ts.numpy(), scene.numpy()

    return Runner(run)


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


@dataclass
class _Captured:
    graph: object  # a torch.cuda.CUDAGraph
    audio: object  # the static input the graph reads, (B, L) float32 on the device
    outputs: object  # the ReferenceOutput whose tensors the graph writes


def _capture(ref, shape: tuple[int, int], device: str, graphs) -> _Captured:
    """``ref`` on inputs of ``shape`` captured as one CUDA graph, as PyTorch's documentation does it:
    warm-up calls on a side stream first (cuBLAS and cuDNN choose and allocate there, not inside
    the capture), then one capture. A capture runs nothing: the outputs hold their values only after
    a replay."""
    import torch

    audio = torch.zeros(shape, dtype=torch.float32, device=device)
    side = graphs.Stream()
    side.wait_stream(graphs.current_stream())
    with graphs.stream(side):
        for _ in range(3):
            ref(audio)
    graphs.current_stream().wait_stream(side)
    graph = graphs.CUDAGraph()
    with graphs.graph(graph):
        outputs = ref(audio)
    return _Captured(graph, audio, outputs)


def _torch_cuda_graph(checkpoint: str, half_blocks: bool, device: str = "cuda", graphs=None) -> Runner:
    """The reference on the GPU (:func:`_reference_on`) replayed as CUDA graphs, the anchor for the
    runtime's graph replays: one graph per input shape, captured on its first call. A call copies
    the audio into the graph's static input, replays, and copies the outputs to the host.

    The whole forward is captured (MFCCs, blocks, chunk compensation, scene): what it does depends
    on the input's shape only (the chunking, the scene's halvings), never on its values, and nothing
    in it waits for the host. ``graphs`` is ``torch.cuda`` (a stand-in in the CPU tests)."""
    import torch

    graphs = graphs or torch.cuda
    ref = _reference_on(checkpoint, half_blocks, device)
    captured: dict[tuple[int, int], _Captured] = {}
    replays = 0

    def run(audio):
        nonlocal replays
        with torch.inference_mode():
            if audio.shape not in captured:
                captured[audio.shape] = _capture(ref, audio.shape, device, graphs)
            c = captured[audio.shape]
            c.audio.copy_(torch.from_numpy(audio))
            c.graph.replay()
            replays += 1
            # copies to pageable host memory, after the replay on the same stream; copy=True: the
            # next replay rewrites the static outputs, also where they are on the host already
            ts, scene = (t.to("cpu", torch.float32, copy=True)
                         for t in (c.outputs.timestamp_embeddings, c.outputs.scene_embeddings))
        return ts.numpy(), scene.numpy()

    def note(calls: int) -> str:
        report = SimpleNamespace(captured=len(captured), replays=replays, plain_runs=0, refused={})
        return graph_note(report, calls, "CUDA graph of the whole forward")

    return Runner(run, note)


def _embedder(path: str, backend: str, threads: int, block_seconds: int | None, cuda_graph: bool | None = None,
              report_graph: bool = False, split_chunks: bool = True) -> Runner:
    """A runtime row through ``Embedder``, with its default ``cuda_graph`` unless told (what a user
    gets); ``report_graph``: its note says whether it replayed CUDA graphs (``Embedder.graph_report()``
    where this kwmlp-rt has it)."""
    from kwmlp.runtime import Embedder

    graphs = {} if cuda_graph is None else {"cuda_graph": cuda_graph}
    emb = Embedder(path, backend=backend, threads=threads, block_seconds=block_seconds, split_chunks=split_chunks,
                   **graphs)

    def run(audio):
        r = emb.embed(audio)
        return r.timestamp_embeddings, r.scene_embeddings

    def note(calls: int) -> str:
        report_of = getattr(emb, "graph_report", None)
        if report_of is None:
            return "CUDA graph: not reported (this kwmlp-rt has no Embedder.graph_report)"
        return graph_note(report_of(), calls)

    return Runner(run, note if report_graph else None)


def _openvino_bf16(model: str, threads: int) -> Runner:
    from kwmlp.runtime.openvino_backend import OvRunner

    runner = OvRunner(model, threads=threads, precision="bf16")
    outputs = (EMBEDDING_OUTPUTS[0], EMBEDDING_OUTPUTS[2])
    return Runner(lambda audio: tuple(runner.run({EMBEDDING_INPUT: audio})[k] for k in outputs))


@dataclass(frozen=True)
class Paths:
    checkpoint: str
    model: str  # the fp32 export
    engine: str | None = None  # the engine the tensorrt rows run


def load(name: str, paths: Paths, threads: int, block_seconds: int | None = None) -> Runner:
    if name in TORCH_BACKENDS:
        return _torch_reference(paths.checkpoint, threads, compiled=name == "torch-compile")
    if name in ("pytorch-cuda-graph", "pytorch-cuda-graph-fp16"):
        return _torch_cuda_graph(paths.checkpoint, half_blocks=name in HALF_BLOCKS)
    if name in TORCH_CUDA:
        return _torch_cuda(paths.checkpoint, half_blocks=name in HALF_BLOCKS)
    if name in ("onnxruntime-cpu", "openvino", "onnxruntime-cuda", "onnxruntime-trt"):
        return _embedder(paths.model, name, threads, block_seconds, report_graph=name in GPU_BACKENDS)
    if name == "onnxruntime-cpu-graph":
        return _embedder(paths.model, "onnxruntime-cpu", threads, block_seconds, split_chunks=False)
    if name == "openvino-bf16":
        return _openvino_bf16(paths.model, threads)
    if name in ENGINE_BACKENDS:
        return _embedder(paths.engine, "tensorrt", threads, block_seconds, cuda_graph=name == "tensorrt-cuda-graph",
                         report_graph=True)
    raise ValueError(f"no loader for backend {name!r}")
