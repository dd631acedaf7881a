"""Keyword spotting with the checkpoint's 35-way Speech Commands head: classify one-second clips,
and spot keywords in long audio with a sliding window.

The sliding window follows the original Keyword-MLP ``window_inference.py``: windows start at
0, hop, 2·hop, ... as long as the whole window fits; each window is cut or zero-padded at its
end to one second; a window counts when its top softmax probability exceeds the threshold.
Modes: ``multi`` returns every such window, ``max`` the most confident one, ``n_voting`` the
class with most windows. Unlike the original, audio shorter than the window still gets one
(zero-padded) window instead of none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, KEYWORDS, SAMPLE_RATE
from kwmlp.errors import KwmlpError
from kwmlp.runtime.inputs import as_clip, as_clips

MODES = ("multi", "max", "n_voting")
# The head is trained on one second and hears the first second of a longer window; a longer window
# only delays the decision, and its buffer is allocated whole (1e7 s asked for 596 GiB).
MAX_WINDOW_SECONDS = 10.0
# Each mode's default threshold, chosen by measurement (README, `kwmlp spot`; benchmarks/spot_accuracy.py):
# per mode, the threshold with the highest share of keyword files answered right minus the share of
# keyword-free speech files given a keyword, none on noise or silence. 0.85 for each on the 210 keyword
# clips (alone and in silence) and 200 espeak-ng sentences: 0.8 finds 14 more clips (172 of 210) but
# gives a keyword to 34 sentences instead of 3; 0.9 finds 27 clips.
DEFAULT_THRESHOLDS = {"multi": 0.85, "max": 0.85, "n_voting": 0.85}


@dataclass(frozen=True)
class Detection:
    """A keyword found in ``[start_s, end_s)`` seconds of the audio.

    ``confidence`` is the softmax probability of ``label`` in its window (for ``n_voting``: the
    highest over its windows, which then span ``start_s`` to ``end_s``); ``votes`` the number of
    windows above the threshold that agree.
    """

    label: str
    index: int
    confidence: float
    start_s: float
    end_s: float
    votes: int = 1


def softmax(logits: np.ndarray) -> np.ndarray:
    """``(W, C)`` logits -> float32 ``(W, C)`` probabilities."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def one_second(clip: np.ndarray) -> np.ndarray:
    """float32 ``(n,)`` 16 kHz -> ``(16000,)``: a shorter clip centred in zeros (padding split evenly
    before and after, as the keyword set's reference figure was measured), a longer one's loudest
    second (largest sum of squares)."""
    return loudest_second([as_clip(clip, "clip")])


def _centred(clip: np.ndarray) -> np.ndarray:
    out = np.zeros(CHUNK_SAMPLES, np.float32)
    before = (CHUNK_SAMPLES - len(clip)) // 2
    out[before : before + len(clip)] = clip
    return out


def loudest_second(pieces: Iterable[np.ndarray]) -> np.ndarray:
    """:func:`one_second` of a clip arriving in pieces (float ``(n,)`` at 16 kHz, e.g. a file read
    block by block): memory stays one piece plus one second. The first loudest second wins ties."""
    tail = np.zeros(0, np.float32)  # the last second - 1 samples: windows not yet complete
    best, best_energy = None, -1.0
    for i, piece in enumerate(pieces):
        buf = np.concatenate([tail, as_clip(piece, f"piece {i}", allow_empty=True)])
        if len(buf) >= CHUNK_SAMPLES:
            energy = np.concatenate([[0.0], np.cumsum(buf.astype(np.float64) ** 2)])
            windows = energy[CHUNK_SAMPLES:] - energy[:-CHUNK_SAMPLES]
            start = int(np.argmax(windows))
            if windows[start] > best_energy:
                best, best_energy = buf[start : start + CHUNK_SAMPLES].copy(), windows[start]
        tail = buf[len(buf) - min(len(buf), CHUNK_SAMPLES - 1) :]
    if best is not None:
        return best
    if not len(tail):
        raise KwmlpError("the clip has no samples")
    return _centred(tail)


def classify(embedder, clips: list[np.ndarray], top_k: int = 5, batch_size: int = 64) -> list[list[tuple[str, float]]]:
    """The ``top_k`` (label, probability) pairs of each clip (float ``(n,)`` at 16 kHz), best first.

    Each clip is made one second long by :func:`one_second`; windows run in batches.
    """
    if not 1 <= top_k <= len(KEYWORDS):
        raise KwmlpError(f"top_k must be in [1, {len(KEYWORDS)}], got {top_k}")
    clips = as_clips(clips)
    out = []
    for i in range(0, len(clips), batch_size):
        windows = np.stack([loudest_second([c]) for c in clips[i : i + batch_size]])
        for p in keyword_probabilities(embedder, windows):
            best = np.argsort(-p, kind="stable")[:top_k]
            out.append([(KEYWORDS[j], float(p[j])) for j in best])
    return out


