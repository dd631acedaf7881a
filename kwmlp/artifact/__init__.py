"""An export on disk, owned here: which files it consists of, how their names derive from each
other, whether they exist, and what they say about themselves.

An export of ``NAME.onnx`` (``kwmlp export``) is

- ``NAME.onnx``: waveform -> embeddings (layout :data:`LAYOUT_EMBEDDINGS`);
- ``NAME.keywords.onnx``: one-second windows -> keyword logits and chunk embeddings;
- ``NAME.BxS.onnx`` for each ``--fixed-shape BxS``: the embedding graph at that one input shape
  (:mod:`kwmlp.artifact.shapes`);

and ``kwmlp build -o NAME.engine`` adds ``NAME.engine`` and ``NAME.keywords.engine``, each with a
``.json`` sidecar (:mod:`kwmlp.artifact.sidecar`) naming the ONNX it was built from. An engine
built otherwise (trtexec, Polygraphy) has no sidecar: its ONNX is ``NAME.onnx`` beside it (and
``NAME.keywords.onnx`` that of ``NAME.keywords.engine``). Every other
module asks this one; none builds these names or checks these files itself. Pure Python except
:func:`open_onnx` and :func:`read_model_info` on an ``.onnx``, which use ONNX Runtime.
"""

from __future__ import annotations

import logging
import os

from kwmlp.artifact.metadata import LAYOUT_EMBEDDINGS, LAYOUT_KEYWORDS, ModelInfo
from kwmlp.artifact.shapes import (
    check_fixed_shape, fixed_shape_files, fixed_shape_of_name, fixed_shape_path, format_fixed_shape, parse_fixed_shape,
)
from kwmlp.artifact.sidecar import EngineInfo, find_sidecar, read_sidecar, sidecar_path
from kwmlp.dims import HOP_LENGTH
from kwmlp.errors import KwmlpError, first_line
from kwmlp.pth import is_checkpoint

__all__ = [
    "EMBEDDING_DIMS", "EMBEDDING_INPUT", "fixed_shapes_of", "EMBEDDING_OUTPUTS", "KEYWORD_DIMS", "io_shapes", "ENGINE_SUFFIXES", "KEYWORD_INPUT", "KEYWORD_OUTPUTS",
    "LAYOUT_EMBEDDINGS", "LAYOUT_KEYWORDS", "ModelInfo", "check_model", "engine_beside", "engine_keywords_path",
    "is_engine", "is_keywords_file", "keywords_path_for", "onnx_beside", "onnx_behind", "read_model_info",
    "open_onnx", "read_sidecar", "require_file", "keywords_model_path", "sidecar_path",
    "check_fixed_shape", "fixed_shape_files", "fixed_shape_of_name", "fixed_shape_path", "format_fixed_shape",
    "parse_fixed_shape",
]

log = logging.getLogger("kwmlp")

ONNX_SUFFIX = ".onnx"
ENGINE_SUFFIX = ".engine"
ENGINE_SUFFIXES = (ENGINE_SUFFIX, ".plan")  # .plan: what Triton calls a serialized engine
_KEYWORDS = ".keywords"

# The graphs' input and output names, in the order the graphs declare them.
EMBEDDING_INPUT = "audio"
EMBEDDING_OUTPUTS = ("timestamp_embeddings", "timestamps", "scene_embeddings")
KEYWORD_INPUT = "windows"
KEYWORD_OUTPUTS = ("keyword_logits", "chunk_embeddings")
# The graphs' symbolic input dimensions (what ONNX Runtime's free-dimension overrides name).
EMBEDDING_DIMS = ("batch", "samples")
KEYWORD_DIMS = ("windows",)
IO_OF_LAYOUT = {
    LAYOUT_EMBEDDINGS: ((EMBEDDING_INPUT,), EMBEDDING_OUTPUTS),
    LAYOUT_KEYWORDS: ((KEYWORD_INPUT,), KEYWORD_OUTPUTS),
}


