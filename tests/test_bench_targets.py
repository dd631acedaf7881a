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
