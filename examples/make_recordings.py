"""Make the recordings/ folder that README.md's "Using it on audio files" examples run on.

    python examples/make_recordings.py [--keywords ../shared/keywords] [--out recordings]

writes, each file atomically:

- ``sentence.flac``: 44.1 kHz stereo, 6.6 s: the keyword clips "yes", "stop", "seven" and "left"
  from ``--keywords`` (16 kHz mono WAVs named ``WORD__VOICE.wav``), 0.5 s of silence before them
  and 0.75 s after each;
- ``day2/noise.wav``: 48 kHz, 24-bit, stereo, 5 s of seeded white noise;
- ``day2/tone.ogg``: 22.05 kHz Vorbis, mono, 3 s of a 440 Hz tone;
- ``day2/broken.wav``: not audio (a WAV header whose format chunk is all zeros).

The same inputs give the same files, so the README's printed outputs can be reproduced.
Needs only the base install (numpy, soundfile, soxr).
"""

from __future__ import annotations

import argparse
import os
import struct
import sys

import numpy as np
import soundfile as sf
import soxr

from kwmlp.fileio import atomic_path, write_bytes_atomic

WORDS = ("yes", "stop", "seven", "left")
VOICE = "en-gb-x-rp_f1"  # one of the six voices of ../shared/keywords
LEAD_SECONDS = 0.5
GAP_SECONDS = 0.75
KEYWORD_RATE = 16000


def sentence(keywords: str) -> np.ndarray:
    """float32 (n,) at 16 kHz: LEAD_SECONDS of zeros, then each keyword clip followed by GAP_SECONDS of zeros."""
    gap = np.zeros(int(GAP_SECONDS * KEYWORD_RATE), np.float32)
    parts = [np.zeros(int(LEAD_SECONDS * KEYWORD_RATE), np.float32)]
    for word in WORDS:
        path = os.path.join(keywords, f"{word}__{VOICE}.wav")
        if not os.path.isfile(path):
            sys.exit(f"make_recordings: {path} does not exist; pass the folder of keyword clips with --keywords")
        clip, rate = sf.read(path, dtype="float32")
        if rate != KEYWORD_RATE or clip.ndim != 1:
            sys.exit(f"make_recordings: {path} is not 16 kHz mono")
        parts += [clip, gap]
    return np.concatenate(parts)


def write(path: str, data: np.ndarray, rate: int, fmt: str, subtype: str) -> None:
    with atomic_path(path) as tmp:
        sf.write(tmp, data, rate, format=fmt, subtype=subtype)  # format given: tmp's suffix is .tmp
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keywords", default=os.path.join("..", "shared", "keywords"),
                        help="folder of the 16 kHz keyword clips (default ../shared/keywords)")
    parser.add_argument("--out", default="recordings", help="folder to write into (default recordings/)")
    args = parser.parse_args(argv)

    speech = soxr.resample(sentence(args.keywords), KEYWORD_RATE, 44100, quality="HQ")
    write(os.path.join(args.out, "sentence.flac"), np.stack([speech, speech], axis=1), 44100, "FLAC", "PCM_16")

    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.1, 0.1, (5 * 48000, 2)).astype(np.float32)
    write(os.path.join(args.out, "day2", "noise.wav"), noise, 48000, "WAV", "PCM_24")

    t = np.arange(3 * 22050) / 22050
    write(os.path.join(args.out, "day2", "tone.ogg"), (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
          22050, "OGG", "VORBIS")

    broken = os.path.join(args.out, "day2", "broken.wav")
    fmt = b"fmt " + struct.pack("<I", 16) + bytes(16)  # format 0, 0 channels, 0 Hz
    write_bytes_atomic(broken, b"RIFF" + struct.pack("<I", 4 + len(fmt) + 8) + b"WAVE" + fmt + b"data" + bytes(4))
    print(f"wrote {broken}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
