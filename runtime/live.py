"""Live audio: push PCM blocks of any size, get keyword detections (or final embeddings) as they happen.

:class:`LiveSpotter` cuts windows exactly as :func:`kwmlp.runtime.keywords.spot` does (every hop
from the stream's first sample) and runs the keyword graph once per window on one preallocated
``(1, 16000)`` buffer. Its detector adds smoothing, a trigger level and a refractory period; with
``smooth=1, trigger_level=1, refractory=0`` its detections are ``spot(..., mode="multi")``'s.
:class:`LiveEmbeddings` hands out timestamp embeddings as soon as they are final.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, KEYWORDS, RESAMPLE_QUALITY, SAMPLE_RATE
from kwmlp.errors import KwmlpError
from kwmlp.frames import frame_times
from kwmlp.runtime.inputs import as_pcm
from kwmlp.runtime.keywords import Detection, Windows, check_options, decide, keyword_probabilities, put
from kwmlp.runtime.result import EmbeddingResult

__all__ = ["DEFAULTS", "LiveEmbeddings", "LiveSpotter"]

# The detector's defaults, chosen on synthesized speech (python -m kwmlp.benchmarks.live_accuracy,
# README "Live audio"): against smoothing over 3 and trigger level 1, a third of the false
# detections on ordinary speech for a recall 0.01 lower. The top probability rarely passes 0.93.
DEFAULTS = dict(window=1.0, hop=0.1, threshold=0.85, smooth=5, trigger_level=2, refractory=1.0)


class _Pcm:
    """Blocks of int16/float32 PCM at ``rate`` Hz over ``channels`` -> float32 mono 16 kHz pieces,
    resampled with soxr's streaming resampler (equal to resampling the whole stream at once)."""

    def __init__(self, rate: int, channels: int):
        if rate < 1 or channels < 1:
            raise KwmlpError(f"rate and channels must be positive, got {rate} Hz and {channels} channel(s)")
        self.channels = channels
        self._stream = None
        if rate != SAMPLE_RATE:
            import soxr

            self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)

    def convert(self, block, last: bool = False) -> np.ndarray:
        """float32 ``(n,)`` 16 kHz mono, never a view of ``block``: a caller (a sound card's callback)
        may reuse its buffer while the samples wait in a queue or a stream."""
        x = as_pcm(block, self.channels)
        if self._stream is not None:
            return self._stream.resample_chunk(x, last=last)
        return x.copy() if np.may_share_memory(x, np.asarray(block)) else x


class _Detector:
    """Decides on each window's probabilities: mean of the last ``smooth``, the same label winning
    ``trigger_level`` windows in a row, no repeat of a label within ``refractory`` samples."""

    def __init__(self, win: int, threshold: float, smooth: int, trigger_level: int, refractory: float, keywords):
        if smooth < 1 or trigger_level < 1 or refractory < 0:
            raise KwmlpError(f"smooth and trigger_level must be at least 1 and refractory at least 0, "
                             f"got {smooth}, {trigger_level} and {refractory}")
        unknown = sorted(set(keywords or ()) - set(KEYWORDS))
        if unknown:
            raise KwmlpError(f"unknown keyword(s) {', '.join(unknown)}; the model knows {', '.join(KEYWORDS)}")
        self.allowed = np.array([keywords is None or k in keywords for k in KEYWORDS])
        self.win, self.threshold, self.trigger = win, threshold, trigger_level
        self.refractory = round(refractory * SAMPLE_RATE)
        self.history = np.zeros((smooth, len(KEYWORDS)), np.float32)
        self.seen = 0
        self.streak_label, self.streak = -1, 0
        self.last_start = np.full(len(KEYWORDS), -np.inf)

    def push(self, start: int, probs: np.ndarray) -> Detection | None:
        k = len(self.history)
        if k > 1:
            self.history[self.seen % k] = probs
            probs = self.history[: min(self.seen + 1, k)].mean(axis=0)
        self.seen += 1
        d = decide(start, probs, self.win, self.threshold)
        if d is None or not self.allowed[d.index]:
            self.streak_label, self.streak = -1, 0
            return None
        self.streak = self.streak + 1 if d.index == self.streak_label else 1
        self.streak_label = d.index
        if self.streak < self.trigger or start - self.last_start[d.index] < self.refractory:
            return None
        self.last_start[d.index] = start
        return d


