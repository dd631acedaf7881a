"""``Embedder``: numpy audio in, KW-MLP embeddings out, on the best backend available."""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from kwmlp.artifact import (
    EMBEDDING_INPUT, EMBEDDING_OUTPUTS, KEYWORD_INPUT, KEYWORD_OUTPUTS, LAYOUT_EMBEDDINGS, LAYOUT_KEYWORDS, ModelInfo, check_layout,
    keywords_model_path,
)
from kwmlp.dims import CHUNK_SAMPLES, num_chunks
from kwmlp.errors import KwmlpError
from kwmlp.runtime import shapes
from kwmlp.runtime.batching import embed_any
from kwmlp.runtime.blocks import ClipStream
from kwmlp.runtime.chunk_parallel import ChunkParallel
from kwmlp.runtime.onnxruntime_backend import OrtRunner, physical_cores
from kwmlp.runtime.device_graph import GraphReport
from kwmlp.runtime.inputs import as_audio_batch, as_windows, require_shape
from kwmlp.runtime.loader import BACKENDS, DEVICES, open_model
from kwmlp.runtime.result import EmbeddingResult
from kwmlp.runtime.runner import Runner

log = logging.getLogger("kwmlp")

__all__ = ["BACKENDS", "DEVICES", "Embedder", "EmbeddingResult"]
# Longer clips go block by block: one whole-graph run keeps every chunk's activations at once
# (measured: 460 MB peak RSS for a 10-minute clip, 238 MB in blocks), with equal results.
DEFAULT_BLOCK_SECONDS = 64
# One-second chunks per call on a runner that wants cache-sized calls (the CPU): measured on 2
# cores, 16 x 10 s clips ran 13% faster in calls of 2 clips than in one call; with chunks over the
# cores (kwmlp.runtime.chunk_parallel, calls of this many chunks shared by the workers), 796x
# realtime against 753x in calls of 64 and 679x in calls of 12 (2-core AMD EPYC, Zen 3).
CHUNKS_PER_RUN = 24
OUTPUT_DTYPES = ("float32", "float16")
# More intra-op threads than this only oversubscribe the cores (100000 never got going).
MAX_THREADS = 4 * (os.cpu_count() or 1)


