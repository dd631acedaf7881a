"""The PyTorch reference: KW-MLP, its MFCC front end and the HEAR wrapper semantics.

Needs torch (``pip install -e '.[reference]'``), except ``kwmlp.models.filters`` (numpy):
the names below are imported on first use, so that the filters load without torch.
``read_state_dict``, ``dims_of`` and ``CheckpointError`` are :mod:`kwmlp.checkpoint`'s (numpy).
"""

import importlib

_EXPORTS = {
    "KWMLP": "network", "MFCC": "frontend", "HearReference": "hear", "ReferenceOutput": "hear",
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "read_state_dict": "checkpoint",
    "dims_of": "checkpoint", "sha256_file": "checkpoint",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"kwmlp.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'kwmlp.models' has no attribute {name!r}")