class _Worker:
    """Runs ``process`` on blocks off the caller's thread, handing results to ``callback``."""

    _END = object()

    def __init__(self, process: Callable, finish: Callable, callback: Callable):
        self._queue: queue.Queue = queue.Queue()
        self._process, self._finish, self._callback = process, finish, callback
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="kwmlp-live", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (block := self._queue.get()) is not self._END:
            self._guarded(self._process, block)
        self._guarded(lambda _: self._finish(), None)

    def _guarded(self, work: Callable, block) -> None:
        try:
            if self._error is None:
                for item in work(block):
                    self._callback(item)
        except BaseException as e:  # re-raised on the caller's thread by put() or close()
            self._error = e

    def put(self, block: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def close(self) -> None:
        self._queue.put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error


class LiveSpotter:
    """Keyword spotting on a live stream: :meth:`feed` PCM blocks, get :class:`Detection` s as they happen.

    Parameters
    ----------
    embedder : Embedder
        Shared by any number of spotters (each keeps its own state; ``keyword_logits`` is thread-safe).
    window, hop, threshold : float
        As :func:`~kwmlp.runtime.spot`: windows of ``window`` s every ``hop`` s from the first sample,
        a window counts when its (smoothed) top probability exceeds ``threshold``.
    smooth : int
        Mean of the last ``smooth`` windows' probabilities (1: none).
    trigger_level : int
        The same label must win this many consecutive windows.
    refractory : float
        Seconds (between window starts) before a label may fire again (0: none).
    keywords : iterable of str, optional
        The labels that may fire (default all 35); the winner is still taken over all 35.
    rate, channels : int
        Of the PCM fed: other rates are resampled to 16 kHz (soxr, streaming), channels averaged.
    callback : callable, optional
        When given, the work runs on a thread of the spotter's: :meth:`feed` only checks and
        queues the block and returns ``[]``, and ``callback(detection)`` is called from that
        thread (pass ``queue.put`` to collect them in a queue).

    With ``smooth=1, trigger_level=1, refractory=0`` the detections equal
    ``spot(embedder, audio, window, hop, threshold, mode="multi")`` on the same audio.
    """

    def __init__(
        self, embedder, window: float = DEFAULTS["window"], hop: float = DEFAULTS["hop"],
        threshold: float = DEFAULTS["threshold"], smooth: int = DEFAULTS["smooth"],
        trigger_level: int = DEFAULTS["trigger_level"], refractory: float = DEFAULTS["refractory"],
        keywords=None, rate: int = SAMPLE_RATE, channels: int = 1,
        callback: Callable[[Detection], None] | None = None,
    ):
        win, step = check_options(window, hop, threshold, "multi")
        self.embedder = embedder
        self._pcm = _Pcm(rate, channels)
        self._windows = Windows(win, step)
        self._detector = _Detector(win, threshold, smooth, trigger_level, refractory, keywords)
        self._window = np.zeros((1, CHUNK_SAMPLES), np.float32)  # the one buffer every window is run from
        self._worker = None if callback is None else _Worker(self._process, self._finish, callback)
        self.closed = False

    @property
    def samples(self) -> int:
        """16 kHz samples received so far."""
        return self._windows.base + self._windows.fill

    @property
    def windows(self) -> int:
        """Windows run through the keyword graph so far."""
        return self._windows.count

    def feed(self, pcm) -> list[Detection]:
        """Add float32 ``[-1, 1]`` or int16 samples (``(n,)`` or ``(n, channels)``, any ``n``); return the
        detections whose deciding window this block completed (``[]`` with a ``callback``)."""
        if self.closed:
            raise KwmlpError("this LiveSpotter is closed")
        x = self._pcm.convert(pcm)
        if self._worker is not None:
            self._worker.put(x)
            return []
        return self._process(x)

    def close(self) -> list[Detection]:
        """End of stream: the last detections (a stream shorter than one window still gets one window)."""
        if self.closed:
            return []
        self.closed = True
        tail = self._pcm.convert(np.zeros(0, np.float32), last=True)
        if self._worker is not None:
            self._worker.put(tail)
            self._worker.close()
            return []
        return self._process(tail) + self._finish()

    def _process(self, x: np.ndarray) -> list[Detection]:
        return self._run(self._windows.feed(x))

    def _finish(self) -> list[Detection]:
        return self._run(self._windows.finish())

    def _run(self, windows) -> list[Detection]:
        found = []
        for start, samples in windows:
            put(self._window[0], samples)
            probs = keyword_probabilities(self.embedder, self._window)[0]
            d = self._detector.push(start, probs)
            if d is not None:
                found.append(d)
        return found


class LiveEmbeddings:
    """Exact timestamp embeddings of a live stream, each handed out as soon as it is final.

    :meth:`feed` returns ``(timestamp_embeddings, timestamps)``: float32 ``(k, d)`` and ``(k,)`` ms,
    the frames completed by this block (a frame is final once the one-second padded chunk it comes
    from has arrived, :mod:`kwmlp.runtime.blocks`); :meth:`close` returns an
    :class:`EmbeddingResult` of the remaining frames and the scene embedding ``(1024,)``.
    Concatenated, they equal ``embedder.embed(whole stream)``. ``rate`` and ``channels`` as
    :class:`LiveSpotter`.
    """

    def __init__(self, embedder, rate: int = SAMPLE_RATE, channels: int = 1):
        self._pcm = _Pcm(rate, channels)
        self._new: list[np.ndarray] = []
        self._dim = embedder.info.dims.dim
        self._stream = embedder.stream(block_chunks=1, on_frames=self._new.append)
        self._sent = 0

    def feed(self, pcm) -> tuple[np.ndarray, np.ndarray]:
        self._stream.feed(self._pcm.convert(pcm))
        frames = np.concatenate(self._new) if self._new else np.zeros((0, self._dim), np.float32)
        self._new.clear()
        start, self._sent = self._sent, self._sent + len(frames)
        return frames, frame_times(start, self._sent)

    def close(self) -> EmbeddingResult:
        tail = self._pcm.convert(np.zeros(0, np.float32), last=True)
        if len(tail):
            self._stream.feed(tail)
        if self._stream.num_samples == 0:
            raise KwmlpError("the stream ended before any sample arrived")
        whole = self._stream.finish()
        return EmbeddingResult(whole.timestamp_embeddings[self._sent :], whole.timestamps[self._sent :],
                               whole.scene_embeddings)
