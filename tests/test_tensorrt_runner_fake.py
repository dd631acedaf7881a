"""The TensorRT runner's own logic (profile choice, buffers sized from the context, pieces and
blocks, CUDA-graph bookkeeping, a worker per thread), run on the CPU against a fake of the
TensorRT 10 runtime API whose "engine" executes the ONNX graph with ONNX Runtime, and a fake CUDA
API over host memory. What TensorRT itself computes is for the `gpu` tests; this checks that the
runner moves the right bytes in and out for every path."""

import contextlib
import ctypes
import threading
import types

import numpy as np
import pytest

from conftest import max_abs

ORT_FLOAT = np.float32


class FakeCuda:
    name, supports_graphs = "fake", True

    def __init__(self):
        self.mem, self.launches, self.captures = {}, 0, 0

    def context(self):
        return contextlib.nullcontext()

    def device(self):
        return "Fake GPU", "8.7", "12.6"

    def memory(self):
        return 6 * 2**30, 8 * 2**30

    def driver_version(self):
        return "12.6"

    def stream(self):
        return object()

    def handle(self, stream):
        return id(stream)

    def malloc(self, nbytes):
        a = np.zeros(nbytes, np.uint8)
        self.mem[a.ctypes.data] = a
        return a.ctypes.data

    def free(self, ptr):
        del self.mem[ptr]

    def pinned(self, nbytes, dtype):
        ptr = self.malloc(nbytes)
        return self.mem[ptr].view(dtype), ptr

    free_pinned = free

    def h2d(self, dst, src, nbytes, stream):
        ctypes.memmove(dst, src, nbytes)

    d2h = d2d = h2d

    def d2h_sync(self, dst, src, nbytes):
        ctypes.memmove(dst, src, nbytes)

    def sync(self, stream):
        pass

    def capture(self, stream, enqueue):
        """A graph replays what was captured: the shapes and addresses of that moment, and it works
        only while the context's layer resources still follow the captured shape (TensorRT#3798)."""
        self.captures += 1
        ctx = enqueue.__self__.context
        frozen = types.SimpleNamespace(e=ctx.e, shape=ctx.shape, addr=dict(ctx.addr), last_run=None)
        return lambda: ctx.replay(frozen)

    def launch(self, graph, stream):
        self.launches += 1
        graph()

    def destroy_graph(self, graph):
        pass

    def destroy_stream(self, stream):
        pass


def fake_tensorrt(profiles):
    import onnxruntime as ort

    class Context:
        def __init__(self, engine):
            self.e, self.shape, self.addr, self.profile = engine, None, {}, 0

        def set_optimization_profile_async(self, k, handle):
            self.profile, self.shape = k, None
            return True

        def set_input_shape(self, name, shape):
            ok = profiles[self.profile].fits(tuple(shape))
            self.shape = tuple(shape) if ok else None
            return ok

        def infer_shapes(self):
            return [] if self.shape else [self.e.input]

        def get_tensor_shape(self, name):
            if name == self.e.input:
                return self.shape
            zeros = np.zeros(self.shape, ORT_FLOAT)
            return self.e.session.run([name], {self.e.input: zeros})[0].shape

        def set_tensor_address(self, name, ptr):
            if not ptr:  # TensorRT needs a non-null address, empty tensors included
                return False
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, handle):
            Context._run(self, self)
            self.last_run = self.shape  # the layer resources now follow this shape
            return True

        def replay(self, graph):
            if getattr(self, "last_run", None) != graph.shape:  # resources of another shape: garbage out
                for name in self.e.outputs:
                    shape = self.get_tensor_shape(name) if self.shape == graph.shape else ()
                    ctypes.memset(graph.addr[name], 0xFF, 4 * int(np.prod(shape)))  # NaNs
                return
            Context._run(graph, self)

        @staticmethod
        def _run(state, ctx):
            """Run the engine on ``state``'s input shape and addresses (the live context's, or a graph's)."""
            n = int(np.prod(state.shape))
            x = np.frombuffer((ctypes.c_float * n).from_address(state.addr[state.e.input]), np.float32)
            feeds = {state.e.input: x.reshape(state.shape).copy()}
            for name, y in zip(state.e.outputs, state.e.session.run(state.e.outputs, feeds)):
                y = np.ascontiguousarray(y, np.float32)
                ctypes.memmove(state.addr[name], y.ctypes.data, y.nbytes)

    class Engine:
        def __init__(self, onnx_path):
            self.session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
            self.input = self.session.get_inputs()[0].name
            self.outputs = [o.name for o in self.session.get_outputs()]
            self.names = [self.input] + self.outputs
            self.num_io_tensors = len(self.names)
            self.num_optimization_profiles = len(profiles)

        def get_tensor_name(self, i):
            return self.names[i]

        def get_tensor_profile_shape(self, name, k):
            assert name == self.input and 0 <= k < len(profiles)  # TensorRT raises for other tensors and indices
            return [list(profiles[k].min), list(profiles[k].opt), list(profiles[k].max)]  # min, opt, max

        def get_tensor_mode(self, name):
            return "in" if name == self.input else "out"

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return Engine(plan.decode())  # the fake plan is the ONNX's path

    return types.SimpleNamespace(
        __version__="10.3.0", Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Runtime=Runtime, TensorIOMode=types.SimpleNamespace(INPUT="in"), nptype=lambda t: np.float32,
    )


