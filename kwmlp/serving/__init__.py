"""Serving on NVIDIA Triton Inference Server: a model repository writer and a client with
the ``Embedder`` API. Needs ``pip install 'kwmlp-rt[distributed]'`` (tritonclient)."""

from kwmlp.serving.triton_client import TritonEmbedder
from kwmlp.serving.triton_repo import RepositoryOptions, write_repository

__all__ = ["TritonEmbedder", "RepositoryOptions", "write_repository"]
