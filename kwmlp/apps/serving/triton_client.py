"""``TritonEmbedder``: the ``Embedder`` API over a Triton server (HTTP or gRPC, via tritonclient)."""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np

from kwmlp.errors import KwmlpError, missing_extra
from kwmlp.runtime.batching import embed_any
from kwmlp.runtime.inputs import as_windows


def _client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
        from tritonclient.utils import InferenceServerException
    except ImportError as e:
        raise missing_extra("tritonclient", "distributed") from e
    return client, InferenceServerException


class TritonEmbedder:
    """Embeddings from a Triton server that serves a repository written by ``kwmlp triton-repo``.

    Parameters
    ----------
    url : str
        ``host:port`` (HTTP), ``http://host:port`` or ``grpc://host:port``.
    model : str
        The embedding model's name in the repository; the keyword model is ``{model}_keywords``.

    ``embed`` and ``keyword_logits`` take and return what :class:`kwmlp.runtime.Embedder`'s do.
    Batches larger than the model's ``max_batch_size`` are split into several requests.
    """

    def __init__(self, url: str, model: str = "kwmlp", timeout_s: float = 60.0):
        parsed = urlparse(url if "://" in url else f"http://{url}")
        self.protocol = "grpc" if parsed.scheme == "grpc" else "http"
        if parsed.scheme not in ("http", "grpc"):
            raise KwmlpError(f"Triton URL must be host:port, http://host:port or grpc://host:port, got {url!r}")
        self.url, self.model, self.timeout_s = parsed.netloc, model, timeout_s
        self._mod, self._error = _client_module(self.protocol)
        kwargs = {"network_timeout": timeout_s} if self.protocol == "http" else {}
        self._client = self._mod.InferenceServerClient(self.url, **kwargs)
        self.backend = f"triton-{self.protocol}"
        self._max_batch = {}
        self._max_batch_size(model)  # fail now, with one sentence, if the server or model is not there

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._error as e:
            raise KwmlpError(f"Triton at {self.url} ({self.protocol}): {what} failed: {e.message()}") from e
        except (ConnectionError, OSError) as e:
            raise KwmlpError(f"cannot reach Triton at {self.url} ({self.protocol}): {e}") from e

    def _max_batch_size(self, model: str) -> int:
        if model not in self._max_batch:
            kw = {"as_json": True} if self.protocol == "grpc" else {}
            cfg = self._call(f"reading the config of model {model!r}", self._client.get_model_config, model, **kw)
            cfg = cfg.get("config", cfg)  # gRPC wraps the config, HTTP does not
            self._max_batch[model] = int(cfg.get("max_batch_size", 0))
        return self._max_batch[model]

    def _infer(self, model: str, name: str, x: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        step = max(1, self._max_batch_size(model))
        parts = []
        for start in range(0, len(x), step):
            piece = np.ascontiguousarray(x[start : start + step])
            inp = self._mod.InferInput(name, list(piece.shape), "FP32")
            inp.set_data_from_numpy(piece)
            kw = {"binary_data": True} if self.protocol == "http" else {}
            req = [self._mod.InferRequestedOutput(o, **kw) for o in outputs]
            r = self._call(f"inference on {model!r}", self._client.infer, model, [inp], outputs=req)
            parts.append({o: r.as_numpy(o) for o in outputs})
        return {o: np.concatenate([p[o] for p in parts]) for o in outputs}

    def _embed_batch(self, x: np.ndarray):
        from kwmlp.runtime.result import EmbeddingResult

        out = self._infer(self.model, "audio", x, ["timestamp_embeddings", "timestamps", "scene_embeddings"])
        return EmbeddingResult(out["timestamp_embeddings"], out["timestamps"], out["scene_embeddings"])

    def embed(self, audio):
        """Float ``(B, L)`` / ``(L,)`` audio at 16 kHz, or a list of 1-D clips -> ``EmbeddingResult`` (list)."""
        return embed_any(audio, self._embed_batch)

    def keyword_logits(self, windows) -> np.ndarray:
        """Float ``(W, 16000)`` -> float32 ``(W, 35)`` from the ``{model}_keywords`` model."""
        return self._infer(f"{self.model}_keywords", "windows", as_windows(windows), ["keyword_logits"])["keyword_logits"]
