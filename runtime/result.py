"""What embedding returns: a leaf module that every producer of embeddings imports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kwmlp.artifact import EMBEDDING_OUTPUTS


@dataclass
class EmbeddingResult:
    """Embeddings of a batch of clips (the leading batch axis is absent for a 1-D input).

    timestamp_embeddings: float32 ``(B, L // 160, 64)``, one every 10 ms.
    timestamps: float32 ``(B, L // 160)``, the centre of each, in ms: 10, 20, ...
    scene_embeddings: float32 ``(B, 1024)``, feature-major (index ``f * 16 + t``).
    """

    timestamp_embeddings: np.ndarray
    timestamps: np.ndarray
    scene_embeddings: np.ndarray

    def astype(self, dtype) -> "EmbeddingResult":
        """The two embeddings as ``dtype`` (e.g. float16 for a next model that takes half precision);
        the timestamps stay float32 (float16 cannot count 10 ms steps past 2 s, nor ms past 65504)."""
        return EmbeddingResult(self.timestamp_embeddings.astype(dtype, copy=False), self.timestamps,
                               self.scene_embeddings.astype(dtype, copy=False))

    def __getitem__(self, i) -> "EmbeddingResult":
        return EmbeddingResult(self.timestamp_embeddings[i], self.timestamps[i], self.scene_embeddings[i])

    @staticmethod
    def concat(parts: list["EmbeddingResult"]) -> "EmbeddingResult":
        """Results of consecutive row ranges of one batch, joined along the batch axis."""
        if len(parts) == 1:
            return parts[0]
        return EmbeddingResult(*(np.concatenate([getattr(p, f) for p in parts]) for f in EMBEDDING_OUTPUTS))

    @staticmethod
    def stack(rows: list["EmbeddingResult"]) -> "EmbeddingResult":
        """Results of single clips (no batch axis) of one length, stacked into a batch."""
        return EmbeddingResult(*(np.stack([getattr(r, f) for r in rows]) for f in EMBEDDING_OUTPUTS))

