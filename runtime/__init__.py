"""The torch-free runtime: numpy in, numpy out, ONNX Runtime underneath.

Importing this package needs numpy and onnxruntime only (edge devices carry no torch).
"""

from kwmlp.dims import KEYWORDS
from kwmlp.runtime.embedder import Embedder
from kwmlp.runtime.result import EmbeddingResult
from kwmlp.runtime.keywords import Detection, Spotting, classify, merge, spot, spot_scan, spot_stream
from kwmlp.runtime.live import LiveEmbeddings, LiveSpotter
from kwmlp.artifact import ModelInfo

__all__ = [
    "Detection", "Embedder", "EmbeddingResult", "KEYWORDS", "LiveEmbeddings", "LiveSpotter", "ModelInfo", "Spotting", "classify", "merge", "spot", "spot_scan", "spot_stream",
]
