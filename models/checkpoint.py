"""Loading the original HEAR 2021 checkpoint format (``{"model_state_dict": ...}``)."""

from __future__ import annotations

import os
import re

import torch

from kwmlp.artifact import require_file
from kwmlp.dims import ModelDims
from kwmlp.errors import KwmlpError
from kwmlp.fileio import sha256_file  # noqa: F401  (re-exported by kwmlp.models)
from kwmlp.models.network import KWMLP

_BLOCK_KEYS = (
    "fn.norm.weight", "fn.norm.bias",
    "fn.fn.proj_in.0.weight", "fn.fn.proj_in.0.bias",
    "fn.fn.sgu.norm.weight", "fn.fn.sgu.norm.bias",
    "fn.fn.sgu.proj.weight", "fn.fn.sgu.proj.bias",
    "fn.fn.proj_out.weight", "fn.fn.proj_out.bias",
)
_TOP_KEYS = (
    "to_patch_embed.1.weight", "to_patch_embed.1.bias",
    "to_logits.0.weight", "to_logits.0.bias", "to_logits.2.weight", "to_logits.2.bias",
)


class CheckpointError(KwmlpError):
    """The file is not a KW-MLP checkpoint in the original HEAR format."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``model_state_dict`` of a checkpoint, checked for every key KW-MLP needs."""
    try:
        require_file(path, "checkpoint")
    except KwmlpError as e:
        raise CheckpointError(str(e)) from None
    try:
        # weights_only: a checkpoint is data, never code to run
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's unpickler raises many types (KeyError, UnpicklingError, ...) on non-checkpoints
        raise CheckpointError(f"{path} is not a PyTorch checkpoint that loads with weights_only=True") from e
    if not isinstance(ckpt, dict) or "model_state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a KW-MLP checkpoint: it has no 'model_state_dict'")
    state = ckpt["model_state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a KW-MLP checkpoint: 'model_state_dict' is not a dict")
    missing = [k for k in _TOP_KEYS if k not in state]
    depth = _depth_of(state)
    if depth == 0:
        missing.append("layers.0.*")
    missing += [f"layers.{i}.{k}" for i in range(depth) for k in _BLOCK_KEYS if f"layers.{i}.{k}" not in state]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{path} is not a KW-MLP checkpoint: missing {', '.join(missing[:3])}{more}")
    return state


def _depth_of(state: dict) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k))}
    return max(indices) + 1 if indices else 0


def dims_of(state: dict[str, torch.Tensor], embed_depth: int | None = None, source: str = "the checkpoint",
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
    for key, want in KWMLP(dims).state_dict().items():
        t = state.get(key)
        if t is None:
            continue  # buffers the network computes itself
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(want.shape):
            shape = list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise CheckpointError(f"{source}: tensor shapes do not fit KW-MLP: {key} has shape {shape}, expected "
                                  f"{list(want.shape)} by the dimensions its other tensors give")
        if not t.is_floating_point():
            raise CheckpointError(f"{source}: {key} has dtype {t.dtype}; KW-MLP weights are floating point")
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{source}: {key} contains NaN or Inf; refusing to export it")


def load_checkpoint(path: str | os.PathLike, embed_depth: int | None = None) -> KWMLP:
    """Build :class:`KWMLP` from a checkpoint file, in eval mode, on the CPU.

    ``embed_depth`` picks the block whose output is the embedding (paper Table 4).
    """
    state = read_state_dict(path)
    dims = dims_of(state, embed_depth, str(path))
    model = KWMLP(dims)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: tensor shapes do not fit KW-MLP ({str(e).splitlines()[-1].strip()})") from e
    return model.eval()
