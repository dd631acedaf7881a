"""What ``kwmlp spot`` answers per mode and threshold: the measurement behind each mode's default
threshold (:data:`kwmlp.runtime.keywords.DEFAULT_THRESHOLDS`).

``python -m kwmlp.benchmarks.spot_accuracy --model exports/kwmlp.onnx --keywords ../shared/keywords``

Material: the keyword clips (one word each, ``WORD__VOICE.wav``), the same clips centred in two
seconds of silence, and files without any keyword: ordinary speech synthesized with espeak-ng
(``apt-get install espeak-ng``; the sentences and voices of :mod:`kwmlp.benchmarks.live_accuracy`,
cached in ``--workdir``), white noise at three levels, and silence. Every window's probabilities
are computed once per file (windows of 1 s every 0.25 s, spot's defaults); each mode and threshold
then replays them through spot's own decision (:func:`~kwmlp.runtime.keywords.decide`) and
aggregation, so the figures are what ``kwmlp spot --mode M --threshold T`` prints for these files.
A clip is *right* when spot reports its word (``multi``: among its detections, and no other word),
*wrong* when it reports another word, *none* when it reports nothing; a file without a keyword
counts when anything is reported.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, SAMPLE_RATE

THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.82, 0.84, 0.85, 0.86, 0.88, 0.9)
WINDOW, HOP = 1.0, 0.25


def _negatives(workdir: str, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """{kind: files} without any keyword: ordinary speech, noise at three levels, silence."""
    from kwmlp.benchmarks.live_accuracy import ORDINARY, SPEEDS, VOICES, _check_material, _say

    _check_material()
    os.makedirs(workdir, exist_ok=True)
    speech = [_say(s, v, r, os.path.join(workdir, f"{v}_{r}__{s.replace(' ', '_')}.wav"))
              for v in VOICES for r in SPEEDS for s in ORDINARY]
    rng = np.random.default_rng(seed)
    noise = [rng.normal(0, level, 3 * SAMPLE_RATE).astype(np.float32) for level in (0.003, 0.03, 0.1) for _ in range(10)]
    silence = [np.zeros(3 * SAMPLE_RATE, np.float32)] * 5 + [
        rng.normal(0, 1e-4, 3 * SAMPLE_RATE).astype(np.float32) for _ in range(5)]
    return {"speech": speech, "noise": noise, "silence": silence}


def _positives(folder: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    """{kind: [(word, audio)]}: the clips as they are, and centred in two seconds of silence."""
    from kwmlp.apps import audio

    clips = [(p.name.split("__")[0], audio.load(str(p))) for p in sorted(Path(folder).glob("*__*.wav"))]
    if not clips:
        raise SystemExit(f"no WORD__VOICE.wav clips in {folder}")
    padded = []
    for word, x in clips:
        y = np.zeros(2 * SAMPLE_RATE, np.float32)
        y[(len(y) - len(x)) // 2 :][: len(x)] = x
        padded.append((word, y))
    return {"clips": clips, "clips in 2 s of silence": padded}


def window_probabilities(embedder, x: np.ndarray) -> tuple[list[int], np.ndarray]:
    """(window starts in samples, float32 (W, 35) probabilities) of spot's windows over ``x``."""
    from kwmlp.runtime.keywords import Windows, keyword_probabilities, put

    cutter = Windows(round(WINDOW * SAMPLE_RATE), round(HOP * SAMPLE_RATE))
    starts, rows = [], []
    for windows in (cutter.feed(x), cutter.finish()):
        for s, w in windows:  # each window is a view valid until the next one is asked for: copied at once
            rows.append(np.zeros(CHUNK_SAMPLES, np.float32))
            put(rows[-1], w)
            starts.append(s)
    return starts, keyword_probabilities(embedder, np.stack(rows))


def answer(windows: tuple[list[int], np.ndarray], mode: str, threshold: float) -> list[str]:
    """The labels ``kwmlp spot`` reports for a file whose windows are ``windows``."""
    from kwmlp.runtime.keywords import aggregate, decide

    starts, probs = windows
    win = round(WINDOW * SAMPLE_RATE)
    found = [d for s, p in zip(starts, probs) if (d := decide(s, p, win, threshold)) is not None]
    return [d.label for d in aggregate(found, mode)]


def score(positives, negatives, mode: str, threshold: float) -> dict[str, str]:
    """{material: "right / wrong / none" (keyword files) or "files with a keyword / files"}."""
    row = {}
    for kind, files in positives.items():
        said = [(word, set(answer(w, mode, threshold))) for word, w in files]
        right = sum(labels == {word} for word, labels in said)
        none = sum(not labels for _, labels in said)
        row[kind] = f"{right} / {len(said) - right - none} / {none}"
    for kind, files in negatives.items():
        row[f"{kind}: files with a keyword"] = f"{sum(bool(answer(w, mode, threshold)) for w in files)} / {len(files)}"
    return row


def choose(positives, negatives, mode: str) -> float:
    """The threshold of :data:`THRESHOLDS` with the highest share of keyword files answered right
    minus the share of speech files given a keyword, among those giving none to noise or silence."""
    def merit(t: float) -> float:
        right = sum(set(answer(w, mode, t)) == {word} for files in positives.values() for word, w in files)
        false = sum(bool(answer(w, mode, t)) for w in negatives["speech"])
        quiet = not any(answer(w, mode, t) for kind in ("noise", "silence") for w in negatives[kind])
        return right / sum(map(len, positives.values())) - false / len(negatives["speech"]) if quiet else -1.0
    return max(THRESHOLDS, key=merit)


def table_row(positives, negatives, threshold: float, modes) -> dict[str, str]:
    """One threshold's figures; a figure the modes differ on is given per mode (``a ; b ; c``, in ``modes`` order)."""
    per_mode = [score(positives, negatives, m, threshold) for m in modes]
    return {"threshold": f"{threshold:g}", **{k: per_mode[0][k] if len({s[k] for s in per_mode}) == 1
                                             else " ; ".join(s[k] for s in per_mode) for k in per_mode[0]}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kwmlp.benchmarks.spot_accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an .onnx file written by `kwmlp export`")
    p.add_argument("--keywords", required=True, help="a folder of WORD__VOICE.wav keyword clips")
    p.add_argument("--workdir", default="spot_accuracy", help="where the synthesized speech is cached")
    args = p.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    from kwmlp.benchmarks.machine import describe
    from kwmlp.runtime import Embedder
    from kwmlp.runtime.keywords import MODES

    embedder = Embedder(args.model)
    positives = {k: [(word, window_probabilities(embedder, x)) for word, x in v]
                 for k, v in _positives(args.keywords).items()}
    negatives = {k: [window_probabilities(embedder, x) for x in v] for k, v in _negatives(args.workdir).items()}
    m = describe()
    print(f"{m['cpu']}, {m['cores']} cores, onnxruntime {m['versions'].get('onnxruntime')}; windows of {WINDOW} s "
          f"every {HOP} s; keyword files: right / wrong / none; where modes differ: {' ; '.join(MODES)}\n")
    rows = [table_row(positives, negatives, t, MODES) for t in THRESHOLDS]
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print("\nchosen (kwmlp.runtime.keywords.DEFAULT_THRESHOLDS): "
          + ", ".join(f"{mode} {choose(positives, negatives, mode):g}" for mode in MODES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
