"""The in-graph scene algorithms against PyTorch's, at lengths up to an hour of audio.

Exactness matters here: ONNX Runtime's own Resize is 4e-3 off on a 10-minute clip
(shared/reference/README.md, quirk 8); the graph's hand-written interpolation is not.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def _session(scene: str, halvings: int):
    import onnxruntime as ort
    from onnx import helper

    from kwmlp.export.builder import FLOAT, GraphBuilder, value_info
    from kwmlp.export.graph import OPSET, _scene

    # the scene subgraph of the embedding graph alone, at lengths whose audio would be slow to embed
    b = GraphBuilder()
    _scene(b, "full_embeddings", scene, halvings, "scene_embeddings")
    g = helper.make_graph(b.nodes, "kwmlp_scene", [value_info("full_embeddings", FLOAT, ["batch", "frames", 64])],
                          [value_info("scene_embeddings", FLOAT, ["batch", 1024])], b.initializers)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    m.ir_version = 8
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("scene", ["iterative", "single", "mean"])
@pytest.mark.parametrize("seconds", [1, 2, 12, 63, 600, 3600])
def test_scene_matches_pytorch(scene, seconds):
    from kwmlp.export.graph import halvings_for
    from kwmlp.models.hear import scene_iterative, scene_mean, scene_single

    t = 100 * seconds - 2
    full = np.random.default_rng(seconds).standard_normal((1, t, 64)).astype(np.float32)
    expected = {"iterative": scene_iterative, "single": scene_single, "mean": scene_mean}[scene](torch.from_numpy(full))
    got = _session(scene, halvings_for(3600)).run(None, {"full_embeddings": full})[0]
    # iterative/single: the same float32 arithmetic as PyTorch; mean: a matrix product instead of a loop
    tol = 1e-6 if scene != "mean" else 1e-5
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=tol)


def test_scene_beyond_unrolled_stages_is_nan_not_wrong():
    full = np.zeros((1, 100 * 63 - 2, 64), np.float32)  # needs 8 halvings
    got = _session("iterative", halvings=3).run(None, {"full_embeddings": full})[0]
    assert np.isnan(got).all()


@pytest.mark.parametrize("seconds,expected", [(1, 3), (62.3, 8), (600, 11), (3600, 14)])
def test_halvings_for(seconds, expected):
    from kwmlp.export.graph import halvings_for

    assert halvings_for(seconds) == expected
