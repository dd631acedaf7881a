"""ONNX Runtime sessions: the CPU path (and, later, its GPU providers)."""

from __future__ import annotations

import logging
import os

import numpy as np

from kwmlp.errors import KwmlpError

log = logging.getLogger("kwmlp")


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise KwmlpError("onnxruntime is not installed; install it with: pip install onnxruntime") from e
    return onnxruntime


def physical_cores() -> int:
    """Physical cores of this machine (ORT's default too; set explicitly so the choice is visible)."""
    n = os.cpu_count() or 1
    try:
        with open("/proc/cpuinfo") as f:
            ids, phys = set(), None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    ids.add((phys, line.split(":")[1].strip()))
        return min(n, len(ids)) if ids else n
    except OSError:
        return n


class OrtRunner:
    """One ONNX Runtime session over an exported model; ``run`` is thread-safe.

    ``providers`` defaults to the CPU provider; the session's actual providers are checked
    after creation, since ONNX Runtime falls back silently.
    """

    def __init__(self, path: str, providers: list | None = None, threads: int | None = None):
        ort = _ort()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or physical_cores()
        opts.log_severity_level = 3
        providers = providers or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=providers)
        except Exception as e:  # ORT raises its own exception types for unreadable models
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise KwmlpError(f"{path} could not be loaded as an ONNX model ({first[:200]})") from e
        self.path = path
        self.providers = self.session.get_providers()
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(self.outputs, feeds)))
