"""The bench's GPU and OpenVINO rows on a CPU machine: each skipped with the reason naming what is
missing, and their loaders driven through the runtime with the TensorRT fakes."""

import sys
import types

import numpy as np
import pytest

from conftest import max_abs
from test_tensorrt_runner_fake import FakeCuda, fake_engine  # noqa: F401  (the fixture)


def test_every_target_has_a_reason_or_runs():
    from kwmlp.benchmarks import targets

    for name in targets.TARGETS:
        why = targets.unavailable(name)
        assert why is None or ("not written" not in why and "yet" not in why), (name, why)


def test_missing_pieces_are_named(monkeypatch):
    import importlib.util

    from kwmlp import cuda
    from kwmlp.benchmarks import targets
    from kwmlp.errors import KwmlpError

    real = importlib.util.find_spec
    missing = set()
    monkeypatch.setattr(targets.importlib.util, "find_spec", lambda n, *a: None if n in missing else real(n, *a))
    missing |= {"openvino", "tensorrt"}
    assert targets.unavailable("openvino") == "openvino is not installed (pip install -e '.[openvino]')"
    assert targets.unavailable("tensorrt").startswith("tensorrt is not installed")
    missing.clear()
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    monkeypatch.setattr(targets.importlib.util, "find_spec", lambda n, *a: object() if n == "tensorrt" else real(n, *a))

    def no_gpu():
        raise KwmlpError("no CUDA GPU is visible on this machine (check the driver and CUDA_VISIBLE_DEVICES)")

    monkeypatch.setattr(cuda, "load", no_gpu)
    assert targets.unavailable("tensorrt") == "no CUDA device (no CUDA GPU is visible on this machine " \
                                              "(check the driver and CUDA_VISIBLE_DEVICES))"
    monkeypatch.setattr(cuda, "load", lambda: FakeCuda())
    assert targets.unavailable("tensorrt") is None
    assert targets.unavailable("tensorrt-cuda-graph") == "the CUDA-graph row runs with --cuda-graph"
    assert targets.unavailable("tensorrt-cuda-graph", cuda_graph=True) is None


@pytest.mark.parametrize("name", ["tensorrt", "tensorrt-cuda-graph"])
def test_engine_rows_run_through_the_embedder(fake_engine, name):  # noqa: F811
    from kwmlp.benchmarks import targets

    engine, onnx_path, cuda = fake_engine
    run = targets.load(name, targets.Paths("unused.pth", onnx_path, engine), threads=1)
    ref = targets.load("onnxruntime-cpu", targets.Paths("unused.pth", onnx_path), threads=1)
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, (2, 20000)).astype(np.float32)
    for _ in range(3):  # the graph row captures on the second call, then replays
        got = run(audio)
    want = ref(audio)
    assert max_abs(got[0], want[0]) <= 1e-5 and max_abs(got[1], want[1]) <= 1e-5
    assert (cuda.launches > 0) == (name == "tensorrt-cuda-graph")


def test_engine_row_precision_is_the_engines(fake_engine):  # noqa: F811
    from kwmlp.benchmarks import suite

    engine, onnx_path, _ = fake_engine
    assert suite._precision("tensorrt", "fp16", engine) == "fp32"  # the fake engine's sidecar says fp32
    assert suite._precision("openvino-bf16", "fp32", engine) == "bf16"
    assert suite._precision("pytorch-cuda-fp16", "fp32", None) == "fp16 blocks, fp32 front end"
    assert suite._precision("openvino", "fp16", None) == "fp16"


def test_failed_engine_build_skips_the_engine_rows(monkeypatch, tmp_path, random_checkpoint):
    from kwmlp.benchmarks import suite

    settings = suite.Settings(checkpoint=random_checkpoint, output=str(tmp_path))
    assert suite._engine(settings, ["onnxruntime-cpu"]) == (None, None)  # no engine row: nothing built
    given = suite.Settings(checkpoint=random_checkpoint, output=str(tmp_path), engine="given.engine")
    assert suite._engine(given, ["tensorrt"]) == ("given.engine", None)
    failed = types.SimpleNamespace(returncode=1, stderr="kwmlp build: error: TensorRT is not installed\n")
    monkeypatch.setattr(suite.subprocess, "run", lambda *a, **k: failed)
    assert suite._engine(settings, ["tensorrt"]) == (None, "kwmlp build failed: kwmlp build: error: TensorRT is not installed")


