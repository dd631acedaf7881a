"""Clips of different lengths as few batches: those with the same number of one-second chunks
S run together, zero-padded to the longest (exact: padding within S leaves every chunk as is)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from kwmlp.dims import HOP_LENGTH, num_chunks
from kwmlp.runtime.inputs import as_audio_batch, as_clips, is_clip_list
from kwmlp.runtime.result import EmbeddingResult


def embed_clips(clips, embed_batch: Callable[[np.ndarray], EmbeddingResult]) -> list[EmbeddingResult]:
    """Embed a list of 1-D clips with ``embed_batch((B, L) float32) -> EmbeddingResult``;
    returns one result per clip, without a batch axis, timestamps cut to its own ``L // 160``."""
    arrays = as_clips(clips)
    groups: dict[int, list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault(num_chunks(len(a)), []).append(i)
    results: list = [None] * len(arrays)
    for members in groups.values():
        batch = np.zeros((len(members), max(len(arrays[i]) for i in members)), np.float32)
        for row, i in enumerate(members):
            batch[row, : len(arrays[i])] = arrays[i]
        r = embed_batch(batch)
        for row, i in enumerate(members):
            n = len(arrays[i]) // HOP_LENGTH
            results[i] = EmbeddingResult(r.timestamp_embeddings[row, :n], r.timestamps[row, :n], r.scene_embeddings[row])
    return results


def embed_any(audio, embed_batch: Callable[[np.ndarray], EmbeddingResult]):
    """What ``Embedder.embed`` accepts, over any ``embed_batch``: a ``(B, L)`` batch (result with
    a batch axis), one ``(L,)`` clip (without), or a list of 1-D clips (a list of results)."""
    if is_clip_list(audio):
        return embed_clips(audio, embed_batch)
    x, squeeze = as_audio_batch(audio)
    r = embed_batch(x)
    return r[0] if squeeze else r
