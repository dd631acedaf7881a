"""Live benchmark: kwmlp-rt's LiveSpotter against openWakeWord on the same audio, paced in real time.

``python -m kwmlp.benchmarks.live --model exports/kwmlp.onnx [--audio FILE] [--seconds 30]``

Each engine runs in a worker process of its own, reading 16 kHz mono s16le from a pipe as
``kwmlp listen MODEL -`` does; this process writes the audio to it in 80 ms blocks at the speed
of sound, as a microphone delivers it (so no windows can be batched). Reported per engine: CPU
seconds per second of audio (the worker's process time from the moment it is ready, so the
start-up is not counted), the per-block processing time p50/p99 over blocks that ran a model,
and the delay from the end of a detection's deciding window to the detection. openWakeWord runs
through ``pyopen-wakeword`` (its TFLite models and runtime, the engine of wyoming-openwakeword
2.x) with its built-in ``okay_nabu`` model; it is skipped with a note when not installed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

BLOCK = 1280  # samples: 80 ms at 16 kHz, openWakeWord's frame
RATE = 16000
OWW_MODEL = "okay_nabu"
OWW_THRESHOLD = 0.5  # openWakeWord's default


def _kwmlp_engine(args):
    from kwmlp.runtime import Embedder, LiveSpotter

    embedder = Embedder(args.model, threads=1, live=True)
    spotter = LiveSpotter(embedder, hop=args.hop)
    LiveSpotter(embedder, hop=args.hop).feed(np.zeros(RATE * 2, np.int16))  # warm up the session

    def process(block: np.ndarray) -> tuple[int, list[float]]:
        before = spotter.windows
        found = spotter.feed(block)
        return spotter.windows - before, [d.end_s for d in found]

    return process


def _oww_engine(args):
    from pyopen_wakeword import Model, OpenWakeWord, OpenWakeWordFeatures

    features, model = OpenWakeWordFeatures.from_builtin(), OpenWakeWord.from_builtin(Model(OWW_MODEL))
    fed = [0]

    def process(block: np.ndarray) -> tuple[int, list[float]]:
        runs, found = 0, []
        for f in features.process_streaming(block.tobytes()):
            for prob in model.process_streaming(f):
                runs += 1
                if prob > OWW_THRESHOLD:
                    found.append((fed[0] + len(block)) / RATE)
        fed[0] += len(block)
        return runs, found

    for _ in range(25):  # warm up: 2 s of silence, then start over
        process(np.zeros(BLOCK, np.int16))
    features.reset()
    model.reset()
    fed[0] = 0
    return process


def worker(args) -> None:
    """Reads 80 ms blocks from standard input until its end; prints one JSON line of measurements."""
    process = _kwmlp_engine(args) if args.worker == "kwmlp" else _oww_engine(args)
    print("ready", flush=True)
    stdin, cpu0 = sys.stdin.buffer, time.process_time()
    hops, found_at, starts, samples = [], [], [], 0
    while len(data := stdin.read(BLOCK * 2)) == BLOCK * 2:
        arrived = time.perf_counter()
        starts.append(arrived - (samples + BLOCK) / RATE)  # when sample 0 was "spoken", if this block came on time
        runs, found = process(np.frombuffer(data, "<i2"))
        done = time.perf_counter()
        samples += BLOCK
        if runs:
            hops.append((done - arrived) / runs)
        found_at += [(done, end_s) for end_s in found]
    cpu = time.process_time() - cpu0
    t0 = min(starts, default=0.0)  # blocks come late, never early: the earliest is the true start
    delays = [done - (t0 + end_s) for done, end_s in found_at]
    print(json.dumps({"cpu_s": cpu, "audio_s": samples / RATE, "hops_s": hops, "delays_s": delays}), flush=True)


def _audio(path: str | None, seconds: float) -> np.ndarray:
    """int16 16 kHz mono: ``path`` repeated to ``seconds``, or quiet noise."""
    n = int(seconds * RATE)
    if path is None:
        x = np.random.default_rng(0).normal(0, 0.01, n).astype(np.float32)
    else:
        from kwmlp.apps import audio

        x = np.resize(audio.load(path), n)
    return np.round(np.clip(x, -1, 1) * 32767).astype("<i2")


def measure(argv: list[str], pcm: np.ndarray) -> dict:
    """Runs one worker, feeding ``pcm`` paced in real time; its measurements."""
    proc = subprocess.Popen([sys.executable, "-m", "kwmlp.benchmarks.live", *argv], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=False)
    if proc.stdout.readline().strip() != b"ready":
        raise SystemExit(f"the {argv[1]} worker failed to start (exit code {proc.wait()})")
    start = time.perf_counter()
    for k, i in enumerate(range(0, len(pcm) - BLOCK + 1, BLOCK)):
        time.sleep(max(0.0, start + (k + 1) * BLOCK / RATE - time.perf_counter()))  # the block is complete
        proc.stdin.write(pcm[i : i + BLOCK].tobytes())
        proc.stdin.flush()
    proc.stdin.close()
    out = json.loads(proc.stdout.readline())
    proc.wait()
    return out


def summary(name: str, m: dict) -> dict:
    ms = lambda v: round(1000 * float(v), 2)
    hops, delays = np.array(m["hops_s"]), np.array(m["delays_s"])
    return {
        "engine": name,
        "cpu_ms_per_s": ms(m["cpu_s"] / m["audio_s"]),
        "hop_p50_ms": ms(np.percentile(hops, 50)) if len(hops) else None,
        "hop_p99_ms": ms(np.percentile(hops, 99)) if len(hops) else None,
        "detections": len(delays),
        "delay_p50_ms": ms(np.percentile(delays, 50)) if len(delays) else None,
        "delay_max_ms": ms(delays.max()) if len(delays) else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kwmlp.benchmarks.live", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="an .onnx file written by `kwmlp export` (required)")
    p.add_argument("--audio", help="audio file to feed, repeated to --seconds (default: quiet noise)")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of audio per engine (default 30)")
    p.add_argument("--hops", default="0.08,0.1", help="kwmlp hops in seconds (default 0.08,0.1)")
    p.add_argument("--output", help="also write the rows as JSON here")
    p.add_argument("--worker", choices=["kwmlp", "oww"], help=argparse.SUPPRESS)
    p.add_argument("--hop", type=float, default=0.1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if not args.model:
        p.error("--model is required")
    from kwmlp.benchmarks.machine import describe

    pcm = _audio(args.audio, args.seconds)
    rows = [summary(f"kwmlp-rt LiveSpotter, hop {h} s, 1 thread",
                    measure(["--worker", "kwmlp", "--model", args.model, "--hop", h], pcm))
            for h in args.hops.split(",")]
    try:
        import pyopen_wakeword  # noqa: F401
    except ImportError:
        print("openWakeWord skipped: pip install pyopen-wakeword", file=sys.stderr)
    else:
        rows.append(summary(f"openWakeWord ({OWW_MODEL}, pyopen-wakeword)", measure(["--worker", "oww"], pcm)))
    machine = describe()
    print(f"{args.seconds:g} s of audio in {BLOCK * 1000 // RATE} ms blocks, paced in real time; CPU: "
          f"{machine['cpu']} ({machine['cores']} cores)\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join("" if r[k] is None else str(r[k]) for k in keys) + " |")
    if args.output:
        from kwmlp.fileio import write_bytes_atomic

        write_bytes_atomic(args.output, json.dumps({"machine": machine, "rows": rows}, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
