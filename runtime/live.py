"""Live audio: push PCM blocks of any size, get keyword detections (or final embeddings) as they happen.

:class:`LiveSpotter` cuts windows exactly as :func:`kwmlp.runtime.keywords.spot` does (every hop
from the stream's first sample) and runs the keyword graph once per window on one preallocated
``(1, 16000)`` buffer. Its detector adds smoothing, a trigger level and a refractory period; with
``smooth=1, trigger_level=1, refractory=0`` its detections are ``spot(..., mode="multi")``'s.
:class:`LiveEmbeddings` hands out timestamp embeddings as soon as they are final.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from typing import Callable

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, KEYWORDS, RESAMPLE_QUALITY, SAMPLE_RATE
from kwmlp.errors import KwmlpError
from kwmlp.frames import frame_times
from kwmlp.runtime.inputs import MAX_ABS_SAMPLE, as_pcm, check_pcm_layout
from kwmlp.runtime.keywords import Detection, Windows, check_options, decide, keyword_probabilities, put
from kwmlp.runtime.result import EmbeddingResult

__all__ = ["DEFAULTS", "LiveEmbeddings", "LiveSpotter"]

# The detector's defaults, chosen on synthesized speech (python -m kwmlp.benchmarks.live_accuracy,
# README "Live audio"): against smoothing over 3 and trigger level 1, a third of the false
# detections on ordinary speech for a recall 0.01 lower. The top probability rarely passes 0.93.
DEFAULTS = dict(window=1.0, hop=0.1, threshold=0.85, smooth=5, trigger_level=2, refractory=1.0)
MAX_SMOOTH = 1000  # windows; the detector keeps (smooth, 35) probabilities

log = logging.getLogger("kwmlp")


class _Pcm:
    """Blocks of int16/float32 PCM at ``rate`` Hz over ``channels`` -> float32 mono 16 kHz pieces,
    resampled with soxr's streaming resampler (equal to resampling the whole stream at once).

    A sample that cannot be audio (NaN, Inf, beyond :data:`~kwmlp.runtime.inputs.MAX_ABS_SAMPLE`)
    is replaced by 0: a live source does not end for one bad sample. The first one is logged as a
    warning with its place in the stream (frames at ``rate`` since the first, and seconds), once
    per stream."""

    def __init__(self, rate: int, channels: int):
        check_pcm_layout(rate, channels)
        self.rate, self.channels = rate, channels
        self.frames = 0  # received so far, at `rate`
        self.zeroed = 0  # frames in which a bad sample was replaced by 0
        self._stream = None
        if rate != SAMPLE_RATE:
            import soxr

            self._stream = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY)

    def convert(self, block, last: bool = False) -> np.ndarray:
        """float32 ``(n,)`` 16 kHz mono, never a view of ``block``: a caller (a sound card's callback)
        may reuse its buffer while the samples wait in a queue or a stream."""
        x, bad = as_pcm(block, self.channels)
        if len(bad):
            self._zeroed(self.frames + int(bad[0]), len(bad))
        self.frames += len(x)
        if self._stream is not None:
            return self._stream.resample_chunk(x, last=last)
        return x.copy() if np.may_share_memory(x, np.asarray(block)) else x

    def _zeroed(self, first: int, count: int) -> None:
        if not self.zeroed:
            log.warning("live audio: the stream has a NaN, Inf or a sample beyond %.0e in magnitude at frame %d "
                        "(%.3f s at %g Hz); it and any later ones are replaced by 0 (said once per stream)",
                        MAX_ABS_SAMPLE, first, first / self.rate, self.rate)
        self.zeroed += count


def _allowed(keywords) -> np.ndarray:
    """The labels that may fire, as a ``(35,)`` bool mask in :data:`KEYWORDS` order; a str is one keyword."""
    if keywords is None:
        return np.ones(len(KEYWORDS), bool)
    names = {keywords} if isinstance(keywords, str) else set(keywords)
    if not names:
        raise KwmlpError(f"keywords is empty, so nothing could fire: name some of the {len(KEYWORDS)}, "
                         "or pass None for all")
    unknown = sorted(str(k) for k in names - set(KEYWORDS))
    if unknown:
        raise KwmlpError(f"unknown keyword(s) {', '.join(unknown)}; the model knows {', '.join(KEYWORDS)}")
    return np.array([k in names for k in KEYWORDS])


def _check_detector(smooth: int, trigger_level: int, refractory: float) -> None:
    if not isinstance(smooth, (int, np.integer)) or not 1 <= smooth <= MAX_SMOOTH:
        raise KwmlpError(f"smooth must be a whole number of windows from 1 to {MAX_SMOOTH}, got {smooth}")
    if not isinstance(trigger_level, (int, np.integer)) or trigger_level < 1:
        raise KwmlpError(f"trigger_level must be a whole number of windows, at least 1, got {trigger_level}")
    if not (math.isfinite(refractory) and refractory >= 0):
        raise KwmlpError(f"refractory must be a finite number of seconds, at least 0, got {refractory}")


class _Detector:
    """Decides on each window's probabilities: mean of the last ``smooth``, the same label winning
    ``trigger_level`` windows in a row, no repeat of a label whose window starts less than
    ``refractory`` seconds after the start of the window it last fired on."""

    def __init__(self, win: int, threshold: float, smooth: int, trigger_level: int, refractory: float, keywords):
        _check_detector(smooth, trigger_level, refractory)
        self.allowed = _allowed(keywords)
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

    def close(self, tail: np.ndarray) -> None:
        """Queue the last block and the end, wait for the thread to finish, then re-raise its error:
        the thread ends whatever happened to it (a callback that raised included)."""
        self._queue.put(tail)
        self._queue.put(self._END)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _refuse_closed(stream) -> None:
    if stream.closed:
        raise KwmlpError(f"this {type(stream).__name__} is closed: its stream has ended, start a new one")


class LiveSpotter:
    """Keyword spotting on a live stream: :meth:`feed` PCM blocks, get :class:`Detection` s as they happen.

    Parameters
    ----------
    embedder : Embedder
        Shared by any number of spotters (each keeps its own state; ``keyword_logits`` is thread-safe).
    window, hop, threshold : float
        As :func:`~kwmlp.runtime.spot`: windows of ``window`` s (at most 10) every ``hop`` s from
        the first sample, a window counts when its (smoothed) top probability exceeds ``threshold``.
    smooth : int
        Mean of the last ``smooth`` windows' probabilities (1: none; at most 1000).
    trigger_level : int
        The same label must win this many consecutive windows.
    refractory : float
        Seconds (between window starts, finite, >= 0) before a label may fire again: a window
        starting exactly ``refractory`` after the one the label last fired on may fire (0: none).
    keywords : iterable of str or str, optional
        The labels that may fire (default all 35; a str is one label; empty is refused); the
        winner is still taken over all 35.
    rate, channels : int
        Of the PCM fed, 8000 to 384000 Hz and 1 to 64 channels: other rates are resampled to
        16 kHz (soxr, streaming), channels averaged.
    callback : callable, optional
        When given, the work runs on a thread of the spotter's: :meth:`feed` only checks and
        queues the block and returns ``[]``, and ``callback(detection)`` is called from that
        thread (pass ``queue.put`` to collect them in a queue). An exception in it stops the
        work; :meth:`feed` and :meth:`close` re-raise it, and :meth:`close` ends the thread first.

    Every option is checked here, before any audio, with one sentence each (:class:`KwmlpError`).
    With ``smooth=1, trigger_level=1, refractory=0`` the detections equal
    ``spot(embedder, audio, window, hop, threshold, mode="multi")`` on the same audio.

    A sample that cannot be audio (NaN, Inf, a magnitude above 1e15) does not end the stream: it
    is replaced by 0, and the first one is logged (logger ``kwmlp``, a warning) with its place in
    the stream, in frames at ``rate`` and in seconds. :meth:`feed` and :meth:`close` may be called
    from any thread: the calls take turns, each block whole, so the stream is the blocks in the
    order their calls ran (two threads feeding one spotter interleave their blocks).
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
        self._lock = threading.Lock()  # one feed or close at a time: the state above is the stream's
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
        with self._lock:
            _refuse_closed(self)
            x = self._pcm.convert(pcm)
            if self._worker is not None:
                self._worker.put(x)
                return []
            return self._process(x)

    def close(self) -> list[Detection]:
        """End of stream: the last detections (a stream shorter than one window still gets one window).
        A second call does nothing and returns ``[]``."""
        with self._lock:
            if self.closed:
                return []
            self.closed = True
            tail = self._pcm.convert(np.zeros(0, np.float32), last=True)
            if self._worker is not None:
                self._worker.close(tail)
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
    Concatenated, they equal ``embedder.embed(whole stream)``. ``rate``, ``channels``, bad samples
    and threads as :class:`LiveSpotter`; a second :meth:`close` does nothing and returns None.
    """

    def __init__(self, embedder, rate: int = SAMPLE_RATE, channels: int = 1):
        self._pcm = _Pcm(rate, channels)
        self._new: list[np.ndarray] = []
        self._dim = embedder.info.dims.dim
        self._stream = embedder.stream(block_chunks=1, on_frames=self._new.append)
        self._sent = 0
        self._lock = threading.Lock()
        self.closed = False

    def feed(self, pcm) -> tuple[np.ndarray, np.ndarray]:
        """Add samples as :meth:`LiveSpotter.feed`; return the frames this block made final:
        ``timestamp_embeddings`` float32 ``(k, d)`` and ``timestamps`` float32 ``(k,)`` ms."""
        with self._lock:
            _refuse_closed(self)
            self._stream.feed(self._pcm.convert(pcm))
            frames = np.concatenate(self._new) if self._new else np.zeros((0, self._dim), np.float32)
            self._new.clear()
            start, self._sent = self._sent, self._sent + len(frames)
            return frames, frame_times(start, self._sent)

    def close(self) -> EmbeddingResult | None:
        """End of stream: the frames not yet handed out and the scene embedding of the whole stream."""
        with self._lock:
            if self.closed:
                return None
            self.closed = True
            tail = self._pcm.convert(np.zeros(0, np.float32), last=True)
            if len(tail):
                self._stream.feed(tail)
            if self._stream.num_samples == 0:
                raise KwmlpError("the stream ended before any sample arrived")
            whole = self._stream.finish()
            return EmbeddingResult(whole.timestamp_embeddings[self._sent :], whole.timestamps[self._sent :],
                                   whole.scene_embeddings)
