"""Fixed-shape graphs beside an export: ``NAME.BxS.onnx`` for ``NAME.onnx``, and the ``BxS`` spec.

``kwmlp export NAME.onnx --fixed-shape 1x16000`` also writes ``NAME.1x16000.onnx``: the embedding
graph at input shape ``(1, 16000)`` with all shape arithmetic folded into constants (what
TensorRT builds best from, what CUDA graphs and DLA need). Its metadata records the shape
(``kwmlp.fixed_shape``). Pure Python.
"""

from __future__ import annotations

import os
import re

from kwmlp.dims import CHUNK_SAMPLES
from kwmlp.errors import KwmlpError

MAX_FIXED_BATCH = 4096
MAX_FIXED_SECONDS = 4 * 3600  # the constants grow with the length: 100 MB at 4 hours
_SPEC = re.compile(r"([0-9]+)x([0-9]+)")
_ONNX = ".onnx"


def format_fixed_shape(batch: int, samples: int) -> str:
    """``(1, 16000)`` -> ``"1x16000"``."""
    return f"{batch}x{samples}"


def parse_fixed_shape(spec: str, max_seconds: float = MAX_FIXED_SECONDS) -> tuple[int, int]:
    """``"BATCHxSAMPLES"`` -> ``(batch, samples)``; else one sentence. The batch is 1 to 4096, a clip
    1 sample to ``max_seconds`` (the export's scene range) and at most 4 hours."""
    m = _SPEC.fullmatch(spec.strip())
    if m is None:
        raise KwmlpError(f"a fixed shape is BATCHxSAMPLES, e.g. 1x16000 (one clip of one second); got {spec!r}")
    # more digits than any bound has: not converted (int() refuses 4300 digits and more)
    batch, samples = (int(g) if len(g) <= 18 else 10**18 for g in m.groups())
    if not 1 <= batch <= MAX_FIXED_BATCH:
        raise KwmlpError(f"fixed shape {spec}: the batch must be 1 to {MAX_FIXED_BATCH}, got {m.group(1)}")
    limit = int(min(max_seconds, MAX_FIXED_SECONDS) * CHUNK_SAMPLES)
    if not 1 <= samples <= limit:
        raise KwmlpError(f"fixed shape {spec}: a clip must be 1 to {limit} samples ({limit / CHUNK_SAMPLES:g} s: the "
                         f"export's --max-seconds, at most 4 hours), got {m.group(2)}")
    return batch, samples


def check_fixed_shape(shape: tuple[int, int], max_seconds: float) -> None:
    """:func:`parse_fixed_shape`'s checks on a ``(batch, samples)`` tuple (one sentence if out of bounds)."""
    parse_fixed_shape(format_fixed_shape(*shape), max_seconds)


def fixed_shape_path(onnx_path: str, batch: int, samples: int) -> str:
    """The fixed-shape graph of an export: ``NAME.onnx`` -> ``NAME.BxS.onnx``."""
    root = os.path.splitext(os.fspath(onnx_path))[0]
    return f"{root}.{format_fixed_shape(batch, samples)}{_ONNX}"


def fixed_shape_of_name(path: str) -> tuple[int, int] | None:
    """``(batch, samples)`` when ``path`` is named like a fixed-shape graph (``NAME.BxS.onnx``,
    ``BxS`` as :func:`format_fixed_shape` writes it), else None."""
    root, ext = os.path.splitext(os.path.basename(os.fspath(path)))
    spec = os.path.splitext(root)[1][1:]
    m = _SPEC.fullmatch(spec)
    if ext != _ONNX or m is None or format_fixed_shape(*map(int, m.groups())) != spec:
        return None
    return int(m.group(1)), int(m.group(2))


def fixed_shape_files(onnx_path: str) -> list[tuple[str, tuple[int, int]]]:
    """The fixed-shape graphs beside the export ``onnx_path``, as ``(path, (batch, samples))``
    sorted by shape; found by name (a folder that cannot be listed has none)."""
    folder = os.path.dirname(os.fspath(onnx_path))
    try:
        names = os.listdir(folder or os.curdir)
    except OSError:
        return []
    found = []
    for name in names:
        shape = fixed_shape_of_name(name)
        if shape and name == os.path.basename(fixed_shape_path(onnx_path, *shape)):
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                found.append((path, shape))
    return sorted(found, key=lambda f: f[1])
