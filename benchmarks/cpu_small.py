"""Small calls on a CPU, in one run: what issue 17 measures, each figure beside its anchor.

``python -m kwmlp.benchmarks.cpu_small --model exports/kwmlp.onnx --checkpoint kwmlp.pth [--json OUT]``

- **One window, one thread**: the keyword graph's CPU time per one-second window, back to back
  (``time.thread_time``: the calling thread's CPU time, robust to other jobs on a shared machine),
  against the floor: the window's matrix FLOPs (counted in the export,
  :mod:`kwmlp.benchmarks.roofline`) at this machine's single-thread sgemm rate (best of 512 and
  1024, measured before and after).
- **1 x 1 s latency** (wall time, best and median of many calls, interleaved round by round so that
  load on a shared machine hits every row alike): the original pipeline (the PyTorch reference, the
  HEAR package's arithmetic, on all cores), kwmlp-rt before (the embedding graph on ONNX Runtime's
  intra-op threads, ``split_chunks=False``) and now (the chunks over the cores,
  :mod:`kwmlp.runtime.chunk_parallel`), and OpenVINO where installed.
- **One keyword window on all cores** (``classify``): ONNX Runtime's intra-op threads against one
  thread.

Every row is checked against the PyTorch reference (max abs error), so that a fast wrong path shows.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from kwmlp.benchmarks.machine import describe as machine
from kwmlp.benchmarks.roofline import onnx_matmul_flops, sgemm_gflops
from kwmlp.dims import CHUNK_SAMPLES, num_chunks


def _cpu_ms(fn, calls: int) -> tuple[float, float]:
    """(best, median) CPU time of the calling thread per call, ms, after 20 warm-up calls."""
    for _ in range(20):
        fn()
    times = []
    for _ in range(calls):
        t = time.thread_time_ns()
        fn()
        times.append(time.thread_time_ns() - t)
    return min(times) / 1e6, float(np.median(times)) / 1e6


def window_floor(keywords_path: str, calls: int) -> dict:
    """One window on one thread against the floor."""
    from kwmlp.runtime.onnxruntime_backend import OrtRunner

    flops = onnx_matmul_flops(keywords_path, 1.0) * num_chunks(CHUNK_SAMPLES)  # one window is one chunk
    runner = OrtRunner(keywords_path, threads=1)
    window = {"windows": np.random.default_rng(0).uniform(-0.5, 0.5, (1, CHUNK_SAMPLES)).astype(np.float32)}
    rate_before = sgemm_gflops(1)
    best, median = _cpu_ms(lambda: runner.run(window), calls)
    rate = max(rate_before, sgemm_gflops(1))
    floor = flops / (rate * 1e9) * 1e3
    return {"matmul_mflop": flops / 1e6, "sgemm_gflops_1_thread": rate, "floor_ms": floor,
            "best_ms": best, "median_ms": median, "best_x_floor": best / floor, "median_x_floor": median / floor}


def _rows(model: str, checkpoint: str | None, threads: int) -> dict:
    """name -> (run(audio) -> (timestamp embeddings, scene)); the reference first."""
    from kwmlp.runtime import Embedder

    rows = {}
    if checkpoint:
        import torch

        from kwmlp.models import HearReference, load_checkpoint

        torch.set_num_threads(threads)
        ref = HearReference(load_checkpoint(checkpoint)).eval()

        def original(audio):
            with torch.inference_mode():
                out = ref(torch.from_numpy(audio))
            return out.timestamp_embeddings.numpy(), out.scene_embeddings.numpy()

        rows["original pipeline (PyTorch)"] = original
    for name, emb in (("kwmlp-rt before (graph, intra-op threads)", Embedder(model, "onnxruntime-cpu", threads=threads,
                                                                              split_chunks=False)),
                      ("kwmlp-rt now (chunks over cores)", Embedder(model, "onnxruntime-cpu", threads=threads)),
                      ("kwmlp-rt, one thread", Embedder(model, "onnxruntime-cpu", threads=1))):
        rows[name] = lambda audio, e=emb: (lambda r: (r.timestamp_embeddings, r.scene_embeddings))(e.embed(audio))
    try:
        ov = Embedder(model, "openvino", threads=threads)
        rows["openvino"] = lambda audio: (lambda r: (r.timestamp_embeddings, r.scene_embeddings))(ov.embed(audio))
    except Exception:  # noqa: BLE001 - not installed or not loadable: the row is left out
        pass
    return rows


def latency(model: str, checkpoint: str | None, threads: int, calls: int) -> dict:
    """1 x 1 s wall-clock latency of each row, interleaved call by call; max error against the first row."""
    rows = _rows(model, checkpoint, threads)
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (1, CHUNK_SAMPLES)).astype(np.float32)
    want = next(iter(rows.values()))(audio)
    out = {}
    for name, run in rows.items():
        got = run(audio)
        out[name] = {"max_error": float(max(np.abs(g - w).max() for g, w in zip(got, want))), "times": []}
        for _ in range(5):
            run(audio)
    for _ in range(calls):
        for name, run in rows.items():
            t = time.perf_counter_ns()
            run(audio)
            out[name]["times"].append(time.perf_counter_ns() - t)
    for r in out.values():
        times = r.pop("times")
        r["best_ms"], r["median_ms"] = min(times) / 1e6, float(np.median(times)) / 1e6
    return out


def classify_window(keywords_path: str, threads: int, calls: int) -> dict:
    """One keyword window on ``threads`` intra-op threads against one thread (wall time, interleaved)."""
    from kwmlp.runtime.onnxruntime_backend import OrtRunner

    window = {"windows": np.random.default_rng(2).uniform(-0.5, 0.5, (1, CHUNK_SAMPLES)).astype(np.float32)}
    runners = {f"{n} thread(s)": OrtRunner(keywords_path, threads=n) for n in sorted({1, threads})}
    times = {k: [] for k in runners}
    for _ in range(calls):
        for k, r in runners.items():
            t = time.perf_counter_ns()
            r.run(window)
            times[k].append(time.perf_counter_ns() - t)
    return {k: {"best_ms": min(v) / 1e6, "median_ms": float(np.median(v)) / 1e6} for k, v in times.items()}


def main(argv=None) -> None:
    from kwmlp.artifact import keywords_model_path, read_model_info

    p = argparse.ArgumentParser(prog="python -m kwmlp.benchmarks.cpu_small", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an fp32 export (its .keywords.onnx beside it)")
    p.add_argument("--checkpoint", help="kwmlp.pth, for the original pipeline's row (needs torch)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    keywords = keywords_model_path(args.model, read_model_info(args.model))
    result = {"machine": machine(), "threads": args.threads,
              "window_one_thread": window_floor(keywords, args.calls),
              "latency_1x1s": latency(args.model, args.checkpoint, args.threads, args.calls // 3),
              "classify_window": classify_window(keywords, args.threads, args.calls)}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
