"""MFCC front end in PyTorch, as nnAudio 0.3.4 computes it for the original package.

STFT as a 1-D convolution with windowed DFT kernels (no centering), power spectrum,
Slaney mel, ``10 log10(max(S, 1e-10))`` clamped at (max of the chunk) - 80 dB,
orthonormal DCT-II. Input ``(B, 16000)`` float32, output ``(B, 40, 98)`` float32.
"""

from __future__ import annotations

import torch
from torch import nn

from kwmlp.dims import AMIN, HOP_LENGTH, TOP_DB
from kwmlp.models import filters


class MFCC(nn.Module):
    def __init__(self):
        super().__init__()
        cos, sin = filters.dft_kernels()
        self.register_buffer("cos_kernel", torch.tensor(cos, dtype=torch.float32)[:, None, :], persistent=False)
        self.register_buffer("sin_kernel", torch.tensor(sin, dtype=torch.float32)[:, None, :], persistent=False)
        self.register_buffer("mel", torch.tensor(filters.mel_filterbank(), dtype=torch.float32), persistent=False)
        self.register_buffer("dct", torch.tensor(filters.dct_matrix(), dtype=torch.float32), persistent=False)

    def power_spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, samples) -> (B, 241, frames)``."""
        x = x[:, None, :]
        re = nn.functional.conv1d(x, self.cos_kernel, stride=HOP_LENGTH)
        im = nn.functional.conv1d(x, self.sin_kernel, stride=HOP_LENGTH)
        return re * re + im * im

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, samples) -> (B, 40, frames)`` in dB, top-dB clamped per item of the batch."""
        mel = torch.matmul(self.mel, self.power_spectrogram(x))
        db = 10.0 * torch.log10(torch.clamp(mel, min=AMIN))
        peak = db.amax(dim=(1, 2), keepdim=True)
        return torch.maximum(db, peak - TOP_DB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(self.dct, self.log_mel(x))

