"""Properties of the exported graph itself: one graph, opset, operators, folding, metadata."""

import onnx
import pytest

# What the TensorRT 10.3 ONNX parser accepts among the ops we use (onnx-tensorrt docs/operators.md);
# Loop, If, DFT, STFT and Resize are left out on purpose (see shared/TENSORRT.md).
TRT_ALLOWED = {
    "Add", "And", "Cast", "Concat", "Conv", "Div", "Erf", "Expand", "Floor", "Gather", "GreaterOrEqual",
    "LayerNormalization", "Less", "Log", "MatMul", "Max", "Min", "Mul", "Pad", "Range", "ReduceMax",
    "ReduceMean", "Reshape", "Shape", "Slice", "Sub", "Transpose", "Unsqueeze", "Where",
}


@pytest.fixture(scope="module", params=[(s, p) for p in ("fp32", "fp16") for s in ("iterative", "single", "mean")],
                ids=lambda sp: "-".join(sp))
def models(request, random_exported):
    from kwmlp.artifact import keywords_path_for

    scene, precision = request.param
    path = random_exported(scene=scene, precision=precision)
    return onnx.load(path), onnx.load(keywords_path_for(path))


def test_opset_and_operators(models):
    for m in models:
        assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)]
        ops = {n.op_type for n in m.graph.node}
        assert ops <= TRT_ALLOWED, ops - TRT_ALLOWED
        for n in m.graph.node:
            if n.op_type in ("ReduceMax", "ReduceMean"):
                assert any(a.name == "axes" for a in n.attribute) and len(n.input) == 1
        # TensorRT has no FP64; FP16 only where the export asked for it
        types = {t.data_type for t in m.graph.initializer} | {
            a.i for n in m.graph.node for a in n.attribute if n.op_type == "Cast" and a.name == "to"}
        precision = {p.key: p.value for p in m.metadata_props}["kwmlp.precision"]
        allowed = {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64} | (
            {onnx.TensorProto.FLOAT16} if precision == "fp16" else set())
        assert types <= allowed, types - allowed


def test_constant_folded(models):
    for m in models:
        inits = {t.name for t in m.graph.initializer}
        foldable = [n.name for n in m.graph.node if n.input and all(i in inits for i in n.input)]
        assert not foldable


def test_metadata_and_check(models):
    emb, kw = models
    onnx.checker.check_model(emb, full_check=True)
    props = {p.key: p.value for p in emb.metadata_props}
    assert props["kwmlp.layout"] == "kwmlp-embeddings/1" and props["kwmlp.precision"] in ("fp32", "fp16")
    assert props["kwmlp.keywords_model"].endswith(".keywords.onnx")
    assert {p.key: p.value for p in kw.metadata_props}["kwmlp.layout"] == "kwmlp-keywords/1"
    dims = [d.dim_param or d.dim_value for d in emb.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "samples"]
