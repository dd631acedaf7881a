"""TensorRT engines on a GPU: build fp16 and fp32 engines with `kwmlp build`, then parity with the
original package, CUDA graphs equal to plain enqueue, two threads at once, clips longer than every
profile. Marked `gpu`; skipped with a reason where TensorRT, CUDA bindings or a GPU are absent."""

import threading

import numpy as np
import pytest

from conftest import REFERENCE_CASES, load_case, max_abs
from test_fp16 import COSINE, _keyword_windows, cosines

pytestmark = pytest.mark.gpu


def _gpu_or_skip():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install -e '.[gpu]')")
    from kwmlp.errors import KwmlpError
    from kwmlp import cuda

    try:
        cuda.load()
    except KwmlpError as e:
        pytest.skip(str(e))


# Two builds (four engines with the keyword ones) at optimization level 1, so that the GPU tests
# fit 8 minutes on one GPU (benchmarks/gpu_check.sh): fp16 with one profile that takes every
# reference case but the 62 s one whole, fp32 with one small profile that tests cross (longer clips
# go in blocks, larger batches in pieces). The default profiles (up to 600 s) are built by the
# benchmark in gpu_check.sh, at TensorRT's default level.
PROFILES = {
    "fp16": ["--max-batch", "16", "--max-seconds", "11", "--opt-batch", "4", "--opt-seconds", "2"],
    "fp32": ["--max-batch", "4", "--max-seconds", "3", "--opt-batch", "2", "--opt-seconds", "1"],
}


@pytest.fixture(scope="module")
def engines(request, tmp_path_factory):
    """``precision -> engine path``, built once each (see :data:`PROFILES`)."""
    _gpu_or_skip()
    exported = request.getfixturevalue("exported")
    from kwmlp.apps.cli import main

    built = {}

    def get(precision: str) -> str:
        if precision not in built:
            out = tmp_path_factory.mktemp(f"trt-{precision}") / "kwmlp.engine"
            args = ["build", exported(precision=precision), "-o", str(out), "--timing-cache-dir", str(out.parent),
                    "--optimization-level", "1", *PROFILES[precision]]
            assert main(args) == 0
            built[precision] = str(out)
        return built[precision]

    return get


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_engine_matches_hear(engines, precision, case):
    from kwmlp.runtime import Embedder

    e = Embedder(engines(precision), backend="tensorrt")
    assert e.backend == "tensorrt"
    z = load_case(case)
    r = e.embed(z["audio"])
    assert np.isfinite(r.timestamp_embeddings).all() and np.isfinite(r.scene_embeddings).all()
    np.testing.assert_array_equal(r.timestamps, z["timestamps"])
    if precision == "fp32":
        assert max_abs(r.timestamp_embeddings, z["timestamp_embeddings"]) <= 1e-3
        assert max_abs(r.scene_embeddings, z["scene_embeddings"]) <= 1e-3
    else:
        if r.timestamp_embeddings.size:
            assert cosines(r.timestamp_embeddings, z["timestamp_embeddings"]).min() >= COSINE
        assert cosines(r.scene_embeddings, z["scene_embeddings"]).min() >= COSINE


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_engine_keyword_logits(engines, exported, precision):
    from kwmlp.runtime import Embedder

    windows, _ = _keyword_windows()  # the 210 keyword clips
    got = Embedder(engines(precision), backend="tensorrt").keyword_logits(windows)
    want = Embedder(exported(precision=precision), backend="onnxruntime-cpu").keyword_logits(windows)
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99
    assert max_abs(got, want) <= (1e-3 if precision == "fp32" else 5e-2)


def test_cuda_graph_equals_plain(engines):
    from kwmlp.runtime import Embedder

    graphs = Embedder(engines("fp16"), backend="tensorrt", cuda_graph=True)
    audio = load_case("noise_2s_b16")["audio"]
    want = graphs.embed(audio)  # the first run at a shape is a plain enqueue (warm-up)
    for _ in range(3):  # then capture + launch, launch, launch: same engine, same context
        got = graphs.embed(audio)
        np.testing.assert_array_equal(got.timestamp_embeddings, want.timestamp_embeddings)
        np.testing.assert_array_equal(got.scene_embeddings, want.scene_embeddings)
    assert graphs._runner._worker().graphs, "no CUDA graph was captured"
    plain = Embedder(engines("fp16"), backend="tensorrt").embed(audio[:3, :20000])
    for _ in range(3):  # another shape: warm-up, then its own graph
        np.testing.assert_allclose(graphs.embed(audio[:3, :20000]).scene_embeddings, plain.scene_embeddings,
                                   rtol=0, atol=1e-6)


def test_two_threads_at_once(engines):
    from kwmlp.runtime import Embedder

    e = Embedder(engines("fp16"), backend="tensorrt")
    clips = [load_case("speech_front_center")["audio"], load_case("noise_3p74s_b8")["audio"]]
    want = [e.embed(c) for c in clips]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(5):
                results[i] = e.embed(clips[i])
        except Exception as ex:  # noqa: BLE001 - reported by the assertion below
            errors.append(ex)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(2):
        np.testing.assert_array_equal(results[i].scene_embeddings, want[i].scene_embeddings)


def test_clips_beyond_the_profiles(engines, exported):
    from kwmlp.runtime import Embedder

    small = Embedder(engines("fp32"), backend="tensorrt")
    ort = Embedder(exported(precision="fp32"), backend="onnxruntime-cpu")
    long = load_case("sweep_10s")["audio"]  # 10 s > the profile's 3 s: block by block
    batch = load_case("noise_2s_b16")["audio"]  # 16 clips > the profile's 4: in pieces
    for audio in (long, batch):
        got, want = small.embed(audio), ort.embed(audio)
        assert max_abs(got.timestamp_embeddings, want.timestamp_embeddings) <= 1e-3
        assert max_abs(got.scene_embeddings, want.scene_embeddings) <= 1e-3
        np.testing.assert_array_equal(got.timestamps, want.timestamps)


def test_auto_runs_the_engine_or_falls_back(engines, tmp_path, caplog):
    import json
    import logging
    import os
    import shutil

    from kwmlp.runtime import Embedder

    engine = engines("fp16")
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        e = Embedder(engine)
    assert e.backend == "tensorrt"
    assert any("on tensorrt" in r.getMessage() for r in caplog.records)
    # a sidecar for another TensorRT version: `auto` falls back to the ONNX, with a warning
    moved = tmp_path / "old.engine"
    shutil.copy(engine, moved)
    side = json.loads(open(engine + ".json").read())
    side["device"]["trt_version"] = "0.0.0"
    side["onnx_path"] = os.path.join(os.path.dirname(engine), side["onnx_path"])
    (tmp_path / "old.engine.json").write_text(json.dumps(side))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        fallback = Embedder(str(moved))
    assert fallback.backend != "tensorrt"
    assert any("built with TensorRT 0.0.0" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
