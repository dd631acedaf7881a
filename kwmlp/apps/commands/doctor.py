"""``kwmlp doctor [MODEL]``: what this machine offers the runtime, on one screen.

CPU (model, cores, vector extensions), GPU, TensorRT (and whether this project supports it), the
CUDA bindings, ONNX Runtime's providers, OpenVINO's devices; with MODEL, whether its engine runs
here and what ``backend="auto"`` would run, and why. Always exits 0: a missing piece, or a model
that does not load, is a finding.
"""

from __future__ import annotations

import json
import os
import platform

import kwmlp
from kwmlp.errors import KwmlpError, first_line, install_command
from kwmlp.host import cpu_isa, cpu_model, dist_version, module_installed, nvidia_gpus


def add_parser(sub):
    p = sub.add_parser("doctor", help="show what this machine offers the runtime (CPU, GPU, TensorRT, ONNX Runtime, OpenVINO)",
                       description="Show on one screen the CPU, the GPU, TensorRT (and whether this project supports "
                                   "it), the CUDA bindings, ONNX Runtime's providers and OpenVINO's devices; with "
                                   "MODEL, whether its engine runs here and what backend=\"auto\" would run, and why. "
                                   "A missing piece, or a model that does not load, is a finding: always exit 0.")
    p.add_argument("model", nargs="?", help="an .onnx export or .engine: does it run here, and on what")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)
    return p


def _cpu() -> dict:
    from kwmlp.runtime.onnxruntime_backend import physical_cores

    return {"model": cpu_model(), "arch": platform.machine(), "cores": physical_cores(),
            "logical_cpus": os.cpu_count(), "isa": cpu_isa()}


def _first_clause(e: Exception | str) -> str:
    return str(e).split("; ")[0]


def _gpu() -> dict:
    """The GPU as the CUDA bindings see it; where they cannot, the GPUs the driver lists
    (``present``) and why the bindings did not (``missing_bindings``: they are not installed)."""
    from kwmlp import cuda

    try:
        api = cuda.load()
        with api.context():
            name, cc, runtime = api.device()
            free, total = api.memory()
            driver = api.driver_version()
    except (KwmlpError, cuda.CudaError) as e:
        return {"name": None, "present": nvidia_gpus(), "missing_bindings": isinstance(e, cuda.BindingsMissing),
                "why": str(e)}
    return {"name": name, "compute_capability": cc, "memory_gb": round(total / 2**30, 1),
            "free_gb": round(free / 2**30, 1), "driver_cuda": driver, "runtime_cuda": runtime, "bindings": api.name}


def _tensorrt() -> dict:
    from kwmlp import trt

    try:
        version = trt.installed_version()
    except KwmlpError as e:  # a module that is there but does not import
        return {"version": None, "why": _first_clause(e)}
    if version is None:
        return {"version": None, "why": "not installed"}
    lo, hi = trt.SUPPORTED
    return {"version": version, "supported": trt.is_supported(version),
            "supported_range": f"{lo[0]}.{lo[1]} to {hi[0] - 1}.x"}


def _onnxruntime() -> dict:
    from kwmlp.runtime.onnxruntime_backend import available_providers

    version = dist_version("onnxruntime-gpu") or dist_version("onnxruntime")
    try:
        return {"version": version, "providers": available_providers()}
    except KwmlpError as e:
        return {"version": None, "why": _first_clause(e)}


def _openvino() -> dict:
    if not module_installed("openvino"):
        return {"version": None, "why": f"not installed ({install_command('openvino')})"}
    import openvino

    core = openvino.Core()
    devices = {d: str(core.get_property(d, "FULL_DEVICE_NAME")) for d in core.available_devices}
    return {"version": openvino.__version__.split("-")[0], "devices": devices}


def _model(path: str) -> dict:
    """The model's settings, its engine and what ``auto`` runs; or ``problem``, the sentence
    :class:`~kwmlp.runtime.Embedder` would refuse it with (missing, a folder, unreadable, not a
    kwmlp-rt embedding model, ...)."""
    try:
        return _usable_model(path)
    except (KwmlpError, OSError) as e:
        return {"path": path, "problem": first_line(e)}


