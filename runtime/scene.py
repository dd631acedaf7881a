"""The scene algorithms in numpy, for embeddings computed block by block.

The same float32 arithmetic as PyTorch's ``F.interpolate(mode="linear", align_corners=True)``
and as the exported graph: positions from :mod:`kwmlp.frames`, so that a clip embedded in
blocks equals the clip embedded at once.
"""

from __future__ import annotations

import numpy as np

from kwmlp.dims import SCENE_ALGORITHMS, SCENE_STEPS
from kwmlp.frames import interpolation_positions, pool_bins, scene_lengths


def interpolate(x: np.ndarray, size: int) -> np.ndarray:
    """Aligned-corners linear interpolation of ``(T, d)`` to ``(size, d)``, PyTorch's float32 arithmetic."""
    n = x.shape[0]
    if size == n:
        return x
    i0, i1, lam = interpolation_positions(n, size)
    lam = lam[:, None]
    # x[i0] * (1 - lam) + x[i1] * lam, computed in place: the same float32 operations in the same
    # order, with two temporaries instead of four (they are half an hour's frames on long clips)
    y = x[i0]
    y *= np.float32(1) - lam
    far = x[i1]
    far *= lam
    y += far
    return y


def scene_iterative(full: np.ndarray) -> np.ndarray:
    """``(T, d) -> (16 d,)``: halve ``floor(log2(T/16))`` times, then interpolate to 16."""
    x = full
    for size in scene_lengths(len(full))[1:]:
        x = interpolate(x, size)
    return x.T.reshape(-1)  # feature-major: b t f -> b (f t)


def scene_single(full: np.ndarray) -> np.ndarray:
    return interpolate(full, SCENE_STEPS).T.reshape(-1)


def scene_mean(full: np.ndarray) -> np.ndarray:
    """``adaptive_avg_pool1d`` to 16 bins: bin i averages frames ``[floor(iT/16), ceil((i+1)T/16))``."""
    out = np.empty((SCENE_STEPS, full.shape[1]), np.float32)
    for i, (start, end) in enumerate(zip(*pool_bins(full.shape[0]))):
        out[i] = full[start:end].mean(axis=0, dtype=np.float32)
    return out.T.reshape(-1)


_SCENES = {"iterative": scene_iterative, "single": scene_single, "mean": scene_mean}
assert set(_SCENES) == set(SCENE_ALGORITHMS)


def scene(full: np.ndarray, algorithm: str) -> np.ndarray:
    """The scene embedding ``(16 d,)`` float32 of one clip's frames ``(T, d)``."""
    return _SCENES[algorithm](np.asarray(full, np.float32)).astype(np.float32, copy=False)
