"""OpenVINO: the same ONNX export on Intel's runtime (CPU, and Intel GPUs/NPUs where it lists them).

OpenVINO's CPU plugin defaults to bf16 inference on CPUs with AVX512-BF16 or AMX: measured max
error 0.12 on our graph, against 4.5e-5 in f32. The precision hint is therefore always set, f32
unless bf16 is asked for by name.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from kwmlp.artifact import require_file
from kwmlp.errors import KwmlpError, first_line, missing_extra
from kwmlp.runtime.runner import Runner

PRECISIONS = {"fp32": "f32", "bf16": "bf16"}  # ours -> OpenVINO's INFERENCE_PRECISION_HINT

log = logging.getLogger("kwmlp")


def import_openvino():
    try:
        import openvino
    except ImportError as e:
        raise missing_extra("openvino", "openvino", "backend openvino") from e
    return openvino


def available_devices() -> list[str]:
    """OpenVINO's devices here, e.g. ``["CPU"]`` or ``["CPU", "GPU", "NPU"]``."""
    return list(import_openvino().Core().available_devices)


def supports(core, device: str) -> list[str]:
    """What ``device`` computes natively, as OpenVINO lists it (e.g. ``['FP32', 'BF16', 'INT8']``)."""
    return [str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")]


def _config(device: str, threads: int | None, precision: str) -> dict[str, str]:
    if precision not in PRECISIONS:
        raise KwmlpError(f"openvino precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    # LATENCY: one stream over all threads, since the runtime calls a runner one request at a
    # time per thread; THROUGHPUT's extra streams would sit idle
    config = {"INFERENCE_PRECISION_HINT": PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY"}
    if threads and device == "CPU":
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


class OvRunner(Runner):
    """One OpenVINO compiled model over an exported ``.onnx``; ``run`` is thread-safe.

    Parameters
    ----------
    path : str
        The ``.onnx`` export (or its keyword graph).
    device : str
        An OpenVINO device: ``"CPU"`` (default), ``"GPU"``, ``"NPU"``, as :func:`available_devices` lists.
    threads : int, optional
        Inference threads on the CPU (default: OpenVINO's, the physical cores).
    precision : str
        ``"fp32"`` (default) or ``"bf16"`` (faster on AMX/AVX512-BF16 CPUs, max error about 0.1).

    Every thread gets its own infer request (OpenVINO's requests are not thread-safe; the
    compiled model is), so concurrent calls neither block nor share buffers.
    """

    def __init__(self, path: str, device: str = "CPU", threads: int | None = None, precision: str = "fp32"):
        ov = import_openvino()
        core = ov.Core()
        if device not in core.available_devices:
            raise KwmlpError(f"OpenVINO has no device {device!r} here; it lists {', '.join(core.available_devices)}")
        config = _config(device, threads, precision)
        try:
            model = core.read_model(require_file(path))
            self._compiled = core.compile_model(model, device, config)
        except RuntimeError as e:  # OpenVINO raises RuntimeError for unreadable or unsupported graphs
            raise KwmlpError(f"OpenVINO could not load {path} on {device} ({first_line(e)[:200]})") from e
        self.path = path
        self.device = device
        self.precision = precision
        self.backend = "openvino" if device == "CPU" else f"openvino-{device.lower()}"
        self.cache_sized_calls = device == "CPU"
        self.inputs = tuple(i.get_any_name() for i in model.inputs)
        self.outputs = tuple(o.get_any_name() for o in model.outputs)
        self._metadata = _metadata(model)
        self._local = threading.local()
        if precision == "bf16" and "bf16" not in self.compiled_property("INFERENCE_PRECISION_HINT").lower():
            # OpenVINO quietly keeps f32 on a CPU without AVX512-BF16 or AMX (an AMD Zen 3, say)
            log.warning("kwmlp: %s: bf16 was asked for, but OpenVINO's %s has no bf16 here (%s); it runs f32",
                        path, device, ", ".join(supports(core, device)))

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def compiled_property(self, name: str) -> str:
        """A property of the compiled model as OpenVINO reports it (e.g. ``INFERENCE_PRECISION_HINT``)."""
        return str(self._compiled.get_property(name))

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        return request

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._compiled is None:
            raise KwmlpError(f"{self.path}: this OpenVINO runner was closed")
        request = self._request()
        request.infer({k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})
        # copies: the request reuses its output buffers on the next call
        return {name: np.array(request.get_tensor(name).data, copy=True) for name in self.outputs}

    def close(self) -> None:
        self._compiled = None
        self._local = threading.local()


def _metadata(model) -> dict[str, str]:
    """The ONNX ``metadata_props``: OpenVINO keeps them in the model's rt_info under ``framework``."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    framework = info["framework"]  # a dict of OVAny values; an OVAny holding one in some versions
    items = framework.items() if isinstance(framework, dict) else framework.astype(dict).items()
    return {k: v.astype(str) if hasattr(v, "astype") else str(v) for k, v in items}
