"""The fixes of a review of the GPU code (issue 13, section 4), driven by fakes on a CPU machine:
ONNX Runtime's TensorRT provider with profiles, built at open, splitting calls outside them;
nodes per provider; TensorRT's version without importing it; CUDA graphs on split batches; a
profile switch that raises."""

import logging
import sys

import numpy as np
import pytest

from conftest import max_abs
from kwmlp.errors import KwmlpError
from test_tensorrt_runner_fake import fake_engine  # noqa: F401  (the fixture)

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"


class _Subgraph:
    def __init__(self, ep, nodes):
        self.ep_name, self._nodes = ep, nodes

    def get_nodes(self):
        return [object()] * self._nodes


class FakeGpuSession:
    """A CPU session that says it runs on the TensorRT provider, and records the shapes it ran."""

    def __init__(self, real, providers, nodes, fail_build=False):
        self.real, self.providers, self.nodes, self.fail_build = real, providers, nodes, fail_build
        self.shapes = []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_providers(self):
        return self.providers

    def get_provider_graph_assignment_info(self):
        return [_Subgraph(ep, n) for ep, n in self.nodes.items()]

    def run(self, outputs, feeds):
        (x,) = feeds.values()
        self.shapes.append(x.shape)
        if self.fail_build:
            raise RuntimeError("TensorRT EP failed to create engine from network")
        return self.real.run(outputs, feeds)


@pytest.fixture
def gpu_session(monkeypatch):
    """``make(nodes, fail_build)`` -> the sessions OrtRunner will open, TensorRT first."""
    from kwmlp.runtime import onnxruntime_backend as ortb

    made, settings = [], {}
    real_open = ortb.open_onnx

    def fake_open(path, options, providers):
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        if names[0] == CPU:  # the CPU sessions are real
            return real_open(path, options, providers)
        assert options.get_session_config_entry("session.record_ep_graph_assignment_info") == "1"
        made.append((FakeGpuSession(real_open(path, options, [CPU]), names, settings["nodes"],
                                    settings.get("fail_build", False)), providers))
        return made[-1][0]

    monkeypatch.setattr(ortb, "open_onnx", fake_open)

    def make(nodes, fail_build=False):
        settings.update(nodes=nodes, fail_build=fail_build)
        return made

    return make


def _trt_providers(graph_input="audio"):
    from kwmlp.runtime.onnxruntime_backend import trt_profile_options

    return [(TRT, {"device_id": 0, **trt_profile_options(graph_input)}), (CUDA, {"device_id": 0}), CPU]


def test_trt_provider_profiles_are_kwmlp_builds():
    from kwmlp.runtime.onnxruntime_backend import trt_profile_options

    assert trt_profile_options("audio") == {
        "trt_profile_min_shapes": "audio:1x1,audio:1x1,audio:1x1",
        "trt_profile_opt_shapes": "audio:1x16000,audio:16x160000,audio:1x960000",
        "trt_profile_max_shapes": "audio:8x32000,audio:64x160000,audio:1x9600000",
    }
    assert trt_profile_options("windows")["trt_profile_max_shapes"] == "windows:256x16000"


def test_trt_provider_builds_at_open_and_splits_calls_outside_its_profiles(random_exported, gpu_session, caplog):
    from kwmlp.runtime.onnxruntime_backend import OrtRunner

    made = gpu_session({TRT: 600, CPU: 3})
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        runner = OrtRunner(random_exported(), providers=_trt_providers())
    session = made[-1][0]
    assert runner.backend == "onnxruntime-trt" and not runner.cache_sized_calls
    assert session.shapes == [(1, 16000)]  # the engine was built here, not in the first run()
    assert runner.max_samples == 600 * 16000
    assert "nodes per provider: TensorrtExecutionProvider 600, CPUExecutionProvider 3" in caplog.text
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (70, 16000)).astype(np.float32)
    got = runner.run({"audio": x})
    assert session.shapes[1:] == [(64, 16000), (6, 16000)]  # 70 rows: more than any profile takes
    want = OrtRunner(random_exported()).run({"audio": x})
    assert max_abs(got["scene_embeddings"], want["scene_embeddings"]) <= 1e-5
    with pytest.raises(KwmlpError, match="no optimization profile takes inputs of 9600001 samples"):
        runner.run({"audio": np.zeros((1, 9600001), np.float32)})


