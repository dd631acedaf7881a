"""The HEAR 2021 common API on the kwmlp-rt runtime: ``load_model``, ``get_timestamp_embeddings``,
``get_scene_embeddings``.

Torch tensors in and out (float32, on the caller's device), as the HEAR contract asks; the
embeddings themselves come from the exported ONNX graph through :class:`kwmlp.runtime.Embedder`,
not from the PyTorch reference. ``load_model`` takes the original ``.pth`` checkpoint (exported on
first use into the data folder, :func:`kwmlp.paths.data_dir`, keyed by its sha256) or an exported
``.onnx``.

Its public name is :mod:`kwmlp.hear` (``hear-validator kwmlp.hear -m kwmlp.pth``). This module needs torch.
"""

from __future__ import annotations

import logging
import os
import zipfile
from typing import Tuple

import torch

import kwmlp
from kwmlp.dims import SAMPLE_RATE, ModelDims
from kwmlp.artifact import require_file
from kwmlp.errors import KwmlpError, missing_extra
from kwmlp.paths import data_dir
from kwmlp.runtime import Embedder

log = logging.getLogger("kwmlp")

__all__ = ["KwmlpHearModel", "load_model", "get_timestamp_embeddings", "get_scene_embeddings"]


def _exported(checkpoint: str) -> str:
    from kwmlp.fileio import sha256_file

    digest = sha256_file(checkpoint)
    # the version too: another release may export a different graph from the same weights
    path = os.path.join(data_dir(), digest, f"kwmlp-{kwmlp.__version__}.onnx")
    if not os.path.isfile(path):
        try:
            from kwmlp.export import export_checkpoint
        except ImportError as e:
            raise missing_extra(e.name, "export", "loading a .pth checkpoint") from e
        log.info("kwmlp: exporting %s once to %s", checkpoint, path)
        export_checkpoint(checkpoint, path)  # atomic: a concurrent reader never sees half a file
    return path


class KwmlpHearModel(torch.nn.Module):
    """A KW-MLP export for the HEAR API; holds no torch parameters (``.to(device)`` is free).

    ``sample_rate`` 16000, ``timestamp_embedding_size`` 64, ``scene_embedding_size`` 1024.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, embedder: Embedder):
        super().__init__()
        self.embedder = embedder
        dims: ModelDims = embedder.info.dims
        self.timestamp_embedding_size = dims.dim
        self.scene_embedding_size = dims.scene_size

    def embed(self, audio: torch.Tensor):
        if not isinstance(audio, torch.Tensor):
            raise KwmlpError(f"audio must be a torch.Tensor, got {type(audio).__name__}")
        if audio.ndim != 2:
            raise KwmlpError(f"audio must have shape (n_sounds, n_samples), got {tuple(audio.shape)}")
        if not audio.is_floating_point():
            raise KwmlpError(f"audio must be floating point, got {audio.dtype}")
        return self.embedder.embed(audio.detach().to("cpu", torch.float32).numpy())


def load_model(model_file_path: str = "") -> KwmlpHearModel:
    """The model from an original ``.pth`` checkpoint or a ``kwmlp export``-ed ``.onnx``."""
    path = os.fspath(model_file_path)
    if not path:
        raise KwmlpError("load_model needs a model file: the kwmlp.pth checkpoint or an exported .onnx")
    require_file(path)
    if path.lower().endswith((".pth", ".pt", ".ckpt")) or zipfile.is_zipfile(path):  # zip: torch.save's format
        path = _exported(path)
    return KwmlpHearModel(Embedder(path))


def get_timestamp_embeddings(audio: torch.Tensor, model: KwmlpHearModel) -> Tuple[torch.Tensor, torch.Tensor]:
    """``audio`` float ``(n_sounds, n_samples)`` at 16 kHz -> embeddings float32 ``(n_sounds, n_samples // 160, 64)``
    and timestamps float32 ``(n_sounds, n_samples // 160)`` in ms (10, 20, ...), on ``audio.device``."""
    r = model.embed(audio)
    return (torch.from_numpy(r.timestamp_embeddings).to(audio.device),
            torch.from_numpy(r.timestamps).to(audio.device))


def get_scene_embeddings(audio: torch.Tensor, model: KwmlpHearModel) -> torch.Tensor:
    """``audio`` float ``(n_sounds, n_samples)`` at 16 kHz -> float32 ``(n_sounds, 1024)`` on ``audio.device``."""
    return torch.from_numpy(model.embed(audio).scene_embeddings).to(audio.device)
