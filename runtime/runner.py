"""What every backend's runner offers, stated once (after Polygraphy's ``BaseRunner``).

The :class:`~kwmlp.runtime.embedder.Embedder` asks a runner what it is and what it takes; it
never compares backend names. A runner is created by a loader (:mod:`kwmlp.runtime.loader`),
runs numpy feeds from any thread, and is closed once.
"""

from __future__ import annotations

import abc

import numpy as np

from kwmlp.errors import KwmlpError
from kwmlp.runtime.shapes import pad_rows


class Runner(abc.ABC):
    """One opened model on one backend.

    Attributes every runner sets:

    path : str
        The file it runs (``.onnx`` or ``.engine``).
    backend : str
        What runs, as users name it: ``"onnxruntime-cpu"``, ``"tensorrt"``, ...
    inputs, outputs : tuple of str
        The model's input and output names, in the model's order.
    max_samples : int or None
        The longest input (samples per row) one call takes; None when any length runs.
    cache_sized_calls : bool
        True when the runner is fastest on calls whose working set fits the CPU caches (a few
        dozen one-second chunks); False when it wants the whole batch at once (a GPU).
    fixed_shapes : bool
        True when calls at a shape met before run faster (CUDA graphs replayed per shape): callers
        then pad calls to a few shapes (:mod:`kwmlp.runtime.shapes`).
    exact_shapes : frozenset of tuple
        Input shapes the runner has a fixed-shape model for (``kwmlp export --fixed-shape``): calls
        at them are not padded.
    """

    path: str
    backend: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    max_samples: int | None = None
    cache_sized_calls: bool = False
    fixed_shapes: bool = False
    exact_shapes: frozenset = frozenset()

    @property
    @abc.abstractmethod
    def metadata(self) -> dict[str, str]:
        """The model's ``kwmlp.*`` metadata (ONNX ``metadata_props``, or the engine sidecar's record)."""

    @abc.abstractmethod
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{input name: float32 array}`` -> ``{output name: float32 array}``; thread-safe."""

    def run_device(self, feeds: dict[str, np.ndarray]) -> dict:
        """Like :meth:`run`, the outputs left on the GPU as :class:`~kwmlp.runtime.device_array.DeviceArray`
        (runners with sessions at fixed shapes); KwmlpError elsewhere."""
        raise KwmlpError(f"results stay on the GPU only on a GPU backend (TensorRT or onnxruntime-cuda, with "
                         f"cuda_graph=True and cuda-python); this runs {self.backend}")

    def graph_report(self):
        """The :class:`~kwmlp.runtime.device_graph.GraphReport` of a runner with device graphs; None here."""
        return None

    def close(self) -> None:
        """Release what the runner holds (sessions, engines, device memory). Idempotent."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_in_rows(run, feeds: dict[str, np.ndarray], rows: int, outputs: tuple[str, ...], pad: bool = False) -> dict[str, np.ndarray]:
    """``run`` on ``feeds`` (one input, batch first) ``rows`` at a time, outputs concatenated.

    ``pad``: the last, shorter piece is padded with zero rows to ``rows`` (and its outputs cut
    back), so that every call has one shape: what lets a CUDA graph replay.
    """
    ((name, x),) = feeds.items()
    if len(x) <= rows:
        return run(feeds)
    parts = []
    for i in range(0, len(x), rows):
        piece = x[i : i + rows]
        n = len(piece)
        parts.append({k: v[:n] for k, v in run({name: pad_rows(piece, rows) if pad else piece}).items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in outputs}
