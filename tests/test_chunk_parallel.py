"""Small calls over the cores, whole chunks per thread (kwmlp.runtime.chunk_parallel): equal to the
embedding graph, really on several threads, and only where it applies."""

import threading

import numpy as np
import pytest

from conftest import REFERENCE_CASES, load_case, max_abs


@pytest.fixture(scope="module")
def pair(exported):
    from kwmlp.runtime import Embedder

    path = exported()
    return Embedder(path, backend="onnxruntime-cpu", threads=2), Embedder(path, backend="onnxruntime-cpu", threads=1)


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_chunks_over_cores_equal_the_graph(pair, case):
    parallel, graph = pair
    assert parallel._parallel is not None and graph._parallel is None
    audio = load_case(case)["audio"]
    a, b = parallel.embed(audio), graph.embed(audio)
    assert max_abs(a.timestamp_embeddings, b.timestamp_embeddings) <= 1e-5
    assert max_abs(a.scene_embeddings, b.scene_embeddings) <= 1e-5
    np.testing.assert_array_equal(a.timestamps, b.timestamps)


def test_keyword_windows_over_cores_equal_the_graph(pair):
    parallel, graph = pair
    w = np.random.default_rng(0).uniform(-0.5, 0.5, (5, 16000)).astype(np.float32)
    assert max_abs(parallel.keyword_logits(w), graph.keyword_logits(w)) <= 1e-5
    assert max_abs(parallel.chunk_embeddings(w), graph.chunk_embeddings(w)) <= 1e-5
    assert max_abs(parallel.keyword_logits(w[:1]), graph.keyword_logits(w[:1])) <= 1e-5


def test_a_one_second_clip_runs_its_two_chunks_on_two_threads(random_exported):
    from kwmlp.runtime import Embedder

    e = Embedder(random_exported(), backend="onnxruntime-cpu", threads=2)
    runner = e._parallel.keywords()
    seen, real = [], runner.run
    barrier = threading.Barrier(2, timeout=10)  # each chunk's call waits for the other: one thread would hang

    def run(feeds):
        seen.append((threading.current_thread().name, len(feeds["windows"])))
        barrier.wait()
        return real(feeds)

    runner.run = run
    e.embed(np.zeros(16000, np.float32))
    assert len(seen) == 2 and {n for _, n in seen} == {1} and len({name for name, _ in seen}) == 2


def test_where_it_does_not_apply(random_exported, tmp_path, caplog):
    import logging
    import os
    import shutil

    from kwmlp.artifact import read_model_info
    from kwmlp.runtime import Embedder

    path = random_exported()
    assert Embedder(path, backend="onnxruntime-cpu", threads=1)._parallel is None  # one thread
    assert Embedder(random_exported(depth=4), backend="onnxruntime-cpu", threads=2)._parallel is None
    (tmp_path / "alone").mkdir()  # an export without its keyword graph: the embedding graph alone
    shutil.copy(path, tmp_path / "alone" / "x.onnx")
    assert Embedder(str(tmp_path / "alone" / "x.onnx"), backend="onnxruntime-cpu", threads=2)._parallel is None
    # a keyword graph that does not load: announced once, then the embedding graph
    shutil.copy(path, tmp_path / "x.onnx")
    (tmp_path / read_model_info(path).keywords_model).write_bytes(b"not onnx")
    e = Embedder(str(tmp_path / "x.onnx"), backend="onnxruntime-cpu", threads=2)
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        r = e.embed(np.zeros(16000, np.float32))
    assert r.timestamp_embeddings.shape == (100, 64) and "embedding with the embedding graph alone" in caplog.text
    assert e._parallel is None and os.path.isfile(tmp_path / "x.onnx")


def test_results_in_half_precision(random_exported):
    from kwmlp.errors import KwmlpError
    from kwmlp.runtime import Embedder

    path = random_exported()
    full, half = Embedder(path, backend="onnxruntime-cpu"), Embedder(path, backend="onnxruntime-cpu", output_dtype="float16")
    # (embeddings in float16; 70 s below: longer than float16's largest ms count, 65504)
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 20000)).astype(np.float32)
    a, b = full.embed(x), half.embed(x)
    assert b.timestamp_embeddings.dtype == b.scene_embeddings.dtype == np.float16
    np.testing.assert_array_equal(b.scene_embeddings, a.scene_embeddings.astype(np.float16))
    # timestamps stay float32: float16 cannot count 10 ms steps past 2 s, nor ms past 65504
    long = half.embed(np.zeros(16000 * 70, np.float32))
    assert long.timestamps.dtype == np.float32 and long.timestamps[-1] == 70000.0
    assert [r.timestamp_embeddings.dtype for r in half.embed([x[0], x[1, :100]])] == [np.float16] * 2
    assert half.keyword_logits(x[:, :16000]).dtype == np.float16
    with pytest.raises(KwmlpError, match="output_dtype must be one of float32, float16, got 'int8'"):
        Embedder(path, backend="onnxruntime-cpu", output_dtype="int8")
