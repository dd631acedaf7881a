"""``results.md`` (a table a person reads) and the plots of a benchmark run."""

from __future__ import annotations

import os

import numpy as np

from kwmlp.benchmarks.targets import REFERENCE
from kwmlp.errors import KwmlpError, missing_extra


def _label(r: dict) -> str:
    return f"{r['batch']}x{r['seconds']:g}s"


def _fmt_err(e) -> str:
    return "-" if e is None else (e if isinstance(e, str) else f"{e:.1e}")


def _fmt_mb(mb) -> str:
    return "-" if mb is None else f"{mb:.0f}"


def markdown(results: dict) -> str:
    m = results["machine"]
    ref = {_label(r): r for r in results["results"] if r["backend"] == REFERENCE}
    lines = [
        "# kwmlp bench", "",
        f"- CPU: {m['cpu']} ({m['cores']} physical cores, {results['threads']} threads); GPU: {m['gpu']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- load average at start {m['load_average'][0]:.2f}, at end {m['load_average_end'][0]:.2f}"
        if m.get("load_average") else "- load average: unknown", "",
        "| backend | precision | workload | x realtime | vs reference | p50 ms | p90 ms | p99 ms | p50 vs reference "
        "| peak RSS MB | device MB | max abs err | runs |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["results"]:
        base = ref.get(_label(r))
        speed = f"{r['throughput_x_realtime'] / base['throughput_x_realtime']:.2f}x" if base else "-"
        lat = f"{base['latency_ms']['p50'] / r['latency_ms']['p50']:.2f}x lower" if base else "-"
        q = r["latency_ms"]
        lines.append(f"| {r['backend']} | {r['precision']} | {_label(r)} | {r['throughput_x_realtime']:.1f} | {speed} "
                     f"| {q['p50']:.2f} | {q['p90']:.2f} | {q['p99']:.2f} | {lat} | {r['peak_rss_mb']:.0f} "
                     f"| {_fmt_mb(r.get('device_memory_mb'))} | {_fmt_err(r['max_abs_err'])} | {r['repeats']} |")
    notes = [f"- {r['backend']} {_label(r)}: {r['note']}" for r in results["results"] if r.get("note")]
    if notes:
        lines += ["", "notes:", *notes]
    for s in results.get("skipped", []):
        lines.append(f"\nskipped {s['backend']}: {s['reason']}")
    for f in results.get("failed", []):
        lines.append(f"\nFAILED {f['backend']} {f['workload']}: {f['error']}")
    lines += _roofline(results, ref)
    if results.get("scaling"):
        lines += ["", "## Scaling (onnxruntime-cpu, one clip streamed in 10 s pieces)", "",
                  "| audio s | wall s | x realtime | peak RSS MB |", "|---:|---:|---:|---:|"]
        for r in results["scaling"]:
            lines.append(f"| {r['seconds']:g} | {r['latency_ms']['p50'] / 1e3:.3f} | {r['throughput_x_realtime']:.1f} "
                         f"| {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def _roofline(results: dict, ref: dict) -> list[str]:
    roof = results.get("roofline") or {}
    if "sgemm_gflops" not in roof:
        return [f"\nno roofline: {roof['skipped']}"] if roof.get("skipped") else []
    flops = ", ".join(f"{k} {v:.1f} MFLOP" for k, v in roof["matmul_mflop_per_chunk"].items()) or "none counted"
    probes = ", ".join(f"{g:.1f}" for g in roof.get("sgemm_gflops_probes", []))
    lines = ["", "## Roofline: matrix products alone at this machine's sgemm rate", "",
             f"sgemm {roof['sgemm_gflops']:.1f} GFLOP/s (ONNX Runtime MatMul, best of 512 and 1024 square, fp32, "
             f"{roof['threads']} threads{'; probes before and after the grid: ' + probes if probes else ''}); "
             f"matrix work per one-second chunk: {flops}. At this rate, a backend doing these FLOPs runs no faster "
             "than its bound (everything else only adds time); fewer FLOPs raise it.", "",
             "| backend | workload | x realtime | bound x realtime | measured / bound | reference x realtime "
             "| bound / reference |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in results["results"]:
        bound = r.get("matmul_bound_x_realtime")
        if not bound or r["backend"] == REFERENCE:
            continue
        base = ref.get(_label(r))
        base_x = f"{base['throughput_x_realtime']:.1f}" if base else "-"
        best = f"{bound / base['throughput_x_realtime']:.2f}x" if base else "-"
        lines.append(f"| {r['backend']} | {_label(r)} | {r['throughput_x_realtime']:.1f} | {bound:.1f} "
                     f"| {r['throughput_x_realtime'] / bound:.0%} | {base_x} | {best} |")
    lines += [f"\nnot counted, {name}: {why}" for name, why in roof.get("skipped", {}).items()]
    return lines


def why_no_plots() -> str | None:
    """None when the plots can be drawn, else the sentence saying what to install; asked before a
    run, so that a missing matplotlib is said at the start, not after the benchmark."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return str(missing_extra("matplotlib", "bench", "plotting"))
    return None


def _pyplot():
    why = why_no_plots()
    if why:
        raise KwmlpError(why)
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plots(results: dict, latencies: dict, out: str) -> None:
    """``throughput.png``, ``latency_cdf.png`` and, with a scaling run, ``scaling.png`` in ``out``."""
    plt = _pyplot()
    rows = results["results"]
    names = list(dict.fromkeys(r["backend"] for r in rows))
    loads = list(dict.fromkeys(_label(r) for r in rows))
    if rows:
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            by = {_label(r): r["throughput_x_realtime"] for r in rows if r["backend"] == name}
            ax.bar(np.arange(len(loads)) + i * width, [by.get(l, 0) for l in loads], width, label=name)
        ax.set_xticks(np.arange(len(loads)) + width * (len(names) - 1) / 2, loads)
        ax.set_yscale("log")
        ax.set_ylabel("throughput (x realtime)")
        ax.set_title("throughput by backend and workload")
        ax.legend()
        _save(fig, out, "throughput.png")

        fig, axes = plt.subplots(1, len(loads), figsize=(4 * len(loads), 3.5), squeeze=False)
        for ax, load in zip(axes[0], loads):
            for name in names:
                lat = np.sort(latencies.get(f"{name} {load}", []))
                if len(lat):
                    ax.step(lat, np.arange(1, len(lat) + 1) / len(lat), where="post", label=name)
            ax.set_xscale("log")
            ax.set_title(load)
            ax.set_xlabel("latency (ms)")
        axes[0][0].set_ylabel("fraction of calls")
        axes[0][-1].legend()
        _save(fig, out, "latency_cdf.png")
    if results.get("scaling"):
        s = results["scaling"]
        secs = np.array([r["seconds"] for r in s])
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
        a.loglog(secs, [r["latency_ms"]["p50"] / 1e3 for r in s], "o-")
        a.set_xlabel("audio (s)")
        a.set_ylabel("wall time (s)")
        b.plot(secs, [r["peak_rss_mb"] for r in s], "o-")
        b.set_xlabel("audio (s)")
        b.set_ylabel("peak RSS (MB)")
        fig.suptitle("onnxruntime-cpu, one clip streamed: time and memory vs duration")
        _save(fig, out, "scaling.png")


def _save(fig, out: str, name: str) -> None:
    from kwmlp.fileio import atomic_path

    with atomic_path(os.path.join(out, name)) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    fig.clf()
    import matplotlib.pyplot as plt

    plt.close(fig)
