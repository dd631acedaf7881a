"""The checks of ``benchmarks/gpu_check.sh`` that are Python: ``python -m kwmlp.benchmarks.gpu_check STEP OUT.json``.

- ``cuda``: :mod:`kwmlp.cuda` against real CUDA: a stream, a pinned round trip through device
  memory, and a CUDA graph captured from two copies and replayed on new data.
- ``torch``: PyTorch numerics on a device (``--device cuda``; ``cpu`` runs the same code here):
  the reference with TF32 on and off against the CPU fp32 reference (max abs error), and the
  KW-MLP blocks in fp16 (front end fp32): embedding cosines and keyword agreement on the keyword clips.
- ``memcpy MODEL...``: for each ONNX model, the sessions the runtime opens for ``--backend``
  (``onnxruntime-cuda``; ``onnxruntime-cpu`` runs the same code here), at any shape and at one
  second: ONNX Runtime's copy nodes between host and device (``MemcpyToHost``/``MemcpyFromHost``,
  counted in the model the session saves after optimizing; ONNX Runtime refuses to replay a graph
  with any as one CUDA graph) and its nodes per provider.

Each step writes one JSON file; a failure is written there too, and the exit code says it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile

import numpy as np

from kwmlp.fileio import write_bytes_atomic


def cuda_roundtrip(nbytes: int = 1 << 20) -> dict:
    """Pinned host -> device -> pinned host on a non-default stream, then the same two copies
    captured as a CUDA graph and replayed after the host data changed."""
    from kwmlp import cuda

    api = cuda.load()
    with api.context():
        stream = api.stream()
        src, src_ptr = api.pinned(nbytes, np.dtype(np.uint8))
        dst, dst_ptr = api.pinned(nbytes, np.dtype(np.uint8))
        dev = api.malloc(nbytes)
        src[:] = np.arange(nbytes, dtype=np.uint64).astype(np.uint8)

        def copies():
            api.h2d(dev, src_ptr, nbytes, stream)
            api.d2h(dst_ptr, dev, nbytes, stream)

        copies()
        api.sync(stream)
        plain = bool(np.array_equal(src, dst))
        replayed = None
        if api.supports_graphs:
            graph = api.capture(stream, copies)
            src[:] = 255 - src  # a replay copies what the host holds now
            api.launch(graph, stream)
            api.sync(stream)
            replayed = bool(np.array_equal(src, dst))
            api.destroy_graph(graph)
        api.free(dev)
        api.free_pinned(src_ptr)
        api.free_pinned(dst_ptr)
        api.destroy_stream(stream)
        name, cc, runtime = api.device()
    return {"bindings": api.name, "gpu": name, "compute_capability": cc, "cuda_runtime": runtime,
            "pinned_roundtrip_equal": plain, "graph_replay_equal": replayed}


def _keyword_windows(folder: str, limit: int | None = None) -> np.ndarray:
    import soundfile as sf

    files = sorted(glob.glob(os.path.join(folder, "*.wav")))[:limit]
    windows = np.zeros((len(files), 16000), np.float32)
    for row, f in zip(windows, files):
        audio, _ = sf.read(f, dtype="float32")
        start = (16000 - len(audio[:16000])) // 2
        row[start : start + len(audio[:16000])] = audio[:16000]
    return windows


def _cosines(a, b) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def torch_numerics(checkpoint: str, device: str, keywords: str | None, seconds: float = 10.0) -> dict:
    """The reference on ``device``, TF32 on and off, and with fp16 blocks, against the CPU fp32 reference."""
    import torch

    from kwmlp.benchmarks.targets import _half_blocks
    from kwmlp.models import HearReference, load_checkpoint

    rng = np.random.default_rng(0)
    audio = torch.from_numpy(rng.uniform(-0.5, 0.5, (4, int(seconds * 16000))).astype(np.float32))
    cpu = HearReference(load_checkpoint(checkpoint)).eval()
    want = cpu(audio).timestamp_embeddings.numpy()
    ref = HearReference(load_checkpoint(checkpoint)).eval().to(device)
    out = {"device": device}
    for tf32 in (True, False):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        got = ref(audio.to(device)).timestamp_embeddings.cpu().numpy()
        out[f"max_abs_err_tf32_{'on' if tf32 else 'off'}"] = float(np.abs(got - want).max())
    half = HearReference(load_checkpoint(checkpoint)).eval()
    half.model = _half_blocks(half.model)
    half = half.to(device)
    got = half(audio.to(device)).timestamp_embeddings.float().cpu().numpy()
    out["fp16_blocks_min_cosine"] = float(_cosines(got, want).min())
    out["fp16_blocks_max_abs_err"] = float(np.abs(got - want).max())
    if keywords and glob.glob(os.path.join(keywords, "*.wav")):
        windows = torch.from_numpy(_keyword_windows(keywords))
        l32 = cpu.keyword_logits(windows).numpy()
        l16 = half.keyword_logits(windows.to(device)).float().cpu().numpy()
        out["fp16_blocks_keyword_agreement"] = float((l32.argmax(1) == l16.argmax(1)).mean())
        out["keyword_clips"] = len(windows)
    return out


MEMCPY_OPS = ("MemcpyToHost", "MemcpyFromHost")


def count_nodes(model_path: str) -> dict[str, int]:
    """How many nodes an ONNX model's main graph has, and how many of them are each of :data:`MEMCPY_OPS`."""
    import onnx

    ops = [node.op_type for node in onnx.load(model_path, load_external_data=False).graph.node]
    return {"saved_nodes": len(ops), **{op: ops.count(op) for op in MEMCPY_OPS}}