class Embedder:
    """Runs an exported kwmlp-rt model.

    Parameters
    ----------
    model_path : str
        ``.onnx`` file written by ``kwmlp export``, or ``.engine`` written by ``kwmlp build``. A
        fixed-shape graph (``NAME.BxS.onnx``, ``kwmlp export --fixed-shape``) embeds audio of
        shape ``(B, S)`` alone, in one call, and refuses any other shape.
    backend : str
        ``"auto"`` (default: a TensorRT engine that loads on this GPU, then ONNX Runtime's
        TensorRT, CUDA and CPU providers; what runs and why is announced in one log line),
        ``"tensorrt"``, ``"onnxruntime"`` (its best provider), ``"onnxruntime-trt"``,
        ``"onnxruntime-cuda"``, ``"onnxruntime-cpu"`` (or ``"cpu"``), ``"openvino"`` (the
        ``openvino`` extra; ``auto``'s choice on an x86-64 CPU where it is installed). A forced
        backend that cannot run raises KwmlpError. See :mod:`kwmlp.runtime.loader`.
    device : str
        ``"auto"``, ``"cpu"`` (CPU backends only) or ``"cuda"`` (GPU backends only).
    threads : int, optional
        Threads for ONNX Runtime or OpenVINO on the CPU, 1 to 4 per core (default: physical cores;
        OpenVINO's own default).
    block_seconds : int, optional
        Embed clips longer than this in blocks of this many seconds, in bounded memory, with
        results equal to the whole clip at once. Default: 64 s (or the model's ``max_seconds``,
        the scene range its graph covers, or the TensorRT engine's profiles, when shorter).
    cuda_graph : bool
        GPU backends (TensorRT, ONNX Runtime's CUDA provider): each input shape met repeatedly gets
        a session or context of its own on preallocated device buffers, captured as a CUDA graph
        after one plain run and replayed from then on (:mod:`kwmlp.runtime.device_graph`); calls are
        padded to few shapes so that they repeat (:mod:`kwmlp.runtime.shapes`). Default True;
        False runs every call plainly. :meth:`graph_report` says what replayed.
    split_chunks : bool
        ONNX Runtime on a CPU with two threads or more: run whole one-second chunks on separate
        cores (:mod:`kwmlp.runtime.chunk_parallel`; default True, where the export has its keyword
        graph and no ``--depth``). False: the embedding graph on ONNX Runtime's own threads.
    output_dtype : str
        ``"float32"`` (default) or ``"float16"``: the dtype of what ``embed``, ``keyword_logits`` and
        ``chunk_embeddings`` return (half the memory and transfer for a next model in fp16; computed
        as the model's precision says, then cast). :meth:`embed_on_device` keeps results on the GPU.
    live : bool
        The work is one keyword window at a time with idle gaps (:class:`~kwmlp.runtime.LiveSpotter`):
        ``auto`` then picks the CPU engine measured cheapest per paced window (ONNX Runtime), not
        the one fastest on batches (OpenVINO where installed).

    ``embed`` and ``keyword_logits`` are thread-safe. ``backend`` says what runs.
    """

    def __init__(
        self, model_path: str, backend: str = "auto", device: str = "auto", threads: int | None = None,
        block_seconds: int | None = None, cuda_graph: bool = True, live: bool = False, output_dtype: str = "float32",
        split_chunks: bool = True,
    ):
        model_path = os.fspath(model_path)
        if output_dtype not in OUTPUT_DTYPES:
            raise KwmlpError(f"output_dtype must be one of {', '.join(OUTPUT_DTYPES)}, got {output_dtype!r}")
        self.output_dtype = np.dtype(output_dtype)
        if block_seconds is not None and block_seconds < 1:
            raise KwmlpError(f"block_seconds must be at least 1, got {block_seconds}")
        if threads is not None and not 1 <= threads <= MAX_THREADS:
            raise KwmlpError(f"threads must be in [1, {MAX_THREADS}] (4 per CPU core here), got {threads}")
        self.model_path = model_path
        self.threads = threads
        self.block_seconds = block_seconds
        self._opened = open_model(model_path, backend, device, threads, cuda_graph, live)
        self._runner: Runner = self._opened.runner
        self.info = self._check(self._runner, LAYOUT_EMBEDDINGS)
        self._fixed_shape = self.info.shape  # (batch, samples) of a fixed-shape graph, else None
        self.backend = self._runner.backend
        self._keywords: Runner | None = None
        self._keywords_lock = threading.Lock()
        self._parallel = self._chunk_parallel() if split_chunks else None

    def _chunk_parallel(self) -> ChunkParallel | None:
        """Whole chunks over the cores (:mod:`kwmlp.runtime.chunk_parallel`) for ONNX Runtime on a CPU
        with two threads or more, where the keyword graph holds the embedding's blocks (not for a
        ``--depth`` export, whose keyword graph runs more blocks than its embedding)."""
        workers = self.threads or physical_cores()
        if self.backend != "onnxruntime-cpu" or workers < 2 or self.info.dims.embed_depth != self.info.dims.depth:
            return None
        try:
            path = keywords_model_path(self._opened.onnx_path, self.info)
        except KwmlpError as e:  # an export without its keyword graph embeds with the embedding graph
            log.debug("kwmlp: %s: no chunks over cores (%s)", os.path.basename(self.model_path), e)
            return None

        def open_keywords() -> Runner:
            runner = OrtRunner(path, threads=1)
            self._check(runner, LAYOUT_KEYWORDS)
            return runner

        return ChunkParallel(open_keywords, workers, self.info.scene)

    def _usable_parallel(self) -> ChunkParallel | None:
        """:attr:`_parallel` once its keyword graph opens; a keyword graph that does not open leaves
        embeddings to the embedding graph (announced once), and keyword calls to say why."""
        parallel = self._parallel
        if parallel is None:
            return None
        try:
            parallel.keywords()
        except KwmlpError as e:
            log.warning("kwmlp: %s; embedding with the embedding graph alone", e)
            self._parallel = None
            parallel.close()
            return None
        return parallel

    @staticmethod
    def _check(runner: Runner, layout: str) -> ModelInfo:
        info = ModelInfo.from_props(runner.metadata, runner.path)
        check_layout(info, runner.path, layout, runner.inputs, runner.outputs)
        return info

    # --- embeddings ----------------------------------------------------------------------

    def embed(self, audio) -> EmbeddingResult | list[EmbeddingResult]:
        """Embeddings of ``audio``: float ``(B, L)`` or ``(L,)`` at 16 kHz, or a list of 1-D clips
        of any lengths (then a list of results, one per clip, each without a batch axis).

        Audio outside [-1, 1] is used as is, like the original package does.
        """
        out = embed_any(audio, self._embed_batch)
        if self.output_dtype == np.float32:
            return out
        return [r.astype(self.output_dtype) for r in out] if isinstance(out, list) else out.astype(self.output_dtype)

    def _runs_whole(self, num_samples: int) -> bool:
        """Whether a clip runs through the graph at once: up to ``block_seconds`` (default 64 s, or
        the scene range the graph covers when shorter) and within the runner's longest input."""
        # never past the scene range the graph covers: beyond it the graph's scene is NaN
        limit = min(self.block_seconds or DEFAULT_BLOCK_SECONDS, self.info.max_seconds)
        return num_samples <= limit * CHUNK_SAMPLES and num_samples <= (self._runner.max_samples or num_samples)

    def _block_chunks(self) -> int:
        """One-second chunks per block: a block's input spans about one chunk more than the block
        (:mod:`kwmlp.runtime.blocks`), and must fit the runner's longest input."""
        chunks = self.block_seconds or DEFAULT_BLOCK_SECONDS
        if self._runner.max_samples is not None:
            chunks = min(chunks, self._runner.max_samples // CHUNK_SAMPLES - 1)
            if chunks < 1:
                raise KwmlpError(f"{self._runner.path} takes at most {self._runner.max_samples / CHUNK_SAMPLES:g} s "
                                 "per call, too little to embed longer clips block by block (2 s at least): "
                                 "build it with a longer --max-seconds")
        return chunks

    def _embed_batch(self, x: np.ndarray) -> EmbeddingResult:
        if self._fixed_shape is not None:  # its one shape, whole: no pieces, no blocks
            return self._run_embeddings(x)
        if not self._runs_whole(x.shape[1]):
            return EmbeddingResult.stack([self._embed_blocks(row) for row in x])
        parallel = self._usable_parallel()
        run = parallel.embed if parallel is not None else self._run_embeddings
        cache_sized = parallel is not None or self._runner.cache_sized_calls
        rows = max(1, CHUNKS_PER_RUN // num_chunks(x.shape[1])) if cache_sized else len(x)
        return EmbeddingResult.concat([run(x[i : i + rows]) for i in range(0, len(x), rows)])

    def _embeddings(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The embedding graph on ``x (B, L)``; a fixed-shape graph on its shape only, unpadded; a
        runner that replays per shape gets few shapes."""
        runner = self._runner
        if self._fixed_shape is not None:
            return runner.run({EMBEDDING_INPUT: require_shape(x, self._fixed_shape, runner.path)})
        if not runner.fixed_shapes:
            return runner.run({EMBEDDING_INPUT: x})
        return shapes.run_embeddings(lambda a: runner.run({EMBEDDING_INPUT: a}), x, runner.max_samples,
                                     exact=runner.exact_shapes)

    def _run_embeddings(self, x: np.ndarray) -> EmbeddingResult:
        out = self._embeddings(x)
        return EmbeddingResult(*(out[k] for k in EMBEDDING_OUTPUTS))

    def _embed_blocks(self, clip: np.ndarray) -> EmbeddingResult:
        stream = self.stream()
        step = self._block_chunks() * CHUNK_SAMPLES
        for start in range(0, len(clip), step):
            stream.feed(clip[start : start + step])
        return stream.finish()

    def embed_on_device(self, audio) -> EmbeddingResult:
        """:meth:`embed` with the results left on the GPU, for a next model on the same GPU: float
        ``(B, L)`` or ``(L,)`` -> an :class:`EmbeddingResult` whose three fields are
        :class:`~kwmlp.runtime.device_array.DeviceArray` (float32 ``(B, L // 160, 64)``,
        ``(B, L // 160)``, ``(B, 1024)``; DLPack: ``torch.from_dlpack(r.scene_embeddings)``), each
        in an allocation of its own that later calls leave alone. GPU backends with ``cuda_graph=True``,
        for clips that run whole (up to ``block_seconds``)."""
        run = self._runner.run_device
        x, squeeze = as_audio_batch(audio)
        if self._fixed_shape is not None:
            x = require_shape(x, self._fixed_shape, self._runner.path)
        n = x.shape[1]
        if not self._runs_whole(n):
            raise KwmlpError(f"a clip of {n / CHUNK_SAMPLES:g} s runs block by block on the host; "
                             "embed_on_device takes clips that run whole: use embed()")
        out = shapes.run_embeddings(lambda a: run({EMBEDDING_INPUT: a}), x, self._runner.max_samples,
                                    cut=lambda a, *sizes: a.head(*sizes), exact=self._runner.exact_shapes)
        return EmbeddingResult(*(out[k].first() if squeeze else out[k] for k in EMBEDDING_OUTPUTS))

    def stream(self, block_chunks: int | None = None, on_frames=None) -> ClipStream:
        """A :class:`~kwmlp.runtime.blocks.ClipStream` for one clip that arrives in pieces
        (e.g. read from a long file): ``s.feed(samples)`` repeatedly, then ``s.finish()``.
        Memory stays bounded by the block size plus 25 KB per second of audio; only the embedding
        graph runs. ``block_chunks`` (default: the embedder's block size) and ``on_frames`` are
        :class:`~kwmlp.runtime.blocks.ClipStream`'s."""
        timestamp_embeddings = lambda x: self._embeddings(x)[EMBEDDING_OUTPUTS[0]]
        block = self._block_chunks() if block_chunks is None else min(block_chunks, self._block_chunks())
        return ClipStream(timestamp_embeddings, self.info.scene, block, on_frames)

    # --- keywords ------------------------------------------------------------------------

    def _keyword_runner(self) -> Runner:
        if self._keywords is None:
            with self._keywords_lock:  # threads asking at once open one runner, not one each
                if self._keywords is None:
                    runner = self._opened.open_keywords(self.info)
                    self._check(runner, LAYOUT_KEYWORDS)
                    self._keywords = runner
        return self._keywords

    def load_keywords(self) -> None:
        """Open and check the keyword graph now (it is otherwise opened on first use), so that a
        server or a live stream fails before it starts: KwmlpError when the ``.keywords.onnx`` is
        missing, unreadable or not a keyword graph."""
        if self._parallel is not None:
            self._parallel.keywords()
        else:
            self._keyword_runner()

    def _windows(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The keyword graph on ``x (W, 16000)``: over the cores where :meth:`_chunk_parallel` applies
        (one window on one thread), else on the keyword runner in calls of cache-sized pieces."""
        parallel = self._usable_parallel()
        if parallel is not None:
            step, run = CHUNKS_PER_RUN, parallel.windows
        else:
            runner = self._keyword_runner()
            step = CHUNKS_PER_RUN if runner.cache_sized_calls else max(1, len(x))
            run = lambda piece: runner.run({KEYWORD_INPUT: piece})
        parts = [run(x[i : i + step]) for i in range(0, len(x), step)]
        return {k: np.concatenate([p[k] for p in parts]) for k in KEYWORD_OUTPUTS}

    def keyword_logits(self, windows) -> np.ndarray:
        """35-way Speech Commands logits: float ``(W, 16000)`` one-second windows -> float32 ``(W, 35)``
        (classes in :data:`kwmlp.runtime.KEYWORDS` order)."""
        return self._windows(as_windows(windows))[KEYWORD_OUTPUTS[0]].astype(self.output_dtype, copy=False)

    def chunk_embeddings(self, windows) -> np.ndarray:
        """Per-window frame embeddings without padding or compensation: ``(W, 16000) -> (W, 98, 64)``."""
        return self._windows(as_windows(windows))[KEYWORD_OUTPUTS[1]].astype(self.output_dtype, copy=False)

    def graph_report(self) -> GraphReport | None:
        """CUDA graphs captured and replayed so far, and the shapes that run without one and why
        (embedding and keyword graphs together); None on a runner without device graphs (the CPU)."""
        reports = [r.graph_report() for r in (self._runner, self._keywords) if r is not None]
        reports = [r for r in reports if r is not None]
        return GraphReport.total(reports) if reports else None

    def close(self) -> None:
        """Release the sessions or engines now (ONNX Runtime and OpenVINO also free theirs on garbage
        collection; a TensorRT engine's device memory goes back here or when the process ends)."""
        for runner in (self._parallel, self._keywords, self._runner):
            if runner is not None:
                runner.close()
