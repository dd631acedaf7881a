"""``kwmlp triton-repo``: a Triton model repository for an exported model.

``REPO/kwmlp/config.pbtxt`` + ``REPO/kwmlp/1/model.onnx`` (platform ``onnxruntime_onnx``), and
the keyword head as a second model ``REPO/kwmlp_keywords``. With ``backend="python"`` the models
run kwmlp-rt's own runtime inside Triton's Python backend instead (for servers without the
ONNX Runtime backend, e.g. the CPU-only server bundled with nvidia-pytriton). Inputs, outputs
and dtypes are read from the model itself; the config is written through Triton's own
``ModelConfig`` protobuf, so it parses by construction.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field

from kwmlp.artifact import (
    LAYOUT_EMBEDDINGS, ModelInfo, engine_keywords_path, is_engine, keywords_model_path, onnx_behind, open_onnx,
    read_sidecar, require_file,
)
from kwmlp.errors import KwmlpError, missing_extra

BACKENDS = ("onnxruntime", "python")
KINDS = ("auto", "gpu", "cpu")
_ORT_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(float16)": "TYPE_FP16", "tensor(int64)": "TYPE_INT64"}
PYTHON_MODEL = os.path.join(os.path.dirname(__file__), "triton_python_model.py")
CONFIG = "config.pbtxt"
VERSION = "1"
# What _write_model puts in a model folder (and the bytecode Triton's Python backend may leave
# beside model.py): a folder holding anything else is not ours to replace.
_VERSION_FILES = {"model.onnx", "model.plan", "model.py", "__pycache__"}


@dataclass(frozen=True)
class RepositoryOptions:
    name: str = "kwmlp"
    backend: str = "onnxruntime"
    max_batch_size: int = 16
    preferred_batch_sizes: tuple[int, ...] = (4, 8, 16)
    max_queue_delay_us: int = 2000
    instance_count: int = 1
    kind: str = "auto"  # auto: KIND_GPU for TensorRT/ORT-TensorRT, else KIND_CPU
    tensorrt_accelerator: bool = False  # ORT's TensorRT execution accelerator (GPU servers)
    keywords: bool = True
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", self.name):
            raise KwmlpError(f"the model name must be letters, digits, '_', '.' or '-' (a folder name in the "
                             f"repository), got {self.name!r}")
        if self.backend not in BACKENDS:
            raise KwmlpError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.kind not in KINDS:
            raise KwmlpError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.max_batch_size < 1 or self.instance_count < 1:
            raise KwmlpError("max batch size and instance count must be at least 1")
        if any(not 1 <= b <= self.max_batch_size for b in self.preferred_batch_sizes):
            raise KwmlpError(f"preferred batch sizes must lie in [1, {self.max_batch_size}], got "
                             f"{list(self.preferred_batch_sizes)}")
        if self.tensorrt_accelerator and self.backend != "onnxruntime":
            raise KwmlpError("the TensorRT accelerator applies to the onnxruntime backend only")


def _pb():
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise missing_extra("tritonclient", "distributed") from e
    return model_config_pb2, text_format


def model_io(path: str) -> tuple[list[tuple[str, str, list]], list[tuple[str, str, list]], dict[str, str]]:
    """``(inputs, outputs, metadata)`` of an exported ONNX model: (name, Triton dtype, dims
    without the batch axis, -1 for dynamic)."""
    session = open_onnx(path)

    def triton(args):
        out = []
        for a in args:
            if a.type not in _ORT_TYPES:
                raise KwmlpError(f"{path}: tensor {a.name} has type {a.type}, which the repository cannot declare")
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in a.shape[1:]]  # axis 0 is the batch
            out.append((a.name, _ORT_TYPES[a.type], dims))
        return out

    return triton(session.get_inputs()), triton(session.get_outputs()), dict(session.get_modelmeta().custom_metadata_map)


def model_config(name: str, io, options: RepositoryOptions, gpu_capable: bool, plan_max_batch: int = 0):
    """The ``ModelConfig`` protobuf of one model; ``plan_max_batch`` > 0 for a TensorRT engine
    (its profiles' largest batch, which bounds Triton's)."""
    pb, _ = _pb()
    inputs, outputs, _ = io
    max_batch = min(options.max_batch_size, plan_max_batch) if plan_max_batch else options.max_batch_size
    cfg = pb.ModelConfig(name=name, max_batch_size=max_batch)
    if plan_max_batch:
        cfg.platform = "tensorrt_plan"
    elif options.backend == "python":
        cfg.backend = "python"
        cfg.parameters["model_file"].string_value = "model.onnx"
    else:
        cfg.platform = "onnxruntime_onnx"
    for n, t, dims in inputs:
        cfg.input.add(name=n, data_type=pb.DataType.Value(t), dims=dims)
    for n, t, dims in outputs:
        cfg.output.add(name=n, data_type=pb.DataType.Value(t), dims=dims)
    cfg.dynamic_batching.preferred_batch_size.extend(sorted({min(b, max_batch) for b in options.preferred_batch_sizes}))
    cfg.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    gpu = options.kind == "gpu" or (options.kind == "auto" and gpu_capable)
    cfg.instance_group.add(count=options.instance_count,
                           kind=pb.ModelInstanceGroup.Kind.Value("KIND_GPU" if gpu else "KIND_CPU"))
    if options.tensorrt_accelerator:
        acc = cfg.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        # an FP16 export carries its own casts: TensorRT keeps the graph's precisions
        acc.parameters["precision_mode"] = "FP32"
        acc.parameters["max_workspace_size_bytes"] = str(1 << 30)
    return cfg


def _write_model(repo: str, name: str, onnx_path: str, options: RepositoryOptions, gpu_capable: bool,
                 engine_path: str | None = None) -> str:
    """One model folder. With ``engine_path`` the model is that TensorRT engine (``model.plan``),
    its inputs and outputs read from ``onnx_path``, the export it was built from."""
    _, text_format = _pb()
    plan_max_batch = 0
    if engine_path:
        plan_max_batch = max(p.max[0] for p in read_sidecar(engine_path).profiles)
    cfg = model_config(name, model_io(onnx_path), options, gpu_capable or bool(engine_path), plan_max_batch)
    os.makedirs(repo, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=repo)
    try:
        os.makedirs(os.path.join(tmp, VERSION))
        if engine_path:
            shutil.copyfile(engine_path, os.path.join(tmp, VERSION, "model.plan"))
        else:
            shutil.copyfile(onnx_path, os.path.join(tmp, VERSION, "model.onnx"))
        if options.backend == "python":
            shutil.copyfile(PYTHON_MODEL, os.path.join(tmp, VERSION, "model.py"))
        with open(os.path.join(tmp, CONFIG), "w") as f:
            f.write(text_format.MessageToString(cfg))
        final = os.path.join(repo, name)
        check_replaceable(final, name)
        # swap in the new model directory; an old one is removed only once the new one is complete
        old = final + ".old" if os.path.exists(final) else None
        if old:
            os.replace(final, old)
        os.replace(tmp, final)
        if old:
            shutil.rmtree(old)
        return final
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)


def is_model_folder(path: str, name: str) -> bool:
    """Whether ``path`` is a model folder as :func:`_write_model` writes them: ``config.pbtxt``
    naming model ``name`` and a version folder ``1`` of model files, nothing else."""
    try:
        if set(os.listdir(path)) != {CONFIG, VERSION} or not os.path.isfile(os.path.join(path, CONFIG)):
            return False
        version = os.path.join(path, VERSION)
        if os.path.islink(version) or not os.path.isdir(version) or not set(os.listdir(version)) <= _VERSION_FILES:
            return False
        with open(os.path.join(path, CONFIG)) as f:
            return re.search(rf'^name: "{re.escape(name)}"$', f.read(), re.MULTILINE) is not None
    except (OSError, UnicodeDecodeError):
        return False


def check_replaceable(final: str, name: str) -> None:
    """Refuse to replace anything at ``final`` but a model folder this module wrote: the user's
    files never go."""
    if os.path.lexists(final) and (os.path.islink(final) or not is_model_folder(final, name)):
        raise KwmlpError(f"{final} exists and is not a model folder written by `kwmlp triton-repo` (config.pbtxt "
                         "and 1/ only); refusing to replace it: choose another --name or -o, or remove it yourself")


def write_repository(model_path: str, repo: str, options: RepositoryOptions = RepositoryOptions()) -> list[str]:
    """Write the model(s) of an exported ``.onnx``, or of a ``.engine`` built by ``kwmlp build``
    (platform ``tensorrt_plan``), into the Triton repository ``repo``.

    Returns the model directories written: ``repo/NAME`` and, with ``options.keywords``,
    ``repo/NAME_keywords``.
    """
    options.check()
    require_file(model_path)
    engine = model_path if is_engine(model_path) else None
    if engine:
        if options.backend != "onnxruntime" or options.tensorrt_accelerator:
            raise KwmlpError("a TensorRT engine is served as tensorrt_plan: --backend and --tensorrt do not apply")
        info_e = read_sidecar(engine)
        onnx_path = onnx_behind(engine, info_e)
        if not os.path.isfile(onnx_path):
            raise KwmlpError(f"{engine}: the export it was built from, {onnx_path}, is missing (its inputs and "
                             "outputs are read from it)")
    elif model_path.endswith(".onnx"):
        onnx_path = model_path
    else:
        raise KwmlpError(f"{model_path}: expected an exported .onnx or a .engine from `kwmlp build`")
    _, _, meta = model_io(onnx_path)
    info = ModelInfo.from_props(meta, onnx_path)
    if info.layout != LAYOUT_EMBEDDINGS:
        raise KwmlpError(f"{model_path} is not the embedding model of an export")
    names = [options.name] + ([f"{options.name}_keywords"] if options.keywords else [])
    for name in names:  # before anything is written
        check_replaceable(os.path.join(repo, name), name)
    gpu_capable = options.tensorrt_accelerator
    written = [_write_model(repo, options.name, onnx_path, options, gpu_capable, engine)]
    if options.keywords:
        kw_onnx = keywords_model_path(onnx_path, info)
        kw_engine = engine_keywords_path(engine, info_e) if engine else None
        if kw_engine and not os.path.isfile(kw_engine):
            raise KwmlpError(f"the keyword engine {kw_engine} is missing; build again, or pass --no-keywords")
        written.append(_write_model(repo, f"{options.name}_keywords", kw_onnx, options, gpu_capable, kw_engine))
    return written
