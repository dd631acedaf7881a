"""Per-operator time of an exported model under ONNX Runtime's profiler.

``python -m kwmlp.benchmarks.profile MODEL [--batch 16] [--seconds 10] [--runs 10]`` prints the
kernel time per operator type (after ONNX Runtime's fusions, e.g. ``BiasGelu``, ``Gemm``) and
per node group (``block*.`` merged over the 12 blocks), as markdown tables.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import tempfile

import numpy as np

from kwmlp.benchmarks.workloads import Workload

_KERNEL = "_kernel_time"  # suffix of a node kernel's event name


def kernel_events(model: str, audio: np.ndarray, runs: int = 1, threads: int = 1,
                  optimize: bool = True) -> list[dict]:
    """ONNX Runtime's profiler events of the node kernels over ``runs`` calls of ``model`` on ``audio``,
    in call order, each with ``node``: the node's name. ``optimize=False`` runs the nodes as exported
    (no fusions), so that names and shapes are the export's own."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: audio}
        for _ in range(runs):
            sess.run(None, feed)
        with open(sess.end_profiling()) as f:
            events = [e for e in json.load(f) if e.get("cat") == "Node" and e["name"].endswith(_KERNEL)]
    for e in events:
        e["node"] = e["name"][: -len(_KERNEL)]
    return events


def profile(model: str, workload: Workload, runs: int, threads: int) -> tuple[collections.Counter, collections.Counter]:
    """Kernel microseconds per run, by operator type and by node group."""
    events = kernel_events(model, workload.audio(), runs + 2, threads)  # two warm-up runs, dropped below
    per_run = len(events) // (runs + 2)
    by_op, by_node = collections.Counter(), collections.Counter()
    for e in events[2 * per_run:]:
        by_op[e["args"]["op_name"]] += e["dur"] / runs
        by_node[re.sub(r"block\d+\.", "block*.", e["node"])] += e["dur"] / runs
    return by_op, by_node


def table(counter: collections.Counter, title: str, top: int) -> str:
    total = sum(counter.values())
    lines = [f"| {title} | ms per run | share |", "|---|---:|---:|"]
    for k, v in counter.most_common(top):
        lines.append(f"| {k} | {v / 1e3:.2f} | {100 * v / total:.1f}% |")
    rest = total - sum(v for _, v in counter.most_common(top))
    if rest > 0:
        lines.append(f"| (the rest) | {rest / 1e3:.2f} | {100 * rest / total:.1f}% |")
    lines.append(f"| **total** | **{total / 1e3:.2f}** | |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args()
    by_op, by_node = profile(a.model, Workload(a.batch, a.seconds), a.runs, a.threads)
    print(table(by_op, "operator", a.top) + "\n\n" + table(by_node, "node", a.top))


if __name__ == "__main__":
    main()
