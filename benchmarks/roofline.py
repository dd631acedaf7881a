"""The fastest a CPU backend could possibly be: its matrix products alone at this machine's sgemm rate.

A model's matrix products (MatMul, Gemm, Conv) do not run faster than the machine's fp32 GEMM rate,
and everything else a model does (GELU, LayerNorm, the scene, copies) only adds time. So
``chunks * matmul FLOPs per chunk / sgemm rate`` bounds a call's time from below, and its inverse
bounds throughput from above, for these FLOPs at the measured rate: fewer FLOPs raise it (the
factored STFT did, by 16%), and the rate is a measurement on a shared machine (the best of
several sizes, before and after the grid). ``kwmlp bench`` reports it next to the measured
figures (``roofline`` in ``results.json``).

FLOPs are counted, not assumed: for the export, from the shapes of its matrix nodes on a real
input (ONNX Runtime's profiler, no graph optimisation, so the nodes are the exported ones); for
the PyTorch reference, with ``torch.utils.flop_counter``. A multiply-add is 2 FLOPs.
"""

from __future__ import annotations

import math
import time

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, num_chunks

MATRIX_OPS = ("MatMul", "Gemm", "Conv")
_PROBE_SECONDS = 1.0  # one 1 s clip is 2 chunks after padding; matrix work is linear in chunks


def sgemm_gflops(threads: int, sizes: tuple[int, ...] = (512, 1024), runs: int = 7) -> float:
    """Best fp32 ``n x n @ n x n`` rate of ONNX Runtime's MatMul (MLAS) on ``threads`` threads, GFLOP/s,
    over ``sizes`` (the best size differs between machines)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    best_rate = 0.0
    rng = np.random.default_rng(0)
    for n in sizes:
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
            [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # readable by every onnxruntime the project supports
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        feed = {x: rng.random((n, n), dtype=np.float32) for x in ("a", "b")}
        sess.run(None, feed)
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, feed)
            best_rate = max(best_rate, 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best_rate


def node_flops(op: str, inputs: list[list[int] | None], output: list[int], attrs: dict) -> float:
    """FLOPs of one matrix node from its input and output shapes (``None``: shape unknown)."""
    out = math.prod(output)
    if op == "MatMul":
        a, b = inputs
        k = a[-1] if a is not None else (b[-2] if len(b) > 1 else b[0])
        return 2.0 * out * k
    if op == "Gemm":
        a = inputs[0]
        return 2.0 * out * (a[0] if attrs.get("transA") else a[-1])
    if op == "Conv":
        w = inputs[1]  # (C_out, C_in / group, *kernel)
        return 2.0 * out * math.prod(w[1:])
    raise ValueError(f"not a matrix op: {op}")


def onnx_matmul_flops(model_path: str, seconds: float = _PROBE_SECONDS) -> float:
    """Matrix FLOPs of one exported model's call on one clip of ``seconds``, per one-second chunk."""
    import onnx

    from kwmlp.benchmarks.profile import kernel_events

    model = onnx.load(model_path)
    init = {t.name: list(t.dims) for t in model.graph.initializer}
    samples = int(round(seconds * CHUNK_SAMPLES))
    events = kernel_events(model_path, np.zeros((1, samples), np.float32), optimize=False)
    out_shapes = {e["node"]: [next(iter(s.values())) for s in e["args"]["output_type_shape"]] for e in events}
    produced = {o: out_shapes.get(n.name, [None] * len(n.output))[i]
                for n in model.graph.node for i, o in enumerate(n.output)}
    total = 0.0
    for n in model.graph.node:
        if n.op_type not in MATRIX_OPS:
            continue
        if n.name not in out_shapes:
            raise RuntimeError(f"the profiler recorded no shapes for {n.name!r}")
        shapes = [init.get(i, produced.get(i)) for i in n.input if i]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        total += node_flops(n.op_type, shapes, out_shapes[n.name][0], attrs)
    return total / num_chunks(samples)


def reference_matmul_flops(checkpoint: str, seconds: float = _PROBE_SECONDS) -> float:
    """Matrix FLOPs of the PyTorch reference on one clip of ``seconds``, per one-second chunk."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from kwmlp.models import HearReference, load_checkpoint

    model = HearReference(load_checkpoint(checkpoint)).eval()
    samples = int(round(seconds * CHUNK_SAMPLES))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, samples))
    return counter.get_total_flops() / num_chunks(samples)


def bound_x_realtime(flops_per_chunk: float, gflops: float, batch: int, seconds: float) -> float:
    """Upper bound on throughput (audio seconds per wall second) for ``batch`` clips of ``seconds``."""
    chunks = batch * num_chunks(int(round(seconds * CHUNK_SAMPLES)))
    return batch * seconds / (chunks * flops_per_chunk / (gflops * 1e9))


def measure(model_path: str, checkpoint: str | None, threads: int) -> dict:
    """``{"threads", "sgemm_gflops", "matmul_mflop_per_chunk": {"export", "reference"}, "skipped"}``.

    The export and the reference are counted separately: one that cannot be counted is named in
    ``skipped`` and leaves the other's count."""
    flops, skipped = {}, {}
    counters = {"export": lambda: onnx_matmul_flops(model_path)}
    if checkpoint:
        counters["reference"] = lambda: reference_matmul_flops(checkpoint)
    for name, count in counters.items():
        try:
            flops[name] = count() / 1e6
        except Exception as e:  # an instrument that cannot count a model must not cost the timings
            skipped[name] = f"could not count its matrix work: {e}"
    return {"threads": threads, "sgemm_gflops": sgemm_gflops(threads), "matmul_mflop_per_chunk": flops,
            "skipped": skipped}
