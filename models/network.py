"""KW-MLP in PyTorch: the paper's Eq. 1-2, module names matching the original checkpoint.

Shapes: input MFCC ``(B, 40, 98)`` float32, features ``(B, 98, 64)``, logits ``(B, 35)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kwmlp.dims import LN_EPS, ModelDims


class SpatialGatingUnit(nn.Module):
    """``u * (G @ LN(g) + b)`` with ``[u, g]`` the two halves of the channels; G mixes frames."""

    def __init__(self, dim_ff: int, n_frames: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim_ff // 2, eps=LN_EPS)
        self.proj = nn.Conv1d(n_frames, n_frames, 1)  # frames are the conv's channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res, gate = x.chunk(2, dim=-1)
        return F.conv1d(self.norm(gate), self.proj.weight, self.proj.bias) * res


class GatedMLPBlock(nn.Module):
    def __init__(self, dims: ModelDims):
        super().__init__()
        self.proj_in = nn.Sequential(nn.Linear(dims.dim, dims.dim_ff), nn.GELU())
        self.sgu = SpatialGatingUnit(dims.dim_ff, dims.n_frames)
        self.proj_out = nn.Linear(dims.dim_ff // 2, dims.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(self.sgu(self.proj_in(x)))


class PostNorm(nn.Module):
    # The checkpoint's blocks are post-norm: LN(block(x)), not block(LN(x)).
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fn(x))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class FramesFirst(nn.Module):
    """``(B, n_mfcc, n_frames) -> (B, n_frames, n_mfcc)``: each frame is one 40x1 patch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class MeanOverFrames(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class KWMLP(nn.Module):
    """KW-MLP encoder with its 35-way keyword head.

    Parameter names equal the original ``KW_MLP`` so that its ``model_state_dict``
    loads as is (``to_patch_embed.1.*``, ``layers.{i}.fn.norm.*``, ...).
    """

    def __init__(self, dims: ModelDims = ModelDims()):
        super().__init__()
        self.dims = dims
        self.to_patch_embed = nn.Sequential(FramesFirst(), nn.Linear(dims.n_mfcc, dims.dim))
        self.layers = nn.ModuleList(
            [Residual(PostNorm(dims.dim, GatedMLPBlock(dims))) for _ in range(dims.depth)]
        )
        self.to_logits = nn.Sequential(
            nn.LayerNorm(dims.dim, eps=LN_EPS), MeanOverFrames(), nn.Linear(dims.dim, dims.num_classes)
        )

    def features(self, mfcc: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Block outputs after ``depth`` blocks (default: all). ``(B, 40, 98) -> (B, 98, 64)``."""
        x = self.to_patch_embed(mfcc)
        for layer in self.layers[: depth or self.dims.depth]:
            x = layer(x)
        return x

    def embed(self, mfcc: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Frame embeddings as the HEAR wrapper makes them: the trained head is replaced
        by a fresh ``nn.LayerNorm(64)`` (weight 1, bias 0), so the final norm has no affine.
        ``(B, 40, 98) -> (B, 98, 64)``."""
        x = self.features(mfcc, depth)
        return F.layer_norm(x, (self.dims.dim,), eps=LN_EPS)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        """Keyword logits with the trained head. ``(B, 40, 98) -> (B, 35)``."""
        return self.to_logits(self.features(mfcc))
