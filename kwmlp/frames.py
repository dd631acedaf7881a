"""The index arithmetic of frames, in numpy: timestamps and the scene algorithms' positions.

One source for three users: the runtime's block-wise scene (:mod:`kwmlp.runtime.scene`) applies
these positions to frames; the fixed-shape graphs (:mod:`kwmlp.export.fixed`) store them as
constants; the dynamic graph (:mod:`kwmlp.export.graph`) computes the same values with ONNX ops
at run time, with the same float32 operations in the same order.
"""

from __future__ import annotations

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, HOP_LENGTH, SCENE_STEPS


def frame_times(start: int, stop: int) -> np.ndarray:
    """float32 centres, in ms, of clip frames ``start .. stop - 1``: 10, 20, ... from frame 0."""
    return np.arange(start + 1, stop + 1, dtype=np.float32) * np.float32(1000 * HOP_LENGTH / CHUNK_SAMPLES)


def interpolation_positions(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(i0, i1, lam)`` of aligned-corners linear interpolation from ``n_in`` to ``n_out`` points:
    ``y[i] = (1 - lam[i]) x[i0[i]] + lam[i] x[i1[i]]``; i0, i1 int64 ``(n_out,)``, lam float32 ``(n_out,)``.

    PyTorch's float32 arithmetic (reference README, quirk 8): ``scale = f32(n_in - 1) / f32(n_out - 1)``,
    ``src = f32(scale * i)``, ``i0 = floor(src)``, ``i1 = min(i0 + 1, n_in - 1)``, ``lam = src - i0``.
    """
    scale = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
    src = np.arange(n_out, dtype=np.float32) * np.float32(scale)
    lo = np.floor(src)
    i0 = lo.astype(np.int64)
    return i0, np.minimum(i0 + 1, n_in - 1), src - lo


def scene_lengths(num_frames: int) -> list[int]:
    """Frame counts through the iterative scene: ``num_frames``, halved (``n // 2``) while at least
    32, i.e. ``floor(log2(T / 16))`` times, then 16."""
    lengths = [num_frames]
    while lengths[-1] >= 2 * SCENE_STEPS:
        lengths.append(lengths[-1] // 2)
    return lengths + [SCENE_STEPS]


def pool_bins(num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``adaptive_avg_pool1d`` to 16 bins: bin i averages frames ``[start[i], end[i])``,
    ``start = floor(i T / 16)``, ``end = ceil((i + 1) T / 16)``; int64 ``(16,)`` each."""
    i = np.arange(SCENE_STEPS, dtype=np.int64)
    return (i * num_frames) // SCENE_STEPS, -((-(i + 1) * num_frames) // SCENE_STEPS)