@pytest.fixture
def fake_engine(random_exported, tmp_path, monkeypatch):
    """``kwmlp.engine`` + ``kwmlp.keywords.engine`` with one small profile (2 clips of 3 s, 4 windows)."""
    from kwmlp.artifact import keywords_path_for
    from kwmlp import cuda as cuda_api
    from kwmlp.artifact.sidecar import Device, EngineInfo, Profile, write_sidecar
    from kwmlp.artifact.metadata import ModelInfo
    from kwmlp.runtime.onnxruntime_backend import OrtRunner

    onnx_path = random_exported()
    audio = (Profile("small", (1, 1), (1, 16000), (2, 48000)),)
    windows = (Profile("windows", (1, 16000), (2, 16000), (4, 16000)),)
    trt = {"audio": fake_tensorrt(audio), "windows": fake_tensorrt(windows)}
    device = Device("Fake GPU", "8.7", "10.3.0", "12.6")
    for name, src, profiles in (("kwmlp.keywords.engine", keywords_path_for(onnx_path), windows),
                                ("kwmlp.engine", onnx_path, audio)):
        (tmp_path / name).write_bytes(src.encode())
        export = ModelInfo.from_props(OrtRunner(src).metadata, src).summary()
        write_sidecar(str(tmp_path / name), EngineInfo(device, profiles[0].name, profiles, "fp32", "strongly-typed",
                                                       src, "0" * 64, export, "kwmlp.keywords.engine"))
    cuda = FakeCuda()
    monkeypatch.setattr(cuda_api, "load", lambda: cuda)
    # one fake module, dispatching on what the plan holds: embedding or keyword graph
    import sys

    def runtime(logger):
        class R:
            def deserialize_cuda_engine(self, plan):
                kind = "windows" if plan.decode().endswith(".keywords.onnx") else "audio"
                return trt[kind].Runtime(logger).deserialize_cuda_engine(plan)
        return R()

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(**{**vars(trt["audio"]), "Runtime": runtime}))
    return str(tmp_path / "kwmlp.engine"), onnx_path, cuda


def test_runner_equals_onnxruntime_on_every_path(fake_engine):
    from kwmlp.runtime import Embedder

    engine, onnx_path, cuda = fake_engine
    e = Embedder(engine, backend="tensorrt", cuda_graph=False)
    ort = Embedder(onnx_path, backend="onnxruntime-cpu")
    assert e.backend == "tensorrt" and e.info == ort.info
    rng = np.random.default_rng(0)
    for shape in [(1, 100), (2, 40000), (5, 20000), (1, 16000 * 7 + 5)]:  # fits; fits; 5 > 2 clips; 7 s > 3 s
        audio = rng.uniform(-0.5, 0.5, shape).astype(np.float32)
        got, want = e.embed(audio), ort.embed(audio)
        assert max_abs(got.timestamp_embeddings, want.timestamp_embeddings) <= 1e-5
        assert max_abs(got.scene_embeddings, want.scene_embeddings) <= 1e-5
        np.testing.assert_array_equal(got.timestamps, want.timestamps)
    windows = rng.uniform(-0.5, 0.5, (9, 16000)).astype(np.float32)  # 9 > 4 windows: in pieces
    assert max_abs(e.keyword_logits(windows), ort.keyword_logits(windows)) <= 1e-5


