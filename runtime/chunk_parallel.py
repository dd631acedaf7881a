"""Small calls on a multi-core CPU: whole one-second chunks spread over the cores.

A call of a few chunks (a 1 s clip is 2 chunks after the HEAR padding; a keyword window is 1) is
bound by latency, not throughput. ONNX Runtime's intra-op threads split each of the graph's ~300
small nodes and meet at every one of them, so a second thread makes such a call slower, not
faster. Chunks are independent until the compensation joins them, so here each worker runs whole
chunks through the keyword graph's ``chunk_embeddings`` (the embedding graph's blocks and final
LayerNorm: bitwise equal on ONNX Runtime), on one single-threaded session that every worker shares
(an ONNX Runtime session runs calls from several threads at once), and the compensation, the
timestamps and the scene follow in numpy (:mod:`kwmlp.runtime.scene`, PyTorch's float32
arithmetic, as for clips embedded block by block).

Measured in one run on a 2-core AMD EPYC (Zen 3), one 1 s clip, median (README, "Performance"):
3.75 ms here against 4.30 ms for the embedding graph on two intra-op threads and 5.48 ms on one,
on a quiet machine; 5.00 against 9.03 ms with another job busy on one core.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from kwmlp.artifact import KEYWORD_INPUT, KEYWORD_OUTPUTS
from kwmlp.dims import CHUNK_SAMPLES, HOP_LENGTH, PAD_BEFORE, num_chunks
from kwmlp.frames import frame_times
from kwmlp.runtime import scene as scenes
from kwmlp.runtime.result import EmbeddingResult
from kwmlp.runtime.runner import Runner


def padded_chunks(x: np.ndarray) -> np.ndarray:
    """float32 ``(B, L)`` -> ``(B * S, 16000)``: the HEAR padding (80 zeros before, zeros to whole
    seconds after) cut into the one-second chunks the graph embeds one by one."""
    b, n = x.shape
    s = num_chunks(n)
    out = np.zeros((b, s * CHUNK_SAMPLES), np.float32)
    out[:, PAD_BEFORE : PAD_BEFORE + n] = x
    return out.reshape(b * s, CHUNK_SAMPLES)


def compensate(chunks: np.ndarray) -> np.ndarray:
    """Chunk embeddings ``(B, S, 98, d)`` -> the clip frames ``(B, 100 S - 2, d)``: each chunk's
    98 frames replicate-padded to 100, chunks joined, the clip's first and last frame dropped."""
    b, s, t, d = chunks.shape
    joined = np.concatenate([chunks[:, :, :1], chunks, chunks[:, :, -1:]], axis=2)
    return joined.reshape(b, s * (t + 2), d)[:, 1:-1]


class ChunkParallel:
    """Chunks and windows across ``workers`` threads, on the runner ``open_keywords()`` opens (the
    keyword graph on one thread: opened on first use). ``embed`` equals the embedding graph's output;
    ``windows`` the keyword graph's. Thread-safe."""

    def __init__(self, open_keywords: Callable[[], Runner], workers: int, scene: str):
        self.workers, self.scene = workers, scene
        self._open, self._runner = open_keywords, None
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="kwmlp-chunks")

    def keywords(self) -> Runner:
        """The keyword graph's single-threaded runner, opened now if it was not yet."""
        if self._runner is None:
            with self._lock:
                if self._runner is None:
                    self._runner = self._open()
        return self._runner

    def windows(self, x: np.ndarray, outputs: tuple[str, ...] = KEYWORD_OUTPUTS) -> dict[str, np.ndarray]:
        """The keyword graph's ``outputs`` for ``x (W, 16000)``, the windows split evenly over the workers."""
        runner = self.keywords()
        pieces = [p for p in np.array_split(x, min(self.workers, len(x))) if len(p)]
        if len(pieces) == 1:
            return runner.run({KEYWORD_INPUT: x})
        done = [self._pool.submit(runner.run, {KEYWORD_INPUT: p}) for p in pieces]
        parts = [f.result() for f in done]
        return {k: np.concatenate([p[k] for p in parts]) for k in outputs}

    def embed(self, x: np.ndarray) -> EmbeddingResult:
        """The embedding graph's result for ``x (B, L)``: float32 ``(B, L // 160, d)``, ``(B, L // 160)``,
        ``(B, 16 d)``."""
        b, n = x.shape
        chunks = self.windows(padded_chunks(x))[KEYWORD_OUTPUTS[1]]  # (B S, 98, d)
        full = compensate(chunks.reshape(b, num_chunks(n), *chunks.shape[1:]))
        t = n // HOP_LENGTH
        return EmbeddingResult(
            timestamp_embeddings=np.ascontiguousarray(full[:, :t]),
            timestamps=np.broadcast_to(frame_times(0, t), (b, t)).copy(),
            scene_embeddings=np.stack([scenes.scene(f, self.scene) for f in full]),
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._runner is not None:
            self._runner.close()