def test_half_blocks_keep_the_front_end_in_fp32(random_checkpoint):
    """pytorch-cuda-fp16's model, run on the CPU: fp16 blocks between fp32 MFCCs and embeddings."""
    torch = pytest.importorskip("torch")
    from kwmlp.benchmarks import targets
    from kwmlp.models import HearReference, load_checkpoint

    ref = HearReference(load_checkpoint(random_checkpoint)).eval()
    x = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (1, 20000)).astype(np.float32))
    want = ref(x).timestamp_embeddings
    ref.model = targets._half_blocks(ref.model)
    got = ref(x).timestamp_embeddings
    front = list(ref.mfcc.buffers()) + list(ref.mfcc.parameters())
    assert got.dtype == torch.float32 and front and all(t.dtype == torch.float32 for t in front)
    assert next(ref.model.inner.parameters()).dtype == torch.float16
    assert 0 < float((got - want).abs().max()) < 0.1  # fp16 differs, but not wildly


class FakeGraphs:
    """``torch.cuda``'s graph API on the CPU. A capture records the aten operations it runs and
    leaves every tensor they wrote full of NaN (a CUDA capture runs nothing); a replay runs the
    recorded operations again on the same tensors. So a replay reads the static input as it is
    now, and what the runner did not copy into it, or read before replaying, shows."""

    def __init__(self):
        import contextlib

        self.graphs = []
        noop = types.SimpleNamespace(wait_stream=lambda other: None)
        self.Stream = lambda: noop
        self.current_stream = lambda: noop
        self.stream = lambda s: contextlib.nullcontext()

    def CUDAGraph(self):  # noqa: N802  (torch.cuda's name)
        graph = _FakeGraph()
        self.graphs.append(graph)
        return graph

    def graph(self, graph):
        return graph.capturing()


class _FakeGraph:
    def __init__(self):
        self.ops, self.replays = [], 0

    def capturing(self):
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        ops = self.ops

        class Record(TorchDispatchMode):
            def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default:
                    raise RuntimeError("operation not permitted when stream is capturing")  # a sync
                out = func(*args, **(kwargs or {}))
                ops.append((func, args, kwargs or {}, out))
                return out

            def __exit__(self, *exc):
                super().__exit__(*exc)
                for _, args, kwargs, out in ops:
                    for t in _written(out, args, kwargs):
                        if t.is_floating_point():
                            t.fill_(float("nan"))

        return Record()

    def replay(self):
        for func, args, kwargs, out in self.ops:
            fresh = func(*args, **kwargs)
            for old, new in zip(_written(out, args, kwargs), _written(fresh, args, kwargs)):
                old.copy_(new)
        self.replays += 1


def _written(out, args, kwargs):
    """The tensors an operation wrote into memory of its own: not views of its arguments, nor the
    arguments themselves (an in-place operation writes them when it runs)."""
    import torch
    from torch.utils._pytree import tree_leaves

    inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
    return [t for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs]


