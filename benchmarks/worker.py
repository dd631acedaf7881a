"""One backend on one workload, in its own process: ``python -m kwmlp.benchmarks.worker SPEC_JSON``.

Warms up, times ``repeats`` calls (at least ``min_seconds`` of them), and prints one JSON line:
latencies, peak RSS of this process, device memory on a GPU, the max abs error against the reference outputs
(``reference`` npz; the reference backend writes it instead), and the row's note (e.g. whether it
replayed CUDA graphs) or null.
"""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np

from kwmlp.benchmarks import targets
from kwmlp.benchmarks.workloads import Workload
from kwmlp.dims import SAMPLE_RATE


def peak_rss_mb() -> float:
    # Linux: VmHWM, this process image's own peak. ru_maxrss would carry over the parent's peak
    # through fork + exec (the parent holds torch after exporting).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB elsewhere


def _streamed(spec: dict, w: Workload):
    """The runtime's stream API fed 10 s pieces: memory stays bounded however long the clip."""
    from kwmlp.runtime import Embedder

    emb = Embedder(spec["model"], backend="onnxruntime-cpu", threads=spec["threads"])
    piece = Workload(1, min(10.0, w.seconds)).audio()[0]
    n = int(round(w.seconds * SAMPLE_RATE))

    def run(_audio):
        s = emb.stream()
        for start in range(0, n, len(piece)):
            s.feed(piece[: n - start])
        r = s.finish()
        return r.timestamp_embeddings[None], r.scene_embeddings[None]

    return targets.Runner(run)


def measure(spec: dict) -> dict:
    w = Workload(spec["batch"], spec["seconds"])
    on_gpu = spec["backend"] in targets.GPU_BACKENDS
    baseline = _device_used() if on_gpu else None
    if spec.get("stream"):
        audio, run = None, _streamed(spec, w)
    else:
        audio = w.audio()
        paths = targets.Paths(spec["checkpoint"], spec["model"], spec.get("engine"))
        run = targets.load(spec["backend"], paths, spec["threads"])
    for _ in range(spec["warmup"]):
        ts, scene = run(audio)
    latencies = []
    start = time.perf_counter()
    while len(latencies) < spec["repeats"] or (time.perf_counter() - start < spec["min_seconds"]
                                               and len(latencies) < spec["max_repeats"]):
        t0 = time.perf_counter()
        ts, scene = run(audio)
        latencies.append(time.perf_counter() - t0)
    if spec["backend"] == targets.REFERENCE:
        np.savez(spec["reference"], ts=ts, scene=scene)
        err = 0.0
    elif spec.get("reference"):
        with np.load(spec["reference"]) as ref:
            err = max(float(np.abs(ts.astype(np.float64) - ref["ts"]).max(initial=0.0)),
                      float(np.abs(scene.astype(np.float64) - ref["scene"]).max(initial=0.0)))
    else:
        err = None  # no reference for this workload (e.g. a scaling run)
    if err is not None and not np.isfinite(err):
        err = "non-finite"  # NaN/Inf outputs: wrong, and JSON has no NaN
    device = _device_memory_mb(spec["backend"], baseline) if on_gpu else None
    return {"latencies_s": latencies, "peak_rss_mb": peak_rss_mb(), "device_memory_mb": device, "max_abs_err": err,
            "note": run.note()}


def _device_used() -> int | None:
    """Bytes in use on GPU 0 (total - free), through the CUDA bindings; None without them."""
    from kwmlp import cuda
    from kwmlp.errors import KwmlpError

    try:
        api = cuda.load()
        with api.context():
            free, total = api.memory()
    except (KwmlpError, cuda.CudaError):
        return None
    return total - free


def _device_memory_mb(backend: str, baseline: int | None) -> float | None:
    """A GPU row's device memory: PyTorch's peak reserved memory, or for the runtime's backends the
    growth of memory in use on the GPU from before loading to after the runs (other processes on
    the same GPU count too: run the GPU rows on an otherwise idle GPU)."""
    if backend in targets.TORCH_CUDA:
        import torch

        return torch.cuda.max_memory_reserved() / 2**20
    used = _device_used()
    return None if used is None or baseline is None else (used - baseline) / 2**20


if __name__ == "__main__":
    print(json.dumps(measure(json.loads(sys.argv[1]))))
