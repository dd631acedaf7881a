"""Byte streams: the standard-input relay of `kwmlp spot/classify -` ends cleanly when the input is
refused, and a WAV header on a live stream is read within bounds and checked with one sentence."""

import io
import os
import struct
import subprocess
import sys

import pytest

from kwmlp.apps.pcm import MAX_WAV_HEADER, PcmFormat, open_pcm
from kwmlp.errors import KwmlpError


@pytest.mark.parametrize("command", ["spot", "classify"])
def test_refused_standard_input_exits_1_without_a_fatal_error(random_exported, command):
    """Raw PCM without --format is refused while the relay thread still waits for more input (the
    writer keeps the pipe open, as a long `sox ... -t raw -` does): that thread, blocked in a read of
    sys.stdin.buffer, made the interpreter abort at exit ("Fatal Python error: _enter_buffered_busy",
    exit 134): 10 times in 10 this way (3 in 16 with sox, whose pipe is not always empty at exit)."""
    for _ in range(2):
        p = subprocess.Popen([sys.executable, "-m", "kwmlp", command, random_exported(), "-"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # one read of the relay's (64 KiB) and a bit: libsndfile refuses it, the relay waits for more
            p.stdin.write(os.urandom(4 + (1 << 16) + 14))
            p.stdin.flush()
        except BrokenPipeError:
            pass
        try:
            rc = p.wait(timeout=120)
        finally:
            p.stdin.close()
        err = p.stderr.read().decode()
        p.stdout.close()
        p.stderr.close()
        assert rc == 1, err
        assert "Fatal Python error" not in err and "Traceback" not in err
        assert f"kwmlp {command}: error: stdin: cannot read audio (Format not recognised.)" in err


class CountingStream(io.RawIOBase):
    """``head`` and then ``more`` bytes of zeros, counting what was read."""

    def __init__(self, head: bytes, more: int):
        self.data, self.more, self.given = io.BytesIO(head), more, 0

    def readable(self):
        return True

    def readinto(self, b):
        n = self.data.readinto(b)
        if not n:
            n = min(len(b), self.more)
            b[:n] = bytes(n)
            self.more -= n
        self.given += n
        return n


def wav_header(tag=1, channels=1, rate=16000, bits=16, before_fmt=b""):
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    fmt_chunk = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    return b"RIFF\xff\xff\xff\xffWAVE" + before_fmt + fmt_chunk + b"data\xff\xff\xff\xff"


def test_a_wav_chunk_of_4_gib_is_refused_without_reading_it():
    """A non-data chunk claiming 0xFFFFFFF0 bytes made the header search read the whole pipe into memory
    (quadratically) before it failed."""
    stream = CountingStream(wav_header(before_fmt=b"LIST" + struct.pack("<I", 0xFFFFFFF0)), 8 << 20)
    with pytest.raises(KwmlpError, match=r"^standard input: the WAV header's 'LIST' chunk claims 4294967280 bytes, "
                                         r"more than the 1048576 bytes a header may take before the samples$"):
        open_pcm(stream, PcmFormat("s16le", 16000, 1))
    assert stream.given <= 64


def test_wav_chunks_within_the_bound_are_skipped():
    junk = b"JUNK" + struct.pack("<I", MAX_WAV_HEADER // 2) + bytes(MAX_WAV_HEADER // 2)
    fmt, blocks = open_pcm(CountingStream(wav_header(channels=2, rate=48000, before_fmt=junk), 400),
                           PcmFormat("f32le", 16000, 1))
    assert fmt == PcmFormat("s16le", 48000, 2)
    assert sum(len(b) for b in blocks) == 100


@pytest.mark.parametrize("header,match", [
    (wav_header(rate=0), r"the WAV header's rate must be 8000 to 384000 Hz \(the rates of audio devices\), got 0$"),
    (wav_header(rate=1), r"the WAV header's rate must be 8000 to 384000 Hz .* got 1$"),
    (wav_header(channels=0), "the WAV header's channels must be a whole number from 1 to 64, got 0$"),
    (wav_header(bits=24), "only 16-bit integer or 32-bit float WAV streams are read, got format 1 with 24 bits$"),
], ids=["rate-0", "rate-1", "channels-0", "24-bit"])
def test_a_wav_header_says_what_is_wrong(header, match):
    with pytest.raises(KwmlpError, match="^standard input: " + match):
        open_pcm(io.BytesIO(header), PcmFormat("s16le", 16000, 1))
