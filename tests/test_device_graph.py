"""Sessions at fixed shapes on a CUDA device (kwmlp.runtime.device_graph) and ONNX Runtime's CUDA
path over them (kwmlp.runtime.onnxruntime_cuda), driven on the CPU by fakes:

- a fake CUDA API over host memory (the TensorRT fake's), so staging and downloads really move bytes;
- a fake of ONNX Runtime's CUDA provider whose sessions compute with real CPU sessions (with the
  free-dimension overrides the runner asked for) on the bytes at the bound addresses, and which,
  like ONNX Runtime, captures at its first run: later runs replay the addresses bound at capture.
  A runner that moved its buffers after capture would read and write stale memory, and the fake
  shows it. It refuses CUDA graphs, as ONNX Runtime does, when told the graph has Memcpy nodes.
"""

import ctypes
import logging
import threading

import numpy as np
import pytest

from conftest import max_abs
from kwmlp.errors import KwmlpError
from test_gpu_review_fixes import CUDA, TRT, gpu_session  # noqa: F401  (the fixture)
from test_tensorrt_runner_fake import FakeCuda

REFUSAL = ("This session cannot use the CUDA Graph feature as requested by the user  as all compute graph nodes "
           "have not been partitioned to the CUDA EP.")


def _host(ptr, shape, dtype=np.float32):
    n = int(np.prod(shape))
    return np.frombuffer((ctypes.c_char * (n * np.dtype(dtype).itemsize)).from_address(ptr), dtype).reshape(shape)


class Fail(Exception):
    """ONNX Runtime's own exception types subclass Exception, not RuntimeError."""


# What ONNX Runtime's TensorRT provider accepts of the options the runtime sets (it refuses others,
# and the Python layer then retries the session with its fallback providers).
TRT_OPTIONS = {"device_id", "trt_fp16_enable", "trt_engine_cache_enable", "trt_engine_cache_path",
               "trt_timing_cache_enable", "trt_timing_cache_path", "trt_profile_min_shapes",
               "trt_profile_opt_shapes", "trt_profile_max_shapes", "user_compute_stream", "trt_cuda_graph_enable",
               "trt_engine_cache_prefix"}


