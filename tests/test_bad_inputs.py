"""Bad input gets one clear sentence as a ValueError (KwmlpError), never a wrong answer."""

import os

import numpy as np
import pytest

from kwmlp.errors import KwmlpError


@pytest.fixture(scope="module")
def embedder(random_exported):
    from kwmlp.runtime import Embedder

    return Embedder(random_exported())


@pytest.mark.parametrize(
    "audio,match",
    [
        (np.zeros((2, 100), np.int16), "must be floating point, got dtype int16 \\(scale integer PCM"),
        (np.zeros((2, 100), np.complex64), "must be floating point"),
        (np.array([[0.1, np.nan, 0.2]], np.float32), "contains NaN or Inf \\(first at batch 0, sample 1\\)"),
        (np.array([0.1, np.inf], np.float32), "contains NaN or Inf"),
        (np.zeros((1, 2, 100), np.float32), "must have shape \\(samples,\\) or \\(batch, samples\\), got shape"),
        (np.float32(0.5), "must have shape"),
        (np.zeros((0, 16000), np.float32), "empty batch"),
        (np.zeros((2, 0), np.float32), "has no samples"),
        ("not audio", "must be floating point"),
    ],
)
def test_bad_audio(embedder, audio, match):
    with pytest.raises(ValueError, match=match):
        embedder.embed(audio)


def test_out_of_range_audio_is_accepted(embedder):
    r = embedder.embed(np.full((1, 16000), 3.0, np.float32))
    assert np.isfinite(r.scene_embeddings).all()


@pytest.mark.parametrize(
    "windows,match",
    [(np.zeros((2, 8000), np.float32), "one second \\(16000 samples"), (np.zeros((2, 16000), np.int32), "floating")],
)
def test_bad_windows(embedder, windows, match):
    with pytest.raises(KwmlpError, match=match):
        embedder.keyword_logits(windows)


def test_bad_clip_in_list(embedder):
    with pytest.raises(KwmlpError, match="clip 1 contains NaN"):
        embedder.embed([np.zeros(100, np.float32), np.array([np.nan], np.float32)])


def test_model_file_that_is_not_onnx(tmp_path):
    from kwmlp.runtime import Embedder

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(KwmlpError, match="could not be loaded as an ONNX model"):
        Embedder(str(bad))
    with pytest.raises(KwmlpError, match="does not exist"):
        Embedder(str(tmp_path / "missing.onnx"))


def test_onnx_without_kwmlp_metadata(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from kwmlp.runtime import Embedder

    g = helper.make_graph([helper.make_node("Identity", ["audio"], ["scene_embeddings"])], "g",
                          [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["b", "n"])],
                          [helper.make_tensor_value_info("scene_embeddings", TensorProto.FLOAT, ["b", "n"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "other.onnx"
    onnx.save(m, path)
    with pytest.raises(KwmlpError, match="is not a kwmlp-rt model \\(no kwmlp metadata\\)"):
        Embedder(str(path))


def test_onnx_with_another_layout(tmp_path, random_exported):
    onnx = pytest.importorskip("onnx")
    from kwmlp.runtime import Embedder

    m = onnx.load(random_exported())
    m.graph.output.pop()  # drop scene_embeddings: the metadata still says kwmlp, the graph does not
    path = tmp_path / "edited.onnx"
    onnx.save(m, path)
    with pytest.raises(KwmlpError, match="exported with another layout"):
        Embedder(str(path))


def test_keyword_model_given_as_embedding_model(random_exported):
    from kwmlp.artifact import keywords_path_for
    from kwmlp.runtime import Embedder

    with pytest.raises(KwmlpError, match="is the keyword model of an export"):
        Embedder(keywords_path_for(random_exported()))


def test_missing_keyword_model(tmp_path, random_exported):
    import shutil

    from kwmlp.runtime import Embedder

    path = tmp_path / "alone.onnx"
    shutil.copy(random_exported(), path)
    e = Embedder(str(path))
    with pytest.raises(KwmlpError, match="keyword model .* is missing"):
        e.keyword_logits(np.zeros((1, 16000), np.float32))


@pytest.mark.parametrize("kwargs,match", [({"backend": "magic"}, "backend must be one of"),
                                          ({"device": "tpu"}, "device must be one of")])
def test_bad_backend_or_device(random_exported, kwargs, match):
    from kwmlp.runtime import Embedder

    with pytest.raises(KwmlpError, match=match):
        Embedder(random_exported(), **kwargs)


def test_bad_block_seconds(random_exported):
    from kwmlp.runtime import Embedder

    with pytest.raises(KwmlpError, match="block_seconds must be at least 1"):
        Embedder(random_exported(), block_seconds=0)