def _opened_and_saved(ort, path: str, opts, providers: list) -> dict:
    """A session over ``path`` with ``opts``, saved once optimized: its providers, its copy nodes
    counted in the saved model (``saved_nodes`` its nodes), and ``nodes_per_provider`` as the session
    assigned them, before its later fusions (so the two totals differ)."""
    from kwmlp.artifact import open_onnx
    from kwmlp.runtime.onnxruntime_backend import node_counts

    with tempfile.TemporaryDirectory() as tmp:
        opts.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        opts.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        session = open_onnx(path, opts, providers)
        counts = count_nodes(opts.optimized_model_filepath)
    return {"providers": session.get_providers(), "memcpy": sum(counts[op] for op in MEMCPY_OPS), **counts,
            "nodes_per_provider": node_counts(session)}


def _session_memcpy(ort, path: str, backend: str) -> dict:
    """The sessions the runtime opens over ``path`` for ``backend``, with its providers and options:
    ``any shape`` as :class:`~kwmlp.runtime.onnxruntime_backend.OrtRunner` opens it, and
    ``at 1x16000`` as the CUDA path opens a shape it meets repeatedly (free dimensions fixed, the
    session it would replay as a CUDA graph)."""
    import onnx

    from kwmlp.artifact import require_file
    from kwmlp.dims import CHUNK_SAMPLES
    from kwmlp.runtime.onnxruntime_backend import providers_for
    from kwmlp.runtime.onnxruntime_cuda import session_options

    graph_input = onnx.load(require_file(path), load_external_data=False).graph.input[0].name
    providers = providers_for(backend, graph_input)
    any_shape = ort.SessionOptions()
    any_shape.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # OrtRunner's
    one_second = session_options(ort, graph_input, (1, CHUNK_SAMPLES), None)
    return {"input": graph_input, "any shape": _opened_and_saved(ort, path, any_shape, providers),
            f"at 1x{CHUNK_SAMPLES}": _opened_and_saved(ort, path, one_second, providers)}


def memcpy_counts(models: list[str], backend: str = "onnxruntime-cuda") -> dict:
    """:func:`_session_memcpy` for each of ``models``; one that does not open says why in its entry."""
    from kwmlp.artifact import import_onnxruntime
    from kwmlp.errors import KwmlpError
    from kwmlp.runtime.onnxruntime_backend import ORT_BACKENDS, available_providers

    ort = import_onnxruntime()
    provider = ORT_BACKENDS[backend]
    if provider not in available_providers():
        raise RuntimeError(f"onnxruntime {ort.__version__} has no {provider} here")
    sessions = {}
    for path in models:
        try:
            sessions[path] = _session_memcpy(ort, path, backend)
        except KwmlpError as e:
            sessions[path] = {"error": str(e)}
    return {"onnxruntime": ort.__version__, "backend": backend, "optimization_level": "ORT_ENABLE_ALL",
            "sessions": sessions, "every_session_opened": all("error" not in v for v in sessions.values())}


def _step(args) -> dict:
    if args.step == "cuda":
        return cuda_roundtrip()
    if args.step == "torch":
        return torch_numerics(args.checkpoint, args.device, args.keywords)
    if not args.models:
        raise ValueError("memcpy needs the ONNX models to open")
    return memcpy_counts(args.models, args.backend)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kwmlp.benchmarks.gpu_check")
    p.add_argument("step", choices=("cuda", "torch", "memcpy"))
    p.add_argument("output", help="JSON file to write")
    p.add_argument("models", nargs="*", help="memcpy: the ONNX models whose sessions to open")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="cuda")
    p.add_argument("--keywords", default=None, help="folder of one-second keyword .wav clips")
    p.add_argument("--backend", default="onnxruntime-cuda", choices=("onnxruntime-cuda", "onnxruntime-cpu"),
                   help="memcpy: the runtime's ONNX Runtime backend whose sessions to open")
    args = p.parse_args(argv)
    try:
        result = _step(args)
        ok = all(v is not False for v in result.values())
    except Exception as e:  # noqa: BLE001 - a check script: the failure is the result, written down
        result, ok = {"error": f"{type(e).__name__}: {e}"}, False
    result["ok"] = ok
    write_bytes_atomic(args.output, json.dumps(result, indent=2).encode())
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
