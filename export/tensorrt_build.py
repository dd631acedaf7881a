"""ONNX -> TensorRT engine (TensorRT 10.x Python API), with a sidecar JSON and a timing cache.

Precision lives in the ONNX graph (``kwmlp export --precision fp16`` puts explicit Casts around
the FP32 front end), so the network is built *strongly typed*: TensorRT then computes every
layer in the type the graph gives it. TensorRT 10.12 deprecated, and 11 removed, the FP16 builder
flag and precision constraints; for older versions (JetPack 6 ships 10.3) where a strongly typed
build is not wanted or not available, ``network="precision-constraints"`` builds a weakly typed
network with ``BuilderFlag.FP16`` and ``OBEY_PRECISION_CONSTRAINTS``, and pins every layer whose
output the graph types float32 (the front end, the scene, the casts) to FP32.

Importing this module needs neither TensorRT nor a GPU: they are loaded by :func:`build_engine`.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass

from kwmlp.errors import KwmlpError
from kwmlp.fileio import sha256_file, write_bytes_atomic
from kwmlp.trt import import_tensorrt, logger as trt_logger
from kwmlp.artifact.sidecar import (  # noqa: F401  (DEFAULT_PROFILES, keyword_profiles: kwmlp build's, named here too)
    DEFAULT_PROFILES, EngineInfo, Profile, default_profiles, keyword_profiles, samples_of, this_device,
    timing_cache_path, write_sidecar,
)

log = logging.getLogger("kwmlp")

NETWORKS = ("auto", "strongly-typed", "precision-constraints")


@dataclass(frozen=True)
class ProfileOptions:
    """``kwmlp build``'s profile options: one value each, or one per profile (same count)."""

    max_batch: tuple[int, ...] = ()
    max_seconds: tuple[float, ...] = ()
    opt_batch: tuple[int, ...] = ()
    opt_seconds: tuple[float, ...] = ()



def profiles_from_options(opts: ProfileOptions = ProfileOptions()) -> tuple[Profile, ...]:
    """The embedding engine's optimization profiles for ``audio (batch, samples)``.

    With no option set: :data:`DEFAULT_PROFILES`. Otherwise the k-th value of every option makes
    profile k; an option given once applies to every profile; an option left out takes the
    throughput profile's value (opt values are capped at the max ones). Shapes run from
    ``(1, 1)``: any clip shorter than the max runs, padding happens inside the graph.
    """
    given = {k: v for k, v in vars(opts).items() if v}
    if not given:
        return default_profiles()
    counts = {len(v) for v in given.values()} - {1}
    if len(counts) > 1:
        raise KwmlpError("--max-batch, --max-seconds, --opt-batch and --opt-seconds must each be given once or "
                         f"as many times as the others, got {', '.join(f'{k}: {len(v)}' for k, v in given.items())}")
    n = counts.pop() if counts else 1
    _, ob, os_, mb, ms = DEFAULT_PROFILES[1]
    pick = lambda key, default: [given[key][i if len(given[key]) > 1 else 0] if key in given else default for i in range(n)]
    out = []
    for i, (max_b, max_s, opt_b, opt_s) in enumerate(zip(pick("max_batch", mb), pick("max_seconds", ms),
                                                         pick("opt_batch", ob), pick("opt_seconds", os_))):
        if max_b < 1 or max_s <= 0 or opt_b < 1 or opt_s <= 0:
            raise KwmlpError(f"profile {i}: batches must be >= 1 and seconds > 0, got max {max_b} x {max_s} s, "
                             f"opt {opt_b} x {opt_s} s")
        if "opt_batch" not in given:
            opt_b = min(opt_b, max_b)
        if "opt_seconds" not in given:
            opt_s = min(opt_s, max_s)
        out.append(Profile(f"profile{i}", (1, 1), (opt_b, samples_of(opt_s)), (max_b, samples_of(max_s))))
    return tuple(out)


def fixed_profiles(onnx_path: str, info) -> tuple[Profile, ...]:
    """One exact profile (min = opt = max) per fixed-shape graph of the export (``kwmlp export
    --fixed-shape``): the shape of a fixed-shape file itself, or of each one of this export beside
    ``onnx_path``. They come first, so that the runtime runs those shapes on kernels tuned for
    exactly them (it takes the first profile that fits a call)."""
    from kwmlp.artifact import fixed_shapes_of
    from kwmlp.artifact.shapes import format_fixed_shape

    shapes = [info.shape] if info.shape is not None else sorted(fixed_shapes_of(onnx_path, info))
    return tuple(Profile(f"fixed {format_fixed_shape(*s)}", s, s, s) for s in shapes)


