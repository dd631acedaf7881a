"""``kwmlp.apps.hear_api``: the HEAR 2021 common API on the runtime, against the reference vectors and the validator;
and ``kwmlp.hear``, the short name HEAR's tools are given."""

import subprocess
import sys
import types

import numpy as np
import pytest

from conftest import load_case, max_abs

torch = pytest.importorskip("torch")

from kwmlp.apps import hear_api as hear  # noqa: E402
from kwmlp.errors import KwmlpError  # noqa: E402


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KWMLP_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def pth_model(checkpoint, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("KWMLP_HOME", str(tmp_path_factory.mktemp("hear-cache")))
    yield hear.load_model(checkpoint)
    mp.undo()


@pytest.mark.parametrize("case", ["noise_1s", "speech_front_center", "noise_2s_b16", "tiny_100samples"])
def test_pth_equals_the_reference_vectors(pth_model, case):
    c = load_case(case)
    audio = torch.from_numpy(c["audio"])
    emb, ts = hear.get_timestamp_embeddings(audio, pth_model)
    scene = hear.get_scene_embeddings(audio, pth_model)
    for t in (emb, ts, scene):
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device == audio.device
    assert max_abs(emb.numpy(), c["timestamp_embeddings"]) <= 1e-3
    np.testing.assert_array_equal(ts.numpy(), c["timestamps"])
    assert max_abs(scene.numpy(), c["scene_embeddings"]) <= 1e-3


def test_onnx_and_float64_input(exported):
    c = load_case("noise_0p5s")
    model = hear.load_model(exported())
    assert (model.sample_rate, model.timestamp_embedding_size, model.scene_embedding_size) == (16000, 64, 1024)
    scene = hear.get_scene_embeddings(torch.from_numpy(c["audio"]).double(), model)
    assert scene.dtype == torch.float32 and max_abs(scene.numpy(), c["scene_embeddings"]) <= 1e-3


def test_pth_is_exported_once_into_the_cache(random_checkpoint, cache):
    from kwmlp.fileio import sha256_file

    hear.load_model(random_checkpoint)
    [entry] = cache.iterdir()
    assert entry.name == sha256_file(random_checkpoint)
    onnx = next(entry.glob("kwmlp-*.onnx"))
    before = onnx.stat().st_mtime_ns
    model = hear.load_model(random_checkpoint)
    assert onnx.stat().st_mtime_ns == before and model.embedder.model_path == str(onnx)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m: hear.load_model("/nonexistent.pth"), "model file /nonexistent.pth does not exist"),
        (lambda m: hear.get_scene_embeddings(torch.zeros(16000), m), r"shape \(n_sounds, n_samples\)"),
        (lambda m: hear.get_scene_embeddings(torch.zeros(1, 100, dtype=torch.int16), m), "floating point"),
    ],
)
def test_errors(random_exported, call, match):
    with pytest.raises(KwmlpError, match=match):
        call(hear.load_model(random_exported()))


@pytest.fixture
def validator(monkeypatch):
    """hearvalidator imports tensorflow at the top but only uses it for TensorFlow models: a stub
    module whose ``Module`` no torch model is an instance of stands in for it."""
    pytest.importorskip("hearvalidator", reason="install it with: pip install --no-deps hearvalidator==2021.0.2")
    tf = types.ModuleType("tensorflow")
    tf.Module = type("Module", (), {})
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    monkeypatch.delitem(sys.modules, "hearvalidator.validate", raising=False)
    from hearvalidator.validate import ValidateModel

    return ValidateModel


def test_the_short_name_is_the_api_and_imports_no_torch():
    code = ("import sys, kwmlp.hear as h; assert 'torch' not in sys.modules, 'torch imported'; "
            "assert {'load_model', 'get_timestamp_embeddings', 'get_scene_embeddings'} <= set(dir(h)); "
            "from kwmlp.apps import hear_api; "
            "assert (h.load_model, h.get_timestamp_embeddings, h.get_scene_embeddings) == "
            "(hear_api.load_model, hear_api.get_timestamp_embeddings, hear_api.get_scene_embeddings); "
            "from kwmlp.hear import get_scene_embeddings; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr
    with pytest.raises(AttributeError, match="module 'kwmlp.hear' has no attribute 'embed'"):
        import kwmlp.hear

        kwmlp.hear.embed  # noqa: B018


@pytest.mark.parametrize("module", ["kwmlp.hear", "kwmlp.apps.hear_api"])
@pytest.mark.parametrize("kind", ["pth", "onnx"])
def test_hear_validator(validator, checkpoint, exported, kind, module, capsys):
    path = checkpoint if kind == "pth" else exported()
    validator(module, path, device="cpu")()  # raises ModelError on any violation
    out = capsys.readouterr().out
    assert "Received embedding of shape: torch.Size([16, 200, 64])" in out
    assert "Received embedding of shape: torch.Size([8, 1024])" in out