class FakeCudaOrt:
    """The parts of ``onnxruntime`` the CUDA path uses, over real CPU sessions."""

    def __init__(self, memcpy_nodes=0, garbage_replays=False, refused_option=None):
        import onnxruntime as real

        self.real, self.memcpy_nodes, self.garbage_replays = real, memcpy_nodes, garbage_replays
        self.refused_option = refused_option  # a TensorRT option this "version" does not know
        self.GraphOptimizationLevel = real.GraphOptimizationLevel
        self.__version__ = real.__version__
        self.sessions = []
        fake = self

        class SessionOptions:
            def __init__(self):
                self.overrides = {}
                self.graph_optimization_level = self.log_severity_level = self.intra_op_num_threads = None

            def add_free_dimension_override_by_name(self, name, size):
                self.overrides[name] = size

        class RunOptions:
            def __init__(self):
                self.entries = {}

            def add_run_config_entry(self, key, value):
                self.entries[key] = value

        self.SessionOptions, self.RunOptions = SessionOptions, RunOptions

        def session(path, sess_options, providers):
            names = [p[0] if isinstance(p, tuple) else p for p in providers]
            if names[0] == TRT:
                unknown = set(providers[0][1]) - (TRT_OPTIONS - {fake.refused_option})
                if unknown:  # as ONNX Runtime's Python layer does: say so on stdout, retry without options
                    print(f"EP Error Invalid TensorRT EP option: {sorted(unknown)[0]} when using {names}")
                    print("Falling back to ['CUDAExecutionProvider', 'CPUExecutionProvider'] and retrying.")
                    return fake.Session(fake, path, sess_options, [(CUDA, {}), "CPUExecutionProvider"])
            return fake.Session(fake, path, sess_options, providers)

        self.InferenceSession = session

    class Session:
        def __init__(self, fake, path, options, providers):
            *gpu, cpu = providers
            assert [name for name, _ in gpu] in ([CUDA], [TRT, CUDA]) and cpu == "CPUExecutionProvider"
            first = gpu[0][1]  # the first provider's options: it is the one asked for graphs
            self.graphs = first.get("enable_cuda_graph") == "1" or first.get("trt_cuda_graph_enable") is True
            if self.graphs and fake.memcpy_nodes:
                raise Fail(f"[ONNXRuntimeError] : 1 : FAIL : {REFUSAL}")
            real_options = fake.real.SessionOptions()
            for dim, size in options.overrides.items():  # real ORT folds the graph at these sizes
                real_options.add_free_dimension_override_by_name(dim, size)
            self.cpu = fake.real.InferenceSession(path, real_options, providers=["CPUExecutionProvider"])
            self.fake, self.options, self.provider_options = fake, options, first
            self.providers = [name for name, _ in gpu] + [cpu]
            self.runs, self.run_options, self.threads = 0, [], set()
            self.captured = {}  # thread -> the bindings of its capture: ONNX Runtime keeps a graph per thread
            fake.sessions.append(self)

        def get_providers(self):
            return self.providers

        def get_inputs(self):
            return self.cpu.get_inputs()

        def get_outputs(self):
            return self.cpu.get_outputs()

        def io_binding(self):
            session = self

            class Binding:
                def __init__(self):
                    self.inputs, self.outputs = {}, {}

                def bind_input(self, name, device, device_id, dtype, shape, ptr):
                    assert device == "cuda" and device_id == 0
                    self.inputs[name] = (tuple(shape), np.dtype(dtype), ptr)

                def bind_output(self, name, device, device_id, dtype, shape, ptr):
                    assert device == "cuda" and device_id == 0
                    self.outputs[name] = (tuple(shape), np.dtype(dtype), ptr)

            session.binding = Binding()
            return session.binding

        def run_with_iobinding(self, io, run_options):
            self.runs += 1
            self.threads.add(threading.get_ident())
            self.run_options.append(dict(run_options.entries))
            bound = (dict(io.inputs), dict(io.outputs))
            captured = self.captured.get(threading.get_ident())
            if self.graphs and captured is None:
                self.captured[threading.get_ident()] = bound  # captured in its first run; later runs replay it
            inputs, outputs = captured or bound
            feeds = {n: _host(p, s, d).copy() for n, (s, d, p) in inputs.items()}
            results = self.cpu.run(list(outputs), feeds)
            for (name, (shape, dtype, ptr)), y in zip(outputs.items(), results):
                assert y.shape == shape, (name, y.shape, shape)
                out = _host(ptr, shape, dtype)
                out[...] = np.nan if captured and self.fake.garbage_replays else y


@pytest.fixture
def cuda_ort(monkeypatch, gpu_session, random_exported):  # noqa: F811
    """``make(**fake options)`` -> (an Embedder on "onnxruntime-cuda" over fakes, the fake ORT, the CPU Embedder)."""
    from kwmlp import cuda as cuda_api
    from kwmlp.runtime import Embedder, onnxruntime_backend as ortb, onnxruntime_cuda

    path = random_exported()
    cuda = FakeCuda()
    monkeypatch.setattr(cuda_api, "load", lambda: cuda)
    monkeypatch.setattr(ortb, "available_providers", lambda: [CUDA, "CPUExecutionProvider"])
    gpu_session({CUDA: 40})  # the general sessions say they run on the CUDA provider

    def make(**options):
        fake = FakeCudaOrt(**options)
        monkeypatch.setattr(onnxruntime_cuda, "import_onnxruntime", lambda: fake)
        emb = Embedder(path, backend="onnxruntime-cuda")
        return emb, fake, Embedder(path, backend="onnxruntime-cpu")

    return make


def _audio(shape, seed=0):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, shape).astype(np.float32)


