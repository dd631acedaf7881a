"""KW-MLP as ONNX graphs, written op by op: raw waveform in, embeddings out.

The graphs use only operators that the TensorRT 10.x ONNX parser accepts (no Loop,
If, DFT or STFT; ReduceMax axes as attributes; opset 17), and everything of the
HEAR wrapper happens inside them: padding, chunking, the STFT (factored into a
grouped Conv and small products, :mod:`kwmlp.export.stft`), mel, log and the
per-chunk top-dB clamp, the DCT (folded into the 40->64 projection), the gated-MLP
blocks, chunk compensation, timestamps and the scene interpolation.

``weights`` is the checkpoint's ``model_state_dict`` as numpy arrays (see
``kwmlp.export.onnx_export``); this module needs numpy and onnx, not torch.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from kwmlp.artifact import EMBEDDING_INPUT, EMBEDDING_OUTPUTS, KEYWORD_INPUT, KEYWORD_OUTPUTS
from kwmlp.dims import (
    AMIN, CHUNK_SAMPLES, DEFAULT_OPSET, HOP_LENGTH, LN_EPS, PAD_AFTER, PAD_BEFORE, SCENE_ALGORITHMS, SCENE_STEPS, TOP_DB,
    ModelDims, num_chunks, num_full_frames,
)
from kwmlp.export import fixed, stft
from kwmlp.export.builder import FLOAT, INT64, GraphBuilder, value_info
from kwmlp.frames import frame_times
from kwmlp.models import filters

OPSET = DEFAULT_OPSET
# the graphs' input and output names are the export's (one owner: kwmlp.artifact)
AUDIO, OUTPUTS = EMBEDDING_INPUT, EMBEDDING_OUTPUTS
WINDOWS = KEYWORD_INPUT


def halvings_for(max_seconds: float) -> int:
    """Scene halving stages needed for clips up to ``max_seconds``: floor(log2(T / 16))."""
    t = num_full_frames(max_seconds * CHUNK_SAMPLES)
    return max(0, math.floor(math.log2(t / SCENE_STEPS)))


# --- front end ---------------------------------------------------------------------------

def _log_mel(b: GraphBuilder, chunks: str) -> str:
    """``chunks (N, 16000) -> log-mel (N, 98, 40)`` in dB, clamped at each chunk's max - 80 dB."""
    m = stft.mel_spectrogram(b, chunks)
    m = b.op("Max", [m, b.const(AMIN, np.float32)], name="mel_floor")
    db = b.op("Mul", [b.op("Log", [m]), b.const(10.0 / math.log(10.0), np.float32)], name="mel_db")
    peak = b.op("ReduceMax", [db], name="chunk_peak_db", axes=[1, 2], keepdims=1)
    return b.op("Max", [db, b.op("Sub", [peak, b.const(TOP_DB, np.float32)])], name="log_mel")


def _linear(b: GraphBuilder, x: str, w: np.ndarray, bias: np.ndarray, name: str) -> str:
    y = b.op("MatMul", [x, b.weight(w.T, f"{name}.weight_t")], name=f"{name}.matmul")
    return b.op("Add", [y, b.weight(bias, f"{name}.bias")], name=name)


def _gelu(b: GraphBuilder, x: str, name: str) -> str:
    # exact (erf) GELU in the form ONNX Runtime fuses into one Gelu/BiasGelu kernel
    e = b.op("Erf", [b.op("Div", [x, b.const(math.sqrt(2.0), np.float32)])])
    y = b.op("Mul", [x, b.op("Add", [e, b.const(1.0, np.float32)])])
    return b.op("Mul", [y, b.const(0.5, np.float32)], name=name)


def _layer_norm(b: GraphBuilder, x: str, scale: np.ndarray, bias: np.ndarray, name: str) -> str:
    return b.op(
        "LayerNormalization", [x, b.weight(scale, f"{name}.weight"), b.weight(bias, f"{name}.bias")],
        name=name, axis=-1, epsilon=LN_EPS,
    )


