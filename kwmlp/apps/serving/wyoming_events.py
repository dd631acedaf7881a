"""Wyoming events read with limits, and the checks of the fields our handler uses.

An event is a JSON header line (``type``, ``data``, ``data_length``, ``payload_length``), then
``data_length`` bytes of more JSON data, then ``payload_length`` bytes of payload. wyoming's own
``async_read_event`` reads whatever lengths a header names (one header claiming a gigabyte grew
the server by hundreds of MB) and turns a malformed event into a silent end of the connection.
Here a header over :data:`MAX_HEADER`, data over :data:`MAX_DATA` or a payload over
:data:`MAX_PAYLOAD` is refused before any of it is read, and every refusal is a
:class:`ProtocolError` with a sentence for the client's ``error`` event and the log.
"""

from __future__ import annotations

import asyncio
import json

from wyoming.event import Event

from kwmlp.errors import KwmlpError
from kwmlp.runtime.inputs import check_pcm_layout

MAX_HEADER = 64 * 1024  # bytes of a header line (asyncio's default StreamReader limit)
MAX_DATA = 64 * 1024  # bytes of an event's extra JSON data (a `detect` of all 35 names is under 1 KiB)
# bytes of a payload: 4.4 min of 16 kHz 16-bit mono, 22 s of 48 kHz 32-bit stereo (clients send ~0.1 s)
MAX_PAYLOAD = 8 * 1024 * 1024
MAX_TYPE = 64  # characters of an event's type (it is logged: no line breaks)
WIDTHS = (1, 2, 3, 4)  # bytes per sample: unsigned 8-bit, signed 16-, 24- and 32-bit little-endian


class ProtocolError(Exception):
    """An event that cannot be read or used; ``code`` is the ``error`` event's machine-readable code."""

    def __init__(self, text: str, code: str = "bad-event"):
        super().__init__(text)
        self.code = code


async def read_event(reader: asyncio.StreamReader) -> Event | None:
    """The next event, or None when the stream ends between events. ProtocolError for a malformed
    or oversized event (nothing past its header is read) or a stream that ends inside one.
    ``reader``'s limit must be :data:`MAX_HEADER`."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise ProtocolError("the connection ended inside an event header") from None
        return None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"an event header is longer than {MAX_HEADER} bytes", "too-large") from None
    header = _json_object(line, "an event header")
    kind, data = header.get("type"), header.get("data")
    data = {} if data is None else data
    if not isinstance(kind, str) or not kind.isprintable() or len(kind) > MAX_TYPE or not isinstance(data, dict):
        raise ProtocolError(f"an event header needs a 'type' of up to {MAX_TYPE} printable characters and an "
                            "object 'data'")
    data_length = _length(header, "data_length", MAX_DATA)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD)
    if data_length:
        data.update(_json_object(await _exactly(reader, data_length, kind), f"the data of {kind}"))
    payload = await _exactly(reader, payload_length, kind) if payload_length else None
    return Event(type=kind, data=data, payload=payload)


def audio_format(event: Event) -> tuple[int, int, int]:
    """``(rate, width, channels)`` of an ``audio-start`` or ``audio-chunk``, checked; for a chunk also
    that its payload is whole frames."""
    rate, width, channels = (event.data.get(k) for k in ("rate", "width", "channels"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (rate, width, channels)) or width not in WIDTHS:
        raise ProtocolError(f"{event.type} needs integer rate, width ({', '.join(map(str, WIDTHS))} bytes) and "
                            f"channels, got {rate!r:.20}, {width!r:.20} and {channels!r:.20}", "bad-audio")
    try:
        check_pcm_layout(rate, channels, f"{event.type}'s ")  # what LiveSpotter takes
    except KwmlpError as e:
        raise ProtocolError(str(e), "bad-audio") from None
    if event.payload and len(event.payload) % (width * channels):
        raise ProtocolError(f"{event.type}: {len(event.payload)} bytes are not whole frames of {channels} "
                            f"channel(s) of {width} byte(s)", "bad-audio")
    return rate, width, channels


def detect_names(event: Event) -> list[str] | None:
    """The keyword names of a ``detect`` (None: any), checked to be a list of strings."""
    names = event.data.get("names")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise ProtocolError(f"detect: names must be a list of strings, got {json.dumps(names)[:60]}")
    return names or None


def _json_object(raw: bytes, what: str) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:  # not UTF-8 or not JSON
        raise ProtocolError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return value


def _length(header: dict, key: str, limit: int) -> int:
    n = header.get(key)
    if n is None:
        return 0
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ProtocolError(f"an event's {key} must be a whole number of bytes, got {json.dumps(n)[:40]}")
    if n > limit:
        raise ProtocolError(f"an event's {key} of {n} bytes is over the limit of {limit}", "too-large")
    return n


async def _exactly(reader: asyncio.StreamReader, n: int, kind: str) -> bytes:
    try:
        return await reader.readexactly(n)
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"the connection ended before the end of its {kind} event") from None
