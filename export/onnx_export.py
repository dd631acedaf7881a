"""Checkpoint -> the two ONNX files of an export, with their settings in the metadata.

``OUT.onnx`` maps ``audio (batch, samples)`` to the HEAR outputs; ``OUT.keywords.onnx``
(named in the first one's metadata) maps ``windows (W, 16000)`` to keyword logits and
per-window embeddings.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

import kwmlp
from kwmlp.artifact import LAYOUT_EMBEDDINGS, LAYOUT_KEYWORDS, ONNX_SUFFIX, ModelInfo, is_keywords_file, keywords_path_for
from kwmlp.dims import ModelDims
from kwmlp.errors import KwmlpError, missing_extra
from kwmlp.export import graph
from kwmlp.export.builder import fold_constants
from kwmlp.export.fp16 import convert_to_fp16
from kwmlp.fileio import write_bytes_atomic

log = logging.getLogger("kwmlp")

PRECISIONS = ("fp32", "fp16")
DEFAULT_MAX_SECONDS = 4 * 3600  # scene stages are unrolled for clips up to this long


@dataclass(frozen=True)
class ExportOptions:
    precision: str = "fp32"
    depth: int | None = None  # block whose output is the embedding; None = all (12)
    scene: str = "iterative"
    opset: int = graph.OPSET
    max_seconds: float = DEFAULT_MAX_SECONDS

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise KwmlpError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.scene not in graph.SCENE_ALGORITHMS:
            raise KwmlpError(f"scene must be one of {', '.join(graph.SCENE_ALGORITHMS)}, got {self.scene!r}")
        if self.opset < graph.OPSET:
            raise KwmlpError(f"opset must be at least {graph.OPSET} (LayerNormalization), got {self.opset}")
        if not self.max_seconds > 0:
            raise KwmlpError(f"max_seconds must be positive, got {self.max_seconds}")


def _model(g: onnx.GraphProto, opset: int, props: dict[str, str]) -> onnx.ModelProto:
    fold_constants(g)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", graph.OPSET)], producer_name="kwmlp-rt",
                          producer_version=kwmlp.__version__)
    m.ir_version = 8  # readable by onnxruntime >= 1.10 and TensorRT 10's parser
    if opset != graph.OPSET:
        from onnx import version_converter
        m = version_converter.convert_version(m, opset)
    helper.set_model_props(m, props)
    onnx.checker.check_model(m, full_check=True)
    return m


def build_models(
    weights: dict[str, np.ndarray], dims: ModelDims, options: ExportOptions, checkpoint_sha256: str, keywords_file: str
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The embedding and keyword models, in memory. ``weights``: the ``model_state_dict`` as numpy."""
    options.check()
    halvings = graph.halvings_for(options.max_seconds) if options.scene == "iterative" else 0
    info = ModelInfo(
        layout=LAYOUT_EMBEDDINGS, dims=dims, precision=options.precision, scene=options.scene,
        checkpoint_sha256=checkpoint_sha256, version=kwmlp.__version__, max_seconds=options.max_seconds,
        keywords_model=keywords_file,
    )
    emb = _model(graph.embedding_graph(weights, dims, options.scene, halvings), options.opset, info.to_props())
    kw_info = dataclasses.replace(info, layout=LAYOUT_KEYWORDS, keywords_model="")
    kw = _model(graph.keyword_graph(weights, dims), options.opset, kw_info.to_props())
    if options.precision == "fp16":
        emb, kw = convert_to_fp16(emb), convert_to_fp16(kw)
    return emb, kw


def _same_file(a: str, b: str) -> bool:
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def check_output(checkpoint: str, out_path: str) -> str:
    """Refuse an output path that would overwrite the input or another export's keyword graph, or
    that is a folder; returns the keyword graph's path beside it."""
    if out_path.endswith(("/", os.sep)) or os.path.isdir(out_path):
        raise KwmlpError(f"-o {out_path} is a folder; give the file to write, e.g. "
                         f"{os.path.join(out_path, 'kwmlp' + ONNX_SUFFIX)}")
    if not out_path.endswith(ONNX_SUFFIX):
        raise KwmlpError(f"the export is an ONNX file: name the output {ONNX_SUFFIX}, got {out_path}")
    if is_keywords_file(out_path):
        raise KwmlpError(f"{out_path} is named like the keyword graph of another export (NAME.keywords.onnx); "
                         "choose another output name")
    kw_path = keywords_path_for(out_path)
    for path in (out_path, kw_path):
        if _same_file(path, checkpoint):
            raise KwmlpError(f"writing {path} would overwrite the checkpoint {checkpoint} being exported")
    return kw_path


def export_checkpoint(checkpoint: str, out_path: str, options: ExportOptions = ExportOptions()) -> tuple[str, str]:
    """Export ``checkpoint`` (original HEAR format) to ``out_path`` and its ``.keywords.onnx`` sibling.

    Returns both paths. Files are written atomically. Needs torch (to read the checkpoint).
    """
    try:
        from kwmlp.models import checkpoint as ck
    except ImportError as e:
        raise missing_extra("torch", "export", "exporting") from e
    options.check()
    kw_path = check_output(os.fspath(checkpoint), os.fspath(out_path))
    state = ck.read_state_dict(checkpoint)
    dims = ck.dims_of(state, options.depth, checkpoint)
    weights = {k: v.detach().cpu().double().numpy() for k, v in state.items()}
    emb, kw = build_models(weights, dims, options, ck.sha256_file(checkpoint), os.path.basename(kw_path))
    write_bytes_atomic(kw_path, kw.SerializeToString())
    write_bytes_atomic(out_path, emb.SerializeToString())
    log.debug("exported %s and %s", out_path, kw_path)
    return out_path, kw_path
