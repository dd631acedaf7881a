"""Raw PCM from a byte stream (a pipe, standard input): its format given, or read from a WAV header.

``arecord -f S16_LE -r 16000 -c 1`` writes a WAV header before the samples unless ``-t raw``;
a stream that starts with ``RIFF`` is read as WAV and its header decides format, rate and channels
(its data size is ignored: a live recorder does not know it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from kwmlp.errors import KwmlpError
from kwmlp.runtime.inputs import INT16_SCALE, check_pcm_layout

FORMATS = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}  # what LiveSpotter takes as it is
SCALES = {"s16le": 1 / INT16_SCALE, "f32le": 1.0}  # what divides each format's samples into [-1, 1]
_WAV_TAGS = {(1, 16): "s16le", (3, 32): "f32le"}  # (format tag, bits) -> format
_EXTENSIBLE = 0xFFFE
# The chunks before the samples (fmt, LIST, fact, bext, JUNK, ...) take a few KiB in practice; a
# size field beyond this is not believed (0xFFFFFFF0 once read a whole pipe into memory first).
MAX_WAV_HEADER = 1 << 20  # bytes


@dataclass(frozen=True)
class PcmFormat:
    """Raw PCM carries no header: interleaved little-endian samples of ``sample_format`` (a key of
    :data:`FORMATS`), ``rate`` in Hz, ``channels``."""

    sample_format: str
    rate: int
    channels: int

    @property
    def frame_bytes(self) -> int:
        return FORMATS[self.sample_format].itemsize * self.channels

    def check(self) -> None:
        if self.sample_format not in FORMATS:
            raise KwmlpError(f"raw PCM format must be one of {', '.join(FORMATS)}, got {self.sample_format!r}")
        check_pcm_layout(self.rate, self.channels, "raw PCM's ")


class _Reader:
    """A byte stream with what was peeked at put back in front."""

    def __init__(self, stream: BinaryIO):
        self._stream, self._head = stream, b""

    def read_some(self, n: int) -> bytes:
        """Up to ``n`` bytes, as soon as any are there; b"" at the end."""
        if self._head:
            out, self._head = self._head[:n], self._head[n:]
            return out
        read1 = getattr(self._stream, "read1", None)
        return read1(n) if read1 is not None else self._stream.read(n)

    def read_exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n and (more := self.read_some(n - len(out))):
            out += more
        return bytes(out)

    def unread(self, data: bytes) -> None:
        self._head = data + self._head


def _wav_header(reader: _Reader, what: str) -> PcmFormat:
    """Reads a WAV header up to its ``data`` chunk, at most :data:`MAX_WAV_HEADER` bytes; the reader
    is left at the first sample."""
    riff = reader.read_exactly(12)
    if len(riff) < 12 or riff[8:12] != b"WAVE":
        raise KwmlpError(f"{what} starts with RIFF but is not a WAV stream")
    fmt, read = None, len(riff)
    while True:
        head = reader.read_exactly(8)
        if len(head) < 8:
            raise KwmlpError(f"{what}: the WAV header ends before its data chunk")
        chunk, size = head[:4], struct.unpack("<I", head[4:])[0]
        if chunk == b"data":
            break
        read += len(head) + size + (size & 1)
        if read > MAX_WAV_HEADER:
            raise KwmlpError(f"{what}: the WAV header's {chunk.decode('latin-1')!r} chunk claims {size} bytes, more "
                             f"than the {MAX_WAV_HEADER} bytes a header may take before the samples")
        body = reader.read_exactly(size + (size & 1))
        if chunk == b"fmt ":
            fmt = _wav_format(body, what)
    if fmt is None:
        raise KwmlpError(f"{what}: the WAV header has no fmt chunk before its data")
    return fmt


def _wav_format(body: bytes, what: str) -> PcmFormat:
    """The format a WAV ``fmt`` chunk's body describes, checked."""
    if len(body) < 16:
        raise KwmlpError(f"{what}: the WAV header's fmt chunk is too short")
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == _EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID starts with the real tag
    if (tag, bits) not in _WAV_TAGS:
        raise KwmlpError(f"{what}: only 16-bit integer or 32-bit float WAV streams are read, "
                         f"got format {tag} with {bits} bits")
    check_pcm_layout(rate, channels, f"{what}: the WAV header's ")
    return PcmFormat(_WAV_TAGS[tag, bits], rate, channels)


def open_pcm(stream: BinaryIO, given: PcmFormat, what: str = "standard input") -> tuple[PcmFormat, Iterator[np.ndarray]]:
    """The stream's format (its WAV header's, else ``given``) and its blocks as ``(frames, channels)``
    int16 or float32 arrays, each as soon as its bytes arrive (a partial frame waits for the rest)."""
    reader = _Reader(stream)
    magic = reader.read_exactly(4)
    reader.unread(magic)
    fmt = _wav_header(reader, what) if magic == b"RIFF" else given
    return fmt, _blocks(reader, fmt)


def _blocks(reader: _Reader, fmt: PcmFormat, block_bytes: int = 1 << 14) -> Iterator[np.ndarray]:
    dtype, rest = FORMATS[fmt.sample_format], b""
    while data := reader.read_some(block_bytes):
        data = rest + data
        whole = len(data) - len(data) % fmt.frame_bytes
        rest = data[whole:]
        if whole:
            yield np.frombuffer(data[:whole], dtype).astype(dtype.newbyteorder("="), copy=False).reshape(
                -1, fmt.channels)
