"""The data folder: where kwmlp-rt keeps what it downloads and caches, never in a source folder.

It holds ``kwmlp.pth`` from ``kwmlp download``, the HEAR API's exports of a checkpoint
(``SHA256/kwmlp-VERSION.onnx``) and TensorRT timing caches (``tensorrt/``).
"""

from __future__ import annotations

import os

__all__ = ["data_dir"]


def data_dir() -> str:
    """``$KWMLP_HOME``, else ``$KWMLP_CACHE`` (its earlier name), else ``$XDG_CACHE_HOME/kwmlp``,
    else ``~/.cache/kwmlp``. Not created here: whoever writes into it does."""
    for name in ("KWMLP_HOME", "KWMLP_CACHE"):
        if os.environ.get(name):
            return os.environ[name]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kwmlp")