def _encoder(b: GraphBuilder, log_mel: str, w: dict[str, np.ndarray], depth: int) -> list[str]:
    """``log-mel (N, 98, 40) ->`` the output ``(N, 98, 64)`` of each of the first ``depth`` blocks."""
    # mfcc^T W^T = log_mel^T (W D)^T: the DCT folds into the frequency projection
    pe = w["to_patch_embed.1.weight"].astype(np.float64) @ filters.dct_matrix()
    x = _linear(b, log_mel, pe, w["to_patch_embed.1.bias"], "patch_embed")
    outputs = []
    for i in range(depth):
        p = f"layers.{i}.fn."
        w_in, b_in = w[p + "fn.proj_in.0.weight"], w[p + "fn.proj_in.0.bias"]
        half = w_in.shape[0] // 2
        # two matrices instead of one and a Slice: chunk(2) gives u first, then the gate g
        u = _gelu(b, _linear(b, x, w_in[:half], b_in[:half], f"block{i}.proj_u"), f"block{i}.u")
        g = _gelu(b, _linear(b, x, w_in[half:], b_in[half:], f"block{i}.proj_g"), f"block{i}.g")
        g = _layer_norm(b, g, w[p + "fn.sgu.norm.weight"], w[p + "fn.sgu.norm.bias"], f"block{i}.gate_norm")
        g = b.op("MatMul", [b.weight(w[p + "fn.sgu.proj.weight"][:, :, 0], f"block{i}.temporal.weight"), g],
                 name=f"block{i}.temporal.matmul")
        g = b.op("Add", [g, b.weight(w[p + "fn.sgu.proj.bias"][:, None], f"block{i}.temporal.bias")],
                 name=f"block{i}.temporal")
        y = _linear(b, b.op("Mul", [u, g], name=f"block{i}.gated"), w[p + "fn.proj_out.weight"],
                    w[p + "fn.proj_out.bias"], f"block{i}.proj_out")
        y = _layer_norm(b, y, w[p + "norm.weight"], w[p + "norm.bias"], f"block{i}.post_norm")
        x = b.op("Add", [x, y], name=f"block{i}")
        outputs.append(x)
    return outputs


def _embedding_norm(b: GraphBuilder, x: str, dim: int, name: str = "embedding_norm") -> str:
    # the HEAR wrapper's fresh nn.LayerNorm(64): weight 1, bias 0
    return _layer_norm(b, x, np.ones(dim), np.zeros(dim), name)


# --- scene -------------------------------------------------------------------------------

def _length(b: GraphBuilder, x: str, axis: int) -> str:
    return b.op("Gather", [b.op("Shape", [x]), b.const(axis)], axis=0)


def _interpolate(b: GraphBuilder, x: str, in_len: str, out_len: str, name: str) -> str:
    """Aligned-corners linear interpolation on axis 1 of ``(B, in_len, d)``, computed the way
    PyTorch does (float32 scale and positions, floor, clamp: the operations of
    :func:`kwmlp.frames.interpolation_positions`, in order), not with Resize: ONNX Runtime's
    Resize rounds positions differently (up to 4e-3 off on a 10-minute clip)."""
    f32, one_i = onnx.TensorProto.FLOAT, b.const(1)
    scale = b.op("Div", [b.op("Cast", [b.op("Sub", [in_len, one_i])], to=f32),
                         b.op("Cast", [b.op("Sub", [out_len, one_i])], to=f32)], name=f"{name}.scale")
    pos = b.op("Mul", [b.op("Cast", [b.op("Range", [b.const(0), out_len, one_i])], to=f32), scale], name=f"{name}.src")
    lo = b.op("Floor", [pos])
    i0 = b.op("Cast", [lo], to=INT64)
    i1 = b.op("Min", [b.op("Add", [i0, one_i]), b.op("Sub", [in_len, one_i])])
    lam = b.op("Unsqueeze", [b.op("Sub", [pos, lo]), b.const([1])], name=f"{name}.lambda")
    keep = b.op("Sub", [b.const(1.0, np.float32), lam])
    x0 = b.op("Gather", [x, i0], axis=1)
    x1 = b.op("Gather", [x, i1], axis=1)
    return b.op("Add", [b.op("Mul", [x0, keep]), b.op("Mul", [x1, lam])], name=name)


