"""kwmlp-rt: KW-MLP audio embeddings as one ONNX graph, a torch-free runtime and TensorRT engines.

Subpackages: ``kwmlp.models`` (PyTorch reference, needs torch), ``kwmlp.export``
(checkpoint -> ONNX, numpy and onnx), ``kwmlp.runtime`` (numpy in, numpy out).
"""

__version__ = "0.1.0"
