"""``kwmlp classify MODEL FILE...``: the keyword of one-second clips (``-``: standard input)."""

from __future__ import annotations

import json
import sys

BATCH = 64  # files classified together: one second of each is kept, each file read block by block


def add_parser(sub):
    p = sub.add_parser("classify", help="the Speech Commands keyword of one-second clips",
                       description="Classify clips into the 35 Speech Commands V2 keywords. A clip shorter than "
                                   "one second is centred in zeros; of a longer one, its loudest second is used.")
    p.add_argument("model", help="an .onnx file written by `kwmlp export` (its .keywords.onnx beside it)")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders; - reads standard input")
    p.add_argument("--top-k", type=int, default=5, help="how many classes to show per file (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON")
    from kwmlp.apps.audio import add_stream_arguments

    add_stream_arguments(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    from kwmlp.apps import audio
    from kwmlp.apps.commands.rounding import confidence, confidence_text
    from kwmlp.errors import KwmlpError
    from kwmlp.runtime import KEYWORDS, Embedder, classify
    from kwmlp.runtime.keywords import loudest_second

    if not 1 <= args.top_k <= len(KEYWORDS):
        raise KwmlpError(f"--top-k must be in [1, {len(KEYWORDS)}], got {args.top_k}")
    pcm = audio.pcm_format(args)
    files = [path for path, _ in audio.find_audio(args.files)]
    embedder = Embedder(args.model)
    rows, failed = [], 0
    for start in range(0, len(files), BATCH):
        clips, good = [], []
        for path in files[start : start + BATCH]:
            try:
                clips.append(loudest_second(audio.read_blocks(path, pcm=pcm)))
                good.append(path)
            except KwmlpError as e:
                failed += 1
                rows.append({"file": path, "error": str(e)})
                print(f"kwmlp classify: error: {e}", file=sys.stderr)
        for path, top in zip(good, classify(embedder, clips, args.top_k) if clips else []):
            rows.append({"file": path, "top": [{"label": l, "probability": confidence(p)} for l, p in top]})
            if not args.json:
                print(f"{path}  " + "  ".join(f"{l} {confidence_text(p)}" for l, p in top))
    if args.json:
        print(json.dumps(rows, indent=2))
    return 1 if failed else 0