def test_cuda_graphs_are_captured_once_per_shape(fake_engine):
    from kwmlp.runtime import Embedder

    engine, _, cuda = fake_engine
    plain = Embedder(engine, backend="tensorrt", cuda_graph=False)
    graphs = Embedder(engine, backend="tensorrt", cuda_graph=True)
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 30000)).astype(np.float32)
    want = plain.embed(audio)
    for _ in range(4):  # plain warm-up, capture + launch, launch, launch
        np.testing.assert_array_equal(graphs.embed(audio).scene_embeddings, want.scene_embeddings)
    assert (cuda.captures, cuda.launches) == (1, 3)
    graphs.embed(audio[:1])  # a new shape: warm-up again, no capture yet
    assert (cuda.captures, cuda.launches) == (1, 3)


def test_graphs_of_two_shapes_coexist(fake_engine):
    # each shape has its own engine and context (TensorRT#3798, #1590): alternating shapes keep
    # replaying their own graphs, and replaying A's graph after B ran never reads B's resources
    from kwmlp.runtime import Embedder

    engine, _, cuda = fake_engine
    plain = Embedder(engine, backend="tensorrt", cuda_graph=False)
    graphs = Embedder(engine, backend="tensorrt", cuda_graph=True)
    rng = np.random.default_rng(2)
    a, b = rng.uniform(-0.5, 0.5, (2, 30000)).astype(np.float32), rng.uniform(-0.5, 0.5, (1, 40000)).astype(np.float32)
    for x in (a, a, b, b, a, a, b):
        np.testing.assert_array_equal(graphs.embed(x).scene_embeddings, plain.embed(x).scene_embeddings)
    # a: plain, capture + launch; b: plain, capture + launch; then a, a, b replay
    assert (cuda.captures, cuda.launches) == (2, 5)
    report = graphs.graph_report()
    assert (report.captured, report.replays, report.refused) == (2, 3, {})


def test_the_fake_shows_a_stale_replay(fake_engine, monkeypatch):
    # guards the fake itself: a runner whose shapes shared one context (TensorRT#3798) would replay
    # shape A's graph on the resources of shape B's last run; the fake must give garbage then
    from kwmlp.runtime import Embedder, tensorrt_backend

    engine, _, _ = fake_engine
    shared = {}
    real = tensorrt_backend.TrtShapeExecutor.__init__

    def one_context(self, trt, cuda, engine, profile, shape, stream):
        real(self, trt, cuda, engine, profile, shape, stream)
        self.context = shared.setdefault("context", self.context)
        self.context.set_input_shape(self.context.e.input, shape)

    monkeypatch.setattr(tensorrt_backend.TrtShapeExecutor, "__init__", one_context)
    graphs = Embedder(engine, backend="tensorrt", cuda_graph=True)
    rng = np.random.default_rng(2)
    a, b = rng.uniform(-0.5, 0.5, (2, 30000)).astype(np.float32), rng.uniform(-0.5, 0.5, (1, 40000)).astype(np.float32)
    for x in (a, a, b, b):
        graphs.embed(x)
    assert np.isnan(graphs.embed(a).scene_embeddings).any()  # A's graph replayed on B's resources


def test_empty_outputs_get_real_addresses(fake_engine):
    from kwmlp.runtime import Embedder

    engine, _, _ = fake_engine
    r = Embedder(engine, backend="tensorrt", cuda_graph=False).embed(np.zeros((2, 100), np.float32))  # 0 timestamps
    assert r.timestamp_embeddings.shape == (2, 0, 64) and r.scene_embeddings.shape == (2, 1024)


def test_a_worker_per_thread(fake_engine):
    from kwmlp.runtime import Embedder

    engine, _, _ = fake_engine
    e = Embedder(engine, backend="tensorrt", cuda_graph=False)
    audio = [np.random.default_rng(i).uniform(-0.5, 0.5, (2, 20000 + 9000 * i)).astype(np.float32) for i in range(2)]
    want = [e.embed(a).scene_embeddings for a in audio]
    got, errors = {}, []

    def work(i):
        try:
            for _ in range(3):
                got[i] = e.embed(audio[i]).scene_embeddings
        except Exception as ex:  # noqa: BLE001 - reported below
            errors.append(ex)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and all(np.array_equal(got[i], want[i]) for i in range(2))
    assert len(e._runner._workers) == 3  # the main thread's and one per thread


