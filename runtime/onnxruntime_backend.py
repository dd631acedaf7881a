"""ONNX Runtime sessions: the CPU path (and, later, its GPU providers)."""

from __future__ import annotations

import logging
import os

import numpy as np

from kwmlp.artifact import import_onnxruntime, open_onnx
from kwmlp.errors import KwmlpError
from kwmlp.runtime.runner import Runner

log = logging.getLogger("kwmlp")


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


class OrtRunner(Runner):
    """One ONNX Runtime session over an exported model; ``run`` is thread-safe.

    ``providers`` defaults to the CPU provider; the session's actual providers are checked
    after creation, since ONNX Runtime falls back silently: ``backend`` names the one that runs.
    """

    def __init__(self, path: str, providers: list | None = None, threads: int | None = None):
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or physical_cores()
        opts.log_severity_level = 3
        self.session = open_onnx(path, opts, providers or ["CPUExecutionProvider"])
        self.path = path
        self.providers = self.session.get_providers()
        self.backend = backend_of(self.providers)
        # only the CPU provider is faster on cache-sized calls; a GPU wants the whole batch
        self.cache_sized_calls = self.providers[0] == ORT_BACKENDS["onnxruntime-cpu"]
        self.inputs = tuple(i.name for i in self.session.get_inputs())
        self.outputs = tuple(o.name for o in self.session.get_outputs())

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(list(self.outputs), feeds)))

    def close(self) -> None:
        self.session = None


# What each ONNX Runtime backend asks for; ORT may still fall back silently, so the session's
# actual providers decide what `Embedder.backend` reports.
ORT_BACKENDS = {
    "onnxruntime-trt": "TensorrtExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-cpu": "CPUExecutionProvider",
}


def available_providers() -> list[str]:
    return list(import_onnxruntime().get_available_providers())


def trt_cache_dir() -> str:
    """ORT's TensorRT engine and timing caches, one folder per TensorRT version; ORT names its
    cache files by the GPU's compute capability itself (``..._sm87.engine``).

    The version comes from package metadata: importing the pip ``tensorrt`` here would preload its
    CUDA libraries into the process where onnxruntime-gpu loads its own, and needs no GPU bindings.
    """
    from kwmlp import trt
    from kwmlp.artifact.sidecar import tensorrt_cache_dir

    version = trt.installed_version()
    if version is None:
        raise KwmlpError(f"TensorrtExecutionProvider needs TensorRT, which is not installed; {trt.INSTALL_HINT}")
    path = os.path.join(tensorrt_cache_dir(), f"ort-trt{version}")
    os.makedirs(path, exist_ok=True)
    return path


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("+")[0].split(".")[:2] if p.isdigit())


def cuda_options(ort_version: str) -> dict:
    """The CUDA provider's options, TF32 off: it is on by default and rounds FP32 products to
    10-bit mantissas on Ampere and later GPUs, far outside the FP32 parity tolerance.

    ``use_tf32`` exists from ONNX Runtime 1.18 (microsoft/onnxruntime#19357); older versions reject
    unknown options and have only the process-wide ``NVIDIA_TF32_OVERRIDE=0``, which we announce.
    """
    options = {"device_id": 0}
    if _version_tuple(ort_version) >= (1, 18):
        options["use_tf32"] = 0
    elif not _tf32_override_is_set():
        log.warning("onnxruntime %s cannot turn TF32 off per session: FP32 models on Ampere or later GPUs "
                    "lose precision unless NVIDIA_TF32_OVERRIDE=0 is set", ort_version)
    return options


def _tf32_override_is_set() -> bool:
    return os.environ.get("NVIDIA_TF32_OVERRIDE") == "0"


def providers_for(backend: str) -> list:
    """The provider list for one of :data:`ORT_BACKENDS`: the named provider, then the ones below it."""
    if backend not in ("onnxruntime-trt", "onnxruntime-cuda"):
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", cuda_options(import_onnxruntime().__version__))
    if backend == "onnxruntime-cuda":
        return [cuda, "CPUExecutionProvider"]
    if not _tf32_override_is_set():
        # ORT's TensorRT provider has no TF32 switch (microsoft/onnxruntime#26029); `kwmlp build`
        # engines clear TensorRT's TF32 flag themselves
        log.warning("onnxruntime's TensorRT provider runs FP32 layers (the front end too) in TF32 on Ampere or "
                    "later GPUs unless NVIDIA_TF32_OVERRIDE=0 is set; `kwmlp build` engines do not")
    cache = trt_cache_dir()
    trt = ("TensorrtExecutionProvider", {
        "device_id": 0,
        "trt_fp16_enable": False,  # an fp16 export carries its precision and casts in the graph
        "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
    })
    return [trt, cuda, "CPUExecutionProvider"]


def backend_of(providers: list[str]) -> str:
    """The backend name of a session from its actual providers (first is the one that runs)."""
    first = providers[0] if providers else "CPUExecutionProvider"
    return next((b for b, p in ORT_BACKENDS.items() if p == first), "onnxruntime-cpu")
