"""``kwmlp bench --checkpoint CK --output DIR``: backends side by side (code in ``kwmlp.benchmarks``)."""

from __future__ import annotations

import logging

log = logging.getLogger("kwmlp")


def add_parser(sub):
    from kwmlp.benchmarks import targets

    p = sub.add_parser("bench", help="benchmark every available backend against the PyTorch reference",
                       description="Throughput, latency, peak RSS and max abs error against the PyTorch reference, "
                                   "for every available backend on a batch x duration grid, one process per run.")
    p.add_argument("--checkpoint", required=True, help="the original HEAR kwmlp checkpoint, e.g. kwmlp.pth")
    p.add_argument("--output", required=True, help="folder for results.json, results.md and the plots (those need matplotlib)")
    p.add_argument("--backends", default=None,
                   help=f"comma-separated subset of {','.join(targets.TARGETS)} "
                        "(default: all; unavailable ones are skipped with the reason)")
    p.add_argument("--engine", default=None,
                   help="run the tensorrt rows on this engine (default: `kwmlp build` of an fp16 export)")
    p.add_argument("--cuda-graph", action="store_true", help="add the tensorrt-cuda-graph row")
    p.add_argument("--workloads", default=None, help="BATCHxSECONDS list, e.g. 1x1,16x10 (default: the full grid)")
    p.add_argument("--quick", action="store_true", help="a small grid and few repeats (under 2 minutes)")
    p.add_argument("--scaling", action="store_true", help="also time one clip of 1, 10, 60, 600 and 3600 s")
    p.add_argument("--threads", type=int, default=0, help="threads per backend (default: physical cores)")
    p.add_argument("--rounds", type=int, default=1,
                   help="sweep all backends and workloads this many times in turn (on a shared machine, "
                        "so that load bursts hit every backend alike; default 1)")
    p.add_argument("--model", default=None, help="benchmark this export instead of exporting the checkpoint")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import os

    from kwmlp.artifact import require_file
    from kwmlp.errors import KwmlpError

    require_file(args.checkpoint, "checkpoint")
    if args.engine:
        require_file(args.engine, "engine")
    from kwmlp.benchmarks import report, targets, suite, workloads

    names = tuple(n.strip() for n in args.backends.split(",") if n.strip()) if args.backends else targets.TARGETS
    unknown = [n for n in names if n not in targets.TARGETS]
    if unknown:
        raise KwmlpError(f"unknown backend {unknown[0]!r}; choose from {', '.join(targets.TARGETS)}")
    grid = workloads.parse(args.workloads) if args.workloads else (workloads.QUICK if args.quick else workloads.GRID)
    no_plots = report.why_no_plots()
    if no_plots:
        log.info("kwmlp bench: the results are written without plots: %s", no_plots)
    suite.run(suite.Settings(checkpoint=args.checkpoint, output=args.output, backends=names,
                             named=args.backends is not None, workloads=grid, quick=args.quick,
                             scaling=args.scaling, threads=args.threads, model=args.model,
                             rounds=max(1, args.rounds), engine=args.engine, cuda_graph=args.cuda_graph,
                             plots=no_plots is None))
    written = f"{os.path.join(args.output, 'results.json')}, results.md"
    print(f"wrote {written} and plots" if not no_plots else f"wrote {written}; no plots: {no_plots}")
    return 0