def keyword_probabilities(embedder, windows: np.ndarray) -> np.ndarray:
    """float32 ``(W, 16000)`` windows -> ``(W, 35)`` probabilities, in :data:`KEYWORDS` order."""
    logits = embedder.keyword_logits(windows)
    if logits.shape[-1] != len(KEYWORDS):
        raise KwmlpError(f"the model has {logits.shape[-1]} keyword classes; keyword names are known for the "
                         f"{len(KEYWORDS)} Speech Commands classes only")
    return softmax(logits)


def default_threshold(mode: str) -> float:
    """The threshold ``spot`` uses in ``mode`` when none is given (:data:`DEFAULT_THRESHOLDS`)."""
    if mode not in MODES:
        raise KwmlpError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    return DEFAULT_THRESHOLDS[mode]


def check_options(window: float, hop: float, threshold: float, mode: str) -> tuple[int, int]:
    default_threshold(mode)  # the mode is known
    if not 0.0 <= threshold < 1.0:
        raise KwmlpError(f"threshold must be in [0, 1), got {threshold}")
    if not (math.isfinite(window) and math.isfinite(hop)):
        raise KwmlpError(f"window and hop must be finite numbers of seconds, got {window} and {hop}")
    win, step = round(window * SAMPLE_RATE), round(hop * SAMPLE_RATE)
    if win < 1 or step < 1:
        raise KwmlpError(f"window and hop must be positive (at least one sample), got {window} s and {hop} s")
    if window > MAX_WINDOW_SECONDS:
        raise KwmlpError(f"window must be at most {MAX_WINDOW_SECONDS:g} s (the keyword head hears the first second "
                         f"of each window), got {window} s")
    return win, step


def put(row: np.ndarray, samples: np.ndarray) -> None:
    """Write one window's samples (at most 16000) into a preallocated ``(16000,)`` row, zeros after them:
    the original's window, cut or zero-padded at its end to one second."""
    row[: len(samples)] = samples
    row[len(samples) :] = 0.0


def top_class(start: int, probs: np.ndarray, win: int) -> Detection:
    """The window starting at sample ``start`` (``win`` samples, ``probs`` its (35,) probabilities)
    as a detection of its best class, whatever its probability."""
    k = int(np.argmax(probs))
    return Detection(KEYWORDS[k], k, float(probs[k]), start / SAMPLE_RATE, (start + win) / SAMPLE_RATE)


def decide(start: int, probs: np.ndarray, win: int, threshold: float) -> Detection | None:
    """The window starting at sample ``start`` as a detection: its best class when above ``threshold``."""
    d = top_class(start, probs, win)
    return d if d.confidence > threshold else None


class Windows:
    """Cuts windows (every ``step`` samples from the first, ``win`` long) out of audio arriving in
    pieces of any size, keeping only what later windows need in one preallocated buffer.

    :meth:`feed` and :meth:`finish` yield ``(start sample, samples)``: the first ``min(win, 16000)``
    samples of the window, a view valid until the next window is asked for (copy it with :func:`put`).
    """

    def __init__(self, win: int, step: int):
        self.win, self.step = win, step
        self.span = min(win, CHUNK_SAMPLES)  # what the model sees of a window
        # anything above `win` works; more room means fewer compactions of a long piece
        self.buf = np.zeros(win + 4 * CHUNK_SAMPLES, np.float32)
        self.fill = 0  # valid samples in buf
        self.base = 0  # absolute index of buf[0]
        self.next = 0  # absolute start of the next window
        self.count = 0

    def feed(self, samples: np.ndarray) -> Iterable[tuple[int, np.ndarray]]:
        pos = 0
        while pos < len(samples):
            if self.fill == len(self.buf):
                self._compact()
            take = min(len(samples) - pos, len(self.buf) - self.fill)
            self.buf[self.fill : self.fill + take] = samples[pos : pos + take]
            self.fill += take
            pos += take
            while self.next + self.win <= self.base + self.fill:
                i = self.next - self.base
                yield self.next, self.buf[i : i + self.span]
                self.next += self.step
                self.count += 1

    def _compact(self) -> None:
        drop = min(self.next - self.base, self.fill)
        self.buf[: self.fill - drop] = self.buf[drop : self.fill].copy()
        self.base, self.fill = self.base + drop, self.fill - drop

    def finish(self) -> Iterable[tuple[int, np.ndarray]]:
        if self.count == 0 and self.fill > 0:  # shorter than one window (base is still 0)
            yield 0, self.buf[: min(self.fill, CHUNK_SAMPLES)]