def network_mode(trt, requested: str = "auto") -> str:
    """Which network to build: strongly typed where TensorRT has it (10.x) or where the FP16 flag is
    gone (11: always strongly typed); precision constraints when asked for on a TensorRT that has them."""
    if requested not in NETWORKS:
        raise KwmlpError(f"network must be one of {', '.join(NETWORKS)}, got {requested!r}")
    strong = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    weak_ok = hasattr(trt.BuilderFlag, "FP16") and hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS")
    if requested == "precision-constraints" and not weak_ok:
        raise KwmlpError(f"TensorRT {trt.__version__} has no FP16 builder flag; build the network strongly typed")
    if requested == "auto":
        return "strongly-typed" if strong or not weak_ok else "precision-constraints"
    return requested


def _network_flags(trt, mode: str) -> int:
    if mode == "strongly-typed" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # TensorRT 11 (strongly typed always), or weakly typed for precision constraints


def _pin_precisions(trt, network) -> dict[str, tuple[str, int]]:
    """Precision constraints for a weakly typed network: every layer computes in the type the ONNX
    graph gives its float outputs (FP32 front end and scene, FP16 blocks). Returns the layers
    pinned: name -> (trtexec's name of the type, number of outputs)."""
    pinned = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        types = {layer.get_output(k).dtype for k in range(layer.num_outputs)}
        for t, name in ((trt.float32, "fp32"), (trt.float16, "fp16")):
            if types == {t}:
                layer.precision = t
                for k in range(layer.num_outputs):
                    layer.set_output_type(k, t)
                pinned[layer.name] = (name, layer.num_outputs)
    return pinned


def _set_precision_constraints(trt, network, config, precision: str) -> dict[str, tuple[str, int]]:
    """The weakly typed path: the FP16 flag for an fp16 export, and every layer pinned to its ONNX type."""
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    pinned = _pin_precisions(trt, network)
    log.info("kwmlp: TensorRT %s, weakly typed network, %d layers pinned to their ONNX precision",
             trt.__version__, len(pinned))
    return pinned


def trtexec_command(onnx_path: str, engine_path: str, input_name: str, profiles: tuple[Profile, ...], *, network: str,
                    precision: str, workspace_mib: int, optimization_level: int | None, cache_path: str,
                    no_tf32: bool = True, pinned: dict[str, tuple[str, int]] | None = None) -> str:
    """The trtexec command (TensorRT 10.x and 11.x) that builds what :func:`build_engine` builds from
    the same arguments: one ``--profile=K`` with its min/opt/max shapes per profile, the network's
    typing (``pinned``: the layers :func:`_pin_precisions` pinned), TF32 off, the workspace, the
    optimization level and the timing cache. No sidecar is written: the runtime then reads the
    profiles from the engine itself."""
    shape = lambda s: f"{input_name}:{s[0]}x{s[1]}"
    args = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}"]
    for k, p in enumerate(profiles):
        args += [f"--profile={k}", f"--minShapes={shape(p.min)}", f"--optShapes={shape(p.opt)}",
                 f"--maxShapes={shape(p.max)}"]
    if network == "strongly-typed":
        args.append("--stronglyTyped")  # a no-op on TensorRT 11, where every network is
    else:
        args += (["--fp16"] if precision == "fp16" else []) + ["--precisionConstraints=obey"]
        if pinned:
            args += ["--layerPrecisions=" + ",".join(f"{n}:{t}" for n, (t, _) in pinned.items()),
                     "--layerOutputTypes=" + ",".join(f"{n}:{'+'.join([t] * k)}" for n, (t, k) in pinned.items())]
    args += (["--noTF32"] if no_tf32 else []) + [f"--memPoolSize=workspace:{workspace_mib}M"]
    if optimization_level is not None:
        args.append(f"--builderOptimizationLevel={optimization_level}")
    return shlex.join(args + [f"--timingCacheFile={cache_path}", "--skipInference"])


def _parse(trt, logger, network, onnx_path: str) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        detail = "; ".join(f"{e.node_name()} ({e.node_operator()}): {e.desc()}" for e in errors[:3])
        raise KwmlpError(f"TensorRT {trt.__version__} could not parse {onnx_path}: {detail or 'no detail'}")


