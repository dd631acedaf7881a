"""The OpenVINO backend: the same export, fp32 unless bf16 is asked for, against the reference
vectors (<= 1e-3) and against ONNX Runtime; threads honoured, one infer request per thread."""

import logging
import threading

import numpy as np
import pytest

from conftest import REFERENCE_CASES, load_case, max_abs
from kwmlp.errors import KwmlpError

try:
    import openvino  # noqa: F401
except ImportError:
    openvino = None
needs_openvino = pytest.mark.skipif(openvino is None, reason="openvino is not installed (pip install -e '.[openvino]')")
TOL = 1e-3


@pytest.fixture(scope="module")
def ov_embedder(exported):
    from kwmlp.runtime import Embedder

    return Embedder(exported(), backend="openvino")


@pytest.fixture(scope="module")
def ort_embedder(exported):
    from kwmlp.runtime import Embedder

    return Embedder(exported(), backend="onnxruntime-cpu")


def _padded_chunks(audio: np.ndarray) -> np.ndarray:
    from kwmlp.runtime.inputs import as_windows

    from test_onnx_parity import _padded_chunks as padded

    return as_windows(padded(audio))


@needs_openvino
@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_openvino_matches_reference(ov_embedder, case):
    z = load_case(case)
    r = ov_embedder.embed(z["audio"])
    assert ov_embedder.backend == "openvino"
    assert max_abs(r.timestamp_embeddings, z["timestamp_embeddings"]) <= TOL
    assert np.array_equal(r.timestamps, z["timestamps"])
    assert max_abs(r.scene_embeddings, z["scene_embeddings"]) <= TOL
    assert max_abs(ov_embedder.keyword_logits(_padded_chunks(z["audio"])), z["chunk_logits"]) <= TOL


@needs_openvino
@pytest.mark.parametrize("case", ["speech_front_center", "noise_3p74s_b8"])
def test_openvino_matches_onnxruntime(ov_embedder, ort_embedder, case):
    z = load_case(case)
    a, b = ov_embedder.embed(z["audio"]), ort_embedder.embed(z["audio"])
    assert max_abs(a.timestamp_embeddings, b.timestamp_embeddings) <= TOL
    assert max_abs(a.scene_embeddings, b.scene_embeddings) <= TOL
    w = _padded_chunks(z["audio"])
    assert max_abs(ov_embedder.keyword_logits(w), ort_embedder.keyword_logits(w)) <= TOL


@needs_openvino
def test_precision_hint_is_explicit_and_bf16_only_when_asked(exported, caplog):
    """OpenVINO's CPU default is bf16 on AVX512-BF16/AMX CPUs: f32 must be set, bf16 chosen by name
    (and where the CPU has no bf16, OpenVINO's f32 is announced)."""
    from kwmlp.runtime.openvino_backend import OvRunner, supports

    import openvino

    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 32000)).astype(np.float32)
    f32 = OvRunner(exported())
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        bf16 = OvRunner(exported(), precision="bf16")
    assert f32.compiled_property("INFERENCE_PRECISION_HINT") in ("f32", "<Type: 'float32'>")
    if "BF16" in supports(openvino.Core(), "CPU"):
        assert bf16.compiled_property("INFERENCE_PRECISION_HINT") in ("bf16", "<Type: 'bfloat16'>")
        assert "runs f32" not in caplog.text
    else:  # no AVX512-BF16 or AMX: OpenVINO keeps f32, and the runner says so
        assert bf16.compiled_property("INFERENCE_PRECISION_HINT") in ("f32", "<Type: 'float32'>")
        assert "bf16 was asked for, but OpenVINO's CPU has no bf16 here" in caplog.text
    ref = f32.run({"audio": x})["timestamp_embeddings"]
    assert max_abs(bf16.run({"audio": x})["timestamp_embeddings"], ref) < 0.5  # measured 0.14 (README)
    with pytest.raises(KwmlpError, match="precision must be one of fp32, bf16"):
        OvRunner(exported(), precision="fp16")


