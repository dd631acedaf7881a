"""`kwmlp build` without a GPU: profile computation, the sidecar and its mismatch messages, the
one-line error without TensorRT, and the builder's control flow against a recording fake of the
TensorRT 10 API (profiles for every input, strong typing vs. the FP16 flag, a failed build)."""

import json
import logging
import subprocess
import sys
import types

import pytest

from kwmlp.errors import KwmlpError
from kwmlp.export import tensorrt_build as tb
from kwmlp.artifact.sidecar import (
    Device, EngineInfo, first_fitting, mismatch, read_sidecar, sidecar_path, write_sidecar,
)

ORIN = Device("Orin", "8.7", "10.3.0", "12.6")


def test_default_profiles():
    ps = tb.profiles_from_options()
    assert [p.name for p in ps] == ["latency", "throughput", "long"]
    assert all(p.min == (1, 1) for p in ps)
    assert ps[0].max == (8, 32000) and ps[0].opt == (1, 16000)
    assert ps[1].max == (64, 160000) and ps[1].opt == (16, 160000)
    assert ps[2].max == (1, 600 * 16000)
    info = EngineInfo(ORIN, "audio", ps, "fp16", "strongly-typed", "m.onnx", "0" * 64)
    assert first_fitting(info.profiles, (1, 16000)) == 0 and first_fitting(info.profiles, (32, 48000)) == 1
    assert first_fitting(info.profiles, (1, 300 * 16000)) == 2 and first_fitting(info.profiles, (2, 300 * 16000)) is None


def test_profiles_from_options():
    one = tb.profiles_from_options(tb.ProfileOptions(max_batch=(4,), max_seconds=(30.0,)))
    assert len(one) == 1 and one[0].max == (4, 480000) and one[0].opt == (4, 160000)  # opt capped at max batch
    two = tb.profiles_from_options(tb.ProfileOptions(max_batch=(8, 1), max_seconds=(2.0, 600.0), opt_batch=(1,),
                                                     opt_seconds=(1.0, 60.0)))
    assert [(p.opt, p.max) for p in two] == [((1, 16000), (8, 32000)), ((1, 960000), (1, 9600000))]
    with pytest.raises(KwmlpError, match="once or as many times"):
        tb.profiles_from_options(tb.ProfileOptions(max_batch=(8, 1, 2), max_seconds=(2.0, 600.0)))
    with pytest.raises(KwmlpError, match="must grow from min to opt to max"):
        tb.profiles_from_options(tb.ProfileOptions(max_batch=(2,), opt_batch=(4,)))
    with pytest.raises(KwmlpError, match="seconds > 0"):
        tb.profiles_from_options(tb.ProfileOptions(max_seconds=(0.0,)))


def test_sidecar_round_trip_and_mismatch(tmp_path):
    engine = tmp_path / "m.engine"
    info = EngineInfo(ORIN, "audio", tb.profiles_from_options(), "fp16", "strongly-typed", "m.onnx", "ab" * 32,
                      export={"precision": "fp16", "dims": {"dim": 64}}, keywords_engine="m.keywords.engine")
    write_sidecar(str(engine), info)
    assert read_sidecar(str(engine)) == info
    assert json.loads(open(sidecar_path(str(engine))).read())["device"]["trt_version"] == "10.3.0"
    assert info.onnx_abspath(str(engine)) == str(tmp_path / "m.onnx")
    assert mismatch(ORIN, ORIN) is None
    assert mismatch(ORIN, Device("NVIDIA H100", "9.0", "10.3.0")) == (
        "it was built for Orin (compute capability 8.7) but this GPU is NVIDIA H100 (compute capability 9.0); "
        "rebuild it here with `kwmlp build`")
    assert mismatch(ORIN, Device("Orin", "8.7", "10.7.0")) == (
        "it was built with TensorRT 10.3.0 but this machine has TensorRT 10.7.0; rebuild it here with `kwmlp build`")
    (tmp_path / "x.engine.json").write_text('{"format": "other"}')
    with pytest.raises(KwmlpError, match="not a kwmlp-rt engine sidecar"):
        read_sidecar(str(tmp_path / "x.engine"))
    with pytest.raises(KwmlpError, match="has no sidecar"):
        read_sidecar(str(tmp_path / "none.engine"))


