"""``Embedder``: numpy audio in, KW-MLP embeddings out, on the best backend available."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, num_chunks
from kwmlp.errors import KwmlpError
from kwmlp.runtime.backends import BACKENDS, DEVICES, open_model
from kwmlp.runtime.batching import embed_any
from kwmlp.runtime.blocks import ClipStream
from kwmlp.runtime.inputs import as_windows
from kwmlp.runtime.metadata import LAYOUT_EMBEDDINGS, LAYOUT_KEYWORDS, ModelInfo
from kwmlp.runtime.onnxruntime_backend import OrtRunner

log = logging.getLogger("kwmlp")

__all__ = ["BACKENDS", "DEVICES", "Embedder", "EmbeddingResult"]
_EMBEDDING_OUTPUTS = ("timestamp_embeddings", "timestamps", "scene_embeddings")
_EMBEDDING_IO = ({"audio"}, set(_EMBEDDING_OUTPUTS))
_KEYWORD_IO = ({"windows"}, {"keyword_logits", "chunk_embeddings"})
# Longer clips go block by block: one whole-graph run keeps every chunk's activations at once
# (measured: 460 MB peak RSS for a 10-minute clip, 238 MB in blocks), with equal results.
DEFAULT_BLOCK_SECONDS = 64
# One-second chunks per ONNX Runtime call: a smaller working set stays in the CPU's caches
# (measured on 2 cores: 16 x 10 s clips 13% faster in calls of 2 clips than in one call).
CHUNKS_PER_RUN = 24


@dataclass
class EmbeddingResult:
    """Embeddings of a batch of clips (the leading batch axis is absent for a 1-D input).

    timestamp_embeddings: float32 ``(B, L // 160, 64)``, one every 10 ms.
    timestamps: float32 ``(B, L // 160)``, the centre of each, in ms: 10, 20, ...
    scene_embeddings: float32 ``(B, 1024)``, feature-major (index ``f * 16 + t``).
    """

    timestamp_embeddings: np.ndarray
    timestamps: np.ndarray
    scene_embeddings: np.ndarray

    def __getitem__(self, i) -> "EmbeddingResult":
        return EmbeddingResult(self.timestamp_embeddings[i], self.timestamps[i], self.scene_embeddings[i])


class Embedder:
    """Runs an exported kwmlp-rt model.

    Parameters
    ----------
    model_path : str
        ``.onnx`` file written by ``kwmlp export``, or ``.engine`` written by ``kwmlp build``.
    backend : str
        ``"auto"`` (default: a TensorRT engine that loads on this GPU, then ONNX Runtime's
        TensorRT, CUDA and CPU providers; what runs and why is announced in one log line),
        ``"tensorrt"``, ``"onnxruntime"`` (its best provider), ``"onnxruntime-trt"``,
        ``"onnxruntime-cuda"``, ``"onnxruntime-cpu"`` (or ``"cpu"``). A forced backend that
        cannot run raises KwmlpError. See :mod:`kwmlp.runtime.backends`.
    device : str
        ``"auto"``, ``"cpu"`` (ONNX Runtime on the CPU only) or ``"cuda"`` (GPU backends only).
    threads : int, optional
        Intra-op threads for ONNX Runtime on the CPU (default: physical cores).
    block_seconds : int, optional
        Embed clips longer than this in blocks of this many seconds, in bounded memory, with
        results equal to the whole clip at once. Default: 64 s (or the model's ``max_seconds``,
        the scene range its graph covers, or the TensorRT engine's profiles, when shorter).
    cuda_graph : bool
        TensorRT only: replay a captured CUDA graph while the (profile, shape) repeats (lowest
        latency at fixed shapes); a new shape is run plainly once, then captured again.

    ``embed`` and ``keyword_logits`` are thread-safe. ``backend`` says what runs.
    """

    def __init__(
        self, model_path: str, backend: str = "auto", device: str = "auto", threads: int | None = None,
        block_seconds: int | None = None, cuda_graph: bool = False,
    ):
        model_path = os.fspath(model_path)
        if not os.path.isfile(model_path):
            raise KwmlpError(f"model file {model_path} does not exist")
        self.model_path = model_path
        self.threads = threads
        if block_seconds is not None and block_seconds < 1:
            raise KwmlpError(f"block_seconds must be at least 1, got {block_seconds}")
        self.block_seconds = block_seconds
        self._opened = open_model(model_path, backend, device, threads, cuda_graph)
        self._runner = self._opened.runner
        self.info = self._check(self._runner, LAYOUT_EMBEDDINGS, _EMBEDDING_IO)
        self.backend = self._opened.backend
        self._keywords: OrtRunner | None = None

    @staticmethod
    def _check(runner: OrtRunner, layout: str, io: tuple[set, set]) -> ModelInfo:
        info = ModelInfo.from_props(runner.metadata, runner.path)
        if info.layout != layout:
            other = "keyword" if info.layout == LAYOUT_KEYWORDS else "embedding"
            raise KwmlpError(f"{runner.path} is the {other} model of an export, not the one expected here")
        if set(runner.inputs) != io[0] or set(runner.outputs) != io[1]:
            raise KwmlpError(
                f"{runner.path} has inputs {sorted(runner.inputs)} and outputs {sorted(runner.outputs)}, "
                f"expected {sorted(io[0])} and {sorted(io[1])}: it was exported with another layout"
            )
        return info

    # --- embeddings ----------------------------------------------------------------------

    def embed(self, audio) -> EmbeddingResult | list[EmbeddingResult]:
        """Embeddings of ``audio``: float ``(B, L)`` or ``(L,)`` at 16 kHz, or a list of 1-D clips
        of any lengths (then a list of results, one per clip, each without a batch axis).

        Audio outside [-1, 1] is used as is, like the original package does.
        """
        return embed_any(audio, self._embed_batch)

    def _embed_batch(self, x: np.ndarray) -> EmbeddingResult:
        seconds = x.shape[1] / CHUNK_SAMPLES
        limit = self.block_seconds or min(DEFAULT_BLOCK_SECONDS, self.info.max_seconds)
        if seconds > limit or x.shape[1] > getattr(self._runner, "max_samples", x.shape[1]):
            return _stack([self._embed_blocks(row) for row in x])
        # a cache-sized working set is what makes the CPU fast; a GPU wants the whole batch at once
        rows = max(1, CHUNKS_PER_RUN // num_chunks(x.shape[1])) if self.backend == "onnxruntime-cpu" else len(x)
        outs = [self._runner.run({"audio": x[i : i + rows]}) for i in range(0, len(x), rows)]
        return EmbeddingResult(*(_concat([o[k] for o in outs]) for k in _EMBEDDING_OUTPUTS))

    def _embed_blocks(self, clip: np.ndarray) -> EmbeddingResult:
        stream = self.stream()
        step = (self.block_seconds or DEFAULT_BLOCK_SECONDS) * CHUNK_SAMPLES
        for start in range(0, len(clip), step):
            stream.feed(clip[start : start + step])
        return stream.finish()

    def stream(self) -> ClipStream:
        """A :class:`~kwmlp.runtime.blocks.ClipStream` for one clip that arrives in pieces
        (e.g. read from a long file): ``s.feed(samples)`` repeatedly, then ``s.finish()``.
        Memory stays bounded by the block size plus 25 KB per second of audio."""
        return ClipStream(self.chunk_embeddings_unchecked, self.info.scene, self.block_seconds or DEFAULT_BLOCK_SECONDS)

    # --- keywords ------------------------------------------------------------------------

    def _keyword_runner(self) -> OrtRunner:
        if self._keywords is None:
            if not self.info.keywords_model:
                raise KwmlpError(f"{self.model_path} names no keyword model")
            path = os.path.join(os.path.dirname(self._opened.onnx_path), self.info.keywords_model)
            if self.backend != "tensorrt" and not os.path.isfile(path):
                raise KwmlpError(f"the keyword model {path} is missing; export again with `kwmlp export`")
            runner = self._opened.open_keywords(path)
            self._check(runner, LAYOUT_KEYWORDS, _KEYWORD_IO)
            self._keywords = runner
        return self._keywords

    def keyword_logits(self, windows) -> np.ndarray:
        """35-way Speech Commands logits: float ``(W, 16000)`` one-second windows -> float32 ``(W, 35)``
        (classes in :data:`kwmlp.runtime.KEYWORDS` order)."""
        return self._keyword_runner().run({"windows": as_windows(windows)})["keyword_logits"]

    def chunk_embeddings(self, windows) -> np.ndarray:
        """Per-window frame embeddings without padding or compensation: ``(W, 16000) -> (W, 98, 64)``."""
        return self.chunk_embeddings_unchecked(as_windows(windows))

    def chunk_embeddings_unchecked(self, windows: np.ndarray) -> np.ndarray:
        runner = self._keyword_runner()
        return _concat([runner.run({"windows": windows[i : i + CHUNKS_PER_RUN]})["chunk_embeddings"]
                        for i in range(0, len(windows), CHUNKS_PER_RUN)])


def _concat(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _stack(results: list[EmbeddingResult]) -> EmbeddingResult:
    return EmbeddingResult(*(np.stack([getattr(r, f) for r in results]) for f in
                             ("timestamp_embeddings", "timestamps", "scene_embeddings")))