def _same(got, want, tol=1e-5):
    assert max_abs(got.timestamp_embeddings, want.timestamp_embeddings) <= tol
    assert max_abs(got.scene_embeddings, want.scene_embeddings) <= tol
    np.testing.assert_array_equal(got.timestamps, want.timestamps)


def test_a_repeated_shape_is_captured_once_then_replayed(cuda_ort):
    emb, fake, cpu = cuda_ort()
    assert emb.backend == "onnxruntime-cuda"
    for i in range(6):  # 1 s clips: each runs as 1 x 31680 samples, the longest clip of 2 chunks
        x = _audio((1, 16000), seed=i)
        _same(emb.embed(x), cpu.embed(x))
    # call 1 on the general session (a shape is admitted on its second call), call 2 the shape's
    # first plain run (ONNX Runtime captures inside it), call 3 checked against the general path,
    # calls 4-6 replay
    report = emb.graph_report()
    assert (report.captured, report.replays, report.refused) == (1, 3, {})
    (session,) = fake.sessions
    assert session.graphs and session.options.overrides == {"batch": 1, "samples": 31680}
    assert session.runs == 5 and len(session.captured) == 1 and len(session.threads) == 1
    assert all(o == {"disable_synchronize_execution_providers": "1"} for o in session.run_options)


def test_memcpy_nodes_refuse_graphs_and_say_why(cuda_ort, caplog):
    emb, fake, cpu = cuda_ort(memcpy_nodes=37)
    with caplog.at_level(logging.DEBUG, logger="kwmlp"):
        for i in range(4):
            x = _audio((2, 24000), seed=i)
            _same(emb.embed(x), cpu.embed(x))
    report = emb.graph_report()
    assert (report.captured, report.replays) == (0, 0)
    assert list(report.refused) == ["2x31680"]
    assert "ONNX Runtime refused CUDA graphs" in report.refused["2x31680"]
    assert "have not been partitioned to the CUDA EP" in report.refused["2x31680"]
    (session,) = fake.sessions  # reopened without graphs, still on the preallocated buffers
    assert not session.graphs and session.runs == 3
    lines = [r.getMessage() for r in caplog.records if "without a CUDA graph" in r.getMessage()]
    assert len(lines) == 1 and "2x31680" in lines[0] and lines[0].count("\n") == 0


def test_a_bad_replay_is_caught_and_the_shape_leaves_for_good(cuda_ort, caplog):
    # a replay that writes garbage (here: NaN) must not reach the caller: the first replay of a
    # shape is checked against the general path, and a disagreement drops the shape for good (ONNX
    # Runtime would replay its graph on every later run of that session: running it "plainly" is not
    # possible there)
    emb, fake, cpu = cuda_ort(garbage_replays=True)
    x = _audio((1, 16000))
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        for _ in range(6):
            _same(emb.embed(x), cpu.embed(x))
    assert caplog.text.count("it runs on the general path") == 1
    report = emb.graph_report()
    assert report.captured == 1 and "differ from the general path" in report.refused["1x31680"]
    assert fake.sessions[0].runs == 2  # its plain run and its one replay, never again


def test_small_batches_and_keyword_windows_meet_few_shapes(cuda_ort):
    emb, fake, cpu = cuda_ort()
    for rows in (3, 4, 3, 4):  # 3 rows run padded to 4: one shape
        x = _audio((rows, 20000), seed=rows)
        _same(emb.embed(x), cpu.embed(x))
    windows = _audio((1, 16000), seed=9)
    for _ in range(3):
        assert max_abs(emb.keyword_logits(windows), cpu.keyword_logits(windows)) <= 1e-5
    shapes = sorted(tuple(s.options.overrides.items()) for s in fake.sessions)
    assert shapes == [(("batch", 4), ("samples", 31680)), (("windows", 1),)]
    assert emb.graph_report().captured == 2


