"""The PyTorch reference from the original HEAR 2021 checkpoint (``{"model_state_dict": ...}``).

The file is read and checked by :mod:`kwmlp.checkpoint` (numpy, no torch), as ``kwmlp export``
reads it; here its tensors become a :class:`KWMLP`.
"""

from __future__ import annotations

import os

import torch

from kwmlp.checkpoint import CheckpointError, dims_of, read_state_dict  # noqa: F401  (re-exported by kwmlp.models)
from kwmlp.fileio import sha256_file  # noqa: F401  (re-exported by kwmlp.models)
from kwmlp.models.network import KWMLP


def load_checkpoint(path: str | os.PathLike, embed_depth: int | None = None) -> KWMLP:
    """Build :class:`KWMLP` from a checkpoint file, in eval mode, on the CPU.

    ``embed_depth`` picks the block whose output is the embedding (paper Table 4).
    """
    state = read_state_dict(path)
    dims = dims_of(state, embed_depth, str(path))
    model = KWMLP(dims)
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    except (RuntimeError, TypeError) as e:  # an extra key, or one that is not a tensor
        raise CheckpointError(f"{path}: tensor shapes do not fit KW-MLP ({str(e).splitlines()[-1].strip()})") from e
    return model.eval()
