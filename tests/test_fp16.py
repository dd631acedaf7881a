"""The FP16 export on ONNX Runtime CPU against the original package and the FP32 export:
cosine >= 0.999 for every timestamp and scene embedding, no NaN/Inf, keyword top-1 agreement >= 99%;
and its structure: float32 I/O, an FP32 front end and scene, FP16 blocks."""

import glob
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from conftest import KEYWORDS_DIR, REFERENCE_CASES, load_case

COSINE = 0.999


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every vector along the last axis."""
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


@pytest.fixture(scope="module")
def fp16(exported):
    from kwmlp.runtime import Embedder

    return Embedder(exported(precision="fp16"), backend="onnxruntime-cpu")


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_fp16_matches_hear(fp16, case):
    z = load_case(case)
    r = fp16.embed(z["audio"])
    for got in (r.timestamp_embeddings, r.scene_embeddings):
        assert got.dtype == np.float32 and np.isfinite(got).all()
    if r.timestamp_embeddings.size:
        assert cosines(r.timestamp_embeddings, z["timestamp_embeddings"]).min() >= COSINE
    assert cosines(r.scene_embeddings, z["scene_embeddings"]).min() >= COSINE
    np.testing.assert_array_equal(r.timestamps, z["timestamps"])


def _keyword_windows() -> tuple[np.ndarray, list[str]]:
    sf = pytest.importorskip("soundfile")
    files = sorted(glob.glob(str(KEYWORDS_DIR / "*.wav")))
    if not files:
        pytest.skip(f"keyword clips not found in {KEYWORDS_DIR}")
    windows = np.zeros((len(files), 16000), np.float32)
    for row, f in zip(windows, files):
        audio, rate = sf.read(f, dtype="float32")
        assert rate == 16000 and audio.ndim == 1 and len(audio) <= 16000
        start = (16000 - len(audio)) // 2  # centred in one second of zeros
        row[start : start + len(audio)] = audio
    return windows, [os.path.basename(f).split("__")[0] for f in files]


def test_fp16_keywords_agree_with_fp32(fp16, exported):
    from kwmlp.runtime import KEYWORDS, Embedder

    windows, words = _keyword_windows()
    l32 = Embedder(exported(), backend="onnxruntime-cpu").keyword_logits(windows)
    l16 = fp16.keyword_logits(windows)
    assert np.isfinite(l16).all()
    assert (l16.argmax(1) == l32.argmax(1)).mean() >= 0.99
    # and the head still works: 90.5% top-1 with the original package on this set
    assert np.mean([KEYWORDS[i] == w for i, w in zip(l16.argmax(1), words)]) >= 0.88


def test_fp16_extremes_stay_finite(fp16):
    t = np.arange(3 * 16000)
    loud = np.stack([np.sign(np.sin(2 * np.pi * 1000 * t / 16000)), np.zeros(len(t)), np.full(len(t), 1.0),
                     np.sin(2 * np.pi * 7999 * t / 16000) * 8.0]).astype(np.float32)
    r = fp16.embed(loud)
    assert np.isfinite(r.timestamp_embeddings).all() and np.isfinite(r.scene_embeddings).all()
    assert np.isfinite(fp16.keyword_logits(loud[:, :16000])).all()


def _types(model: onnx.ModelProto) -> dict[str, int]:
    g = onnx.shape_inference.infer_shapes(model).graph
    t = {v.name: v.type.tensor_type.elem_type for v in list(g.input) + list(g.value_info) + list(g.output)}
    t.update({i.name: i.data_type for i in g.initializer})
    return t


def _ancestors(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    producer = {o: n for n in graph.node for o in n.output}
    seen, todo = {}, [tensor]
    while todo:
        n = producer.get(todo.pop())
        if n is not None and n.name not in seen:
            seen[n.name] = n
            todo.extend(n.input)
    return list(seen.values())


@pytest.fixture(scope="module", params=["iterative", "single", "mean"])
def fp16_models(request, random_exported):
    from kwmlp.artifact import keywords_path_for

    path = random_exported(precision="fp16", scene=request.param)
    return onnx.load(path), onnx.load(keywords_path_for(path))


def test_fp16_structure(fp16_models):
    for m in fp16_models:
        types = _types(m)
        props = {p.key: p.value for p in m.metadata_props}
        assert props["kwmlp.precision"] == "fp16"
        assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in list(m.graph.input) + list(m.graph.output))
        front = _ancestors(m.graph, "log_mel")
        assert {"Log", "ReduceMax", "MatMul"} <= {n.op_type for n in front}  # the STFT is a MatMul (folded)
        assert all(types[o] != TensorProto.FLOAT16 for n in front for o in n.output), "front end must stay FP32"
        scene = [n for n in m.graph.node if n.name.startswith("scene.")]
        assert all(types[o] != TensorProto.FLOAT16 for n in scene for o in n.output), "scene must stay FP32"
        half = {n.op_type for n in m.graph.node if any(types.get(o) == TensorProto.FLOAT16 for o in n.output)}
        assert {"MatMul", "Erf", "LayerNormalization"} <= half
        weights = [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT16]
        assert sum(int(np.prod(t.dims)) for t in weights) > 100_000  # the blocks' weights are FP16
