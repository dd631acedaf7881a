"""Runs the benchmark: every available backend on every workload, each pair in its own process."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import numpy as np

from kwmlp.benchmarks import targets, machine, report, roofline
from kwmlp.benchmarks.workloads import GRID, SCALING, Workload
from kwmlp.errors import KwmlpError, install_command
from kwmlp.fileio import write_bytes_atomic

log = logging.getLogger("kwmlp")


@dataclass(frozen=True)
class Settings:
    checkpoint: str
    output: str
    backends: tuple[str, ...] = targets.TARGETS
    named: bool = False  # backends were given explicitly (--backends)
    workloads: tuple[Workload, ...] = GRID
    quick: bool = False
    scaling: bool = False
    threads: int = 0  # 0: physical cores
    model: str | None = None  # an existing export instead of exporting the checkpoint
    rounds: int = 1  # sweeps over all backends and workloads, in turn
    engine: str | None = None  # a prebuilt engine for the tensorrt rows instead of building one
    cuda_graph: bool = False  # add the tensorrt-cuda-graph row
    plots: bool = True  # False: results.json and results.md only (see report.why_no_plots)

    @property
    def timing(self) -> dict:
        if self.quick:
            return {"warmup": 1, "repeats": 3, "min_seconds": 1.0, "max_repeats": 30}
        return {"warmup": 1, "repeats": 3, "min_seconds": 5.0, "max_repeats": 300}


def _export(settings: Settings) -> str:
    if settings.model:
        return settings.model
    from kwmlp.export import ExportOptions, export_checkpoint

    path = os.path.join(settings.output, "models", "kwmlp.onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    export_checkpoint(settings.checkpoint, path, ExportOptions())
    return path


def _spawn(spec: dict) -> dict:
    r = subprocess.run([sys.executable, "-m", "kwmlp.benchmarks.worker", json.dumps(spec)],
                       capture_output=True, text=True)
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        last = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise RuntimeError(last)
    return json.loads(lines[-1])


def model_precision(model: str) -> str:
    """The precision an export records in its metadata (``--model`` may be an fp16 export)."""
    from kwmlp.artifact import read_model_info

    try:
        return read_model_info(model).precision
    except KwmlpError:  # not an export ONNX Runtime can read: say so rather than guess
        return "unknown"


def _engine(settings: Settings, runnable: list[str]) -> tuple[str | None, str | None]:
    """(the engine the tensorrt rows run, why there is none): ``--engine``, or one ``kwmlp build``
    makes from an fp16 export of the checkpoint (in its own process, as a user runs it)."""
    if not set(runnable) & set(targets.ENGINE_BACKENDS):
        return None, None
    if settings.engine:
        return settings.engine, None
    from kwmlp.export import ExportOptions, export_checkpoint

    fp16 = os.path.join(settings.output, "models", "kwmlp-fp16.onnx")
    os.makedirs(os.path.dirname(fp16), exist_ok=True)
    export_checkpoint(settings.checkpoint, fp16, ExportOptions(precision="fp16"))
    engine = os.path.splitext(fp16)[0] + ".engine"
    log.info("building %s with kwmlp build (minutes on a first run; the timing cache makes it faster after)", engine)
    r = subprocess.run([sys.executable, "-m", "kwmlp", "build", fp16, "-o", engine], capture_output=True, text=True)
    if r.returncode != 0:
        return None, "kwmlp build failed: " + (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
    return engine, None


def _precision(backend: str, export_precision: str, engine: str | None) -> str:
    if backend in targets.FIXED_PRECISION:
        return targets.FIXED_PRECISION[backend]
    if backend in targets.ENGINE_BACKENDS and engine:
        from kwmlp.artifact.sidecar import read_sidecar

        return read_sidecar(engine).precision
    return export_precision


def _row(backend: str, w: Workload, m: dict, precision: str) -> dict:
    lat = np.asarray(m["latencies_s"]) * 1e3
    return {
        "backend": backend, "precision": precision, "device_memory_mb": m.get("device_memory_mb"),
        "batch": w.batch, "seconds": w.seconds,
        "throughput_x_realtime": w.audio_seconds / (float(np.median(lat)) / 1e3),
        "latency_ms": {f"p{q}": float(np.percentile(lat, q)) for q in (50, 90, 99)},
        "peak_rss_mb": m["peak_rss_mb"], "max_abs_err": m["max_abs_err"], "repeats": len(lat), "note": m.get("note"),
    }


def _scaling_timing(w: Workload) -> dict:
    # long clips: one timed run after none or one warm-up; the stream API bounds memory
    return {"warmup": int(w.seconds <= 60), "repeats": 3 if w.seconds <= 60 else 1, "min_seconds": 0.0,
            "max_repeats": 3, "stream": True}


def _merge(runs: list[dict]) -> dict:
    errors = [m["max_abs_err"] for m in runs]
    bad = [e for e in errors if isinstance(e, str)]
    device = [m["device_memory_mb"] for m in runs if m.get("device_memory_mb") is not None]
    notes = list(dict.fromkeys(m["note"] for m in runs if m.get("note")))  # one per round, where they differ
    return {"latencies_s": [t for m in runs for t in m["latencies_s"]],
            "peak_rss_mb": max(m["peak_rss_mb"] for m in runs), "device_memory_mb": max(device, default=None),
            "max_abs_err": bad[0] if bad else (None if None in errors else max(errors)),
            "note": " / ".join(notes) or None}


def _run_grid(settings: Settings, paths: targets.Paths, precision: dict[str, str], runnable: list[str], workloads,
              refdir: str | None):
    """Every backend on every workload, ``settings.rounds`` times in turn: on a shared machine a burst
    of load then hits all backends alike, and the percentiles are over the calls of all rounds."""
    runs: dict[tuple[str, Workload], list[dict]] = {}
    failed = []
    for _ in range(settings.rounds if refdir is not None else 1):
        for w in workloads:
            ref_path = os.path.join(refdir, f"{w.label}.npz") if refdir else None
            timing = settings.timing if refdir is not None else _scaling_timing(w)
            for name in runnable:
                spec = {"backend": name, "checkpoint": paths.checkpoint, "model": paths.model, "engine": paths.engine,
                        "batch": w.batch, "seconds": w.seconds, "threads": settings.threads, "reference": ref_path,
                        **timing}
                try:
                    m = _spawn(spec)
                except RuntimeError as e:
                    log.info("%s %s: failed: %s", name, w.label, e)
                    failed.append({"backend": name, "workload": w.label, "error": str(e)})
                    continue
                runs.setdefault((name, w), []).append(m)
                row = _row(name, w, m, precision[name])
                log.info("%-16s %-8s %8.1fx realtime  p50 %8.2f ms  peak RSS %6.0f MB  max abs err %s", name,
                         w.label, row["throughput_x_realtime"], row["latency_ms"]["p50"], row["peak_rss_mb"],
                         row["max_abs_err"])
    rows = [_row(name, w, _merge(ms), precision[name]) for (name, w), ms in runs.items()]
    latencies = {f"{name} {w.label}": [t * 1e3 for m in ms for t in m["latencies_s"]] for (name, w), ms in runs.items()}
    return rows, latencies, failed


# CPU backends and whose matrix work they do: the bound uses the CPU's sgemm rate
_CPU_FLOPS = {**dict.fromkeys(targets.TORCH_BACKENDS, "reference"),
              **dict.fromkeys(("onnxruntime-cpu", "onnxruntime-cpu-graph", "openvino"), "export")}


def _roofline(settings: Settings, model: str, runnable: list[str]) -> dict:
    if not set(runnable) & set(_CPU_FLOPS):
        return {"skipped": "no CPU backend runs"}
    try:
        import onnx  # noqa: F401  (the sgemm probe builds a one-node model)
    except ImportError:
        return {"skipped": f"onnx is not installed ({install_command('export')})"}
    has_torch = targets.unavailable(targets.REFERENCE) is None
    roof = roofline.measure(model, settings.checkpoint if has_torch else None, settings.threads)
    for name, why in roof["skipped"].items():
        log.info("roofline: %s: %s", name, why)
    log.info("roofline: sgemm %.1f GFLOP/s on %d threads; matrix work per chunk: %s", roof["sgemm_gflops"],
             settings.threads, ", ".join(f"{k} {v:.1f} MFLOP" for k, v in roof["matmul_mflop_per_chunk"].items()))
    return roof


def _sgemm_again(roof: dict, threads: int) -> None:
    """Probe the sgemm rate again after the grid and keep the best: on a shared machine a probe
    taken under load would make the bound too low."""
    if "sgemm_gflops" in roof:
        roof["sgemm_gflops_probes"] = [roof["sgemm_gflops"], roofline.sgemm_gflops(threads)]
        roof["sgemm_gflops"] = max(roof["sgemm_gflops_probes"])


def _add_bounds(rows: list[dict], roof: dict) -> None:
    """``matmul_bound_x_realtime``: a CPU row's throughput were its matrix products alone at the sgemm rate."""
    for r in rows:
        which = _CPU_FLOPS.get(r["backend"])
        flops = roof.get("matmul_mflop_per_chunk", {}).get(which)
        r["matmul_bound_x_realtime"] = (roofline.bound_x_realtime(flops * 1e6, roof["sgemm_gflops"], r["batch"],
                                                                   r["seconds"]) if flops else None)