def _scene_iterative(b: GraphBuilder, full: str, halvings: int) -> str:
    """``floor(log2(T / 16))`` halvings (:func:`kwmlp.frames.scene_lengths`), then one interpolation
    to 16, with no Loop: stage k halves only while the length is >= 32; a stage whose target
    equals its input length is an exact identity for aligned-corners interpolation (scale 1,
    lambda 0)."""
    x, n = full, _length(b, full, 1)
    for k in range(halvings):
        half = b.op("Div", [n, b.const(2)])
        out = b.op("Where", [b.op("Less", [n, b.const(2 * SCENE_STEPS)]), n, half], name=f"scene.len{k}")
        x, n = _interpolate(b, x, n, out, f"scene.halve{k}"), out
    y = _interpolate(b, x, n, b.const(SCENE_STEPS), "scene.to16")
    # a clip longer than the stages cover would silently take another algorithm: make it NaN instead
    ok = b.op("Less", [n, b.const(2 * SCENE_STEPS)], name="scene.in_range")
    return b.op("Where", [ok, y, b.const(np.nan, np.float32)], name="scene.checked")


def _scene_mean(b: GraphBuilder, full: str) -> str:
    """``adaptive_avg_pool1d(., 16)``: bin i averages frames [floor(iT/16), ceil((i+1)T/16))
    (:func:`kwmlp.frames.pool_bins`)."""
    t = _length(b, full, 1)
    i = b.const(np.arange(SCENE_STEPS)[:, None])
    steps = b.const(SCENE_STEPS)
    start = b.op("Div", [b.op("Mul", [i, t]), steps])
    end = b.op("Div", [b.op("Add", [b.op("Mul", [b.op("Add", [i, b.const(1)]), t]), b.const(SCENE_STEPS - 1)]), steps])
    frame = b.op("Range", [b.const(0), t, b.const(1)])  # (T,) against (16, 1) bins -> (16, T)
    inside = b.op("And", [b.op("GreaterOrEqual", [frame, start]), b.op("Less", [frame, end])])
    count = b.op("Cast", [b.op("Sub", [end, start])], to=FLOAT)
    weights = b.op("Div", [b.op("Cast", [inside], to=FLOAT), count], name="scene.pool_weights")
    return b.op("MatMul", [weights, full], name="scene.mean")  # (16, T) @ (B, T, d) -> (B, 16, d)


def _flatten_feature_major(b: GraphBuilder, x: str, name: str) -> str:
    t = b.op("Transpose", [x], perm=[0, 2, 1])  # b t f -> b f t
    return b.op("Reshape", [t, b.const([0, -1])], name=name)


def _scene(b: GraphBuilder, full: str, scene: str, halvings: int, name: str) -> str:
    """``(B, T, d) -> (B, 16 d)``, flattened feature-major (``b t f -> b (f t)``)."""
    if scene == "iterative":
        y = _scene_iterative(b, full, halvings)
    elif scene == "single":
        y = _interpolate(b, full, _length(b, full, 1), b.const(SCENE_STEPS), "scene.single")
    else:
        y = _scene_mean(b, full)
    return _flatten_feature_major(b, y, name)


# --- graphs ------------------------------------------------------------------------------