def _add_profiles(builder, network, config, profiles: tuple[Profile, ...]) -> None:
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for p in profiles:
        prof = builder.create_optimization_profile()
        for t in inputs:  # every dynamic input in every profile (here: the one 2-D input)
            prof.set_shape(t.name, p.min, p.opt, p.max)
        if config.add_optimization_profile(prof) < 0:
            raise KwmlpError(f"TensorRT rejected the optimization profile {p.name} (min {p.min}, opt {p.opt}, max {p.max})")


def build_engine(
    onnx_path: str, engine_path: str, profiles: tuple[Profile, ...], *, precision: str, export: dict,
    workspace_mib: int = 1024, network: str = "auto", timing_cache_dir: str | None = None,
    keywords_engine: str = "", trt=None, cuda=None, optimization_level: int | None = None,
) -> EngineInfo:
    """Build ``onnx_path`` into ``engine_path`` and write its sidecar; both atomically.

    ``precision`` is the ONNX's (``"fp16"``/``"fp32"``), ``export`` its kwmlp metadata;
    ``optimization_level`` TensorRT's builder optimization level (0-5, default 3). ``trt`` and
    ``cuda`` default to the installed TensorRT and CUDA API (:func:`kwmlp.cuda.load`).
    """
    if trt is None:
        trt = import_tensorrt()
    if cuda is None:
        from kwmlp import cuda as cuda_api

        cuda = cuda_api.load()
    device = this_device(trt, cuda)
    mode = network_mode(trt, network)
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    net = builder.create_network(_network_flags(trt, mode))
    _parse(trt, logger, net, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if optimization_level is not None:  # TensorRT's default is 3; 0-1 build in a fraction of the time
        config.builder_optimization_level = optimization_level
    no_tf32 = hasattr(trt.BuilderFlag, "TF32")
    if no_tf32:
        # TF32 is on by default and rounds FP32 inner products to 10-bit mantissas on Ampere and
        # later: the FP32 islands (the STFT convolution, the mel matrix) must really be FP32
        config.clear_flag(trt.BuilderFlag.TF32)
    pinned = _set_precision_constraints(trt, net, config, precision) if mode == "precision-constraints" else None
    _add_profiles(builder, net, config, profiles)

    cache_path = timing_cache_path(device, timing_cache_dir)
    _use_timing_cache(config, cache_path)
    plan = builder.build_serialized_network(net, config)
    if plan is None:
        raise KwmlpError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path} (see the log above)")
    log.info("kwmlp: the same build with trtexec: %s", trtexec_command(
        onnx_path, engine_path, net.get_input(0).name, profiles, network=mode, precision=precision,
        workspace_mib=workspace_mib, optimization_level=optimization_level, cache_path=cache_path, no_tf32=no_tf32,
        pinned=pinned))
    rel = os.path.relpath(os.path.abspath(onnx_path), os.path.dirname(os.path.abspath(engine_path)))
    info = EngineInfo(
        device=device, input_name=net.get_input(0).name, profiles=tuple(profiles), precision=precision,
        network=mode, onnx_path=rel, onnx_sha256=sha256_file(onnx_path), export=export,
        keywords_engine=keywords_engine,
    )
    write_bytes_atomic(engine_path, bytes(plan))
    write_sidecar(engine_path, info)
    _save_timing_cache(config, cache_path)  # after the engine: a cache that fails to save costs no build
    return info


def _use_timing_cache(config, cache_path: str) -> None:
    """Start from the timing cache on disk; a cache TensorRT refuses (another device or version:
    ``set_timing_cache`` returns False) is replaced by a fresh one."""
    cached = b""
    if os.path.isfile(cache_path):
        with open(cache_path, "rb") as f:
            cached = f.read()
    if config.set_timing_cache(config.create_timing_cache(cached), False) or not cached:
        return
    log.warning("kwmlp: TensorRT refused the timing cache %s (another GPU or TensorRT version?); "
                "starting a fresh one", cache_path)
    if not config.set_timing_cache(config.create_timing_cache(b""), False):
        log.warning("kwmlp: TensorRT refused a fresh timing cache too; building without one")


def _save_timing_cache(config, cache_path: str) -> None:
    cache = config.get_timing_cache()
    if cache is None:  # none was set (refused twice above)
        return
    write_bytes_atomic(cache_path, bytes(cache.serialize()))
