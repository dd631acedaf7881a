"""The constants of a fixed-shape embedding graph: where each output frame comes from, and the
scene as one matrix over the chunks' frames.

At a fixed input shape every index of the dynamic graph's compensation, timestamps and scene is
known at export time; computed here in numpy (positions from :mod:`kwmlp.frames`, the arithmetic
the dynamic graph runs), they leave the graph no shape arithmetic at all: one Gather for the
timestamp embeddings and one MatMul for the scene.
"""

from __future__ import annotations

import numpy as np

from kwmlp.dims import FRAMES_PER_CHUNK, SCENE_STEPS, num_chunks, num_full_frames
from kwmlp.frames import interpolation_positions, pool_bins, scene_lengths


def compensation_index(num_samples: int, n_frames: int) -> np.ndarray:
    """int64 ``(T,)``, T = 100 S - 2: for each frame after chunk compensation, its index among the
    chunks' ``n_frames * S`` frames, chunk-major.

    The compensation replicates each chunk's first and last frame (98 -> 100 a chunk), joins the
    chunks and drops the clip's first and last frame: frame t is joined frame ``t + 1``, i.e.
    frame ``clip((t + 1) % 100 - 1, 0, 97)`` of chunk ``(t + 1) // 100``.
    """
    joined = np.arange(1, num_full_frames(num_samples) + 1, dtype=np.int64)
    chunk, k = np.divmod(joined, FRAMES_PER_CHUNK)
    return chunk * n_frames + np.clip(k - 1, 0, n_frames - 1)


def _pull_back(m: np.ndarray, index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    """``m @ W`` for the ``(len(index), size)`` matrix W with ``W[r, index[r]] = weights[r]``."""
    return np.stack([np.bincount(index, row * weights, minlength=size) for row in m])


def scene_matrix(num_frames: int, scene: str) -> np.ndarray:
    """float64 ``(16, T)``: the scene algorithm as a linear map, ``(16, d) = M @ frames (T, d)``.

    iterative and single compose their aligned-corners stages (each ``y = (1 - lam) x[i0] + lam
    x[i1]``, lam and 1 - lam rounded to float32 as the graph computes them); a stage to its own
    length is the identity. mean: row i is ``1 / count`` (float32) over its bin's frames.
    """
    if scene == "mean":
        m = np.zeros((SCENE_STEPS, num_frames))
        for i, (start, end) in enumerate(zip(*pool_bins(num_frames))):
            m[i, start:end] = np.float32(1) / np.float32(end - start)
        return m
    lengths = scene_lengths(num_frames) if scene == "iterative" else [num_frames, SCENE_STEPS]
    m = np.eye(SCENE_STEPS)
    for n_in, n_out in reversed(list(zip(lengths[:-1], lengths[1:]))):
        if n_in != n_out:
            i0, i1, lam = interpolation_positions(n_in, n_out)
            keep = np.float32(1) - lam
            m = _pull_back(m, i0, keep.astype(np.float64), n_in) + _pull_back(m, i1, lam.astype(np.float64), n_in)
    return m


def scene_over_chunk_frames(num_samples: int, n_frames: int, scene: str) -> np.ndarray:
    """float32 ``(16, n_frames * S)``: :func:`scene_matrix` applied to the compensated frames, as a
    matrix over the chunks' frames (a replicated frame's two weights add up)."""
    index = compensation_index(num_samples, n_frames)
    m = scene_matrix(len(index), scene)
    return _pull_back(m, index, np.ones(len(index)), n_frames * num_chunks(num_samples)).astype(np.float32)