def test_timing_cache_keyed_by_gpu_and_trt(tmp_path):
    a = tb.timing_cache_path(ORIN, str(tmp_path))
    assert a == str(tmp_path / "orin-sm8.7-trt10.3.0.timing-cache")
    assert a != tb.timing_cache_path(Device("Orin", "8.7", "10.7.0"), str(tmp_path))


def test_build_without_tensorrt_is_one_line(random_exported):
    code = ("import sys; sys.modules['tensorrt'] = None; from kwmlp.apps.cli import main; "
            f"sys.exit(main(['build', {random_exported()!r}, '-o', '/tmp/kwmlp-never.engine']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    assert lines[0].startswith("kwmlp build: error: TensorRT is not installed")
    assert "pip install -e '.[gpu]'" in lines[0] and "python3-libnvinfer" in lines[0]


# --- a recording fake of the TensorRT 10 Python API, enough for build_engine ----------------

class _Enum:
    def __init__(self, **members):
        self.__dict__.update(members)


def fake_tensorrt(strongly_typed: bool = True, fp16_flag: bool = True, plan: bytes | None = b"PLAN"):
    calls = {"profiles": [], "flags": [], "cleared": [], "network_flags": None, "precisions": {},
             "accept_cache": lambda data: True}
    float32, float16, int64 = "float32", "float16", "int64"

    class Tensor:
        def __init__(self, name, dtype):
            self.name, self.dtype = name, dtype

    class Layer:
        def __init__(self, name, dtypes):
            self.name, self._out = name, [Tensor(f"{name}:{i}", d) for i, d in enumerate(dtypes)]
            self.num_outputs = len(dtypes)

        def get_output(self, i):
            return self._out[i]

        @property
        def precision(self):
            return calls["precisions"].get(self.name)

        @precision.setter
        def precision(self, t):
            calls["precisions"][self.name] = t

        def set_output_type(self, i, t):
            assert self._out[i].dtype == t

    class Network:
        num_inputs = 1
        layers = [Layer("stft", [float32]), Layer("block0", [float16]), Layer("shape", [int64])]
        num_layers = len(layers)

        def get_input(self, i):
            return Tensor("audio", float32)

        def get_layer(self, i):
            return self.layers[i]

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, mn, opt, mx):
            self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))

    class Cache:
        def serialize(self):
            return b"CACHE"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = size

        def set_flag(self, flag):
            calls["flags"].append(flag)

        def clear_flag(self, flag):
            calls["cleared"].append(flag)

        def add_optimization_profile(self, p):
            calls["profiles"].append(p.shapes)
            return len(calls["profiles"]) - 1

        def create_timing_cache(self, data):
            calls["cache_in"] = data
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            # TensorRT returns False for a cache from another device or version (or refuses any)
            assert ignore_mismatch is False
            accepted = calls["accept_cache"](calls["cache_in"])
            self.cache = cache if accepted else None
            return accepted

        def get_timing_cache(self):
            return getattr(self, "cache", None)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            calls["config"] = Config()
            return calls["config"]

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, net, config):
            return plan

    class OnnxParser:
        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return True

    creation = {"STRONGLY_TYPED": 5} if strongly_typed else {}
    builder_flags = {"TF32": "TF32"}  # on by default in every TensorRT 10/11
    builder_flags.update({"FP16": "FP16", "OBEY_PRECISION_CONSTRAINTS": "OBEY"} if fp16_flag else {})
    trt = types.SimpleNamespace(
        __version__="10.3.0", Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None}),
        Builder=Builder, OnnxParser=OnnxParser, NetworkDefinitionCreationFlag=_Enum(**creation),
        BuilderFlag=_Enum(**builder_flags), MemoryPoolType=_Enum(WORKSPACE="WORKSPACE"),
        float32=float32, float16=float16,
    )
    return trt, calls


class FakeCuda:
    def device(self):
        return "Orin", "8.7", "12.6"

    def context(self):
        import contextlib

        return contextlib.nullcontext()


@pytest.fixture
def onnx_file(tmp_path):
    p = tmp_path / "m.onnx"
    p.write_bytes(b"onnx bytes")
    return str(p)


