"""A Wyoming protocol wake-word server (what Home Assistant's Wyoming integration talks to).

After wyoming-openwakeword's handler: ``describe`` -> ``info`` with one wake program, ``kwmlp``,
whose models are the keywords served; ``detect`` chooses some of them; ``audio-start`` /
``audio-chunk`` / ``audio-stop`` at any rate, width and channels (converted to 16 kHz mono 16-bit by
wyoming's ``AudioChunkConverter``) -> a ``detection`` per keyword detected (``timestamp``: the end of
its deciding window, ms from ``audio-start``), and ``not-detected`` after ``audio-stop`` when there
was none. One :class:`~kwmlp.runtime.LiveSpotter` per connection and stream, all on one Embedder;
inference runs in the event loop's thread pool, so that clients do not wait for each other.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from functools import partial

import numpy as np

import kwmlp
from kwmlp.dims import SAMPLE_RATE
from kwmlp.errors import missing_extra
from kwmlp.runtime import LiveSpotter

log = logging.getLogger("kwmlp")

PROGRAM = "kwmlp"
ATTRIBUTION = ("Keyword-MLP (Morshed and Ahsan)", "https://github.com/AI-Research-BD/Keyword-MLP")


def require_wyoming() -> None:
    """KwmlpError naming the extra when the wyoming package is not installed."""
    try:
        import wyoming  # noqa: F401
    except ImportError as e:
        raise missing_extra("wyoming", "wyoming", "kwmlp wyoming") from e


def info_event(keywords: tuple[str, ...]):
    """The ``info`` event: one wake program with one model per keyword."""
    from wyoming.info import Attribution, Info, WakeModel, WakeProgram

    by = Attribution(*ATTRIBUTION)
    models = [WakeModel(name=k, description=k, phrase=k, attribution=by, installed=True, languages=["en"],
                        version=kwmlp.__version__) for k in keywords]
    program = WakeProgram(name=PROGRAM, description="KW-MLP keyword spotting (Speech Commands V2, 35 words)",
                          attribution=by, installed=True, version=kwmlp.__version__, models=models)
    return Info(wake=[program]).event()


def handler_class():
    """The event handler class (defined once wyoming is known to be importable)."""
    from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
    from wyoming.info import Describe
    from wyoming.server import AsyncEventHandler
    from wyoming.wake import Detect, Detection, NotDetected

    class KeywordHandler(AsyncEventHandler):
        """One client connection: its chosen keywords and the spotter of its current audio stream."""

        def __init__(self, embedder, options: dict, keywords: tuple[str, ...], *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.embedder, self.options, self.served = embedder, options, keywords
            self.names = keywords
            self.converter = AudioChunkConverter(rate=SAMPLE_RATE, width=2, channels=1)
            self.spotter: LiveSpotter | None = None
            self.detected = False

        async def handle_event(self, event) -> bool:
            if Describe.is_type(event.type):
                await self.write_event(info_event(self.served))
            elif Detect.is_type(event.type):
                chosen = [n for n in Detect.from_event(event).names or () if n in self.served]
                self.names = tuple(chosen) or self.served  # none known: all, as wyoming-openwakeword does
            elif AudioStart.is_type(event.type):
                self._start()
            elif AudioChunk.is_type(event.type):
                if self.spotter is None:
                    self._start()
                chunk = self.converter.convert(AudioChunk.from_event(event))
                await self._send(self.spotter.feed, np.frombuffer(chunk.audio, "<i2"))
            elif AudioStop.is_type(event.type) and self.spotter is not None:
                await self._send(self.spotter.close)
                self.spotter = None
                if not self.detected:
                    await self.write_event(NotDetected().event())
            return True

        def _start(self) -> None:
            self.spotter = LiveSpotter(self.embedder, keywords=self.names, **self.options)
            self.detected = False

        async def _send(self, work, *args) -> None:
            for d in await asyncio.get_running_loop().run_in_executor(None, work, *args):
                self.detected = True
                await self.write_event(Detection(name=d.label, timestamp=round(d.end_s * 1000)).event())

    return KeywordHandler


async def serve(uri: str, embedder, options: dict, keywords: tuple[str, ...]) -> None:
    """Serve until SIGTERM (or the end of standard input for ``stdio://``)."""
    require_wyoming()
    from wyoming.server import AsyncServer

    server = AsyncServer.from_uri(uri)
    print(f"kwmlp wyoming: serving {len(keywords)} keyword(s) on {uri}", file=sys.stderr, flush=True)
    await server.run(partial(handler_class(), embedder, options, keywords))
    log.info("kwmlp wyoming: stopped")
