"""The Triton model repository and the Triton client.

The repository's config.pbtxt is parsed with Triton's own ModelConfig protobuf. End to end, a real
Triton server (the CPU build bundled in the nvidia-pytriton wheel, found through KWMLP_TRITONSERVER:
.ci/run unpacks it) serves a Python-backend repository that runs our runtime, and TritonEmbedder's
results over HTTP and gRPC must equal the local Embedder's. That server has no ONNX Runtime or
TensorRT backend, so the onnxruntime_onnx repository is checked by parsing only.
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc")
from google.protobuf import text_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as pb  # noqa: E402

from kwmlp.apps.cli import main  # noqa: E402
from kwmlp.errors import KwmlpError  # noqa: E402


def _parse(path: Path):
    return text_format.Parse(path.read_text(), pb.ModelConfig())


def test_onnxruntime_repository(random_exported, tmp_path):
    from kwmlp.artifact import keywords_path_for

    repo = tmp_path / "repo"
    assert main(["triton-repo", random_exported(), "-o", str(repo), "--max-batch-size", "32",
                 "--preferred-batch-sizes", "8,32", "--instances", "2", "--tensorrt"]) == 0
    cfg = _parse(repo / "kwmlp" / "config.pbtxt")
    assert cfg.name == "kwmlp" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
    assert [(i.name, pb.DataType.Name(i.data_type), list(i.dims)) for i in cfg.input] == [("audio", "TYPE_FP32", [-1])]
    assert [(o.name, pb.DataType.Name(o.data_type), list(o.dims)) for o in cfg.output] == [
        ("timestamp_embeddings", "TYPE_FP32", [-1, 64]), ("timestamps", "TYPE_FP32", [-1]),
        ("scene_embeddings", "TYPE_FP32", [1024])]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 32]
    assert cfg.instance_group[0].count == 2 and pb.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_GPU"
    assert cfg.optimization.execution_accelerators.gpu_execution_accelerator[0].name == "tensorrt"
    assert (repo / "kwmlp" / "1" / "model.onnx").read_bytes() == Path(random_exported()).read_bytes()
    kw = _parse(repo / "kwmlp_keywords" / "config.pbtxt")
    assert [(o.name, list(o.dims)) for o in kw.output] == [("keyword_logits", [35]), ("chunk_embeddings", [98, 64])]
    assert [(i.name, list(i.dims)) for i in kw.input] == [("windows", [16000])]
    assert (repo / "kwmlp_keywords" / "1" / "model.onnx").read_bytes() == Path(keywords_path_for(random_exported())).read_bytes()


def test_repository_is_replaced_whole(random_exported, tmp_path):
    from kwmlp.apps.serving import RepositoryOptions, write_repository

    repo = tmp_path / "repo"
    (repo / "other" / "1").mkdir(parents=True)  # another model in the same repository stays
    write_repository(random_exported(), str(repo))
    write_repository(random_exported(), str(repo), RepositoryOptions(kind="cpu", keywords=False))
    cfg = _parse(repo / "kwmlp" / "config.pbtxt")
    assert pb.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_CPU"
    assert sorted(p.name for p in repo.iterdir()) == ["kwmlp", "kwmlp_keywords", "other"]


def test_tensorrt_plan_repository(random_exported, tmp_path):
    # an engine is copied as model.plan; its inputs and outputs come from the export it was built
    # from, and Triton's max_batch_size is bounded by the engine's largest profile batch
    from kwmlp.artifact import keywords_path_for
    from kwmlp.artifact.sidecar import Device, EngineInfo, Profile, write_sidecar
    from kwmlp.artifact.metadata import ModelInfo
    from kwmlp.runtime.onnxruntime_backend import OrtRunner

    device = Device("NVIDIA L4", "8.9", "10.7.0", "12.6")
    engines = tmp_path / "engines"
    engines.mkdir()
    for name, src, profile in (
        ("m.keywords.engine", keywords_path_for(random_exported()), Profile("windows", (1, 16000), (8, 16000), (64, 16000))),
        ("m.engine", random_exported(), Profile("throughput", (1, 1), (8, 160000), (12, 960000))),
    ):
        (engines / name).write_bytes(b"plan:" + name.encode())
        export = ModelInfo.from_props(OrtRunner(src).metadata, src).summary()
        input_name = "windows" if "keywords" in name else "audio"
        write_sidecar(str(engines / name), EngineInfo(device, input_name, (profile,), "fp16", "strongly-typed", src,
                                                      "0" * 64, export, "m.keywords.engine"))
    repo = tmp_path / "repo"
    assert main(["triton-repo", str(engines / "m.engine"), "-o", str(repo), "--max-batch-size", "16"]) == 0
    cfg = _parse(repo / "kwmlp" / "config.pbtxt")
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 12  # the profile's 12, not 16
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8, 12]
    assert pb.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == "KIND_GPU"
    assert [(o.name, list(o.dims)) for o in cfg.output][2] == ("scene_embeddings", [1024])
    assert (repo / "kwmlp" / "1" / "model.plan").read_bytes() == b"plan:m.engine"
    kw = _parse(repo / "kwmlp_keywords" / "config.pbtxt")
    assert kw.platform == "tensorrt_plan" and kw.max_batch_size == 16
    assert (repo / "kwmlp_keywords" / "1" / "model.plan").read_bytes() == b"plan:m.keywords.engine"


@pytest.mark.parametrize("kwargs,match", [
    ({"preferred_batch_sizes": (64,)}, "preferred batch sizes must lie in"),
    ({"backend": "python", "tensorrt_accelerator": True}, "TensorRT accelerator applies to the onnxruntime"),
])
def test_bad_options(random_exported, tmp_path, kwargs, match):
    from kwmlp.apps.serving import RepositoryOptions, write_repository

    with pytest.raises(KwmlpError, match=match):
        write_repository(random_exported(), str(tmp_path), RepositoryOptions(**kwargs))


def test_cli_errors(tmp_path, capsys):
    assert main(["triton-repo", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "r")]) == 1
    assert "does not exist" in capsys.readouterr().err


# --- a real Triton server ------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def triton_server(random_exported, tmp_path_factory):
    dist = os.environ.get("KWMLP_TRITONSERVER")
    if not dist:
        pytest.skip("KWMLP_TRITONSERVER is not set (.ci/run unpacks Triton from the nvidia-pytriton wheel)")
    dist = Path(dist)
    from kwmlp.apps.serving import RepositoryOptions, write_repository

    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(random_exported(), str(repo), RepositoryOptions(backend="python", max_batch_size=4,
                                                                      preferred_batch_sizes=(4,)))
    # a backend folder with the Python-backend stub of this interpreter's version, as pytriton arranges it
    backends = repo.parent / "backends" / "python"
    backends.mkdir(parents=True)
    for f in (dist / "backends" / "python").iterdir():
        (backends / f.name).symlink_to(f)
    stub = dist / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}" / "triton_python_backend_stub"
    if not stub.is_file():
        pytest.skip(f"the bundled Triton has no Python-backend stub for Python {sys.version_info[0]}.{sys.version_info[1]}")
    (backends / "triton_python_backend_stub").symlink_to(stub)
    http, grpc, metrics = _free_port(), _free_port(), _free_port()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(dist.parent.parent / "nvidia_pytriton.libs"),
                                              env.get("LD_LIBRARY_PATH", "")])
    # Triton's Python backend runs the Python environment it finds on PATH; Triton 2.51's stub reads
    # numpy 1.x buffers only (with numpy 2 every output arrives empty), so .ci/run makes one with numpy<2
    server_python = os.environ.get("KWMLP_TRITON_PYTHON_BIN", os.path.dirname(sys.executable))
    env["PATH"] = os.pathsep.join([server_python, env.get("PATH", "")])
    log = open(repo.parent / "tritonserver.log", "w")
    proc = subprocess.Popen(
        [str(dist / "bin" / "tritonserver"), f"--model-repository={repo}", f"--backend-directory={backends.parent}",
         f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}", "--allow-metrics=false", "--exit-timeout-secs=3"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    import tritonclient.http as th

    client = th.InferenceServerClient(f"127.0.0.1:{http}")
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if client.is_model_ready("kwmlp") and client.is_model_ready("kwmlp_keywords"):
                break
        except Exception:  # the server is still starting: connection refused
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    else:
        proc.kill()
    if proc.poll() is not None or not client.is_model_ready("kwmlp"):
        proc.kill()
        pytest.fail("tritonserver did not become ready:\n" + (repo.parent / "tritonserver.log").read_text()[-3000:])
    yield {"http": f"127.0.0.1:{http}", "grpc": f"grpc://127.0.0.1:{grpc}"}
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_triton_embedder_equals_local(triton_server, random_exported, protocol):
    from kwmlp.runtime import Embedder
    from kwmlp.apps.serving import TritonEmbedder

    local = Embedder(random_exported())
    remote = TritonEmbedder(triton_server[protocol])
    assert remote.backend == f"triton-{protocol}"
    rng = np.random.default_rng(0)
    batch = rng.uniform(-0.5, 0.5, (6, 20000)).astype(np.float32)  # 6 > max_batch_size 4: split in two
    for got, want in [(remote.embed(batch), local.embed(batch)), (remote.embed(batch[0]), local.embed(batch[0]))]:
        np.testing.assert_allclose(got.timestamp_embeddings, want.timestamp_embeddings, atol=1e-5)  # batches split differently: float rounding only
        np.testing.assert_array_equal(got.timestamps, want.timestamps)
        np.testing.assert_allclose(got.scene_embeddings, want.scene_embeddings, atol=1e-5)  # batches split differently: float rounding only
    clips = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (500, 16000, 40000)]
    for got, want in zip(remote.embed(clips), local.embed(clips)):
        np.testing.assert_allclose(got.scene_embeddings, want.scene_embeddings, atol=1e-5)  # batches split differently: float rounding only
        assert got.timestamp_embeddings.shape == want.timestamp_embeddings.shape
    windows = rng.uniform(-0.5, 0.5, (3, 16000)).astype(np.float32)
    np.testing.assert_allclose(remote.keyword_logits(windows), local.keyword_logits(windows), atol=1e-5)


def test_triton_embedder_errors(triton_server):
    from kwmlp.apps.serving import TritonEmbedder

    with pytest.raises(KwmlpError, match="reading the config of model 'nope' failed"):
        TritonEmbedder(triton_server["http"], model="nope")
    with pytest.raises(KwmlpError, match="cannot reach Triton"):
        TritonEmbedder(f"127.0.0.1:{_free_port()}")
    with pytest.raises(KwmlpError, match="contains NaN"):
        TritonEmbedder(triton_server["http"]).embed(np.array([np.nan], np.float32))