def _chunks(b: GraphBuilder, length: str) -> str:
    """``audio (B, L) -> chunks (B S, 16000)``: S = ceil((L + 320) / 16000) one-second chunks after
    80 zeros before and 240 after (and zeros to whole seconds)."""
    s = b.op("Div", [b.op("Add", [length, b.const(PAD_BEFORE + PAD_AFTER + CHUNK_SAMPLES - 1)]),
                     b.const(CHUNK_SAMPLES)], name="num_chunks")
    pad_end = b.op("Sub", [b.op("Sub", [b.op("Mul", [s, b.const(CHUNK_SAMPLES)]), length]), b.const(PAD_BEFORE)])
    pads = b.op("Concat", [b.const([0, PAD_BEFORE, 0]), b.op("Unsqueeze", [pad_end, b.const([0])])], axis=0)
    padded = b.op("Pad", [AUDIO, pads], name="padded", mode="constant")
    return b.op("Reshape", [padded, b.const([-1, CHUNK_SAMPLES])], name="chunks")


def _outputs(b: GraphBuilder, x: str, dims: ModelDims, length: str, batch: str, scene: str, halvings: int) -> None:
    """Chunk compensation, the timestamps and the scene, from ``x (B S, 98, d)``."""
    # chunk compensation: replicate one frame at each end, join chunks, drop the clip's ends
    first = b.op("Slice", [x, b.const([0]), b.const([1]), b.const([1])])
    last = b.op("Slice", [x, b.const([-1]), b.const([dims.n_frames]), b.const([1])])
    x = b.op("Concat", [first, x, last], axis=1)
    x = b.op("Reshape", [x, b.const([0, -1, dims.dim])], name="joined")  # (N, 100, d) -> ...
    x = b.op("Reshape", [x, b.op("Concat", [b.op("Unsqueeze", [batch, b.const([0])]), b.const([-1, dims.dim])], axis=0)])
    full = b.op("Slice", [x, b.const([1]), b.const([-1]), b.const([1])], name="full_embeddings")

    n = b.op("Div", [length, b.const(HOP_LENGTH)], name="num_timestamps")
    n1 = b.op("Unsqueeze", [n, b.const([0])])
    b.op("Slice", [full, b.const([0]), n1, b.const([1])], name=OUTPUTS[0])
    ms = b.op("Cast", [b.op("Range", [b.const(1), b.op("Add", [n, b.const(1)]), b.const(1)])], to=FLOAT)
    ms = b.op("Mul", [ms, b.const(1000.0 * HOP_LENGTH / CHUNK_SAMPLES, np.float32)])
    b.op("Expand", [b.op("Unsqueeze", [ms, b.const([0])]),
                    b.op("Concat", [b.op("Unsqueeze", [batch, b.const([0])]), n1], axis=0)], name=OUTPUTS[1])
    _scene(b, full, scene, halvings, OUTPUTS[2])


def _fixed_chunks(b: GraphBuilder, batch: int, samples: int) -> str:
    """:func:`_chunks` at one input shape: constant pads and chunk count."""
    s = num_chunks(samples)
    padded = b.op("Pad", [AUDIO, b.const([0, PAD_BEFORE, 0, s * CHUNK_SAMPLES - samples - PAD_BEFORE])],
                  name="padded", mode="constant")
    return b.op("Reshape", [padded, b.const([batch * s, CHUNK_SAMPLES])], name="chunks")


def _fixed_outputs(b: GraphBuilder, x: str, dims: ModelDims, scene: str, batch: int, samples: int) -> None:
    """:func:`_outputs` at one input shape: the compensation is one Gather of constant frame indices,
    the timestamps a constant, the scene one constant matrix (:mod:`kwmlp.export.fixed`)."""
    s, n = num_chunks(samples), samples // HOP_LENGTH
    frames = b.op("Reshape", [x, b.const([batch, s * dims.n_frames, dims.dim])], name="chunk_frames")
    index = fixed.compensation_index(samples, dims.n_frames)[:n]
    b.op("Gather", [frames, b.weight(index, "timestamp_frames", np.int64)], name=OUTPUTS[0], axis=1)
    # through a node: a graph output that is an initializer is not an output in every runtime
    b.op("Expand", [b.weight(frame_times(0, n)[None], "timestamps_ms"), b.const([batch, n])], name=OUTPUTS[1])
    weights = b.weight(fixed.scene_over_chunk_frames(samples, dims.n_frames, scene), "scene.weights")
    y = b.op("MatMul", [weights, frames], name="scene.matmul")  # (16, 98 S) @ (B, 98 S, d) -> (B, 16, d)
    _flatten_feature_major(b, y, OUTPUTS[2])