@pytest.mark.parametrize("providers", [
    ["CPUExecutionProvider"],
    # a GPU machine's onnxruntime-gpu: the fallback then looks for TensorRT (here the stand-in module
    # without a __spec__, on which importlib.util.find_spec raises) before trying the provider
    ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
], ids=["cpu", "gpu"])
def test_engine_for_another_gpu_falls_back(fake_engine, caplog, monkeypatch, providers):
    import logging

    from kwmlp.runtime import Embedder
    from kwmlp.runtime import onnxruntime_backend as ortb
    from kwmlp.runtime.tensorrt_backend import EngineMismatch

    engine, onnx_path, cuda = fake_engine
    monkeypatch.setattr(ortb, "available_providers", lambda: providers)
    monkeypatch.setattr(cuda, "device", lambda: ("NVIDIA H100", "9.0", "12.6"))
    with pytest.raises(EngineMismatch, match=r"cannot run here: it was built for Fake GPU \(compute capability 8.7\)"):
        Embedder(engine, backend="tensorrt", cuda_graph=False)
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        e = Embedder(engine)
    assert e.backend != "tensorrt"  # whichever ONNX backend this machine starts: the export behind the engine
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.endswith(f"falling back to {onnx_path}") for w in warnings), warnings


def test_an_engine_without_sidecar_runs_on_the_profiles_it_holds(fake_engine, caplog, monkeypatch, capsys):
    """As trtexec or Polygraphy leave engines: no .engine.json, the export they were built from beside them."""
    import logging
    import os
    import shutil

    from kwmlp.artifact import keywords_path_for
    from kwmlp.artifact.sidecar import Profile
    from kwmlp.runtime import Embedder

    engine, onnx_path, cuda = fake_engine
    folder = os.path.dirname(engine)
    for name in ("kwmlp.engine", "kwmlp.keywords.engine"):
        os.remove(os.path.join(folder, name + ".json"))
    shutil.copy(onnx_path, os.path.join(folder, "kwmlp.onnx"))
    shutil.copy(keywords_path_for(onnx_path), os.path.join(folder, "kwmlp.keywords.onnx"))
    monkeypatch.setattr(cuda, "device", lambda: ("NVIDIA H100", "9.0", "12.6"))  # not checked without a sidecar
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        e = Embedder(engine, backend="tensorrt")
    ort = Embedder(onnx_path, backend="onnxruntime-cpu")
    assert e.backend == "tensorrt" and e.info == ort.info
    assert e._runner.profiles == (Profile("profile0", (1, 1), (1, 16000), (2, 48000)),)  # read from the engine
    said = [r.getMessage() for r in caplog.records if "has no sidecar" in r.getMessage()]
    assert said == ["kwmlp: kwmlp.engine has no sidecar kwmlp.engine.json (built with trtexec or Polygraphy?): profiles "
                    "read from the engine, settings from kwmlp.onnx; not checked: the GPU and TensorRT version it was "
                    "built for (TensorRT refuses it if they differ)"]
    audio = np.random.default_rng(3).uniform(-0.5, 0.5, (5, 16000 * 4)).astype(np.float32)  # 5 > 2 clips, 4 s > 3 s
    got, want = e.embed(audio), ort.embed(audio)
    assert max_abs(got.scene_embeddings, want.scene_embeddings) <= 1e-5
    assert max_abs(got.timestamp_embeddings, want.timestamp_embeddings) <= 1e-5
    windows = np.random.default_rng(4).uniform(-0.5, 0.5, (9, 16000)).astype(np.float32)  # the keyword engine's too
    assert max_abs(e.keyword_logits(windows), ort.keyword_logits(windows)) <= 1e-5
    from kwmlp.apps.cli import main  # and `kwmlp doctor` says what it could not check, not that it matches

    assert main(["doctor", engine]) == 0
    out = capsys.readouterr().out
    assert f"  engine     {engine}: {said[0][len('kwmlp: '):]}" in out and "  auto runs  tensorrt" in out


def test_an_engine_without_sidecar_or_onnx_says_what_it_needs(fake_engine):
    import os

    from kwmlp.errors import KwmlpError
    from kwmlp.runtime import Embedder

    engine, _, _ = fake_engine
    os.remove(engine + ".json")
    with pytest.raises(KwmlpError, match=r"kwmlp.engine has no sidecar kwmlp.engine.json \(it was not built by `kwmlp "
                                         r"build`\) and no kwmlp.onnx beside it to read the export's settings from"):
        Embedder(engine, backend="tensorrt")