@needs_openvino
def test_threads_are_honoured_and_requests_are_per_thread(exported):
    from kwmlp.runtime.openvino_backend import OvRunner

    runner = OvRunner(exported(), threads=1)
    assert runner.compiled_property("INFERENCE_NUM_THREADS") == "1"
    xs = [np.random.default_rng(i).uniform(-0.5, 0.5, (1, 16000 * (i + 1))).astype(np.float32) for i in range(4)]
    want = [runner.run({"audio": x})["scene_embeddings"] for x in xs]
    got: dict[int, list] = {}

    def work(i):  # different shapes at once: a shared request would mix them up
        got[i] = [runner.run({"audio": xs[i]})["scene_embeddings"] for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert all(np.array_equal(g, want[i]) for g in got[i])


@needs_openvino
def test_openvino_refuses_cuda_and_unknown_devices(exported):
    from kwmlp.runtime import Embedder
    from kwmlp.runtime.openvino_backend import OvRunner

    with pytest.raises(KwmlpError, match="runs on the CPU, not with device='cuda'"):
        Embedder(exported(), backend="openvino", device="cuda")
    with pytest.raises(KwmlpError, match="OpenVINO has no device 'TPU' here"):
        OvRunner(exported(), device="TPU")


def test_missing_openvino_names_the_extra(monkeypatch, random_exported):
    import sys

    from kwmlp.runtime import Embedder

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(KwmlpError, match=r"needs openvino, which is not installed; install it with: pip install -e '\.\[openvino\]'"):
        Embedder(random_exported(), backend="openvino")


@pytest.mark.parametrize("machine,installed", [("x86_64", True), ("x86_64", False), ("aarch64", True)])
def test_auto_runs_onnxruntime_on_a_cpu_and_openvino_by_name(monkeypatch, random_exported, machine, installed):
    # measured: ONNX Runtime with whole chunks over the cores is as fast as OpenVINO on a quiet CPU
    # and faster on a busy one (README: Performance); OpenVINO runs when named
    import platform

    from kwmlp.runtime import Embedder, loader

    real = loader.module_installed
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(loader, "module_installed", lambda name: installed if name == "openvino" else real(name))
    backend, why = loader.cpu_choice()
    assert backend == "onnxruntime-cpu" and "chunks over the cores" in why
    assert loader.cpu_choice(live=True)[0] == "onnxruntime-cpu" and "one window at a time" in loader.cpu_choice(True)[1]
    assert Embedder(random_exported()).backend == "onnxruntime-cpu"


@needs_openvino
def test_openvino_by_name(random_exported):
    from kwmlp.runtime import Embedder

    assert Embedder(random_exported(), backend="openvino").backend == "openvino"


def test_explain_auto_says_what_would_run_without_opening_it(monkeypatch, random_exported):
    from kwmlp.runtime import loader

    monkeypatch.setattr(loader.ortb, "OrtRunner", lambda *a, **k: pytest.fail("a session was opened"))
    monkeypatch.setattr(loader, "cpu_choice", lambda live=False: ("onnxruntime-cpu", "because (test)"))
    choice = loader.explain_auto(random_exported())
    assert choice.backend == "onnxruntime-cpu" and choice.reasons[-1] == "because (test)"
    monkeypatch.setattr(loader.ortb, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    choice = loader.explain_auto(random_exported(), device="cuda")
    assert choice.backend == "onnxruntime-cuda" and "TensorrtExecutionProvider is not in this onnxruntime" in choice.reasons


@needs_openvino
def test_openvino_blocks_equal_whole(random_exported):
    from kwmlp.runtime import Embedder

    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 47000)).astype(np.float32)
    whole = Embedder(random_exported(), backend="openvino").embed(audio)
    blocked = Embedder(random_exported(), backend="openvino", block_seconds=1).embed(audio)
    assert max_abs(blocked.timestamp_embeddings, whole.timestamp_embeddings) <= 1e-4  # measured 3e-5
    assert max_abs(blocked.scene_embeddings, whole.scene_embeddings) <= 1e-4


@needs_openvino
def test_openvino_single_scene_error_is_bounded(exported):
    """OpenVINO's Resize on the single scene (one interpolation from every frame straight to 16):
    measured 1.9e-3 on 62.3 s of noise, off the 1e-3 bar (README: OpenVINO)."""
    from kwmlp.runtime import Embedder

    z = load_case("noise_62p3s")
    r = Embedder(exported(scene="single"), backend="openvino").embed(z["audio"])
    assert max_abs(r.timestamp_embeddings, z["timestamp_embeddings"]) <= TOL
    assert max_abs(r.scene_embeddings, z["scene_single"]) <= 5e-3