def _build(onnx_file, tmp_path, trt, **kw):
    return tb.build_engine(onnx_file, str(tmp_path / "out" / "m.engine"), tb.profiles_from_options(),
                           precision="fp16", export={"precision": "fp16"}, timing_cache_dir=str(tmp_path / "cache"),
                           trt=trt, cuda=FakeCuda(), **kw)


def test_build_strongly_typed(onnx_file, tmp_path):
    trt, calls = fake_tensorrt()
    info = _build(onnx_file, tmp_path, trt, workspace_mib=512)
    assert calls["network_flags"] == 1 << 5 and calls["flags"] == []  # no FP16 flag on a strongly typed network
    assert calls["cleared"] == ["TF32"]  # FP32 layers stay FP32, not TF32
    assert calls["workspace"] == 512 << 20
    assert not hasattr(calls["config"], "builder_optimization_level")  # TensorRT's default unless asked
    assert [set(p) for p in calls["profiles"]] == [{"audio"}] * 3  # every input in every profile
    assert calls["profiles"][2]["audio"] == ((1, 1), (1, 960000), (1, 9600000))
    assert (tmp_path / "out" / "m.engine").read_bytes() == b"PLAN"
    assert read_sidecar(str(tmp_path / "out" / "m.engine")) == info
    assert info.network == "strongly-typed" and info.onnx_path == "../m.onnx" and info.device == ORIN
    assert (tmp_path / "cache" / "orin-sm8.7-trt10.3.0.timing-cache").read_bytes() == b"CACHE"
    _build(onnx_file, tmp_path, trt)
    assert calls["cache_in"] == b"CACHE"  # the second build starts from the cache on disk
    _build(onnx_file, tmp_path, trt, optimization_level=1)
    assert calls["config"].builder_optimization_level == 1


@pytest.mark.parametrize("accepts,saved", [
    (lambda data: data != b"OLD", b"CACHE"),  # the cache on disk is another device's: a fresh one
    (lambda data: False, b"OLD"),  # no cache at all: the engine is still written, the old cache kept
])
def test_refused_timing_cache_starts_fresh_and_the_engine_comes_first(onnx_file, tmp_path, caplog, accepts, saved):
    trt, calls = fake_tensorrt()
    (tmp_path / "cache").mkdir()
    cache = tmp_path / "cache" / "orin-sm8.7-trt10.3.0.timing-cache"
    cache.write_bytes(b"OLD")
    calls["accept_cache"] = accepts
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        _build(onnx_file, tmp_path, trt)
    assert (tmp_path / "out" / "m.engine").read_bytes() == b"PLAN"
    assert "refused the timing cache" in caplog.text
    assert cache.read_bytes() == saved


def test_build_precision_constraints_fallback(onnx_file, tmp_path):
    trt, calls = fake_tensorrt(strongly_typed=False)
    info = _build(onnx_file, tmp_path, trt)
    assert info.network == "precision-constraints" and calls["network_flags"] == 0
    assert calls["flags"] == ["FP16", "OBEY"]
    assert calls["precisions"] == {"stft": "float32", "block0": "float16"}  # the ONNX's types, shape layers untouched


def test_build_on_tensorrt_without_fp16_flag(onnx_file, tmp_path):
    trt, calls = fake_tensorrt(strongly_typed=False, fp16_flag=False)  # TensorRT 11: always strongly typed
    assert _build(onnx_file, tmp_path, trt).network == "strongly-typed" and calls["flags"] == []
    with pytest.raises(KwmlpError, match="has no FP16 builder flag"):
        _build(onnx_file, tmp_path, trt, network="precision-constraints")


def test_failed_build_writes_nothing(onnx_file, tmp_path):
    trt, _ = fake_tensorrt(plan=None)
    with pytest.raises(KwmlpError, match="could not build an engine"):
        _build(onnx_file, tmp_path, trt)
    assert not (tmp_path / "out" / "m.engine").exists() and not (tmp_path / "out" / "m.engine.json").exists()


