"""ONNX Runtime sessions: the CPU path (and, later, its GPU providers)."""

from __future__ import annotations

import logging
import os

import numpy as np

from kwmlp.artifact import EMBEDDING_INPUT, KEYWORD_INPUT, import_onnxruntime, open_onnx
from kwmlp.artifact.sidecar import default_profiles, keyword_profiles, rows_per_call
from kwmlp.errors import KwmlpError, first_line
from kwmlp.runtime.runner import Runner, run_in_rows

log = logging.getLogger("kwmlp")


def physical_cores() -> int:
    """Physical cores this process may use (ORT's default too; set explicitly so the choice is
    visible): at most the CPUs of its affinity mask, which containers and ``taskset`` set."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
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

    ``providers`` defaults to the CPU provider. ONNX Runtime falls back silently, and
    ``get_providers()`` lists what was registered, not where nodes run: where ONNX Runtime offers
    ``get_provider_graph_assignment_info`` (1.24 and later) the session records how many nodes
    each provider took (``node_counts``), ``backend`` names the first provider that took any, and
    a GPU provider that took none is warned about. Under the
    TensorRT provider the engine is built here, not in the first ``run()``, with the profiles of
    ``kwmlp build``; calls outside them run in pieces.
    """

    def __init__(self, path: str, providers: list | None = None, threads: int | None = None):
        ort = import_onnxruntime()
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or physical_cores()
        providers = providers or ["CPUExecutionProvider"]
        on_gpu = _name(providers[0]) != ORT_BACKENDS["onnxruntime-cpu"]
        if on_gpu:
            opts.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        self.session = open_onnx(path, opts, providers)
        self.path = path
        self.inputs = tuple(i.name for i in self.session.get_inputs())
        self.outputs = tuple(o.name for o in self.session.get_outputs())
        self.node_counts = node_counts(self.session) if on_gpu else {}
        self.providers = self.session.get_providers()
        self.backend = backend_of(self.providers, self.node_counts)
        if on_gpu:
            _announce_nodes(path, _name(providers[0]), self.node_counts)
        # only the CPU provider is faster on cache-sized calls; a GPU wants the whole batch
        self.cache_sized_calls = self.backend == "onnxruntime-cpu"
        self.profiles = profiles_for(self.inputs[0]) if self.backend == "onnxruntime-trt" else ()
        if self.profiles:
            self.max_samples = max(p.max[1] for p in self.profiles)
            self._build_now()

    def _build_now(self) -> None:
        """One call at the first profile's opt shape: ORT's TensorRT provider builds (or loads from
        its cache) the engine of every profile on its first run; a failure here lets ``auto`` fall back."""
        shape = self.profiles[0].opt
        try:
            self._run({self.inputs[0]: np.zeros(shape, np.float32)})
        except Exception as e:  # ORT's own exception types; re-raised as one sentence
            raise KwmlpError(f"ONNX Runtime's TensorRT provider could not build {self.path} "
                             f"({first_line(e)[:200]})") from e

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(list(self.outputs), feeds)))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.profiles:
            return self._run(feeds)
        (x,) = feeds.values()
        _, rows = rows_per_call(self.profiles, x.shape, self.path)
        return run_in_rows(self._run, feeds, rows, self.outputs)

    def close(self) -> None:
        self.session = None


def _name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def node_counts(session) -> dict[str, int]:
    """{provider: nodes it took} as the session recorded them (ONNX Runtime >= 1.24 with
    ``session.record_ep_graph_assignment_info``); {} where this onnxruntime cannot say."""
    if not hasattr(session, "get_provider_graph_assignment_info"):
        return {}
    counts: dict[str, int] = {}
    for subgraph in session.get_provider_graph_assignment_info():
        counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(subgraph.get_nodes())
    return counts


def _announce_nodes(path: str, wanted: str, counts: dict[str, int]) -> None:
    name = os.path.basename(path)
    if not counts:
        log.info("kwmlp: %s: this onnxruntime does not report which provider runs which node "
                 "(ONNX Runtime >= 1.24 does); the backend named is the first registered provider", name)
        return
    log.info("kwmlp: %s: nodes per provider: %s", name, ", ".join(f"{p} {n}" for p, n in counts.items()))
    if not counts.get(wanted):
        log.warning("kwmlp: %s: %s took none of the model's nodes; it runs on %s", name, wanted,
                    ", ".join(p for p, n in counts.items() if n) or "nothing")


def profiles_for(graph_input: str) -> tuple:
    """The optimization profiles of ``kwmlp build`` for the graph whose input is ``graph_input``."""
    return keyword_profiles() if graph_input == KEYWORD_INPUT else default_profiles()