def test_graphs_off_runs_plainly_on_fixed_buffers(cuda_ort, monkeypatch):
    from kwmlp.runtime import Embedder

    _, fake, cpu = cuda_ort()
    emb = Embedder(cpu.model_path, backend="onnxruntime-cuda", cuda_graph=False)
    for i in range(3):
        x = _audio((1, 8000), seed=i)
        _same(emb.embed(x), cpu.embed(x))
    assert emb.graph_report().refused == {"1x15680": "CUDA graphs are off"}
    assert not fake.sessions[-1].graphs


# --- the state machine and the cache, with a fake executor -----------------------------------------

class DoubleIt:
    """An executor computing y = 2 x on host memory; ``capture`` snapshots the addresses."""

    def __init__(self, shape, refused=None, fail_capture=False):
        from kwmlp.runtime.device_graph import TensorSpec

        self.tensors = {"x": TensorSpec(shape, np.dtype(np.float32), True),
                        "y": TensorSpec(shape, np.dtype(np.float32), False)}
        self.refused, self.fail_capture = refused, fail_capture
        self.calls, self.closed = [], False

    def bind(self, buffers):
        self.ptrs = dict(buffers.device)

    def enqueue(self, ptrs=None):
        ptrs = ptrs or self.ptrs
        shape = self.tensors["x"].shape
        _host(ptrs["y"], shape)[...] = 2 * _host(ptrs["x"], shape)
        self.calls.append("enqueue")

    def capture(self):
        from kwmlp.runtime.device_graph import CaptureRefused

        if self.fail_capture:
            raise CaptureRefused("stream capture is not allowed here")
        self.calls.append("capture")
        frozen = dict(self.ptrs)
        self.enqueue(frozen)
        return frozen

    def replay(self, graph):
        self.calls.append("replay")
        self.enqueue(graph)

    def release(self, graph):
        self.calls.append("release")

    def close(self):
        self.closed = True


def _shaped(shape=(2, 3), check=None, use_graphs=True, **kw):
    from kwmlp.runtime.device_graph import ShapedRun

    cuda = FakeCuda()
    return ShapedRun(cuda, DoubleIt(shape, **kw), cuda.stream(), use_graphs=use_graphs, check=check)


def test_states_cold_warm_captured():
    run = _shaped()
    for i in range(4):
        x = np.full((2, 3), i, np.float32)
        np.testing.assert_array_equal(run.run(x)["y"], 2 * x)
    assert run.executor.calls == ["enqueue", "capture", "enqueue", "replay", "enqueue", "replay", "enqueue"]
    assert run.state == "captured" and (run.report.captured, run.report.replays, run.report.plain_runs) == (1, 2, 1)
    run.close()
    assert run.executor.closed and "release" in run.executor.calls


def test_a_refused_capture_runs_plainly_with_its_reason():
    run = _shaped(fail_capture=True)
    for i in range(3):
        x = np.full((2, 3), i, np.float32)
        np.testing.assert_array_equal(run.run(x)["y"], 2 * x)
    assert run.state == "plain" and "stream capture is not allowed here" in run.report.refused["2x3"]
    assert run.executor.calls == ["enqueue"] * 3
    assert _shaped(refused="37 Memcpy nodes").report.refused == {"2x3": "37 Memcpy nodes"}
    assert _shaped(use_graphs=False).state == "plain"


def test_a_first_run_that_disagrees_marks_the_shape_broken(caplog):
    wrong = lambda x: {"y": 3 * x}  # the general path says otherwise
    run = _shaped(check=wrong)
    x = np.ones((2, 3), np.float32)
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        np.testing.assert_array_equal(run.run(x)["y"], 3 * x)  # the general path's answer
    assert run.broken and "y: max difference 1.0" in run.broken and "runs on the general path" in caplog.text