def test_build_without_cuda_bindings_is_one_line(random_exported):
    code = ("import sys, types; t = types.ModuleType('tensorrt'); t.__version__ = '10.3.0'; sys.modules['tensorrt'] = t\n"
            "for m in ('cuda', 'cuda.bindings', 'pycuda', 'pycuda.driver'): sys.modules[m] = None\n"
            "from kwmlp.apps.cli import main\n"
            f"sys.exit(main(['build', {random_exported()!r}, '-o', '/tmp/kwmlp-never.engine']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("kwmlp build: error: cuda-python is not installed (nor pycuda)")


def test_build_logs_the_trtexec_command_of_what_it_builds(onnx_file, tmp_path, caplog):
    trt, calls = fake_tensorrt()
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        _build(onnx_file, tmp_path, trt, workspace_mib=512, optimization_level=1)
    [line] = [r.getMessage() for r in caplog.records if "trtexec" in r.getMessage()]
    engine, cache = tmp_path / "out" / "m.engine", tmp_path / "cache" / "orin-sm8.7-trt10.3.0.timing-cache"
    assert line == (f"kwmlp: the same build with trtexec: trtexec --onnx={onnx_file} --saveEngine={engine} "
                    "--profile=0 --minShapes=audio:1x1 --optShapes=audio:1x16000 --maxShapes=audio:8x32000 "
                    "--profile=1 --minShapes=audio:1x1 --optShapes=audio:16x160000 --maxShapes=audio:64x160000 "
                    "--profile=2 --minShapes=audio:1x1 --optShapes=audio:1x960000 --maxShapes=audio:1x9600000 "
                    "--stronglyTyped --noTF32 --memPoolSize=workspace:512M --builderOptimizationLevel=1 "
                    f"--timingCacheFile={cache} --skipInference")
    # the same profiles, typing, TF32, workspace and level as the builder was given
    assert calls["profiles"] == [{"audio": (p.min, p.opt, p.max)} for p in tb.profiles_from_options()]
    assert calls["cleared"] == ["TF32"] and calls["workspace"] == 512 << 20
    assert calls["config"].builder_optimization_level == 1 and calls["network_flags"] == 1 << 5


def test_trtexec_command_of_the_precision_constraints_path(onnx_file, tmp_path, caplog):
    trt, calls = fake_tensorrt(strongly_typed=False)
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        _build(onnx_file, tmp_path, trt)
    [line] = [r.getMessage() for r in caplog.records if "trtexec" in r.getMessage()]
    assert " --fp16 --precisionConstraints=obey --layerPrecisions=stft:fp32,block0:fp16 " \
           "--layerOutputTypes=stft:fp32,block0:fp16 --noTF32 " in line and "--stronglyTyped" not in line
    assert calls["precisions"] == {"stft": "float32", "block0": "float16"}


def test_fixed_shape_exports_get_exact_profiles_first(random_checkpoint, checkpoint_copy_of_other, tmp_path):
    from kwmlp.artifact import read_model_info
    from kwmlp.export import ExportOptions, export_checkpoint
    from kwmlp.export.tensorrt_build import fixed_profiles

    out = tmp_path / "m.onnx"
    export_checkpoint(random_checkpoint, str(out), ExportOptions(fixed_shapes=((1, 16000), (4, 31680))))
    info = read_model_info(str(out))
    assert [(p.min, p.opt, p.max) for p in fixed_profiles(str(out), info)] == [
        ((1, 16000),) * 3, ((4, 31680),) * 3]
    fixed = tmp_path / "m.1x16000.onnx"
    (p,) = fixed_profiles(str(fixed), read_model_info(str(fixed)))
    assert p.min == p.max == (1, 16000) and p.name == "fixed 1x16000"
    # a fixed-shape file left from an export of another checkpoint is not this export's
    other = tmp_path / "other"
    other.mkdir()
    export_checkpoint(checkpoint_copy_of_other, str(other / "m.onnx"), ExportOptions(fixed_shapes=((2, 16000),)))
    (tmp_path / "m.2x16000.onnx").write_bytes((other / "m.2x16000.onnx").read_bytes())
    assert [p.min for p in fixed_profiles(str(out), info)] == [(1, 16000), (4, 31680)]


@pytest.fixture
def checkpoint_copy_of_other(tmp_path_factory):
    """A second random checkpoint (another seed: another sha256)."""
    import torch

    from conftest import random_state_dict

    path = tmp_path_factory.mktemp("other") / "other.pth"
    torch.save({"model_state_dict": random_state_dict(seed=7)}, path)
    return str(path)