def _usable_model(path: str) -> dict:
    from kwmlp.artifact import check_model, engine_beside, is_engine
    from kwmlp.runtime.loader import explain_auto
    from kwmlp.runtime.tensorrt_backend import engine_problem, unchecked

    info = check_model(path)
    engine = path if is_engine(path) else engine_beside(path)
    out = {"path": path, "precision": info.precision, "scene": info.scene, "engine": engine}
    if engine:
        out["engine_problem"] = engine_problem(engine)
        out["engine_unchecked"] = unchecked(engine)  # an engine without a sidecar: what only TensorRT checks
    choice = explain_auto(path)
    out["auto"] = {"backend": choice.backend, "reasons": choice.reasons}
    return out


def diagnose(model: str | None = None) -> dict:
    """Everything ``kwmlp doctor`` reports, as a dict (``--json`` prints it)."""
    d = {"kwmlp_rt": kwmlp.__version__, "python": platform.python_version(), "cpu": _cpu(), "gpu": _gpu(),
         "tensorrt": _tensorrt(),
         "cuda_bindings": {dist: dist_version(dist) for dist in ("cuda-python", "cuda-bindings", "pycuda")},
         "onnxruntime": _onnxruntime(), "openvino": _openvino()}
    if model:
        d["model"] = _model(model)
    return d


def _lines(d: dict) -> list[str]:
    cpu, gpu, trt, ort, ov = d["cpu"], d["gpu"], d["tensorrt"], d["onnxruntime"], d["openvino"]
    lines = [f"kwmlp-rt {d['kwmlp_rt']}, Python {d['python']}",
             f"CPU          {cpu['model']} ({cpu['arch']}), {cpu['cores']} cores, {cpu['logical_cpus']} logical; "
             f"{' '.join(cpu['isa']) or 'no AVX2/AVX-512/NEON'}"]
    lines += _gpu_lines(gpu)
    if trt["version"]:
        ok = "supported" if trt["supported"] else f"NOT supported (this project needs {trt['supported_range']})"
        lines.append(f"TensorRT     {trt['version']}: {ok}")
    else:
        lines.append(f"TensorRT     {trt['why']}")
    bindings = ", ".join(f"{k} {v or 'not installed'}" for k, v in d["cuda_bindings"].items())
    lines.append(f"CUDA API     {bindings}")
    lines.append(f"onnxruntime  {ort['version']}: {', '.join(ort['providers'])}" if ort["version"]
                 else f"onnxruntime  {ort['why']}")
    lines.append(f"OpenVINO     {ov['version']}: " + ", ".join(f"{k} ({v})" for k, v in ov["devices"].items())
                 if ov["version"] else f"OpenVINO     {ov['why']}")
    if "model" in d:
        lines += _model_lines(d["model"])
    return lines


def _gpu_lines(gpu: dict) -> list[str]:
    if gpu["name"]:
        return [f"GPU          {gpu['name']}, compute {gpu['compute_capability']}, {gpu['memory_gb']} GB, driver CUDA "
                f"{gpu['driver_cuda']}, runtime CUDA {gpu['runtime_cuda']} ({gpu['bindings']})"]
    if not gpu["present"]:
        return [f"GPU          none ({_first_clause(gpu['why'])})"]
    present = f"GPU          {', '.join(gpu['present'])} present"
    if gpu["missing_bindings"]:  # the hint after the first clause: what to install
        return [f"{present}, cuda-python missing", f"  install    {gpu['why'].split('; ', 1)[-1]}"]
    return [f"{present}, not usable: {_first_clause(gpu['why'])}"]


def _model_lines(m: dict) -> list[str]:
    if "problem" in m:
        return [f"model        {m['path']}: does not load", f"  problem    {m['problem']}",
                "  auto runs  nothing"]
    lines = [f"model        {m['path']}: {m['precision']}, scene {m['scene']}"]
    if m["engine"]:
        lines.append(f"  engine     {m['engine']}: "
                     + (m["engine_problem"] or m["engine_unchecked"] or "matches this GPU and TensorRT"))
    else:
        lines.append("  engine     none beside it (`kwmlp build` makes one on a GPU)")
    lines.append(f"  auto runs  {m['auto']['backend']}")
    lines += [f"    because  {r}" for r in m["auto"]["reasons"]]
    return lines


def run(args) -> int:
    d = diagnose(args.model)
    print(json.dumps(d, indent=2) if args.json else "\n".join(_lines(d)))
    return 0