@pytest.mark.parametrize("half_blocks", [False, True], ids=["fp32", "fp16-blocks"])
def test_pytorch_graph_row_replays_what_it_captured(tmp_path, half_blocks):
    """pytorch-cuda-graph(-fp16) on the CPU with FakeGraphs: one capture per shape, every call a
    replay on that call's audio, equal to the same reference run eagerly."""
    torch = pytest.importorskip("torch")
    from conftest import random_state_dict
    from kwmlp.benchmarks import targets

    checkpoint = str(tmp_path / "depth2.pth")  # two blocks: the fake replays operation by operation
    torch.save({"model_state_dict": random_state_dict(depth=2)}, checkpoint)
    fake = FakeGraphs()
    run = targets._torch_cuda_graph(checkpoint, half_blocks, device="cpu", graphs=fake)
    eager = targets._reference_on(checkpoint, half_blocks, "cpu")
    rng = np.random.default_rng(0)
    clips = [rng.uniform(-0.5, 0.5, shape).astype(np.float32) for shape in ((2, 20000), (2, 20000), (1, 16000),
                                                                            (2, 20000))]
    for audio in clips:
        ts, scene = run(audio)
        want = eager(torch.from_numpy(audio))
        assert max_abs(ts, want.timestamp_embeddings) <= 1e-6 and max_abs(scene, want.scene_embeddings) <= 1e-6
    assert [g.replays for g in fake.graphs] == [3, 1]  # captured once per shape
    assert run.note() == "CUDA graph of the whole forward: 2 captured; 4 replays, 0 plain runs in 4 calls"


def test_graph_notes():
    from kwmlp.benchmarks import targets

    report = types.SimpleNamespace(captured=1, replays=200, plain_runs=10, refused={"1x16000": "37 Memcpy nodes"})
    assert targets.graph_note(report, 210) == "CUDA graph: 1 captured; 200 replays, 10 plain runs in 210 calls; " \
                                              "refused: 1x16000: 37 Memcpy nodes"
    assert targets.graph_note(None, 210) == "no CUDA graph (this runner has none)"


def test_embedder_rows_on_a_gpu_report_their_graphs(random_exported, monkeypatch):
    """The onnxruntime-cuda row's note, through Embedder.graph_report() where the runtime has it
    (driven here on the CPU provider, with a report stood in for the runtime's)."""
    from kwmlp.benchmarks import targets
    from kwmlp.runtime import Embedder

    audio = np.zeros((1, 16000), np.float32)
    run = targets._embedder(random_exported(), "onnxruntime-cpu", 1, None, report_graph=True)
    run(audio)
    if hasattr(Embedder, "graph_report"):  # the runtime's own answer on a CPU
        assert run.note() == "no CUDA graph (this runner has none)"
    monkeypatch.delattr(Embedder, "graph_report", raising=False)
    assert run.note() == "CUDA graph: not reported (this kwmlp-rt has no Embedder.graph_report)"
    report = types.SimpleNamespace(captured=1, replays=2, plain_runs=1, refused={})
    monkeypatch.setattr(Embedder, "graph_report", lambda self: report, raising=False)
    for _ in range(3):
        run(audio)
    assert run.note() == "CUDA graph: 1 captured; 2 replays, 1 plain runs in 4 calls"
    assert targets.load("onnxruntime-cpu", targets.Paths("unused.pth", random_exported()), 1).note() is None


def test_row_notes_reach_results_md():
    from kwmlp.benchmarks import report, suite
    from kwmlp.benchmarks.workloads import Workload

    run = {"latencies_s": [0.001, 0.002], "peak_rss_mb": 100.0, "device_memory_mb": 5.0, "max_abs_err": 1e-6,
           "note": "CUDA graph: 1 captured, replayed 2 of 2 calls"}
    rounds = [run, dict(run, note="CUDA graph: 0 captured, replayed 0 of 2 calls"), run]
    row = suite._row("onnxruntime-cuda", Workload(1, 1.0), suite._merge(rounds), "fp32")
    assert row["note"] == ("CUDA graph: 1 captured, replayed 2 of 2 calls / "
                           "CUDA graph: 0 captured, replayed 0 of 2 calls")
    plain = suite._row("onnxruntime-cpu", Workload(1, 1.0), suite._merge([dict(run, note=None)]), "fp32")
    machine = {"cpu": "x", "cores": 2, "gpu": "none", "versions": {}}
    md = report.markdown({"machine": machine, "threads": 2, "results": [row, plain]})
    assert f"notes:\n- onnxruntime-cuda 1x1s: {row['note']}\n" in md and "- onnxruntime-cpu" not in md