def _available(settings: Settings) -> tuple[list[dict], list[str]]:
    """(skipped backends with the reason, runnable ones with the reference first: the others are
    compared with its outputs)."""
    skipped, runnable = [], []
    for name in settings.backends:
        why = targets.unavailable(name, settings.quick, settings.named, settings.cuda_graph)
        if why:
            log.info("skipping %s: %s", name, why)
            skipped.append({"backend": name, "reason": why})
        else:
            runnable.append(name)
    if targets.REFERENCE in runnable:
        runnable.remove(targets.REFERENCE)
        runnable.insert(0, targets.REFERENCE)
    return skipped, runnable


def run(settings: Settings) -> dict:
    """Benchmark and write ``results.json``, ``results.md`` and (``settings.plots``) plots into ``settings.output``."""
    os.makedirs(settings.output, exist_ok=True)
    settings = dataclasses.replace(settings, threads=settings.threads or machine.describe()["cores"])
    skipped, runnable = _available(settings)
    info = machine.describe()
    model = _export(settings)
    engine, why = _engine(settings, runnable)
    if why:
        for name in [n for n in runnable if n in targets.ENGINE_BACKENDS]:
            log.info("skipping %s: %s", name, why)
            skipped.append({"backend": name, "reason": why})
            runnable.remove(name)
    paths = targets.Paths(settings.checkpoint, model, engine)
    export_precision = model_precision(model)
    precision = {name: _precision(name, export_precision, engine) for name in runnable + ["onnxruntime-cpu"]}
    roof = _roofline(settings, model, runnable)
    with tempfile.TemporaryDirectory() as refdir:
        refdir = refdir if targets.REFERENCE in runnable else ""
        rows, latencies, failed = _run_grid(settings, paths, precision, runnable, settings.workloads, refdir)
    _sgemm_again(roof, settings.threads)
    _add_bounds(rows, roof)
    results = {"machine": info, "threads": settings.threads, "results": rows, "skipped": skipped, "failed": failed,
               "roofline": roof}
    if settings.scaling:
        log.info("scaling: onnxruntime-cpu, one clip streamed in 10 s pieces")
        rows, _, more = _run_grid(settings, paths, precision, ["onnxruntime-cpu"], SCALING, None)
        results["scaling"], failed = rows, failed + more
        results["failed"] = failed
    results["machine"]["load_average_end"] = list(os.getloadavg())
    _write(settings.output, results, latencies, settings.plots)
    if failed:
        raise KwmlpError(f"{len(failed)} benchmark run(s) failed, first: {failed[0]['backend']} "
                         f"{failed[0]['workload']}: {failed[0]['error']}")
    return results


def _write(out: str, results: dict, latencies: dict, plots: bool) -> None:
    write_bytes_atomic(os.path.join(out, "results.json"), json.dumps(results, indent=2).encode())
    write_bytes_atomic(os.path.join(out, "latencies.json"), json.dumps(latencies).encode())
    write_bytes_atomic(os.path.join(out, "results.md"), report.markdown(results).encode())
    if plots:
        report.plots(results, latencies, out)
