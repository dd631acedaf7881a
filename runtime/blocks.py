"""Embedding one clip block by block, in bounded memory, equal to embedding it at once.

The HEAR padding puts 80 zeros before the clip and zeros after it up to whole seconds; every
one-second chunk of that padded signal is embedded on its own. So a clip can arrive in pieces
of any size: whole chunks are cut as they fill and embedded in batches of ``block_chunks``,
and only the per-chunk frame embeddings (25 KB a second) are kept until the end, where the
compensation, timestamps and scene are computed in numpy (:mod:`kwmlp.runtime.scene`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, HOP_LENGTH, PAD_AFTER, PAD_BEFORE
from kwmlp.runtime import scene as scenes


class ClipStream:
    """Feed one clip's samples with :meth:`feed`, get its embeddings from :meth:`finish`.

    ``embed_chunks`` maps float32 ``(W, 16000)`` chunks to their frame embeddings
    ``(W, 98, d)`` (the export's keyword graph computes exactly that).
    """

    def __init__(self, embed_chunks: Callable[[np.ndarray], np.ndarray], scene: str, block_chunks: int = 64):
        self._embed_chunks = embed_chunks
        self._scene = scene
        self._block = max(1, block_chunks) * CHUNK_SAMPLES
        self._pending = [np.zeros(PAD_BEFORE, np.float32)]
        self._pending_len = PAD_BEFORE
        self._frames: list[np.ndarray] = []
        self.num_samples = 0

    def feed(self, samples: np.ndarray) -> None:
        """Append float32 ``(n,)`` samples (already checked: finite, 16 kHz, mono)."""
        self.num_samples += len(samples)
        self._pending.append(samples)
        self._pending_len += len(samples)
        if self._pending_len >= self._block:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        buf = np.concatenate(self._pending)
        whole = len(buf) // CHUNK_SAMPLES * CHUNK_SAMPLES
        for start in range(0, whole, self._block):
            stop = min(start + self._block, whole)
            self._frames.append(self._embed_chunks(buf[start:stop].reshape(-1, CHUNK_SAMPLES)))
        rest = buf[whole:]
        self._pending, self._pending_len = [rest], len(rest)
        assert not final or len(rest) == 0

    def finish(self):
        """The clip's :class:`~kwmlp.runtime.EmbeddingResult`, without a batch axis."""
        from kwmlp.runtime.embedder import EmbeddingResult

        tail = -(self._pending_len + PAD_AFTER) % CHUNK_SAMPLES + PAD_AFTER  # 240 zeros, then to whole seconds
        self._pending.append(np.zeros(tail, np.float32))
        self._pending_len += tail
        self._flush(final=True)
        full = scenes.compensate(self._frames)  # consumes the list block by block
        n = self.num_samples // HOP_LENGTH
        timestamps = np.arange(1, n + 1, dtype=np.float32) * np.float32(1000 * HOP_LENGTH / CHUNK_SAMPLES)
        return EmbeddingResult(
            timestamp_embeddings=np.ascontiguousarray(full[:n]),
            timestamps=timestamps,
            scene_embeddings=scenes.scene(full, self._scene),
        )