def test_the_cache_admits_bounds_and_forgets():
    from kwmlp.runtime.device_graph import ShapeCache

    made = []

    def make(shape):
        if shape == (9, 9):
            raise KwmlpError("cannot open this shape")
        made.append(_shaped(shape))
        return made[-1]

    cache = ShapeCache(make, capacity=2, admit_after=2)
    assert cache.get((1, 1)) is None and len(made) == 0  # met once: the general path
    a = cache.get((1, 1))
    assert a is made[0]
    cache.get((2, 2)), cache.get((2, 2)), cache.get((3, 3)), cache.get((3, 3))  # evicts (1, 1), the oldest
    assert a.executor.closed and not made[1].executor.closed and len(made) == 3
    assert cache.get((9, 9)) is None and cache.get((9, 9)) is None  # failed once: stays on the general path
    assert cache.report().refused == {"9x9": "cannot open this shape"}
    cache.close()
    assert all(r.executor.closed for r in made)


def test_one_thread_at_a_time_per_shape():
    from kwmlp.runtime.device_graph import ShapeCache

    cache = ShapeCache(lambda s: _shaped(s), capacity=4, admit_after=1)
    errors = []

    def work(i):
        try:
            for k in range(50):
                x = np.full((2, 3), i * 100 + k, np.float32)
                np.testing.assert_array_equal(cache.get((2, 3)).run(x)["y"], 2 * x)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors


def test_pipelined_pieces_come_back_in_order():
    from kwmlp.runtime.device_graph import pipelined

    lanes = [_shaped(), _shaped()]
    pieces = [np.full((2, 3), k, np.float32) for k in range(7)]
    out = pipelined(lanes, pieces)
    assert [float(o["y"][0, 0]) for o in out] == [2.0 * k for k in range(7)]
    assert lanes[0].report.plain_runs + lanes[0].report.captured + lanes[0].report.replays == 4


def test_a_large_batch_runs_in_pieces_on_two_streams(cuda_ort):
    emb, fake, cpu = cuda_ort()
    x = _audio((40, 16000), seed=3)  # pieces of 32 rows: 32 + 8 padded to 32
    want = cpu.embed(x)
    for _ in range(4):
        _same(emb.embed(x), want)
    lanes = [s for s in fake.sessions if s.options.overrides == {"batch": 32, "samples": 31680}]
    streams = {s.provider_options["user_compute_stream"] for s in lanes}
    assert len(lanes) == 2 and len(streams) == 2 and all(s.captured for s in lanes)
    assert emb.graph_report().replays >= 2


# --- results left on the device (DLPack) ------------------------------------------------------------

