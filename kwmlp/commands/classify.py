"""``kwmlp classify MODEL FILE...``: the keyword of one-second clips."""

from __future__ import annotations

import json
import sys


def add_parser(sub):
    p = sub.add_parser("classify", help="the Speech Commands keyword of one-second clips",
                       description="Classify clips into the 35 Speech Commands V2 keywords. A clip shorter than "
                                   "one second is centred in zeros; of a longer one, its loudest second is used.")
    p.add_argument("model", help="an .onnx file written by `kwmlp export` (its .keywords.onnx beside it)")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders")
    p.add_argument("--top-k", type=int, default=5, help="how many classes to show per file (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from kwmlp import audio
    from kwmlp.errors import KwmlpError
    from kwmlp.runtime import Embedder, classify

    files = [path for path, _ in audio.find_audio(args.files)]
    clips, good, failed = [], [], []
    for path in files:
        try:
            clips.append(audio.load(path))
            good.append(path)
        except KwmlpError as e:
            failed.append((path, str(e)))
    embedder = Embedder(args.model)
    tops = classify(embedder, clips, args.top_k) if clips else []
    if args.json:
        rows = [{"file": f, "top": [{"label": l, "probability": round(p, 6)} for l, p in t]} for f, t in zip(good, tops)]
        rows += [{"file": f, "error": e} for f, e in failed]
        print(json.dumps(rows, indent=2))
    else:
        width = max(len(f) for f in good) if good else 0
        for f, t in zip(good, tops):
            print(f"{f:<{width}}  " + "  ".join(f"{l} {p:.3f}" for l, p in t))
    for _, e in failed:
        print(f"kwmlp classify: error: {e}", file=sys.stderr)
    return 1 if failed else 0
