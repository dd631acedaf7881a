"""Fixed-shape graphs (``kwmlp export --fixed-shape BxS``): no shape arithmetic left, static
dimensions, the dynamic graph's outputs within 1e-5 (fp32), their names, ``kwmlp info`` and the
Embedder's refusal of other shapes."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from conftest import REFERENCE_CASES, _export_factory, checkpoint_path, load_case, max_abs
from test_fp16 import COSINE, cosines
from test_graph import TRT_ALLOWED

SHAPES = ((1, 16000), (1, 100), (8, 160000), (3, 16000), (1, 996800), (2, 8000))
# shape arithmetic, and the ops that carry it; ONNX Runtime's CUDA provider runs them on the CPU
SHAPE_OPS = {"Shape", "Size", "Range", "NonZero", "ConstantOfShape", "Where", "Less", "Floor", "Loop", "If", "Scan"}
CONSTANT_INPUTS = {"Reshape": 1, "Expand": 1, "Pad": 1, "Gather": 1}  # op -> input that must be an initializer
FIXED_TOLERANCE = 1e-5


def _fixed(path: str, shape) -> str:
    from kwmlp.artifact import fixed_shape_path

    return fixed_shape_path(path, *shape)


def _session(path: str):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _reference_shapes() -> tuple:
    return tuple(dict.fromkeys(load_case(c)["audio"].shape for c in REFERENCE_CASES))


@pytest.fixture(scope="session")
def any_exported(request, tmp_path_factory):
    """The trained checkpoint exported where KWMLP_CHECKPOINT names it, else a seeded random KW-MLP."""
    path = checkpoint_path() or request.getfixturevalue("random_checkpoint")
    return _export_factory(path, tmp_path_factory, "fixed")


# --- structure ---------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["fp32", "fp16"])
def structure(request, random_exported):
    return random_exported(precision=request.param, fixed_shapes=SHAPES), request.param


@pytest.fixture(scope="module")
def fp32_export(random_exported):
    return random_exported(precision="fp32", fixed_shapes=SHAPES)  # the fp32 export of ``structure``


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_no_shape_arithmetic_and_static_dims(structure, shape):
    path, precision = structure
    m = onnx.load(_fixed(path, shape))
    ops = {n.op_type for n in m.graph.node}
    assert not ops & SHAPE_OPS and ops <= TRT_ALLOWED, ops & SHAPE_OPS or ops - TRT_ALLOWED
    inits = {t.name for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type in CONSTANT_INPUTS:
            assert n.input[CONSTANT_INPUTS[n.op_type]] in inits, f"{n.name}: {n.op_type} input is computed"
    inferred = onnx.shape_inference.infer_shapes(m, strict_mode=True).graph
    values = list(inferred.value_info) + list(inferred.output)
    # no integer tensor is computed at all (every index and shape is an initializer), so no Cast of one
    assert not [v.name for v in values if v.type.tensor_type.elem_type == TensorProto.INT64]
    casts = [n for n in m.graph.node if n.op_type == "Cast"]
    assert not casts if precision == "fp32" else all(
        a.i in (TensorProto.FLOAT, TensorProto.FLOAT16) for n in casts for a in n.attribute)
    dynamic = [v.name for v in values if any(not d.HasField("dim_value") for d in v.type.tensor_type.shape.dim)]
    assert not dynamic, dynamic[:5]
    b, s = shape
    dims = lambda v: [d.dim_value for d in v.type.tensor_type.shape.dim]
    assert [dims(v) for v in m.graph.input] == [[b, s]]
    assert [dims(v) for v in m.graph.output] == [[b, s // 160, 64], [b, s // 160], [b, 1024]]


def test_metadata_is_the_exports_plus_the_shape(structure):
    path, _ = structure
    props = lambda p: {x.key: x.value for x in onnx.load(p).metadata_props}
    dynamic, fixed = props(path), props(_fixed(path, (3, 16000)))
    assert "kwmlp.fixed_shape" not in dynamic  # the export of any shape records what it always did
    assert fixed.pop("kwmlp.fixed_shape") == "3x16000"
    assert fixed == dynamic


# --- equal to the dynamic graph ----------------------------------------------------------

def _assert_equal_outputs(dynamic, fixed, audio):
    want = dynamic.run(None, {"audio": audio})
    got = fixed.run(None, {"audio": audio})
    for name, w, g in zip(("timestamp_embeddings", "timestamps", "scene_embeddings"), want, got):
        assert g.shape == w.shape and g.dtype == np.float32
        assert max_abs(g, w) <= FIXED_TOLERANCE, f"{name}: {max_abs(g, w)}"
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_equals_dynamic_graph_on_reference_audio(any_exported, case):
    path = any_exported(fixed_shapes=_reference_shapes())
    audio = load_case(case)["audio"]
    _assert_equal_outputs(_session(path), _session(_fixed(path, audio.shape)), audio)


@pytest.mark.parametrize("settings", [{"scene": "single"}, {"scene": "mean"}, {"depth": 4}], ids=str)
@pytest.mark.parametrize("case", ["tiny_100samples", "noise_1s", "noise_62p3s"])
def test_equals_dynamic_graph_other_settings(any_exported, settings, case):
    audio = load_case(case)["audio"]
    path = any_exported(fixed_shapes=(audio.shape,), **settings)
    _assert_equal_outputs(_session(path), _session(_fixed(path, audio.shape)), audio)


def test_equals_dynamic_graph_at_a_large_batch(fp32_export):
    path = fp32_export
    audio = np.random.default_rng(8).uniform(-0.5, 0.5, (8, 160000)).astype(np.float32)
    _assert_equal_outputs(_session(path), _session(_fixed(path, audio.shape)), audio)


@pytest.mark.parametrize("case", ["square_fullscale_1s", "noise_62p3s"])
def test_fp16_fixed_graph_close_to_fp32(any_exported, case):
    audio = load_case(case)["audio"]
    fp32 = _session(any_exported()).run(None, {"audio": audio})
    fp16 = _session(_fixed(any_exported(precision="fp16", fixed_shapes=(audio.shape,)), audio.shape))
    got = fp16.run(None, {"audio": audio})
    assert all(np.isfinite(g).all() and g.dtype == np.float32 for g in got)
    assert cosines(got[0], fp32[0]).min() >= COSINE and cosines(got[2], fp32[2]).min() >= COSINE


# --- names, the command line, the Embedder -----------------------------------------------

def test_names_and_listing(tmp_path):
    from kwmlp.artifact import fixed_shape_files, fixed_shape_of_name, fixed_shape_path, format_fixed_shape

    out = str(tmp_path / "kw.mlp.onnx")
    assert fixed_shape_path(out, 8, 160000) == str(tmp_path / "kw.mlp.8x160000.onnx")
    assert format_fixed_shape(1, 16000) == "1x16000" and fixed_shape_of_name("a/kw.1x16000.onnx") == (1, 16000)
    for name in ("kw.mlp.2x8000.onnx", "kw.mlp.1x16000.onnx", "kw.mlp.01x16000.onnx", "other.1x16000.onnx",
                 "kw.mlp.keywords.onnx", "kw.mlp.1x16000.engine", "kw.mlp.onnx"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "kw.mlp.3x16000.onnx").mkdir()
    assert fixed_shape_files(out) == [(str(tmp_path / "kw.mlp.1x16000.onnx"), (1, 16000)),
                                      (str(tmp_path / "kw.mlp.2x8000.onnx"), (2, 8000))]
    assert fixed_shape_of_name("kw.mlp.01x16000.onnx") is None and fixed_shape_of_name("kw.onnx") is None


@pytest.mark.parametrize("spec,match", [
    ("0x16000", "fixed shape 0x16000: the batch must be 1 to 4096, got 0"),
    ("1x", "a fixed shape is BATCHxSAMPLES, e.g. 1x16000 (one clip of one second); got '1x'"),
    ("1x16000x2", "got '1x16000x2'"),
    ("4097x16000", "the batch must be 1 to 4096"),
    ("1x0", "a clip must be 1 to 230400000 samples"),
    ("1x" + "9" * 5000, "a clip must be 1 to 230400000 samples"),
    ("1x-5", "a fixed shape is BATCHxSAMPLES"),
])
def test_bad_fixed_shapes_are_one_line(random_checkpoint, tmp_path, capsys, spec, match):
    from kwmlp.apps.cli import main

    assert main(["export", random_checkpoint, "-o", str(tmp_path / "m.onnx"), f"--fixed-shape={spec}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0] and "Traceback" not in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_fixed_shape_longer_than_max_seconds_is_refused(random_checkpoint, tmp_path, capsys):
    from kwmlp.apps.cli import main

    args = ["export", random_checkpoint, "-o", str(tmp_path / "m.onnx"), "--max-seconds", "10"]
    assert main(args + ["--fixed-shape", "1x160001"]) == 1
    assert "a clip must be 1 to 160000 samples (10 s: the export's --max-seconds" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_fixed_shape_name(random_checkpoint, tmp_path, capsys):
    from kwmlp.apps.cli import main

    assert main(["export", random_checkpoint, "-o", str(tmp_path / "m.1x16000.onnx")]) == 1
    assert "is named like a fixed-shape graph of another export (NAME.BxS.onnx)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bad_fixed_shape_metadata_is_one_line():
    from kwmlp.artifact import LAYOUT_EMBEDDINGS, ModelInfo
    from kwmlp.errors import KwmlpError

    props = {"kwmlp.layout": LAYOUT_EMBEDDINGS, "kwmlp.fixed_shape": "0x16000"}
    with pytest.raises(KwmlpError, match=r"m.onnx: its metadata kwmlp.fixed_shape = '0x16000' is not valid"):
        ModelInfo.from_props(props, "m.onnx")


def test_export_writes_and_info_lists_them(random_checkpoint, tmp_path, capsys):
    from kwmlp.apps.cli import main

    out = tmp_path / "m.onnx"
    args = ["export", random_checkpoint, "-o", str(out), "--fixed-shape", "2x8000", "--fixed-shape", "1x16000"]
    assert main(args) == 0
    names = ["m.onnx", "m.keywords.onnx", "m.2x8000.onnx", "m.1x16000.onnx"]
    assert capsys.readouterr().out.splitlines() == [f"wrote {tmp_path / n}" for n in names]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    assert main(["info", str(out), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["fixed_shapes"]
    assert listed == [{"model": str(tmp_path / "m.1x16000.onnx"), "shape": [1, 16000]},
                      {"model": str(tmp_path / "m.2x8000.onnx"), "shape": [2, 8000]}]
    assert main(["info", str(out)]) == 0
    assert f"fixed-shape graphs beside it:\n  {tmp_path / 'm.1x16000.onnx'}: audio [1, 16000]\n" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "m.1x16000.onnx"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["settings"]["fixed_shape"] == "1x16000" and d["inputs"][0]["shape"] == [1, 16000]
    assert d["fixed_shapes"] == []


def test_embedder_runs_its_shape_whole_and_refuses_others(fp32_export):
    from kwmlp.errors import KwmlpError
    from kwmlp.runtime import Embedder

    path = fp32_export
    audio = np.random.default_rng(3).uniform(-0.5, 0.5, (8, 160000)).astype(np.float32)
    # a dynamic export would run these 10 s clips in 1 s blocks and 2 rows a call; this one cannot
    fixed = Embedder(_fixed(path, audio.shape), backend="onnxruntime-cpu", block_seconds=1)
    want = Embedder(path, backend="onnxruntime-cpu").embed(audio)
    got = fixed.embed(audio)
    assert max_abs(got.timestamp_embeddings, want.timestamp_embeddings) <= FIXED_TOLERANCE
    assert max_abs(got.scene_embeddings, want.scene_embeddings) <= FIXED_TOLERANCE
    one = Embedder(_fixed(path, (1, 16000)), backend="onnxruntime-cpu")
    assert one.embed(audio[0, :16000]).scene_embeddings.shape == (1024,)  # (L,) is (1, L)
    with pytest.raises(KwmlpError, match=r"random.1x16000.onnx takes audio of shape \(1, 16000\) only; got \(2, 16000\)$"):
        one.embed(audio[:2, :16000])
    stream = one.stream()
    stream.feed(audio[0, :16000])
    with pytest.raises(KwmlpError, match=r"takes audio of shape \(1, 16000\) only"):
        stream.finish()
