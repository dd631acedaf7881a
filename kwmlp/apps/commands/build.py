"""``kwmlp build MODEL.onnx -o MODEL.engine``: TensorRT engines for an export, on the GPU that will run them."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("kwmlp")


def add_parser(sub):
    p = sub.add_parser(
        "build", help="exported .onnx -> TensorRT engines (needs TensorRT and a GPU)",
        description="Build TensorRT engines for MODEL.onnx and its keyword graph, on the GPU that will run them: "
                    "OUT.engine and OUT.keywords.engine, each with a .json sidecar. An fp16 export gives an FP16 "
                    "engine. The profile options take one value, or one per profile (same count each).")
    p.add_argument("model", help="an .onnx file written by `kwmlp export` (fp16 or fp32)")
    p.add_argument("-o", "--output", required=True, help="output .engine path")
    p.add_argument("--max-batch", type=int, nargs="+", default=(), help="largest batch of each profile")
    p.add_argument("--max-seconds", type=float, nargs="+", default=(), help="longest clip of each profile")
    p.add_argument("--opt-batch", type=int, nargs="+", default=(), help="batch each profile is tuned for")
    p.add_argument("--opt-seconds", type=float, nargs="+", default=(), help="clip length each profile is tuned for")
    p.add_argument("--workspace", type=int, default=1024, help="builder workspace limit in MiB (default 1024)")
    p.add_argument("--network", choices=("auto", "strongly-typed", "precision-constraints"), default="auto",
                   help="auto: strongly typed; precision-constraints: the FP16 flag path of TensorRT < 10.12")
    p.add_argument("--optimization-level", type=int, choices=range(6), default=None, metavar="0-5",
                   help="TensorRT's builder optimization level (default 3; 0-1 build much faster, run slower)")
    p.add_argument("--timing-cache-dir", default=None,
                   help="where timing caches live, one per GPU and TensorRT version (default ~/.cache/kwmlp/tensorrt)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from kwmlp import artifact, cuda
    from kwmlp.errors import KwmlpError
    from kwmlp.export import tensorrt_build as tb

    trt = tb.import_tensorrt()
    api = cuda.load()
    if args.workspace < 1:
        raise KwmlpError(f"--workspace must be at least 1 MiB, got {args.workspace}")
    info = artifact.read_model_info(args.model)
    profiles = tb.fixed_profiles(args.model, info) + tb.profiles_from_options(tb.ProfileOptions(
        tuple(args.max_batch), tuple(args.max_seconds), tuple(args.opt_batch), tuple(args.opt_seconds)))
    if info.shape is not None:  # a fixed-shape graph: its one shape is its one profile
        profiles = tb.fixed_profiles(args.model, info)
    too_long = [p.name for p in profiles if p.max_seconds > info.max_seconds]
    if too_long:
        raise KwmlpError(f"profile {too_long[0]} is longer than the {info.max_seconds:g} s the export's scene covers; "
                         "export again with a larger --max-seconds")
    kw_onnx = artifact.keywords_model_path(args.model, info)
    kw_info = artifact.read_model_info(kw_onnx)
    kw_engine = artifact.keywords_path_for(args.output)
    common = dict(workspace_mib=args.workspace, network=args.network, timing_cache_dir=args.timing_cache_dir,
                  trt=trt, cuda=api, optimization_level=args.optimization_level)
    # the keyword engine first: an embedding engine on disk always has its keyword engine beside it
    tb.build_engine(kw_onnx, kw_engine, tb.keyword_profiles(), precision=kw_info.precision,
                    export=kw_info.summary(), **common)
    built = tb.build_engine(args.model, args.output, profiles, precision=info.precision, export=info.summary(),
                            keywords_engine=os.path.basename(kw_engine), **common)
    d = built.device
    print(f"wrote {args.output}\nwrote {kw_engine}\n"
          f"  {built.precision} {built.network}, TensorRT {d.trt_version}, {d.gpu_name} (sm {d.compute_capability}), "
          f"profiles: {', '.join(f'{p.name} {p.max[0]}x{p.max_seconds:g}s' for p in built.profiles)}")
    return 0
