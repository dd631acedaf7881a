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


@pytest.fixture(scope="module", params=["iterative", "single", "mean"])
def models(request, random_exported):
    from kwmlp.export import keywords_path_for

    path = random_exported(scene=request.param)
    return onnx.load(path), onnx.load(keywords_path_for(path))


def test_opset_and_operators(models):
    for m in models:
        assert [(o.domain, o.version) for o in m.opset_import] == [("", 17)]
        ops = {n.op_type for n in m.graph.node}
        assert ops <= TRT_ALLOWED, ops - TRT_ALLOWED
        for n in m.graph.node:
            if n.op_type in ("ReduceMax", "ReduceMean"):
                assert any(a.name == "axes" for a in n.attribute) and len(n.input) == 1


def test_constant_folded(models):
    for m in models:
        inits = {t.name for t in m.graph.initializer}
        foldable = [n.name for n in m.graph.node if n.input and all(i in inits for i in n.input)]
        assert not foldable


def test_metadata_and_check(models):
    emb, kw = models
    onnx.checker.check_model(emb, full_check=True)
    props = {p.key: p.value for p in emb.metadata_props}
    assert props["kwmlp.layout"] == "kwmlp-embeddings/1" and props["kwmlp.precision"] == "fp32"
    assert props["kwmlp.keywords_model"].endswith(".keywords.onnx")
    assert {p.key: p.value for p in kw.metadata_props}["kwmlp.layout"] == "kwmlp-keywords/1"
    dims = [d.dim_param or d.dim_value for d in emb.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "samples"]
