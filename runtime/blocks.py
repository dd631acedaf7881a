"""Embedding one clip block by block, in bounded memory, equal to embedding it at once, with the
embedding graph alone.

The HEAR padding puts 80 zeros before the clip and zeros after it up to whole seconds, and every
one-second chunk of that padded signal is embedded on its own; the compensation then joins the
chunks' 98 frames, each replicate-padded to 100, and drops the clip's first and last frame. So
clip frame ``t`` (10 ms each) comes from padded chunk ``(t + 1) // 100`` alone.

A block of chunks ``[a, b)`` is run through the embedding graph as the clip's samples
``[16000 (a - 1), 16000 b - 80)``: the graph's own 80 leading zeros then align its chunks with
the clip's, its first chunk (``a - 1``, whose first 80 samples it sees as zeros) and its last
(the graph's tail padding) are discarded, and the frames of chunks ``a .. b - 1`` are exact. The
first block starts at the clip's start (its padding is the graph's), the last block ends with
zeros up to ``100 S - 2`` frames, so the frames the scene needs past ``L // 160`` come out too.
Only those frames (25 KB a second) are kept until the end, where the scene is computed in numpy
(:mod:`kwmlp.runtime.scene`). Each block costs about two chunks more than its own.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, FRAMES_PER_CHUNK, HOP_LENGTH, PAD_AFTER, PAD_BEFORE, num_chunks, num_full_frames
from kwmlp.errors import KwmlpError
from kwmlp.frames import frame_times
from kwmlp.runtime import scene as scenes
from kwmlp.runtime.inputs import as_clip
from kwmlp.runtime.result import EmbeddingResult


class ClipStream:
    """Feed one clip's samples with :meth:`feed`, get its embeddings from :meth:`finish`.

    ``embed_audio`` maps float32 ``(1, n)`` audio to its timestamp embeddings ``(1, n // 160, d)``
    (the export's embedding graph computes exactly that). ``block_chunks`` one-second chunks are
    embedded per call (at most ``block_chunks + 1`` seconds of input). ``on_frames``, when given, is
    called with each block of clip frames as soon as they are final (float32 ``(k, d)``, in order;
    the last block may run past the clip's end into its padding).
    """

    def __init__(self, embed_audio: Callable[[np.ndarray], np.ndarray], scene: str, block_chunks: int = 64,
                 on_frames: Callable[[np.ndarray], None] | None = None):
        self._embed_audio = embed_audio
        self._on_frames = on_frames
        self._scene = scene
        self._block = max(1, block_chunks)
        self._pending: list[np.ndarray] = []
        self._pending_len = 0
        self._base = 0  # clip index of the first pending sample: 16000 (a - 1), or 0 while a == 0
        self._chunk = 0  # a: the first padded chunk whose frames are not yet computed
        self._frames: list[np.ndarray] = []
        self._finished = False
        self.num_samples = 0

    def feed(self, samples: np.ndarray) -> None:
        """Append floating ``(n,)`` samples at 16 kHz, mono (checked like ``Embedder.embed``'s input)."""
        self._check_open()
        samples = as_clip(samples, "samples", allow_empty=True)
        self.num_samples += len(samples)
        self._pending.append(samples)
        self._pending_len += len(samples)
        while self._base + self._pending_len >= self._block_end(self._chunk + self._block):
            self._run_block(self._chunk + self._block)

    @staticmethod
    def _block_end(b: int) -> int:
        """Clip samples needed to compute padded chunks up to ``b`` (exclusive)."""
        return CHUNK_SAMPLES * b - PAD_BEFORE

    def _take(self, stop: int) -> np.ndarray:
        """The pending samples from ``_base`` to clip index ``stop`` (zero-padded past the clip's end)."""
        buf = np.concatenate(self._pending) if len(self._pending) != 1 else self._pending[0]
        x = buf[: stop - self._base]
        if len(x) < stop - self._base:
            x = np.concatenate([x, np.zeros(stop - self._base - len(x), np.float32)])
        self._pending, self._pending_len = [buf], len(buf)
        return x

    def _run_block(self, b: int, final: bool = False) -> None:
        """Frames of chunks ``[a, b)``; the final block runs to the end of the padded clip."""
        stop = CHUNK_SAMPLES * b - PAD_BEFORE - PAD_AFTER if final else self._block_end(b)
        out = self._embed_audio(self._take(stop)[None])[0]  # its frame t is clip frame t + base / 160
        offset = self._base // HOP_LENGTH
        first = max(0, FRAMES_PER_CHUNK * self._chunk - 1) - offset
        last = len(out) if final else FRAMES_PER_CHUNK * b - 1 - offset
        self._frames.append(out[first:last])
        if self._on_frames is not None:
            self._on_frames(self._frames[-1])
        # keep the samples from chunk b - 1 on: the next block's first, discarded, chunk
        keep_from = CHUNK_SAMPLES * (b - 1)
        self._pending = [self._pending[0][keep_from - self._base :]]
        self._pending_len = len(self._pending[0])
        self._base, self._chunk = keep_from, b

    def _check_open(self) -> None:
        if self._finished:
            raise KwmlpError("this stream is finished: a ClipStream embeds one clip; start another with stream()")

    def finish(self) -> EmbeddingResult:
        """The clip's :class:`~kwmlp.runtime.EmbeddingResult`, without a batch axis (once per stream)."""
        self._check_open()
        if not self.num_samples:
            raise KwmlpError("the stream has no samples: feed the clip before finish()")
        self._finished = True
        s = num_chunks(self.num_samples)
        while s - self._chunk > self._block:  # keep every call within block + 1 seconds of input:
            self._run_block(self._chunk + self._block)  # past the clip's end, zeros are its padding
        self._run_block(s, final=True)
        full = np.empty((num_full_frames(self.num_samples), self._frames[0].shape[1]), np.float32)
        start = 0
        while self._frames:  # consumed block by block: an hour's frames are never held twice
            block = self._frames.pop(0)
            full[start : start + len(block)] = block
            start += len(block)
        assert start == len(full)
        n = self.num_samples // HOP_LENGTH
        return EmbeddingResult(
            timestamp_embeddings=np.ascontiguousarray(full[:n]),
            timestamps=frame_times(0, n),
            scene_embeddings=scenes.scene(full, self._scene),
        )
