"""Small calls on a CPU, in one run: what issue 17 measures, each figure beside its anchor.

``python -m kwmlp.benchmarks.cpu_small --model exports/kwmlp.onnx --checkpoint kwmlp.pth [--rounds 3] [--json OUT]``

Every row runs in a process of its own (thread pools that spin after a call, PyTorch's and ONNX
Runtime's, would otherwise take a core from the next row), and the rows run in turn, round after
round, so that a change in the machine's load touches every row alike; a row's figure is the
median over rounds of its per-round median (and its best call).

- ``window-1-thread``: one keyword window (one second) on one thread, back to back, in CPU time
  (``time.thread_time``, robust to other jobs), against the floor: the window's matrix FLOPs
  counted in the export (:mod:`kwmlp.benchmarks.roofline`) at this machine's single-thread sgemm
  rate, measured in the same process before and after.
- ``window-all-cores``: the same window on ONNX Runtime's intra-op threads, wall time (``classify``).
- ``1x1s-*``: one 1 s clip, wall time: the original pipeline (the PyTorch reference, the HEAR
  package's arithmetic, on all cores), kwmlp-rt before (the embedding graph on ONNX Runtime's
  intra-op threads, ``split_chunks=False``), now (whole chunks over the cores,
  :mod:`kwmlp.runtime.chunk_parallel`), on one thread, and OpenVINO where installed; each checked
  against the reference (max abs error) so that a fast wrong path shows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, num_chunks

ROWS = ("window-1-thread", "window-all-cores", "1x1s-original", "1x1s-before", "1x1s-now", "1x1s-one-thread",
        "1x1s-openvino")


def _timed(fn, calls: int, clock) -> tuple[float, float]:
    """(best, median) ms per call of ``fn`` by ``clock`` (ns), after 20 warm-up calls."""
    for _ in range(20):
        fn()
    times = []
    for _ in range(calls):
        t = clock()
        fn()
        times.append(clock() - t)
    return min(times) / 1e6, float(np.median(times)) / 1e6


def _window_row(keywords: str, threads: int, calls: int) -> dict:
    from kwmlp.benchmarks.roofline import onnx_matmul_flops, sgemm_gflops
    from kwmlp.runtime.onnxruntime_backend import OrtRunner

    runner = OrtRunner(keywords, threads=threads)
    feed = {"windows": np.random.default_rng(0).uniform(-0.5, 0.5, (1, CHUNK_SAMPLES)).astype(np.float32)}
    if threads > 1:
        best, median = _timed(lambda: runner.run(feed), calls, time.perf_counter_ns)
        return {"best_ms": best, "median_ms": median}
    rate = sgemm_gflops(1)
    best, median = _timed(lambda: runner.run(feed), calls, time.thread_time_ns)
    rate = max(rate, sgemm_gflops(1))
    flops = onnx_matmul_flops(keywords, 1.0) * num_chunks(CHUNK_SAMPLES)  # a window is one chunk
    return {"best_ms": best, "median_ms": median, "matmul_mflop": flops / 1e6, "sgemm_gflops": rate,
            "floor_ms": flops / (rate * 1e9) * 1e3}


def _clip_runner(row: str, model: str, checkpoint: str | None, threads: int):
    """(audio) -> (timestamp embeddings, scene embeddings) for a ``1x1s-*`` row."""
    if row == "1x1s-original":
        import torch

        from kwmlp.models import HearReference, load_checkpoint

        torch.set_num_threads(threads)
        ref = HearReference(load_checkpoint(checkpoint)).eval()

        def original(audio):
            with torch.inference_mode():
                out = ref(torch.from_numpy(audio))
            return out.timestamp_embeddings.numpy(), out.scene_embeddings.numpy()

        return original
    from kwmlp.runtime import Embedder

    settings = {"1x1s-before": dict(backend="onnxruntime-cpu", threads=threads, split_chunks=False),
                "1x1s-now": dict(backend="onnxruntime-cpu", threads=threads),
                "1x1s-one-thread": dict(backend="onnxruntime-cpu", threads=1),
                "1x1s-openvino": dict(backend="openvino", threads=threads)}[row]
    emb = Embedder(model, **settings)
    return lambda audio: (lambda r: (r.timestamp_embeddings, r.scene_embeddings))(emb.embed(audio))


def run_row(row: str, model: str, checkpoint: str | None, threads: int, calls: int) -> dict:
    """One row's figures, in this process."""
    from kwmlp.artifact import keywords_model_path, read_model_info

    if row.startswith("window"):
        keywords = keywords_model_path(model, read_model_info(model))
        return _window_row(keywords, 1 if row == "window-1-thread" else threads, calls)
    run = _clip_runner(row, model, checkpoint, threads)
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (1, CHUNK_SAMPLES)).astype(np.float32)
    best, median = _timed(lambda: run(audio), calls, time.perf_counter_ns)
    return {"best_ms": best, "median_ms": median, "outputs": [a.tolist() for a in run(audio)]}


def _in_process(row: str, args) -> dict | None:
    cmd = [sys.executable, "-m", "kwmlp.benchmarks.cpu_small", "--row", row, "--model", args.model,
           "--threads", str(args.threads), "--calls", str(args.calls)] + (["--checkpoint", args.checkpoint]
                                                                          if args.checkpoint else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        print(f"{row}: skipped ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode})",
              file=sys.stderr)
        return None
    return json.loads(r.stdout)


def summarize(rounds: list[dict]) -> dict:
    """Per row: the median over rounds of each figure; clip rows' error against the original's outputs."""
    out = {}
    for row in ROWS:
        runs = [r[row] for r in rounds if r.get(row)]
        if not runs:
            continue
        out[row] = {k: float(np.median([r[k] for r in runs])) for k, v in runs[0].items() if k != "outputs"}
        if "outputs" in runs[0] and rounds[0].get("1x1s-original"):
            want = [np.array(a) for a in rounds[0]["1x1s-original"]["outputs"]]
            got = [np.array(a) for a in runs[0]["outputs"]]
            out[row]["max_error"] = float(max(np.abs(g - w).max() for g, w in zip(got, want)))
    w = out.get("window-1-thread")
    if w:
        w["best_x_floor"], w["median_x_floor"] = w["best_ms"] / w["floor_ms"], w["median_ms"] / w["floor_ms"]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m kwmlp.benchmarks.cpu_small", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an fp32 export (its .keywords.onnx beside it)")
    p.add_argument("--checkpoint", help="kwmlp.pth, for the original pipeline's row (needs torch)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # a worker process: one row, JSON out
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    if args.row:
        print(json.dumps(run_row(args.row, args.model, args.checkpoint, args.threads, args.calls)))
        return
    from kwmlp.benchmarks.machine import describe

    rows = [r for r in args.rows.split(",") if r in ROWS]
    rounds = [{row: _in_process(row, args) for row in rows} for _ in range(args.rounds)]
    result = {"machine": describe(), "threads": args.threads, "rounds": args.rounds, "rows": summarize(rounds)}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