def test_dlpack_export_is_read_right_and_released():
    import gc

    from kwmlp.runtime import device_array as da

    cuda = FakeCuda()  # host memory: a CPU DLPack capsule that numpy itself can consume
    alloc = da.Allocation(cuda, 4 * 24)
    _host(alloc.ptr, (2, 3, 4))[...] = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    a = da.DeviceArray(alloc, (2, 3, 4), np.float32, device_type=da.KDL_CPU)
    np.testing.assert_array_equal(np.from_dlpack(a), np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    head = a.head(1, 2)  # a strided view: the first row's first two timestamps
    np.testing.assert_array_equal(np.from_dlpack(head), np.arange(8, dtype=np.float32).reshape(1, 2, 4))
    np.testing.assert_array_equal(head.numpy(), np.from_dlpack(head))
    np.testing.assert_array_equal(a.first().numpy(), np.arange(12, dtype=np.float32).reshape(3, 4))
    gc.collect()
    assert not da._exported  # consumers released what they took
    a.__dlpack__()  # a capsule nobody consumes releases itself when collected
    gc.collect()
    assert not da._exported
    ptr = alloc.ptr
    del a, head, alloc
    gc.collect()
    assert ptr not in cuda.mem  # the allocation went with its last array


def test_results_stay_on_the_device(cuda_ort):
    from kwmlp.runtime.device_array import DeviceArray

    emb, fake, cpu = cuda_ort()
    for i in range(4):  # first runs are checked on the host and uploaded; later ones copied on the device
        x = _audio((3, 20000), seed=i)
        r = emb.embed_on_device(x)
        assert all(isinstance(a, DeviceArray) for a in (r.timestamp_embeddings, r.timestamps, r.scene_embeddings))
        assert r.timestamp_embeddings.shape == (3, 125, 64) and r.scene_embeddings.shape == (3, 1024)
        want = cpu.embed(x)
        assert max_abs(r.timestamp_embeddings.numpy(), want.timestamp_embeddings) <= 1e-5
        assert max_abs(r.scene_embeddings.numpy(), want.scene_embeddings) <= 1e-5
        np.testing.assert_array_equal(r.timestamps.numpy(), want.timestamps)
    kept = r.scene_embeddings.numpy()
    emb.embed_on_device(_audio((3, 20000), seed=99))  # a later call leaves earlier results alone
    np.testing.assert_array_equal(r.scene_embeddings.numpy(), kept)
    one = emb.embed_on_device(_audio(16000, seed=5))
    assert one.timestamp_embeddings.shape == (100, 64) and one.scene_embeddings.shape == (1024,)
    with pytest.raises(KwmlpError, match="results stay on the GPU only on a GPU backend"):
        cpu.embed_on_device(_audio(16000))


def test_a_fixed_shape_file_beside_the_export_is_what_runs(cuda_ort, random_checkpoint, tmp_path):
    from kwmlp.export import ExportOptions, export_checkpoint
    from kwmlp.runtime import Embedder

    _, fake, cpu = cuda_ort()
    out = tmp_path / "fixed.onnx"
    export_checkpoint(random_checkpoint, str(out), ExportOptions(fixed_shapes=((1, 16000),)))
    emb = Embedder(str(out), backend="onnxruntime-cuda")
    assert emb._runner.exact_shapes == {(1, 16000)}
    for i in range(3):
        x = _audio((1, 16000), seed=i)  # its exact shape: not padded to 31680 samples
        _same(emb.embed(x), cpu.embed(x))
    (session,) = fake.sessions
    assert session.options.overrides == {} and session.cpu._model_path.endswith("fixed.1x16000.onnx")
    assert emb.graph_report().captured == 1


@pytest.fixture
def trt_ort(monkeypatch, gpu_session, random_exported):  # noqa: F811
    """``make(**fake options)`` -> (an Embedder on "onnxruntime-trt" over fakes, the fake ORT, the CPU Embedder)."""
    from kwmlp import cuda as cuda_api, trt
    from kwmlp.runtime import Embedder, onnxruntime_backend as ortb, onnxruntime_cuda

    monkeypatch.setattr(cuda_api, "load", FakeCuda)
    monkeypatch.setattr(ortb, "available_providers", lambda: [TRT, CUDA, "CPUExecutionProvider"])
    monkeypatch.setattr(trt, "installed_version", lambda: "10.16.0")
    gpu_session({TRT: 40})
    path = random_exported()

    def make(**options):
        fake = FakeCudaOrt(**options)
        monkeypatch.setattr(onnxruntime_cuda, "import_onnxruntime", lambda: fake)
        return Embedder(path, backend="onnxruntime-trt"), fake, Embedder(path, backend="onnxruntime-cpu")

    return make


def test_onnxruntime_trt_sessions_at_a_shape_replay_too(trt_ort):
    emb, fake, cpu = trt_ort()
    assert emb.backend == "onnxruntime-trt"
    for i in range(4):
        x = _audio((1, 16000), seed=i)
        _same(emb.embed(x), cpu.embed(x))
    (session,) = fake.sessions
    assert session.graphs and emb.graph_report().captured == 1
    options = session.provider_options
    assert options["trt_cuda_graph_enable"] is True
    assert {options[f"trt_profile_{w}_shapes"] for w in ("min", "opt", "max")} == {"audio:1x31680"}


def test_a_provider_that_falls_back_is_not_taken_for_the_one_asked_for(trt_ort, capsys):
    # ONNX Runtime's Python layer retries a session whose TensorRT provider refused an option on
    # CUDA and CPU, without the shape's stream, and says so on stdout: such a session must not be
    # taken for a TensorRT one on the shape's stream, and the user's stdout stays clean
    emb, fake, cpu = trt_ort(refused_option="trt_engine_cache_prefix")
    for i in range(3):
        x = _audio((1, 16000), seed=i)
        _same(emb.embed(x), cpu.embed(x))
    why = emb.graph_report().refused["1x31680"]
    assert "started CUDAExecutionProvider instead of TensorrtExecutionProvider" in why and "trt_engine_cache_prefix" in why
    assert "EP Error" not in capsys.readouterr().out


def test_each_thread_has_sessions_of_its_own(cuda_ort):
    # ONNX Runtime's CUDA provider keeps a session's graph per thread, and a session with CUDA
    # graphs takes one run at a time: two threads never share a session at a shape
    emb, fake, cpu = cuda_ort()
    x = _audio((1, 16000), seed=4)
    want, errors = cpu.embed(x), []

    def work():
        try:
            for _ in range(4):
                _same(emb.embed(x), want)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(fake.sessions) == 2 and all(len(s.threads) == 1 for s in fake.sessions)
    assert emb.graph_report().captured == 2


def test_a_fixed_shape_file_opened_itself(cuda_ort, random_checkpoint, tmp_path):
    from kwmlp.export import ExportOptions, export_checkpoint
    from kwmlp.runtime import Embedder

    _, fake, cpu = cuda_ort()
    export_checkpoint(random_checkpoint, str(tmp_path / "f.onnx"), ExportOptions(fixed_shapes=((3, 16000),)))
    emb = Embedder(str(tmp_path / "f.3x16000.onnx"), backend="onnxruntime-cuda")
    for i in range(3):  # 3 rows stay 3 rows and 16000 samples stay 16000: its one shape
        x = _audio((3, 16000), seed=i)
        _same(emb.embed(x), cpu.embed(x))
        r = emb.embed_on_device(x)
        assert max_abs(r.scene_embeddings.numpy(), cpu.embed(x).scene_embeddings) <= 1e-5
    assert {tuple(s.cpu.get_inputs()[0].shape) for s in fake.sessions} == {(3, 16000)}
    assert all(s.options.overrides == {} for s in fake.sessions)


# --- the state machine's edges ---------------------------------------------------------------------

def test_a_run_evicted_after_it_was_handed_out_says_so():
    from kwmlp.runtime.device_graph import ShapeCache, run_in_lanes

    cache = ShapeCache(lambda s: _shaped(s), capacity=1, admit_after=1)
    a = cache.get((2, 3))
    cache.get((4, 3))  # another shape: (2, 3) is closed to make room
    assert a.closed and a.run(np.ones((2, 3), np.float32)) is None and a.run_device(np.ones((2, 3))) is None
    # two lanes in a cache of one: the second lane evicts the first; the caller's general path runs it
    assert run_in_lanes(cache, np.ones((5, 3), np.float32), 2) is None


def test_a_capture_that_fails_in_its_enqueue_runs_plainly():
    run = _shaped(check=lambda x: {"y": 2 * x})

    def capture():  # as TrtShapeExecutor's: execute_async_v3 returned False under capture
        raise KwmlpError("TensorRT failed to enqueue the engine (see the TensorRT log)")

    run.executor.capture = capture
    for i in range(4):
        x = np.full((2, 3), i, np.float32)
        np.testing.assert_array_equal(run.run(x)["y"], 2 * x)
    assert run.state == "plain" and "failed to enqueue" in run.report.refused["2x3"] and not run.broken


def test_the_first_run_of_a_shape_without_graphs_is_checked_too(caplog):
    run = _shaped(use_graphs=False, check=lambda x: {"y": 3 * x})
    x = np.ones((2, 3), np.float32)
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        np.testing.assert_array_equal(run.run(x)["y"], 3 * x)
    assert run.broken and "differ from the general path" in caplog.text
