"""``kwmlp spot MODEL FILE...``: keywords in long audio, with a sliding window."""

from __future__ import annotations

import json
import sys


def add_parser(sub):
    from kwmlp.runtime.keywords import DEFAULT_THRESHOLDS, MODES

    p = sub.add_parser("spot", help="find keywords in long audio with a sliding window",
                       description="Slide a window over each file and report the Speech Commands keywords whose "
                                   "probability exceeds the threshold (modes as in Keyword-MLP's "
                                   "window_inference.py: multi = every window, max = the most confident, "
                                   "n_voting = the class with most windows).")
    p.add_argument("model", help="an .onnx file written by `kwmlp export` (its .keywords.onnx beside it)")
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files or folders; - reads standard input")
    p.add_argument("--window", type=float, default=1.0, help="window length in seconds (default 1.0)")
    p.add_argument("--hop", type=float, default=0.25, help="hop between windows in seconds (default 0.25)")
    defaults = ", ".join(f"{v:g} for {m}" for m, v in DEFAULT_THRESHOLDS.items())
    p.add_argument("--threshold", type=float, default=None,
                   help=f"minimum probability (default: the mode's, measured: {defaults})")
    p.add_argument("--mode", choices=MODES, default="multi", help="what to report (default multi)")
    p.add_argument("--merge", action="store_true",
                   help="with --mode multi: join overlapping windows of the same keyword into one detection")
    p.add_argument("--batch-size", type=int, default=64, help="windows per model run (default 64)")
    p.add_argument("--json", action="store_true", help="print JSON")
    from kwmlp.apps.audio import add_stream_arguments

    add_stream_arguments(p)
    p.set_defaults(run=run)
    return p


def _json(d) -> dict:
    from dataclasses import asdict

    from kwmlp.apps.commands.rounding import confidence

    return {**asdict(d), "confidence": confidence(d.confidence)}


def _why_none(scan) -> str:
    """Why a :class:`~kwmlp.runtime.Spotting` found nothing: its best window, below the threshold."""
    from kwmlp.apps.commands.rounding import confidence_text

    b = scan.best
    if b is None:
        return "the audio has no samples"
    return f"no window above {scan.threshold:g} (best: {b.label!r} {confidence_text(b.confidence)} at " \
           f"{b.start_s:g}-{b.end_s:g} s)"


def run(args) -> int:
    from kwmlp.apps import audio
    from kwmlp.apps.commands.rounding import confidence_text
    from kwmlp.errors import KwmlpError
    from kwmlp.runtime import Embedder
    from kwmlp.runtime.keywords import check_options, default_threshold, merge, spot_scan

    if args.threshold is None:
        args.threshold = default_threshold(args.mode)
    check_options(args.window, args.hop, args.threshold, args.mode)  # before any file is read
    if args.merge and args.mode != "multi":
        raise KwmlpError(f"--merge joins the windows of --mode multi; --mode {args.mode} reports one detection")
    if args.batch_size < 1:
        raise KwmlpError(f"--batch-size must be at least 1, got {args.batch_size}")
    pcm = audio.pcm_format(args)
    embedder = Embedder(args.model)
    rows, failed = [], 0
    for path, _ in audio.find_audio(args.files):
        try:
            scan = spot_scan(embedder, audio.read_blocks(path, pcm=pcm), args.window, args.hop, args.threshold,
                             args.mode, args.batch_size)
        except KwmlpError as e:
            failed += 1
            print(f"kwmlp spot: error: {e}", file=sys.stderr)
            continue
        found = merge(scan.detections) if args.merge else scan.detections
        rows.append({"file": path, "detections": [_json(d) for d in found], "threshold": scan.threshold,
                     "best": _json(scan.best) if scan.best else None})
        if not args.json:
            if not found:
                print(f"{path}: no keyword: {_why_none(scan)}")
            for d in found:
                votes = f"  ({d.votes} windows)" if d.votes > 1 or args.mode == "n_voting" else ""
                print(f"{path}  {d.start_s:8.2f} - {d.end_s:8.2f} s  {d.label:<8} {confidence_text(d.confidence)}{votes}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 1 if failed else 0