def test_gpu_provider_that_took_no_nodes_is_not_announced(random_exported, gpu_session, caplog):
    from kwmlp.runtime.onnxruntime_backend import OrtRunner

    gpu_session({TRT: 0, CUDA: 500, CPU: 3})
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        runner = OrtRunner(random_exported(), providers=_trt_providers())
    assert runner.backend == "onnxruntime-cuda" and runner.profiles == ()
    assert "TensorrtExecutionProvider took none of the model's nodes; it runs on CUDAExecutionProvider" in caplog.text


def test_failed_build_is_a_fallback_not_an_error_in_run(random_exported, gpu_session, monkeypatch, caplog):
    from kwmlp.runtime import Embedder, loader
    from kwmlp.runtime import onnxruntime_backend as ortb

    gpu_session({TRT: 600}, fail_build=True)
    with pytest.raises(KwmlpError, match="ONNX Runtime's TensorRT provider could not build .* "
                                         r"\(TensorRT EP failed to create engine from network\)"):
        ortb.OrtRunner(random_exported(), providers=_trt_providers())
    # auto: the failure is one reason in the announcement, and the next step runs
    monkeypatch.setattr(ortb, "available_providers", lambda: [TRT, CPU])
    monkeypatch.setattr(loader, "module_installed", lambda name: True)
    monkeypatch.setattr(ortb, "providers_for", lambda backend, graph_input="audio":
                        _trt_providers(graph_input) if backend == "onnxruntime-trt" else [CPU])
    monkeypatch.setattr(loader, "cpu_choice", lambda live=False: ("onnxruntime-cpu", "test"))
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        e = Embedder(random_exported())
    assert e.backend == "onnxruntime-cpu"
    assert "TensorrtExecutionProvider: ONNX Runtime's TensorRT provider could not build" in caplog.text


def test_trt_cache_dir_needs_no_tensorrt_import(monkeypatch, tmp_path):
    from kwmlp import trt
    from kwmlp.runtime.onnxruntime_backend import trt_cache_dir

    monkeypatch.delenv("KWMLP_HOME")  # set by conftest; it would come before XDG_CACHE_HOME
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # importing it would fail
    monkeypatch.setattr(trt, "dist_version", lambda dist: "10.16.0" if dist == "tensorrt-cu13" else None)
    assert trt_cache_dir() == str(tmp_path / "kwmlp" / "tensorrt" / "ort-trt10.16.0")
    monkeypatch.setattr(trt, "dist_version", lambda dist: None)
    monkeypatch.setattr(trt, "module_installed", lambda name: False)
    with pytest.raises(KwmlpError, match="TensorrtExecutionProvider needs TensorRT, which is not installed"):
        trt_cache_dir()


def test_cuda_graph_replays_on_a_split_batch(fake_engine):  # noqa: F811
    from kwmlp.runtime import Embedder

    engine, onnx_path, cuda = fake_engine  # one profile of at most 2 clips of 3 s
    graphs = Embedder(engine, backend="tensorrt", cuda_graph=True)
    plain = Embedder(onnx_path, backend="onnxruntime-cpu")
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (5, 20000)).astype(np.float32)  # pieces 2, 2, 1 (padded to 2)
    for _ in range(3):
        got = graphs.embed(x)
    # pieces alternate between two lanes (streams), each its own context: per lane a plain run,
    # a capture (and its launch), then replays; 9 pieces: 2 plain, 2 captures, 5 replays
    assert cuda.captures == 2 and cuda.launches == 7
    assert graphs.graph_report().replays == 5
    want = plain.embed(x)
    assert max_abs(got.timestamp_embeddings, want.timestamp_embeddings) <= 1e-5
    assert max_abs(got.scene_embeddings, want.scene_embeddings) <= 1e-5


def test_profile_switch_that_raises_is_one_sentence(fake_engine, monkeypatch):  # noqa: F811
    from kwmlp.runtime.tensorrt_backend import TrtRunner

    engine, _, _ = fake_engine
    runner = TrtRunner(engine)
    w = runner._worker()

    def raises(k, handle):
        raise RuntimeError("profile index out of range")

    monkeypatch.setattr(w.context, "set_optimization_profile_async", raises)
    with pytest.raises(KwmlpError, match=r"could not switch to optimization profile 1 \(profile index out of range\)"):
        w.run(np.zeros((1, 16000), np.float32), profile=1)
