"""Accuracy of the live detector on synthesized speech: recall and false detections per hour.

``python -m kwmlp.benchmarks.live_accuracy --model exports/kwmlp.onnx [--workdir DIR]``

Material, made with espeak-ng (``apt-get install espeak-ng``) in several voices and cached in
``--workdir``: sentences of ordinary speech with three keywords spoken between them (the keyword
times are known because every piece is synthesized on its own), the same ordinary speech alone
(no keyword among its words), and noise. Every window's probabilities are computed once; each
detector setting then replays them through :class:`~kwmlp.runtime.LiveSpotter`, so the figures
are exactly what ``kwmlp listen`` would report on this audio. A detection is right when a
keyword occurrence of its label overlaps its window; each occurrence counts once for recall; any
other detection is false.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess

import numpy as np

from kwmlp.dims import KEYWORDS, SAMPLE_RATE

VOICES = ("en-gb-x-rp", "en-us", "en-gb-scotland", "en-gb-x-gbcwmd", "en-029")
SPEEDS = (150, 190)  # words per minute (espeak-ng's default is 175)
ORDINARY = (
    "the weather today is cold and rainy", "please remember to buy bread and milk",
    "my sister works at a small bakery", "we watched a film about the ocean",
    "could you pass me the salt please", "the train was late this morning",
    "i think the meeting starts at noon", "they painted the kitchen a pale colour",
    "this book is about ancient history", "the children played in the garden",
    "dinner will be ready in a minute", "he forgot his keys at the office",
    "the music was loud at the party", "she likes coffee with a little sugar",
    "we should call the plumber tomorrow", "the museum opens at ten in summer",
    "turn the volume a bit lower", "what time does the shop close",
    "i would like a glass of water", "the garden needs more sunlight",
)
SUBSET = ("yes", "no", "stop")
HOP = 0.1
GAP = 0.3  # seconds of silence between the pieces of a sentence


def _check_material() -> None:
    for s in ORDINARY:
        assert not set(s.split()) & set(KEYWORDS), f"{s!r} contains a keyword"


def _say(text: str, voice: str, speed: int, path: str) -> np.ndarray:
    from kwmlp.apps import audio

    if not os.path.isfile(path):
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", path + ".tmp", text], check=True)
        os.replace(path + ".tmp", path)
    return audio.load(path)


def make_material(workdir: str, sentences: int, seed: int = 0):
    """``{name: (audio float32 16 kHz, [(label, start_s, end_s), ...])}`` for the three kinds of material."""
    _check_material()
    rng, pause = np.random.default_rng(seed), np.zeros(int(GAP * SAMPLE_RATE), np.float32)
    os.makedirs(workdir, exist_ok=True)
    say = lambda text, voice, speed: _say(text, voice, speed,
                                          os.path.join(workdir, f"{voice}_{speed}__{text.replace(' ', '_')}.wav"))
    parts, truth, at = [], [], 0
    for i in range(sentences):
        voice, speed = VOICES[i % len(VOICES)], SPEEDS[i // len(VOICES) % len(SPEEDS)]
        words = list(rng.choice(KEYWORDS, 2, replace=False)) + [SUBSET[i % len(SUBSET)]]  # a subset word in each
        for w in rng.permutation(words):
            filler = say(ORDINARY[rng.integers(len(ORDINARY))], voice, speed)
            clip = say(str(w), voice, speed)
            parts += [filler, pause, clip, pause]
            start = at + len(filler) + len(pause)
            truth.append((str(w), start / SAMPLE_RATE, (start + len(clip)) / SAMPLE_RATE))
            at = start + len(clip) + len(pause)
    ordinary = [x for v in VOICES for r in SPEEDS for s in ORDINARY for x in (say(s, v, r), pause)]
    noise_rng = np.random.default_rng(seed + 1)
    noise = [noise_rng.normal(0, level, 30 * SAMPLE_RATE).astype(np.float32) for level in (0.003, 0.03, 0.1)]
    return {
        "keyword sentences": (np.concatenate(parts), truth),
        "ordinary speech": (np.concatenate(ordinary), []),
        "noise": (np.concatenate(noise), []),
    }


class _Replay:
    """Stands in for an Embedder: hands out precomputed logits, one window after another."""

    def __init__(self, logits: np.ndarray):
        self.logits, self.next = logits, 0

    def keyword_logits(self, windows):
        self.next += 1
        return self.logits[self.next - 1][None]


def window_logits(embedder, x: np.ndarray) -> np.ndarray:
    """The logits of every window LiveSpotter cuts from ``x`` (1 s windows every HOP), computed in batches."""
    from kwmlp.runtime.keywords import Windows, put

    cutter, rows, batch, n = Windows(SAMPLE_RATE, round(HOP * SAMPLE_RATE)), [], np.zeros((256, SAMPLE_RATE), np.float32), 0
    for _, w in _chain(cutter, x):
        put(batch[n], w)  # each window is a view valid until the next: copied at once
        n += 1
        if n == len(batch):
            rows.append(embedder.keyword_logits(batch))
            n = 0
    if n:
        rows.append(embedder.keyword_logits(batch[:n]))
    return np.concatenate(rows)


def _chain(cutter, x):
    yield from cutter.feed(x)
    yield from cutter.finish()


def score(detections, truth) -> tuple[int, int]:
    """(occurrences found, false detections)."""
    found, false = set(), 0
    for d in detections:
        hits = [i for i, (w, a, b) in enumerate(truth) if w == d.label and a < d.end_s and d.start_s < b]
        found.update(hits)
        false += not hits
    return len(found), false


SETTINGS = [  # (threshold, smooth, trigger level, refractory s); the top probability rarely passes 0.93
    (0.85, 1, 1, 0.0), (0.85, 1, 1, 1.0), (0.8, 3, 1, 1.0), (0.85, 3, 1, 1.0), (0.85, 3, 2, 1.0),
    (0.85, 5, 1, 1.0), (0.85, 5, 2, 1.0), (0.9, 1, 1, 1.0), (0.9, 3, 1, 1.0), (0.9, 5, 1, 1.0),
]


def evaluate(material: dict, logits: dict, setting, keywords=None) -> dict:
    from kwmlp.runtime import LiveSpotter

    threshold, smooth, trigger, refractory = setting
    row = {"threshold": threshold, "smooth": smooth, "trigger_level": trigger, "refractory": refractory,
           "keywords": ",".join(keywords) if keywords else "all 35"}
    for name, (x, truth) in material.items():
        spotter = LiveSpotter(_Replay(logits[name]), hop=HOP, threshold=threshold, smooth=smooth,
                              trigger_level=trigger, refractory=refractory, keywords=keywords)
        found = spotter.feed(x) + spotter.close()
        truth = [t for t in truth if keywords is None or t[0] in keywords]
        hits, false = score(found, truth)
        if truth:
            row["recall"] = round(hits / len(truth), 3)
        row[f"false/h {name}"] = round(false / (len(x) / SAMPLE_RATE / 3600))
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m kwmlp.benchmarks.live_accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an .onnx file written by `kwmlp export`")
    p.add_argument("--workdir", default="live_accuracy", help="where the synthesized material is cached")
    p.add_argument("--sentences", type=int, default=60, help="keyword sentences, three keywords each (default 60)")
    args = p.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng)")
    from kwmlp.runtime import Embedder

    material = make_material(args.workdir, args.sentences)
    embedder = Embedder(args.model)
    logits = {name: window_logits(embedder, x) for name, (x, _) in material.items()}
    rows = [evaluate(material, logits, s) for s in SETTINGS]
    rows += [evaluate(material, logits, s, SUBSET) for s in SETTINGS]
    print(", ".join(f"{name}: {len(x) / SAMPLE_RATE / 60:.1f} min" + (f", {len(t)} keywords" if t else "")
                    for name, (x, t) in material.items()) + f"; windows of 1 s every {HOP} s\n")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