def trt_profile_options(graph_input: str) -> dict[str, str]:
    """ORT TensorRT provider options for :func:`profiles_for` (one ``name:BxS`` per profile)."""
    profiles = profiles_for(graph_input)
    shape = lambda which: ",".join(f"{graph_input}:{p_[0]}x{p_[1]}" for p_ in (getattr(p, which) for p in profiles))
    return {f"trt_profile_{which}_shapes": shape(which) for which in ("min", "opt", "max")}


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
    # HEURISTIC: EXHAUSTIVE (the default) benchmarks every convolution algorithm on each new
    # input shape's first call, seconds for every new clip length
    options = {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}
    if _version_tuple(ort_version) >= (1, 18):
        options["use_tf32"] = 0
    elif not _tf32_override_is_set():
        log.warning("onnxruntime %s cannot turn TF32 off per session: FP32 models on Ampere or later GPUs "
                    "lose precision unless NVIDIA_TF32_OVERRIDE=0 is set", ort_version)
    return options


def _tf32_override_is_set() -> bool:
    return os.environ.get("NVIDIA_TF32_OVERRIDE") == "0"


def providers_for(backend: str, graph_input: str = EMBEDDING_INPUT, shape: tuple[int, ...] | None = None,
                  stream: int | None = None, graphs: bool = False) -> list:
    """The provider list for one of :data:`ORT_BACKENDS`: the named provider, then the ones below it.

    ``graph_input`` picks the TensorRT provider's profiles: ``audio`` (the embedding graph) or
    ``windows`` (the keyword graph). For a session at one input ``shape``
    (:mod:`kwmlp.runtime.onnxruntime_cuda`): the TensorRT provider's one profile is that shape, the
    GPU providers run on the CUDA ``stream`` given, and ``graphs`` asks for CUDA-graph capture
    (``enable_cuda_graph``, ``trt_cuda_graph_enable``).
    """
    if backend not in ("onnxruntime-trt", "onnxruntime-cuda"):
        return ["CPUExecutionProvider"]
    # the CUDA provider takes both keys; the TensorRT provider only user_compute_stream (it sets its
    # own flag, and refuses an option it does not know)
    on_stream = {} if stream is None else {"user_compute_stream": str(stream)}
    cuda = {**cuda_options(import_onnxruntime().__version__), **on_stream,
            **({} if stream is None else {"has_user_compute_stream": "1"})}
    if backend == "onnxruntime-cuda":
        return [("CUDAExecutionProvider", {**cuda, "enable_cuda_graph": "1"} if graphs else cuda), "CPUExecutionProvider"]
    if not _tf32_override_is_set():
        # ORT's TensorRT provider has no TF32 switch (microsoft/onnxruntime#26029); `kwmlp build`
        # engines clear TensorRT's TF32 flag themselves
        log.warning("onnxruntime's TensorRT provider runs FP32 layers (the front end too) in TF32 on Ampere or "
                    "later GPUs unless NVIDIA_TF32_OVERRIDE=0 is set; `kwmlp build` engines do not")
    cache = trt_cache_dir()
    trt = {
        "device_id": 0,
        # an fp16 export carries its precision and casts in the graph; whether ORT then builds it
        # strongly typed (FP16) or weakly typed (FP32) is to be checked on the first GPU (README)
        "trt_fp16_enable": False,
        "trt_engine_cache_enable": True, "trt_engine_cache_path": cache,
        "trt_timing_cache_enable": True, "trt_timing_cache_path": cache,
        **(trt_profile_options(graph_input) if shape is None else exact_profile_options(graph_input, shape)),
        **on_stream, **({"trt_cuda_graph_enable": True} if graphs else {}),
    }
    if shape is not None:  # each shape's engine cached apart: the cache's name hashes the model, not shapes
        trt["trt_engine_cache_prefix"] = f"kwmlp_{graph_input}_{'x'.join(str(d) for d in shape)}"
    return [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]


def exact_profile_options(graph_input: str, shape: tuple[int, ...]) -> dict[str, str]:
    """One TensorRT profile whose min, opt and max are ``shape``: the engine ORT builds for a session at
    one input shape is tuned for exactly that shape."""
    spec = f"{graph_input}:{'x'.join(str(d) for d in shape)}"
    return {f"trt_profile_{which}_shapes": spec for which in ("min", "opt", "max")}


def backend_of(providers: list[str], counts: dict[str, int] | None = None) -> str:
    """The backend name of a session: the first of its providers that took nodes (``counts``), or
    without counts the first registered one."""
    if counts:
        providers = [p for p in providers if counts.get(p)]
    first = providers[0] if providers else "CPUExecutionProvider"
    return next((b for b, p in ORT_BACKENDS.items() if p == first), "onnxruntime-cpu")