@dataclass(frozen=True)
class Spotting:
    """What :func:`spot_scan` found: ``detections`` (what :func:`spot_stream` returns), the
    ``threshold`` they passed, and ``best``, the most confident window whatever the threshold (its
    best class; None when the audio had no samples): why nothing was found, when nothing was."""

    detections: list[Detection]
    threshold: float
    best: Detection | None


def spot_scan(
    embedder, pieces: Iterable[np.ndarray], window: float = 1.0, hop: float = 0.25, threshold: float | None = None,
    mode: str = "multi", batch_size: int = 64,
) -> Spotting:
    """:func:`spot_stream`, with the threshold used and the most confident window (:class:`Spotting`)."""
    threshold = default_threshold(mode) if threshold is None else threshold
    win, step = check_options(window, hop, threshold, mode)
    cutter = Windows(win, step)
    found: list[Detection] = []
    starts: list[int] = []
    best: Detection | None = None  # the most confident window so far
    batch = np.zeros((max(1, batch_size), CHUNK_SAMPLES), np.float32)

    def run():
        nonlocal best
        probs = keyword_probabilities(embedder, batch[: len(starts)])
        found.extend(d for s, p in zip(starts, probs) if (d := decide(s, p, win, threshold)) is not None)
        k = int(np.argmax(probs.max(axis=1)))  # the first one on ties, as mode "max"
        if best is None or probs[k].max() > best.confidence:
            best = top_class(starts[k], probs[k], win)
        starts.clear()

    def take(windows):
        for s, w in windows:
            put(batch[len(starts)], w)
            starts.append(s)
            if len(starts) == len(batch):
                run()

    for i, piece in enumerate(pieces):
        take(cutter.feed(as_clip(piece, f"piece {i}", allow_empty=True)))
    take(cutter.finish())
    if starts:
        run()
    return Spotting(aggregate(found, mode), threshold, best)


def spot_stream(
    embedder, pieces: Iterable[np.ndarray], window: float = 1.0, hop: float = 0.25, threshold: float | None = None,
    mode: str = "multi", batch_size: int = 64,
) -> list[Detection]:
    """:func:`spot` over audio arriving in pieces (float32 ``(n,)`` at 16 kHz, e.g. read from a long
    file block by block); memory stays bounded by one piece plus one batch of windows."""
    return spot_scan(embedder, pieces, window, hop, threshold, mode, batch_size).detections


def spot(
    embedder, audio: np.ndarray, window: float = 1.0, hop: float = 0.25, threshold: float | None = None,
    mode: str = "multi", batch_size: int = 64,
) -> list[Detection]:
    """Keywords in float32 ``(n,)`` 16 kHz ``audio``, found with sliding windows of ``window`` seconds
    every ``hop`` seconds, run through ``embedder.keyword_logits`` ``batch_size`` at a time.

    Returns, in time order: every window whose best class has probability above ``threshold``
    (``mode="multi"``); only the most confident one (``"max"``); or one detection for the class
    with most such windows (``"n_voting"``, ties to the earlier class in :data:`KEYWORDS`).
    ``threshold`` None: the mode's default (:data:`DEFAULT_THRESHOLDS`).
    """
    return spot_stream(embedder, [as_clip(audio, allow_empty=True)], window, hop, threshold, mode, batch_size)


def merge(detections: list[Detection]) -> list[Detection]:
    """Join overlapping or touching windows of the same keyword (time order in and out) into one
    detection each: from the first start to the last end, the highest confidence, their count as votes."""
    out: list[Detection] = []
    for d in detections:
        last = out[-1] if out else None
        if last is not None and last.index == d.index and d.start_s <= last.end_s:
            out[-1] = Detection(d.label, d.index, max(last.confidence, d.confidence), last.start_s,
                                max(last.end_s, d.end_s), last.votes + d.votes)
        else:
            out.append(d)
    return out


def aggregate(detections: list[Detection], mode: str) -> list[Detection]:
    """Window detections (time order) -> what ``mode`` returns (see :func:`spot`)."""
    if not detections or mode == "multi":
        return detections
    if mode == "max":
        return [max(detections, key=lambda d: d.confidence)]  # the first one on ties
    counts = np.bincount([d.index for d in detections], minlength=len(KEYWORDS))
    winner = int(np.argmax(counts))
    mine = [d for d in detections if d.index == winner]
    return [Detection(KEYWORDS[winner], winner, max(d.confidence for d in mine), mine[0].start_s,
                      max(d.end_s for d in mine), votes=len(mine))]
