"""Checkpoint -> the ONNX files of an export, with their settings in the metadata.

``OUT.onnx`` maps ``audio (batch, samples)`` to the HEAR outputs; ``OUT.keywords.onnx``
(named in the first one's metadata) maps ``windows (W, 16000)`` to keyword logits and
per-window embeddings; ``OUT.BxS.onnx`` (``fixed_shapes``) is ``OUT.onnx`` at one input shape,
with every shape computation folded into constants.
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
from kwmlp.artifact import (
    LAYOUT_EMBEDDINGS, LAYOUT_KEYWORDS, ONNX_SUFFIX, ModelInfo, check_fixed_shape, fixed_shape_of_name, fixed_shape_path,
    format_fixed_shape, is_keywords_file, keywords_path_for,
)
from kwmlp.checkpoint import dims_of, read_state_dict
from kwmlp.dims import ModelDims, state_shapes
from kwmlp.errors import KwmlpError
from kwmlp.export import graph
from kwmlp.export.builder import fold_constants
from kwmlp.export.fp16 import convert_to_fp16
from kwmlp.fileio import sha256_file, write_bytes_atomic

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
    fixed_shapes: tuple[tuple[int, int], ...] = ()  # (batch, samples): OUT.BxS.onnx for each

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise KwmlpError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.scene not in graph.SCENE_ALGORITHMS:
            raise KwmlpError(f"scene must be one of {', '.join(graph.SCENE_ALGORITHMS)}, got {self.scene!r}")
        if self.opset < graph.OPSET:
            raise KwmlpError(f"opset must be at least {graph.OPSET} (LayerNormalization), got {self.opset}")
        if not self.max_seconds > 0:
            raise KwmlpError(f"max_seconds must be positive, got {self.max_seconds}")
        for shape in self.fixed_shapes:
            check_fixed_shape(shape, self.max_seconds)


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


def _info(dims: ModelDims, options: ExportOptions, checkpoint_sha256: str, keywords_file: str) -> ModelInfo:
    return ModelInfo(
        layout=LAYOUT_EMBEDDINGS, dims=dims, precision=options.precision, scene=options.scene,
        checkpoint_sha256=checkpoint_sha256, version=kwmlp.__version__, max_seconds=options.max_seconds,
        keywords_model=keywords_file,
    )


def _in_precision(model: onnx.ModelProto, options: ExportOptions) -> onnx.ModelProto:
    return convert_to_fp16(model) if options.precision == "fp16" else model


def build_models(
    weights: dict[str, np.ndarray], dims: ModelDims, options: ExportOptions, checkpoint_sha256: str, keywords_file: str
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The embedding and keyword models, in memory. ``weights``: the ``model_state_dict`` as numpy."""
    options.check()
    halvings = graph.halvings_for(options.max_seconds) if options.scene == "iterative" else 0
    info = _info(dims, options, checkpoint_sha256, keywords_file)
    emb = _model(graph.embedding_graph(weights, dims, options.scene, halvings), options.opset, info.to_props())
    kw_info = dataclasses.replace(info, layout=LAYOUT_KEYWORDS, keywords_model="")
    kw = _model(graph.keyword_graph(weights, dims), options.opset, kw_info.to_props())
    return _in_precision(emb, options), _in_precision(kw, options)


def build_fixed_model(
    weights: dict[str, np.ndarray], dims: ModelDims, options: ExportOptions, checkpoint_sha256: str, keywords_file: str,
    shape: tuple[int, int],
) -> onnx.ModelProto:
    """The embedding model at input shape ``shape = (batch, samples)`` (one of ``options.fixed_shapes``),
    in memory: static dimensions, no shape arithmetic, ``kwmlp.fixed_shape`` in its metadata."""
    options.check()
    check_fixed_shape(shape, options.max_seconds)
    info = dataclasses.replace(_info(dims, options, checkpoint_sha256, keywords_file), fixed_shape=format_fixed_shape(*shape))
    g = graph.embedding_graph(weights, dims, options.scene, fixed_shape=shape)
    return _in_precision(_model(g, options.opset, info.to_props()), options)


def _same_file(a: str, b: str) -> bool:
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def check_output(checkpoint: str, out_path: str, fixed_shapes: tuple[tuple[int, int], ...] = ()) -> list[str]:
    """Refuse an output path that would overwrite the input or another export's keyword or
    fixed-shape graph, or that is a folder; returns the paths to write: ``out_path``, the keyword
    graph beside it, then the fixed-shape graphs."""
    if out_path.endswith(("/", os.sep)) or os.path.isdir(out_path):
        raise KwmlpError(f"-o {out_path} is a folder; give the file to write, e.g. "
                         f"{os.path.join(out_path, 'kwmlp' + ONNX_SUFFIX)}")
    if not out_path.endswith(ONNX_SUFFIX):
        raise KwmlpError(f"the export is an ONNX file: name the output {ONNX_SUFFIX}, got {out_path}")
    if is_keywords_file(out_path):
        raise KwmlpError(f"{out_path} is named like the keyword graph of another export (NAME.keywords.onnx); "
                         "choose another output name")
    if fixed_shape_of_name(out_path):
        raise KwmlpError(f"{out_path} is named like a fixed-shape graph of another export (NAME.BxS.onnx); "
                         "choose another output name")
    paths = [out_path, keywords_path_for(out_path)] + [fixed_shape_path(out_path, *s) for s in fixed_shapes]
    for path in paths:
        if _same_file(path, checkpoint):
            raise KwmlpError(f"writing {path} would overwrite the checkpoint {checkpoint} being exported")
    return paths


def export_checkpoint(checkpoint: str, out_path: str, options: ExportOptions = ExportOptions()) -> tuple[str, ...]:
    """Export ``checkpoint`` (original HEAR format) to ``out_path``, its ``.keywords.onnx`` sibling
    and a ``.BxS.onnx`` graph for each of ``options.fixed_shapes``.

    Returns the paths written, in that order. Each file is written atomically, the fixed-shape
    graphs after the other two. Needs no torch: the checkpoint is read by :mod:`kwmlp.checkpoint`.
    """
    options.check()
    paths = check_output(os.fspath(checkpoint), os.fspath(out_path), options.fixed_shapes)
    out_path, kw_path = paths[:2]
    state = read_state_dict(checkpoint)
    dims = dims_of(state, options.depth, checkpoint)
    weights = {k: state[k].astype(np.float64) for k in state_shapes(dims)}
    sha, kw_file = sha256_file(checkpoint), os.path.basename(kw_path)
    emb, kw = build_models(weights, dims, options, sha, kw_file)
    write_bytes_atomic(kw_path, kw.SerializeToString())
    write_bytes_atomic(out_path, emb.SerializeToString())
    for shape, path in zip(options.fixed_shapes, paths[2:]):  # one in memory at a time
        write_bytes_atomic(path, build_fixed_model(weights, dims, options, sha, kw_file, shape).SerializeToString())
    log.debug("exported %s", ", ".join(paths))
    return tuple(paths)
