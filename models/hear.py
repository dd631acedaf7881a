"""The HEAR 2021 wrapper of the original ``kwmlp`` package, in PyTorch: the parity baseline.

Padding, one-second chunking, chunk compensation, timestamps and the scene
algorithms exactly as the original code does them (see shared/reference/README.md
for its quirks). Audio ``(B, L)`` float32 at 16 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from kwmlp.dims import CHUNK_SAMPLES, HOP_LENGTH, PAD_BEFORE, SCENE_ALGORITHMS, SCENE_STEPS, num_chunks
from kwmlp.errors import KwmlpError
from kwmlp.models.frontend import MFCC
from kwmlp.models.network import KWMLP


@dataclass
class ReferenceOutput:
    timestamp_embeddings: torch.Tensor  # (B, L // 160, 64)
    timestamps: torch.Tensor  # (B, L // 160) ms
    scene_embeddings: torch.Tensor  # (B, 1024)
    full_embeddings: torch.Tensor  # (B, 100 S - 2, 64)


def pad_and_chunk(audio: torch.Tensor) -> torch.Tensor:
    """``(B, L) -> (B * S, 16000)``: 80 zeros before, 240 after, zeros to whole seconds."""
    s = num_chunks(audio.shape[1])
    padded = F.pad(audio, (PAD_BEFORE, s * CHUNK_SAMPLES - audio.shape[1] - PAD_BEFORE))
    return padded.reshape(-1, CHUNK_SAMPLES)


def compensate(frames: torch.Tensor, batch: int) -> torch.Tensor:
    """``(B * S, 98, d) -> (B, 100 S - 2, d)``: replicate-pad each chunk by one frame at
    each end, join the chunks in time, drop the first and last frame of the clip."""
    x = torch.cat([frames[:, :1], frames, frames[:, -1:]], dim=1)
    return x.reshape(batch, -1, x.shape[-1])[:, 1:-1]


def _flatten_feature_major(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], -1)  # b t f -> b (f t)


def scene_iterative(full: torch.Tensor) -> torch.Tensor:
    """Halve the time axis ``floor(log2(T / 16))`` times, then interpolate to 16. ``(B, T, d) -> (B, 16 d)``."""
    x = full.transpose(1, 2)  # (B, d, T)
    while x.shape[-1] >= 2 * SCENE_STEPS:
        x = F.interpolate(x, size=x.shape[-1] // 2, mode="linear", align_corners=True)
    if x.shape[-1] != SCENE_STEPS:
        x = F.interpolate(x, size=SCENE_STEPS, mode="linear", align_corners=True)
    return _flatten_feature_major(x.transpose(1, 2))


def scene_single(full: torch.Tensor) -> torch.Tensor:
    """One aligned-corners linear interpolation to 16 steps (paper Table 2)."""
    x = F.interpolate(full.transpose(1, 2), size=SCENE_STEPS, mode="linear", align_corners=True)
    return _flatten_feature_major(x.transpose(1, 2))


def scene_mean(full: torch.Tensor) -> torch.Tensor:
    """``adaptive_avg_pool1d`` to 16 bins (the paper's group mean, Table 2)."""
    x = F.adaptive_avg_pool1d(full.transpose(1, 2), SCENE_STEPS)
    return _flatten_feature_major(x.transpose(1, 2))


_SCENES = {"iterative": scene_iterative, "single": scene_single, "mean": scene_mean}


class HearReference(nn.Module):
    """MFCC + KW-MLP + the HEAR wrapper, in PyTorch. Audio ``(B, L)`` or ``(L,)`` float32 -> :class:`ReferenceOutput`."""

    sample_rate = 16000

    def __init__(self, model: KWMLP, scene: str = "iterative"):
        super().__init__()
        if scene not in _SCENES:
            raise ValueError(f"scene must be one of {', '.join(SCENE_ALGORITHMS)}, got {scene!r}")
        self.mfcc = MFCC()
        self.model = model
        self.scene = scene
        self.timestamp_embedding_size = model.dims.dim
        self.scene_embedding_size = model.dims.scene_size

    @torch.no_grad()
    def forward(self, audio: torch.Tensor) -> ReferenceOutput:
        """``audio`` float32 ``(B, L)``, or ``(L,)`` for results without the batch axis (as ``Embedder``)."""
        if audio.ndim == 1:
            out = self.forward(audio[None])
            return ReferenceOutput(**{f.name: getattr(out, f.name)[0] for f in fields(out)})
        if audio.ndim != 2:
            raise KwmlpError(f"audio must have shape (batch, samples) or (samples,), got {tuple(audio.shape)}")
        batch, length = audio.shape
        frames = self.model.embed(self.mfcc(pad_and_chunk(audio)), self.model.dims.embed_depth)
        full = compensate(frames, batch)
        n = length // HOP_LENGTH
        timestamps = (torch.arange(1, n + 1, dtype=torch.float32) * HOP_LENGTH * 1000 / self.sample_rate)
        return ReferenceOutput(
            timestamp_embeddings=full[:, :n],
            timestamps=timestamps.expand(batch, n),
            scene_embeddings=_SCENES[self.scene](full),
            full_embeddings=full,
        )

    @torch.no_grad()
    def keyword_logits(self, windows: torch.Tensor) -> torch.Tensor:
        """``(W, 16000) -> (W, 35)`` with the trained keyword head."""
        return self.model(self.mfcc(windows))
