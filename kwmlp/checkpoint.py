"""The original HEAR 2021 checkpoint (``{"model_state_dict": ...}``), read and checked without torch.

:func:`read_state_dict` gives its tensors as numpy arrays (:mod:`kwmlp.pth` reads the file);
:func:`dims_of` reads the dimensions off them and refuses tensors that would export to a wrong or
NaN model. Both ``kwmlp export`` and the PyTorch reference (``kwmlp.models.load_checkpoint``) go
through here, so a checkpoint is refused the same way by both.
"""

from __future__ import annotations

import os
import re

import numpy as np

from kwmlp.artifact import require_file
from kwmlp.dims import ModelDims, state_shapes
from kwmlp.errors import KwmlpError
from kwmlp import pth

__all__ = ["CheckpointError", "read_state_dict", "dims_of"]


class CheckpointError(KwmlpError):
    """The file is not a KW-MLP checkpoint in the original HEAR format."""


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The ``model_state_dict`` of a checkpoint as numpy arrays (each tensor's own dtype and shape),
    checked for every key KW-MLP needs."""
    try:
        require_file(path, "checkpoint")
        ckpt = pth.load(path)
    except KwmlpError as e:
        raise CheckpointError(str(e)) from e
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a KW-MLP checkpoint: it has no 'model_state_dict'")
    state = ckpt["model_state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a KW-MLP checkpoint: 'model_state_dict' is not a dict")
    missing = _missing(state)
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{path} is not a KW-MLP checkpoint: missing {', '.join(missing[:3])}{more}")
    return state


def _depth_of(state: dict) -> int:
    indices = {int(m.group(1)) for k in state if isinstance(k, str) and (m := re.match(r"layers\.(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def _missing(state: dict) -> list[str]:
    depth = _depth_of(state)
    names = list(state_shapes(ModelDims(depth=max(depth, 1), embed_depth=1)))
    if depth == 0:
        names = [k for k in names if not k.startswith("layers.")] + ["layers.0.*"]
    return [k for k in names if k not in state]


def dims_of(state: dict[str, np.ndarray], embed_depth: int | None = None, source: str = "the checkpoint",
            ) -> ModelDims:
    """Dimensions read off the tensors, so KW-MLP-8 and other variants load too; every tensor is
    checked against them (shape), and for floating point and finite values."""
    try:
        dim, n_mfcc = state["to_patch_embed.1.weight"].shape
        dims = ModelDims(
            n_mfcc=n_mfcc,
            n_frames=state["layers.0.fn.fn.sgu.proj.weight"].shape[0],
            dim=dim,
            dim_ff=state["layers.0.fn.fn.proj_in.0.weight"].shape[0],
            depth=_depth_of(state),
            embed_depth=_depth_of(state),
            num_classes=state["to_logits.2.weight"].shape[0],
        )
    except (AttributeError, ValueError, IndexError) as e:  # a tensor of the wrong rank, or not a tensor
        raise CheckpointError(f"{source} is not a KW-MLP checkpoint: its tensors have the wrong ranks") from e
    zero = [f"{k} = {v}" for k, v in vars(dims).items() if v < 1]
    if zero:
        raise CheckpointError(f"{source} is not a usable KW-MLP checkpoint: {', '.join(zero)}")
    if embed_depth is not None and not 1 <= embed_depth <= dims.depth:
        raise CheckpointError(f"depth {embed_depth} is out of range: the checkpoint has {dims.depth} blocks")
    dims = ModelDims(**{**vars(dims), "embed_depth": embed_depth or dims.depth})
    _check_tensors(state, dims, source)
    return dims


def _check_tensors(state: dict, dims: ModelDims, source: str) -> None:
    """Refuse tensors that would export to a wrong or NaN model instead of failing at export."""
    for key, want in state_shapes(dims).items():
        t = state.get(key)
        if not isinstance(t, np.ndarray) or t.shape != want:
            shape = list(t.shape) if isinstance(t, np.ndarray) else type(t).__name__
            raise CheckpointError(f"{source}: tensor shapes do not fit KW-MLP: {key} has shape {shape}, expected "
                                  f"{list(want)} by the dimensions its other tensors give")
        if t.dtype.kind != "f":
            raise CheckpointError(f"{source}: {key} has dtype {t.dtype}; KW-MLP weights are floating point")
        if not np.isfinite(t).all():
            raise CheckpointError(f"{source}: {key} contains NaN or Inf; refusing to export it")
