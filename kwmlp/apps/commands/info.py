"""``kwmlp info MODEL``: an exported model's settings, inputs and outputs."""

from __future__ import annotations

import json


def add_parser(sub):
    p = sub.add_parser("info", help="show an exported model's settings, inputs and outputs",
                       description="Print what an export recorded in its ONNX metadata (layout, precision, scene, "
                                   "checkpoint sha256, version, longest scene, keyword model, dims), its inputs "
                                   "and outputs with their types and shapes, and the fixed-shape graphs beside it.")
    p.add_argument("model", help="an .onnx file written by `kwmlp export` (also lists its fixed-shape graphs)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)
    return p


def describe(path: str) -> dict:
    """What ``kwmlp info`` prints: settings, inputs, outputs and, for an export of any shape, the
    fixed-shape graphs beside it (``fixed_shapes``: model and ``[batch, samples]``)."""
    from kwmlp.artifact import LAYOUT_EMBEDDINGS, ModelInfo, fixed_shape_files, open_onnx

    session = open_onnx(path)
    info = ModelInfo.from_props(dict(session.get_modelmeta().custom_metadata_map), path)
    io = lambda args: [{"name": a.name, "dtype": a.type, "shape": list(a.shape)} for a in args]
    listed = info.layout == LAYOUT_EMBEDDINGS and not info.fixed_shape
    return {
        "model": path,
        "settings": info.summary(),
        "inputs": io(session.get_inputs()),
        "outputs": io(session.get_outputs()),
        "fixed_shapes": [{"model": p, "shape": list(shape)} for p, shape in fixed_shape_files(path)] if listed else [],
    }


def run(args) -> int:
    d = describe(args.model)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(d["model"])
    for k, v in d["settings"].items():
        print(f"  {k}: {json.dumps(v) if isinstance(v, dict) else v}")
    for kind in ("inputs", "outputs"):
        print(f"{kind}:")
        for a in d[kind]:
            print(f"  {a['name']}: {a['dtype']} {a['shape']}")
    if d["fixed_shapes"]:
        print("fixed-shape graphs beside it:")
        for f in d["fixed_shapes"]:
            print(f"  {f['model']}: audio {f['shape']}")
    return 0
