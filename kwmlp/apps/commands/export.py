"""``kwmlp export [CHECKPOINT] -o OUT.onnx``: the fused ONNX graph and its keyword graph."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("kwmlp")


def add_parser(sub):
    from kwmlp.dims import DEFAULT_OPSET as OPSET, SCENE_ALGORITHMS

    p = sub.add_parser("export", help="checkpoint (.pth) -> ONNX graph, waveform to embeddings",
                       description="Export a KW-MLP checkpoint to one ONNX graph from raw 16 kHz audio to "
                                   "embeddings, plus OUT.keywords.onnx for the keyword head.")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="the original HEAR kwmlp checkpoint, e.g. kwmlp.pth (default: the one `kwmlp download` "
                        "put in the data folder)")
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="fp16: the KW-MLP blocks in FP16, the MFCC front end, scene and timestamps kept in FP32 "
                        "(for GPUs: `kwmlp build` makes an FP16 engine of it); default: fp32")
    p.add_argument("--depth", type=int, default=None, help="embed after block K (paper Table 4; default: all)")
    p.add_argument("--scene", choices=SCENE_ALGORITHMS, default="iterative",
                   help="scene algorithm (paper Table 2; default: iterative)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET}, what TensorRT 10 takes)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="longest clip the iterative scene covers (default: 4 hours)")
    p.add_argument("--fixed-shape", action="append", default=[], metavar="BxS",
                   help="also write OUT.BxS.onnx, the embedding graph for input shape (B, S) alone, with no shape "
                        "arithmetic (TensorRT, CUDA graphs, DLA); repeatable, e.g. --fixed-shape 1x16000")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import dataclasses

    from kwmlp.artifact import parse_fixed_shape
    from kwmlp.errors import missing_extra

    checkpoint = args.checkpoint or _downloaded()
    try:
        from kwmlp.export import ExportOptions, export_checkpoint
    except ImportError as e:
        raise missing_extra(e.name, "export", "exporting") from e
    options = ExportOptions(precision=args.precision, depth=args.depth, scene=args.scene, opset=args.opset)
    if args.max_seconds is not None:
        options = dataclasses.replace(options, max_seconds=args.max_seconds)
    options.check()  # max_seconds first: it bounds the fixed shapes
    shapes = tuple(dict.fromkeys(parse_fixed_shape(spec, options.max_seconds) for spec in args.fixed_shape))
    for path in export_checkpoint(checkpoint, args.output, dataclasses.replace(options, fixed_shapes=shapes)):
        print(f"wrote {path}")
    return 0


def _downloaded() -> str:
    from kwmlp.apps.checkpoint_download import downloaded_checkpoint
    from kwmlp.errors import KwmlpError

    path = downloaded_checkpoint()
    if not os.path.isfile(path):
        raise KwmlpError(f"no checkpoint named and none downloaded ({path} does not exist): run `kwmlp download`, "
                         "or name one: kwmlp export CHECKPOINT -o OUT.onnx")
    log.info("kwmlp: exporting %s", path)
    return path
