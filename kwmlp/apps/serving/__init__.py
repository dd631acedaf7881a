"""Serving on NVIDIA Triton Inference Server: a model repository writer and a client with
the ``Embedder`` API. Needs ``pip install -e '.[distributed]'`` (tritonclient)."""

from kwmlp.apps.serving.triton_client import TritonEmbedder
from kwmlp.apps.serving.repository import RepositoryOptions, write_repository

__all__ = ["TritonEmbedder", "RepositoryOptions", "write_repository"]
