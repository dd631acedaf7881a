"""Would INT8 pay on this CPU? ONNX Runtime quantization of an export's KW-MLP blocks, measured.

``python -m kwmlp.benchmarks.int8_probe MODEL.onnx --keywords ../shared/keywords`` quantizes the
matrix products of the blocks (the MFCC front end, the norms and the scene stay float) in two ways:

- ``dynamic``: ``quantize_dynamic``, int8 weights, activations quantized per call;
- ``static``: ``quantize_static`` in QDQ format, per-channel int8 weights, uint8 activations
  calibrated on the keyword clips of one voice (the other voices are held out for accuracy).

Both use 7-bit weights (``reduce_range``): without VNNI, ONNX Runtime's u8 x s8 kernels sum
pairs of products in int16, which saturates with full-range weights (measured here: static
top-1 78.6% with full range, 90.7% with 7 bits). The temporal projections stay float: their
weight is the left operand, and the quantizer's per-channel axis would then be the contraction
axis, which ONNX Runtime cannot run as an int8 product (it keeps a float MatMul between DQ/Q).

and prints, side by side with the fp32 export in the same process: 16 x 10 s throughput, 1 x 1 s
latency (median of interleaved calls), keyword top-1 on the held-out clips (the keyword graph
quantized the same way) and the min cosine similarity of scene embeddings against fp32. A
precision is worth shipping only if it is faster and loses at most 1 point of top-1.
"""

from __future__ import annotations

import argparse
import glob
import os
import tempfile
import time

import numpy as np

from kwmlp.benchmarks.workloads import Workload
from kwmlp.dims import KEYWORDS
from kwmlp.artifact import keywords_path_for

MODES = ("dynamic", "static")


def _block_matmuls(path: str) -> list[str]:
    """The blocks' channel projections (not the temporal ones: see the module docstring)."""
    import onnx

    return [n.name for n in onnx.load(path).graph.node
            if n.op_type == "MatMul" and n.name.startswith("block") and ".temporal" not in n.name]


def _clips(folder: str) -> tuple[dict[str, list[np.ndarray]], dict[str, list[int]]]:
    """One-second windows and labels by voice (file ``WORD__VOICE_VARIANT.wav``)."""
    import soundfile as sf

    from kwmlp.runtime.keywords import one_second

    clips, labels = {}, {}
    for path in sorted(glob.glob(os.path.join(folder, "*.wav"))):
        word, rest = os.path.basename(path)[:-4].split("__", 1)
        voice = rest.rsplit("_", 1)[0]
        audio, _ = sf.read(path, dtype="float32")
        clips.setdefault(voice, []).append(one_second(audio))
        labels.setdefault(voice, []).append(KEYWORDS.index(word))
    if len(clips) < 2:
        raise SystemExit(f"{folder} needs keyword clips of at least two voices (WORD__VOICE_VARIANT.wav)")
    return clips, labels


def quantize(mode: str, src: str, dst: str, calibration: list[dict[str, np.ndarray]]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    nodes = _block_matmuls(src)
    if mode == "dynamic":
        quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], nodes_to_quantize=nodes,
                         weight_type=QuantType.QInt8, reduce_range=True)
        return

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration)

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                    nodes_to_quantize=nodes, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _session(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    # the sessions are timed in turn: idle ones must not keep their threads spinning meanwhile
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _median_ms(sessions: dict, feed: dict, rounds: int) -> dict[str, float]:
    """Median call time per session, calls interleaved so that load hits all alike."""
    times = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, feed)
    for _ in range(rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - t)
    return {k: 1e3 * float(np.median(v)) for k, v in times.items()}


def probe(model: str, keywords: str, threads: int, rounds: int) -> list[dict]:
    clips, labels = _clips(keywords)
    calib_voice = sorted(clips)[0]
    held_out = [v for v in sorted(clips) if v != calib_voice]
    x_eval = np.stack([c for v in held_out for c in clips[v]])
    y_eval = np.array([y for v in held_out for y in labels[v]])
    calib = np.stack(clips[calib_voice])
    models = {"fp32": (model, keywords_path_for(model))}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            paths = (os.path.join(tmp, f"{mode}.onnx"), os.path.join(tmp, f"{mode}.keywords.onnx"))
            quantize(mode, model, paths[0], [{"audio": calib[i : i + 8]} for i in range(0, len(calib), 8)])
            quantize(mode, models["fp32"][1], paths[1], [{"windows": calib[i : i + 8]} for i in range(0, len(calib), 8)])
            models[mode] = paths
        emb = {k: _session(p[0], threads) for k, p in models.items()}
        kw = {k: _session(p[1], threads) for k, p in models.items()}
        throughput = _median_ms(emb, {"audio": Workload(16, 10).audio()[:2]}, rounds)  # 2 clips: the runtime's call
        latency = _median_ms(emb, {"audio": Workload(1, 1).audio()}, 5 * rounds)
        scenes = {k: s.run(["scene_embeddings"], {"audio": x_eval})[0] for k, s in emb.items()}
        rows = []
        for k in models:
            top1 = float(np.mean(kw[k].run(["keyword_logits"], {"windows": x_eval})[0].argmax(1) == y_eval))
            a, b = scenes["fp32"], scenes[k]
            cos = float(np.min((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))
            rows.append({"precision": "fp32" if k == "fp32" else f"int8 {k}", "x_realtime_2x10s": 20 / (throughput[k] / 1e3),
                         "latency_1x1s_ms": latency[k], "keyword_top1": top1, "min_scene_cosine": cos,
                         "held_out_clips": len(y_eval), "calibration": f"{len(calib)} clips of {calib_voice}"})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="an fp32 export (its .keywords.onnx beside it)")
    p.add_argument("--keywords", required=True, help="folder of WORD__VOICE_VARIANT.wav clips, e.g. ../shared/keywords")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=20)
    a = p.parse_args()
    rows = probe(a.model, a.keywords, a.threads, a.rounds)
    print("| precision | 2 x 10 s, x realtime | 1 x 1 s, ms | keyword top-1 (held out) | min scene cosine vs fp32 |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['precision']} | {r['x_realtime_2x10s']:.1f} | {r['latency_1x1s_ms']:.2f} | "
              f"{100 * r['keyword_top1']:.1f}% of {r['held_out_clips']} | {r['min_scene_cosine']:.4f} |")
    print(f"\ncalibration (static): {rows[0]['calibration']}")


if __name__ == "__main__":
    main()
