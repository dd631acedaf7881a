"""Few shapes for runners that replay CUDA graphs per shape (``Runner.fixed_shapes``): calls are
zero-padded to a canonical shape and their results cut back, exactly.

- Samples (the embedding graph): a clip of L samples runs as ``canonical_samples(L)`` =
  16000 S - 320, the longest clip with the same S one-second chunks. The graph pads to whole
  chunks with zeros anyway, so the chunks, the frames and the scene are the same; only the
  timestamps are cut back to L // 160.
- Rows (clips or windows; rows are independent in both graphs): a small call runs as 1, 2, 4 or 8
  rows (:func:`bucket_rows`), the padded rows' results dropped. Larger calls keep their rows: the
  runner cuts them into pieces of its own size (``run_in_rows``). Padded rows cost device time,
  which at these sizes is far below a call's fixed cost.
"""

from __future__ import annotations

import numpy as np

from kwmlp.artifact import EMBEDDING_OUTPUTS
from kwmlp.dims import HOP_LENGTH, canonical_samples

SMALL_ROWS = 8  # calls up to this many rows are padded to a power of two


def bucket_rows(rows: int) -> int:
    """The number of rows a call of ``rows`` rows is padded to: the next power of two up to 8."""
    return 1 << max(0, rows - 1).bit_length() if rows <= SMALL_ROWS else rows


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` with zero rows added up to ``rows`` rows."""
    if len(x) >= rows:
        return x
    return np.concatenate([x, np.zeros((rows - len(x),) + x.shape[1:], x.dtype)])


def _head(a: np.ndarray, *sizes: int) -> np.ndarray:
    return a[tuple(slice(0, n) for n in sizes)]


def run_embeddings(run, x: np.ndarray, max_samples: int | None, cut=_head, exact=frozenset()) -> dict:
    """``run(audio)`` on ``x (B, L)`` padded to its canonical length; the outputs of ``x`` itself.
    ``cut(array, *sizes)`` takes the leading ``sizes`` of an output's first axes (numpy slicing, or
    a device array's view). ``exact``: shapes the runner has a fixed-shape model for, whose length
    is kept."""
    n = x.shape[1]
    samples = canonical_samples(n)
    if any(s[1] == n for s in exact):
        samples = n  # a fixed-shape model of this length: keep it
    if samples != n and (max_samples is None or samples <= max_samples):
        padded = np.zeros((len(x), samples), np.float32)
        padded[:, :n] = x
        x = padded
    out = run(x)
    t = n // HOP_LENGTH
    b = len(x)
    ts, ms, scene = (out[k] for k in EMBEDDING_OUTPUTS)
    return dict(zip(EMBEDDING_OUTPUTS, (cut(ts, b, t), cut(ms, b, t), cut(scene, b))))
