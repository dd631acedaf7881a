"""kwmlp-rt: KW-MLP audio embeddings as one ONNX graph, a torch-free runtime and TensorRT engines.

Subpackages: ``kwmlp.models`` (PyTorch reference, needs torch), ``kwmlp.export``
(PyTorch -> ONNX), ``kwmlp.runtime`` (numpy in, numpy out).
"""

__version__ = "0.1.0"
