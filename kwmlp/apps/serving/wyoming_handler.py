"""One Wyoming connection: ``describe``, ``detect`` and audio streams in, keyword detections out.

After wyoming-openwakeword's ``OpenWakeWordEventHandler``: ``describe`` -> ``info`` with one wake
program, ``kwmlp``, whose models are the keywords served; ``detect`` chooses some of them for the
streams that follow; ``audio-start`` / ``audio-chunk`` / ``audio-stop`` at any rate, sample width
(1 to 4 bytes) and channel count (averaged) -> a ``detection`` per keyword detected
(``timestamp``: the end of its deciding window, ms from ``audio-start``), and ``not-detected``
after ``audio-stop`` when there was none.

Work: a chunk is fed to the connection's :class:`~kwmlp.runtime.LiveSpotter` in pieces of at most
:data:`PIECE_SECONDS`, one piece at a time in the shared executor, so that a long chunk never
holds a worker for long and other clients' streams are served between its pieces; cancelling
the connection (the server stops) drops the pieces not yet fed.

Errors: an event that cannot be read or used is answered with an ``error`` event and the
connection is closed; a ``detect`` naming keywords that are not served gets an ``error`` naming
them and listens for the served ones it named (none: nothing fires, ``not-detected`` at the
end). One log line per error; at debug level also connect, detect choices, audio formats,
detections and disconnect, each with the client's id.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, WakeModel, WakeProgram
from wyoming.server import AsyncEventHandler
from wyoming.wake import Detect, Detection, NotDetected

import kwmlp
from kwmlp.apps.serving.wyoming_events import ProtocolError, audio_format, detect_names, read_event
from kwmlp.dims import SAMPLE_RATE
from kwmlp.errors import first_line
from kwmlp.runtime import LiveSpotter

log = logging.getLogger("kwmlp")

PROGRAM = "kwmlp"
ATTRIBUTION = ("Keyword-MLP (Morshed and Ahsan)", "https://github.com/AI-Research-BD/Keyword-MLP")
PIECE_SECONDS = 1.0  # the most audio one executor job feeds: 10 windows at the default hop


@dataclass(frozen=True)
class Service:
    """What the connections of one server share."""

    keywords: tuple[str, ...]  # served: what ``info`` offers and ``detect`` may choose from
    new_spotter: Callable[..., LiveSpotter]  # new_spotter(keywords=..., rate=..., channels=...)
    executor: Executor  # where inference runs, off the event loop


def info_event(keywords: tuple[str, ...]) -> Event:
    """The ``info`` event: one wake program with one model per keyword."""
    by = Attribution(*ATTRIBUTION)
    models = [WakeModel(name=k, description=k, phrase=k, attribution=by, installed=True, languages=["en"],
                        version=kwmlp.__version__) for k in keywords]
    program = WakeProgram(name=PROGRAM, description="KW-MLP keyword spotting (Speech Commands V2, 35 words)",
                          attribution=by, installed=True, version=kwmlp.__version__, models=models)
    return Info(wake=[program]).event()


def float_samples(raw: bytes, width: int) -> np.ndarray:
    """Little-endian PCM of ``width`` bytes per sample -> float32 ``(n,)`` in [-1, 1), channels still
    interleaved: width 1 is unsigned (as in WAV and audioop), 2 to 4 signed."""
    if width == 1:
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128) * np.float32(1 / 128)
    if width == 3:  # no 24-bit dtype: each sample into the top three bytes of an int32
        padded = np.zeros((len(raw) // 3, 4), np.uint8)
        padded[:, 1:] = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        raw, width = padded.tobytes(), 4
    return np.frombuffer(raw, f"<i{width}").astype(np.float32) * np.float32(2.0 ** (1 - 8 * width))


def _feed(spotter: LiveSpotter, raw: bytes, width: int, channels: int) -> list:
    return spotter.feed(float_samples(raw, width).reshape(-1, channels))


def _names(names) -> str:
    return ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "nothing"


class KeywordHandler(AsyncEventHandler):
    """One client connection: the keywords it chose, and the spotter of its current audio stream
    (a new one when a chunk changes the rate or channel count; timestamps run on)."""

    def __init__(self, service: Service, client: str, reader: asyncio.StreamReader, writer):
        super().__init__(reader, writer)
        self.service, self.client = service, client
        self.names: tuple[str, ...] = service.keywords  # chosen by detect, for the streams that follow
        self.streaming = False  # between audio-start (or a first chunk) and audio-stop
        self.listening: tuple[str, ...] = ()  # what the current stream listens for
        self.spotter: LiveSpotter | None = None  # None while streaming: no chunk yet, or nothing chosen
        self.format: tuple[int, int] | None = None  # (rate, channels) the spotter takes
        self.offset_s = 0.0  # stream time covered by the spotters of earlier formats
        self.detected = False
        self.unfed_s = 0.0  # seconds of the chunk being fed that are not fed yet

    async def run(self) -> None:
        """Handle events until the client leaves, an error ends the connection, or the task is cancelled."""
        log.debug("kwmlp wyoming: %s: connected", self.client)
        try:
            while (event := await read_event(self.reader)) is not None:
                await self.handle_event(event)
        except ProtocolError as e:
            await self._error(str(e), e.code)
        except ConnectionError as e:
            log.warning("kwmlp wyoming: %s: connection lost (%s)", self.client, e.strerror or e)
        except asyncio.CancelledError:
            if self.unfed_s:
                log.info("kwmlp wyoming: %s: stopped with %.1f s of audio not processed", self.client, self.unfed_s)
            raise
        except Exception as e:  # a fault in one connection ends that connection, not the server
            log.debug("kwmlp wyoming: %s: traceback", self.client, exc_info=True)
            await self._error(f"{type(e).__name__}: {first_line(e)}", "internal")
        finally:
            self.writer.close()
            log.debug("kwmlp wyoming: %s: disconnected", self.client)

    async def handle_event(self, event: Event) -> bool:
        """One event; ProtocolError when it cannot be used (the connection then ends)."""
        if Describe.is_type(event.type):
            log.debug("kwmlp wyoming: %s: describe", self.client)
            await self.write_event(info_event(self.service.keywords))
        elif Detect.is_type(event.type):
            await self._detect(detect_names(event))
        elif AudioStart.is_type(event.type):
            self._start(audio_format(event))
        elif AudioChunk.is_type(event.type):
            await self._chunk(event)
        elif AudioStop.is_type(event.type):
            await self._stop()
        else:
            log.debug("kwmlp wyoming: %s: unexpected event %s", self.client, event.type)
        return True

    async def _error(self, text: str, code: str) -> None:
        log.warning("kwmlp wyoming: %s: %s", self.client, text)
        try:
            await self.write_event(Error(text=text, code=code).event())
        except ConnectionError:
            pass  # the client is gone: the log line is all that is left to say

    async def _detect(self, names: list[str] | None) -> None:
        served = self.service.keywords
        self.names = served if names is None else tuple(dict.fromkeys(n for n in names if n in served))
        log.debug("kwmlp wyoming: %s: detect %s", self.client, _names(self.names))
        unserved = list(dict.fromkeys(n for n in names or () if n not in served))
        if unserved:
            await self._error(f"detect: keyword(s) not served here: {_names([repr(n) for n in unserved])} "
                              f"(served: {_names(served)})", "unknown-keywords")

    def _start(self, fmt: tuple[int, int, int]) -> None:
        log.debug("kwmlp wyoming: %s: audio-start %d Hz, %d byte(s), %d channel(s)", self.client, *fmt)
        self.streaming, self.listening, self.spotter, self.format = True, self.names, None, None
        self.offset_s, self.detected = 0.0, False

    async def _chunk(self, event: Event) -> None:
        rate, width, channels = audio_format(event)
        if not self.streaming:  # a chunk without audio-start starts a stream
            self._start((rate, width, channels))
        if not self.listening:
            return
        if self.format != (rate, channels):
            await self._close_spotter()
            self.spotter = self.service.new_spotter(keywords=self.listening, rate=rate, channels=channels)
            self.format = (rate, channels)
        spotter, audio, frame = self.spotter, event.payload or b"", width * channels
        step = max(1, round(rate * PIECE_SECONDS)) * frame
        for i in range(0, len(audio), step):
            self.unfed_s = (len(audio) - i) / frame / rate
            await self._report(await self._work(_feed, spotter, audio[i : i + step], width, channels))
        self.unfed_s = 0.0

    async def _stop(self) -> None:
        if not self.streaming:
            log.debug("kwmlp wyoming: %s: audio-stop without a stream", self.client)
            return
        await self._close_spotter()
        self.streaming = False
        log.debug("kwmlp wyoming: %s: audio-stop after %.2f s", self.client, self.offset_s)
        if not self.detected:
            await self.write_event(NotDetected().event())

    async def _close_spotter(self) -> None:
        """The last detections of the current spotter; the stream's time runs on into the next."""
        spotter, self.spotter, self.format = self.spotter, None, None
        if spotter is not None:
            await self._report(await self._work(spotter.close))
            self.offset_s += spotter.samples / SAMPLE_RATE

    async def _work(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.service.executor, partial(fn, *args))

    async def _report(self, detections) -> None:
        for d in detections:
            self.detected = True
            ms = round((self.offset_s + d.end_s) * 1000)
            log.debug("kwmlp wyoming: %s: detection %s at %d ms (%.3f)", self.client, d.label, ms, d.confidence)
            await self.write_event(Detection(name=d.label, timestamp=ms).event())