def embedding_graph(
    weights: dict[str, np.ndarray], dims: ModelDims, scene: str = "iterative", halvings: int = 16,
    fixed_shape: tuple[int, int] | None = None,
) -> onnx.GraphProto:
    """``audio (batch, samples)`` float32 -> ``timestamp_embeddings (batch, samples // 160, 64)``,
    ``timestamps (batch, samples // 160)`` ms, ``scene_embeddings (batch, 1024)``, all float32.

    ``fixed_shape=(batch, samples)``: the graph at that input shape alone, with static dimensions
    and no shape arithmetic (every count, pad, index and interpolation weight a constant computed
    here with the arithmetic the dynamic graph runs; ``halvings`` is then not used).
    """
    if scene not in SCENE_ALGORITHMS:
        raise ValueError(f"scene must be one of {', '.join(SCENE_ALGORITHMS)}, got {scene!r}")
    b = GraphBuilder()
    if fixed_shape is None:
        length, batch = _length(b, AUDIO, 1), _length(b, AUDIO, 0)
        chunks = _chunks(b, length)
    else:
        chunks = _fixed_chunks(b, *fixed_shape)
    x = _encoder(b, _log_mel(b, chunks), weights, dims.embed_depth)[-1]
    x = _embedding_norm(b, x, dims.dim)
    if fixed_shape is None:
        _outputs(b, x, dims, length, batch, scene, halvings)
        rows, samples, steps = "batch", "samples", "timestamps"
    else:
        _fixed_outputs(b, x, dims, scene, *fixed_shape)
        (rows, samples), steps = fixed_shape, fixed_shape[1] // HOP_LENGTH
    # the builder named each output node after its tensor; outputs are those tensors
    return helper.make_graph(
        b.nodes, "kwmlp_embeddings",
        [value_info(AUDIO, FLOAT, [rows, samples])],
        [value_info(OUTPUTS[0], FLOAT, [rows, steps, dims.dim]),
         value_info(OUTPUTS[1], FLOAT, [rows, steps]),
         value_info(OUTPUTS[2], FLOAT, [rows, dims.scene_size])],
        b.initializers,
    )


def keyword_graph(weights: dict[str, np.ndarray], dims: ModelDims) -> onnx.GraphProto:
    """``windows (windows, 16000)`` float32 -> ``keyword_logits (windows, 35)`` with the trained
    head on all blocks, and ``chunk_embeddings (windows, 98, 64)``: each window's embedding
    (after ``embed_depth`` blocks, no padding or compensation), for block-wise processing."""
    b = GraphBuilder()
    blocks = _encoder(b, _log_mel(b, WINDOWS), weights, dims.depth)
    x = _layer_norm(b, blocks[-1], weights["to_logits.0.weight"], weights["to_logits.0.bias"], "head.norm")
    x = b.op("ReduceMean", [x], name="head.mean", axes=[1], keepdims=0)
    _linear(b, x, weights["to_logits.2.weight"], weights["to_logits.2.bias"], KEYWORD_OUTPUTS[0])
    _embedding_norm(b, blocks[dims.embed_depth - 1], dims.dim, KEYWORD_OUTPUTS[1])
    return helper.make_graph(
        b.nodes, "kwmlp_keywords",
        [value_info(WINDOWS, FLOAT, ["windows", CHUNK_SAMPLES])],
        [value_info(KEYWORD_OUTPUTS[0], FLOAT, ["windows", dims.num_classes]),
         value_info(KEYWORD_OUTPUTS[1], FLOAT, ["windows", dims.n_frames, dims.dim])],
        b.initializers,
    )
