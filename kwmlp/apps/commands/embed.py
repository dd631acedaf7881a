"""``kwmlp embed MODEL INPUT... -o OUTDIR``: one embedding file per audio file."""

from __future__ import annotations

import sys


def add_parser(sub):
    p = sub.add_parser("embed", help="embed audio files and folders: one .npz per file",
                       description="Embed audio files (any format libsndfile reads, any rate and channel count) "
                                   "and folders (recursed). Writes OUTDIR/<relative path>.npz with "
                                   "timestamp_embeddings [N, 64], timestamps [N] (ms), scene_embedding [1024], "
                                   "sample_rate_in and duration_s.")
    p.add_argument("model", help="an .onnx file written by `kwmlp export`")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--format", choices=("npz", "npy", "parquet"), default="npz",
                   help="npz: one file per input (default); npy: a folder per input with one .npy per field; "
                        "parquet (with --ray): Parquet files, one row per input")
    p.add_argument("--batch-size", type=int, default=16,
                   help="clips of the same length in whole seconds embedded together (default 16)")
    p.add_argument("--skip-existing", action="store_true", help="leave inputs whose output exists (resume a run)")
    p.add_argument("--keep-extension", action="store_true",
                   help="name outputs after the whole file name, a.wav -> a.wav.npz (for a.wav and a.flac in one folder)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: physical cores)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray Data: a local cluster, or the cluster at ADDRESS ('auto', 'ray://host:10001'); "
                        "needs pip install -e '.[distributed]'")
    p.add_argument("--actors", type=int, default=1, help="with --ray: embedding actors, one Embedder each (default 1)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import logging

    logger = logging.getLogger("kwmlp")
    level = logger.level
    if args.quiet:
        logger.setLevel(logging.WARNING)
    try:
        return _embed(args)
    finally:
        logger.setLevel(level)  # main() may be called again in this process


def _embed(args) -> int:
    import collections

    from kwmlp.apps.audio import describe_left_out
    from kwmlp.apps.pipeline import Progress, embed_files, plan
    from kwmlp.errors import KwmlpError
    from kwmlp.runtime import Embedder

    if args.batch_size < 1:
        raise KwmlpError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.ray is not None:
        return _embed_on_ray(args)
    if args.format == "parquet":
        raise KwmlpError("--format parquet needs --ray")
    left_out: collections.Counter = collections.Counter()
    jobs = plan(args.inputs, args.output, args.format, args.keep_extension, left_out)
    if not jobs:
        others = f" ({describe_left_out(left_out)})" if left_out else ""
        raise KwmlpError(f"no audio files found in {', '.join(args.inputs)}{others}")
    embedder = Embedder(args.model, threads=args.threads)
    progress = Progress()
    bar = _bar(len(jobs), args.quiet)
    for outcome in embed_files(embedder, jobs, args.batch_size, args.skip_existing):
        progress.add(outcome)
        if outcome.error:
            msg = f"kwmlp embed: error: {outcome.error}"
            if bar:
                bar.write(msg, file=sys.stderr)  # above the bar, which stays at the bottom
            else:
                print(msg, file=sys.stderr)
        if bar:
            bar.update(1)
            bar.set_postfix_str(progress.postfix())
    if bar:
        bar.close()
    if not args.quiet:
        skipped = f", {progress.skipped} skipped (already done)" if progress.skipped else ""
        failed = f", {progress.failed} failed" if progress.failed else ""
        others = f"; left out {describe_left_out(left_out)}" if left_out else ""
        print(f"embedded {progress.done} of {len(jobs)} files ({progress.seconds:.1f} s of audio, "
              f"{progress.realtime:.0f}x realtime) into {args.output}{skipped}{failed}{others}")
    return 1 if progress.failed else 0


def _embed_on_ray(args) -> int:
    import logging
    import time

    from kwmlp.apps.distributed import CorpusOptions, _ray, embed_corpus

    ray = _ray()  # names the extra to install when Ray is missing
    # Ray Data logs each step at INFO and draws its own bars: keep the one summary line, and bars on a terminal
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = not args.quiet and sys.stderr.isatty()
    options = CorpusOptions(fmt=args.format, address=None if args.ray == "local" else args.ray, actors=args.actors,
                            batch_size=args.batch_size, threads=args.threads, skip_existing=args.skip_existing,
                            keep_extension=args.keep_extension)
    start = time.perf_counter()
    outcomes = embed_corpus(args.model, args.inputs, args.output, options)
    wall = time.perf_counter() - start
    failed = [o for o in outcomes if o.error]
    for o in failed:
        print(f"kwmlp embed: error: {o.error}", file=sys.stderr)
    if not args.quiet:
        done = [o for o in outcomes if not o.error and not o.skipped]
        seconds = sum(o.seconds for o in done)
        skipped = sum(o.skipped for o in outcomes)
        print(f"embedded {len(done)} of {len(outcomes)} files on Ray ({seconds:.1f} s of audio, "
              f"{len(done) / wall:.1f} files/s, {seconds / wall:.0f}x realtime) into {args.output}"
              + (f", {skipped} skipped (already done)" if skipped else "")
              + (f", {len(failed)} failed" if failed else ""))
    return 1 if failed else 0


def _bar(total: int, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="file", file=sys.stderr, dynamic_ncols=True)