def require_file(path: str, what: str = "model file") -> str:
    """``path`` as a string when it is a readable regular file; else one sentence saying what it is."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise KwmlpError(f"{what} {path} is a folder, not a file")
    if not os.path.exists(path):
        raise KwmlpError(f"{what} {path} does not exist")
    if not os.path.isfile(path):
        raise KwmlpError(f"{what} {path} is not a regular file")
    if not os.access(path, os.R_OK):
        raise KwmlpError(f"{what} {path} cannot be read (permission denied)")
    return path


def is_engine(path: str) -> bool:
    """Whether ``path`` names a TensorRT engine (``.engine``, or Triton's ``.plan``)."""
    return os.path.splitext(os.fspath(path))[1] in ENGINE_SUFFIXES


def keywords_path_for(path: str) -> str:
    """The keyword graph written beside an export: ``NAME.onnx`` -> ``NAME.keywords.onnx``
    (``NAME.engine`` -> ``NAME.keywords.engine`` for ``kwmlp build``)."""
    root, ext = os.path.splitext(os.fspath(path))
    return f"{root}{_KEYWORDS}{ext or ONNX_SUFFIX}"


def is_keywords_file(path: str) -> bool:
    """Whether ``path`` is named like the keyword companion of another export."""
    return os.path.splitext(os.path.splitext(os.fspath(path))[0])[1] == _KEYWORDS


def engine_beside(onnx_path: str) -> str | None:
    """``NAME.engine`` beside ``NAME.onnx`` when it exists (what ``backend="auto"`` tries first)."""
    path = os.path.splitext(onnx_path)[0] + ENGINE_SUFFIX
    return path if os.path.isfile(path) else None


def _companion(model_path: str, name: str, what: str) -> str:
    """A file an export's metadata names, confined to the export's own folder."""
    if not name or os.path.basename(name) != name or name in (os.curdir, os.pardir):
        raise KwmlpError(f"{model_path} names its {what} as {name!r}, which is not a file name beside it")
    return os.path.join(os.path.dirname(os.fspath(model_path)), name)


def keywords_model_path(model_path: str, info: ModelInfo) -> str:
    """The keyword graph that goes with the embedding export ``model_path`` (checked to exist)."""
    if not info.keywords_model:
        raise KwmlpError(f"{model_path} names no keyword model")
    path = _companion(model_path, info.keywords_model, "keyword model")
    if not os.path.isfile(path):
        raise KwmlpError(f"the keyword model {path} is missing; export again with `kwmlp export`")
    return path


def engine_keywords_path(engine_path: str, info: EngineInfo | None) -> str:
    """The keyword engine beside ``engine_path``: as its sidecar ``info`` names it, or
    ``NAME.keywords.engine`` for an engine without a sidecar (``info`` None)."""
    if info is None:
        return keywords_path_for(engine_path)
    return _companion(engine_path, info.keywords_engine, "keyword engine")


def onnx_beside(engine_path: str) -> str:
    """``NAME.onnx`` for ``NAME.engine``: the export an engine without a sidecar is taken to be built from."""
    return os.path.splitext(os.fspath(engine_path))[0] + ONNX_SUFFIX


def onnx_behind(engine_path: str, info: EngineInfo | None = None) -> str:
    """The export an engine was built from (need not exist): as its sidecar (``info``, read when not
    given) records it, or :func:`onnx_beside` for an engine without a sidecar."""
    info = info or find_sidecar(engine_path)
    return info.onnx_abspath(engine_path) if info else onnx_beside(engine_path)


def read_model_info(path: str) -> ModelInfo:
    """What an ``.onnx`` export says about itself; for an engine, what its sidecar recorded, or for
    one without a sidecar what the ONNX beside it (:func:`onnx_beside`) says."""
    require_file(path)
    if is_engine(path):
        info = find_sidecar(path)
        if info is not None:
            return info.model_info()
        onnx = onnx_beside(path)
        if not os.path.isfile(onnx):
            raise KwmlpError(f"{path} has no sidecar {os.path.basename(sidecar_path(path))} (it was not built by "
                             f"`kwmlp build`) and no {os.path.basename(onnx)} beside it to read the export's settings "
                             "from: put the ONNX it was built from there, or build it with `kwmlp build`")
        return read_model_info(onnx)
    session = open_onnx(path)
    return ModelInfo.from_props(dict(session.get_modelmeta().custom_metadata_map), path)


# ONNX Runtime's log severities: 2 warning, 3 error, 4 fatal
_ORT_WARNING, _ORT_ERROR, _ORT_FATAL = 2, 3, 4


def _ort_debug() -> bool:
    """Whether ONNX Runtime's own warnings should reach stderr: when kwmlp's logger shows debug
    messages (``kwmlp --debug``)."""
    return logging.getLogger("kwmlp").isEnabledFor(logging.DEBUG)


def check_model(path: str, layout: str = LAYOUT_EMBEDDINGS) -> ModelInfo:
    """What the export ``path`` (``.onnx``, or an engine) says about itself, refused in one sentence
    as :class:`~kwmlp.runtime.Embedder` refuses it when it is not the ``layout`` graph of an export
    (for an ``.onnx``, with its inputs and outputs too); no backend is started."""
    require_file(path)
    if is_engine(path):  # its tensors are TensorRT's to say: the layout is checked
        info = read_model_info(path)
        check_layout(info, path, layout, *IO_OF_LAYOUT.get(info.layout, IO_OF_LAYOUT[layout]))
        return info
    session = open_onnx(path)
    info = ModelInfo.from_props(dict(session.get_modelmeta().custom_metadata_map), path)
    check_layout(info, path, layout, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    return info


def import_onnxruntime():
    """The ``onnxruntime`` module, its process-wide logger kept to errors (to warnings under
    ``kwmlp --debug``).

    Provider registration logs through ONNX Runtime's default logger, not a session's: ONNX
    Runtime 1.30 and 1.31 print "No registered plugin EP device found for 'CUDAExecutionProvider'"
    on every GPU session, though the CUDA provider then runs. The default logger is shared by the
    whole process, so its errors stay visible (a GPU library that failed to load says why here).
    """
    try:
        import onnxruntime
    except ImportError as e:
        raise KwmlpError("onnxruntime is not installed; install it with: pip install onnxruntime") from e
    onnxruntime.set_default_logger_severity(_ORT_WARNING if _ort_debug() else _ORT_ERROR)
    return onnxruntime


def session_log_severity() -> int:
    """What our own sessions log to stderr: nothing but fatal errors (their warnings under
    ``kwmlp --debug``). A session that fails raises, and the runtime says so in one sentence that
    quotes ONNX Runtime's message; ONNX Runtime would otherwise print it first, at length."""
    return _ORT_WARNING if _ort_debug() else _ORT_FATAL


def open_onnx(path: str, options=None, providers: list | None = None):
    """An ONNX Runtime session over ``path`` (CPU and no graph optimisation unless told), or one
    sentence saying why it does not load. Its log lines: :func:`session_log_severity`."""
    ort = import_onnxruntime()
    if options is None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = session_log_severity()
    try:
        return ort.InferenceSession(require_file(path), sess_options=options,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types for unreadable models
        if isinstance(e, KwmlpError):
            raise
        if is_checkpoint(path):
            raise KwmlpError(f"{path} is a PyTorch checkpoint, not an exported model: export it first with "
                             f"`kwmlp export {path} -o NAME{ONNX_SUFFIX}`, then give NAME{ONNX_SUFFIX}") from e
        raise KwmlpError(f"{path} could not be loaded as an ONNX model ({first_line(e)[:200]})") from e


def io_shapes(info: ModelInfo, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Every input and output shape of ``info``'s graph when its input has ``input_shape``:
    ``audio (B, L)`` -> ``(B, L // 160, d)``, ``(B, L // 160)``, ``(B, 16 d)``; ``windows (W, 16000)``
    -> ``(W, classes)``, ``(W, 98, d)``."""
    d = info.dims
    if info.layout == LAYOUT_KEYWORDS:
        (w, _) = input_shape
        return {KEYWORD_INPUT: tuple(input_shape), KEYWORD_OUTPUTS[0]: (w, d.num_classes),
                KEYWORD_OUTPUTS[1]: (w, d.n_frames, d.dim)}
    b, n = input_shape
    t = n // HOP_LENGTH
    return {EMBEDDING_INPUT: tuple(input_shape), EMBEDDING_OUTPUTS[0]: (b, t, d.dim), EMBEDDING_OUTPUTS[1]: (b, t),
            EMBEDDING_OUTPUTS[2]: (b, d.scene_size)}


def fixed_shapes_of(onnx_path: str, info: ModelInfo) -> dict[tuple[int, int], str]:
    """``{(batch, samples): path}`` of the fixed-shape graphs beside the export ``onnx_path`` that are
    this export's (same checkpoint and precision, the shape their name says); others beside it, e.g.
    left from an export of another checkpoint, are passed over (at debug level)."""
    from kwmlp.artifact.shapes import fixed_shape_files

    found = {}
    for path, shape in fixed_shape_files(onnx_path):
        try:
            other = read_model_info(path)
        except KwmlpError as e:
            log.debug("kwmlp: %s is not used: %s", path, e)
            continue
        if (other.checkpoint_sha256, other.precision, other.shape) == (info.checkpoint_sha256, info.precision, shape):
            found[shape] = path
        else:
            log.debug("kwmlp: %s is not used: it is not %s's (another checkpoint or precision)", path, onnx_path)
    return found


def check_layout(info: ModelInfo, path: str, layout: str, inputs, outputs) -> None:
    """Refuse a model that is not the ``layout`` graph of an export, or whose inputs and outputs differ."""
    if info.layout != layout:
        other = "keyword" if info.layout == LAYOUT_KEYWORDS else "embedding"
        raise KwmlpError(f"{path} is the {other} model of an export, not the one expected here")
    want_in, want_out = IO_OF_LAYOUT[layout]
    if set(inputs) != set(want_in) or set(outputs) != set(want_out):
        raise KwmlpError(
            f"{path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
            f"expected {sorted(want_in)} and {sorted(want_out)}: it was exported with another layout")
