"""Reading audio files as 16 kHz mono float32, whole or block by block, without torch.

Every format the installed libsndfile reads (WAV of any PCM/float subtype, FLAC, OGG/Vorbis,
MP3 with libsndfile >= 1.1) through ``soundfile``; channels are mixed down by averaging, then
resampled to 16 kHz with soxr's high-quality filter. :func:`read_blocks` streams the file
through ``soxr.ResampleStream``, whose output equals resampling the whole file at once, so a
long file costs one block of memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from kwmlp.dims import RESAMPLE_QUALITY, SAMPLE_RATE
from kwmlp.errors import KwmlpError

BLOCK_SECONDS = 60.0  # default read block, in seconds of input audio

# File name endings tried when a folder is searched; files named explicitly are always tried.
AUDIO_EXTENSIONS = (
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd",
    ".caf", ".w64", ".rf64", ".wv", ".voc", ".sd2", ".paf", ".svx", ".nist", ".sph", ".ircam", ".htk",
)


def _soundfile():
    try:
        import soundfile
    except (ImportError, OSError) as e:  # OSError: the wheel's libsndfile failed to load
        raise KwmlpError(f"reading audio files needs soundfile ({e}); install it with: pip install soundfile") from e
    return soundfile


def _soxr():
    try:
        import soxr
    except ImportError as e:
        raise KwmlpError("resampling needs soxr; install it with: pip install soxr") from e
    return soxr


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says: its rate, channels, length and format."""

    path: str
    sample_rate: int
    channels: int
    frames: int  # as the header says; for MP3 it may be an estimate
    format: str
    subtype: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def _unreadable(path: str, e: Exception) -> KwmlpError:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # libsndfile's messages repeat the file name: keep only the reason
    reason = reason.replace(f"Error opening {path!r}: ", "").replace(f"Error opening '{path}': ", "")
    return KwmlpError(f"{path}: cannot read audio ({reason})")


def _open(path: str):
    sf = _soundfile()
    if os.path.isdir(path):
        raise KwmlpError(f"{path}: is a folder, not an audio file")
    if not os.path.isfile(path):
        raise KwmlpError(f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise KwmlpError(f"{path}: cannot read audio (the file is empty)")
    try:
        return sf.SoundFile(path)
    except (RuntimeError, TypeError, ValueError) as e:  # LibsndfileError is a RuntimeError
        raise _unreadable(path, e) from e


def _mono(x: np.ndarray, path: str) -> np.ndarray:
    """``(frames, channels)`` -> ``(frames,)`` by averaging, checked finite."""
    mono = x.mean(axis=1, dtype=np.float32) if x.shape[1] > 1 else x[:, 0]
    if not np.isfinite(mono).all():
        raise KwmlpError(f"{path}: the audio contains NaN or Inf samples")
    return mono


def info(path: str | os.PathLike) -> AudioInfo:
    """The header of an audio file; :class:`KwmlpError` naming the file if it cannot be read."""
    path = os.fspath(path)
    with _open(path) as f:
        return AudioInfo(path, f.samplerate, f.channels, f.frames, f.format, f.subtype)


def read_blocks(path: str | os.PathLike, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Yield the file as float32 ``(n,)`` pieces of 16 kHz mono audio, about ``block_seconds`` each.

    Concatenated, the pieces equal :func:`load`. Raises :class:`KwmlpError` naming the file when
    it is not readable audio, has no samples, or contains NaN/Inf.
    """
    path = os.fspath(path)
    with _open(path) as f:
        rate = f.samplerate
        stream = None if rate == SAMPLE_RATE else _soxr().ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32",
                                                                       quality=RESAMPLE_QUALITY)
        block = max(1, int(block_seconds * rate))
        total = 0
        try:
            while True:
                x = f.read(block, dtype="float32", always_2d=True)
                last = len(x) < block
                mono = _mono(x, path)
                total += len(mono)
                out = mono if stream is None else stream.resample_chunk(mono, last=last)
                if len(out):
                    yield np.ascontiguousarray(out, dtype=np.float32)
                if last:
                    break
        except (RuntimeError, ValueError) as e:  # a file that goes corrupt half way
            if isinstance(e, KwmlpError):
                raise
            raise _unreadable(path, e) from e
    if total == 0:
        raise KwmlpError(f"{path}: the file has no audio samples")


def load(path: str | os.PathLike) -> np.ndarray:
    """The whole file as float32 ``(n,)`` 16 kHz mono (mixed down by averaging, soxr HQ resampling)."""
    path = os.fspath(path)
    with _open(path) as f:
        rate = f.samplerate
        try:
            x = f.read(dtype="float32", always_2d=True)
        except (RuntimeError, ValueError) as e:
            raise _unreadable(path, e) from e
    if len(x) == 0:
        raise KwmlpError(f"{path}: the file has no audio samples")
    mono = _mono(x, path)
    if rate != SAMPLE_RATE:
        mono = _soxr().resample(mono, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(mono, dtype=np.float32)


def find_audio(inputs: list[str]) -> list[tuple[str, str]]:
    """``(path, relative name)`` for every input: a file as itself (relative name: its base name),
    a folder recursed in sorted order for files with an audio extension (relative to the folder).

    Raises :class:`KwmlpError` for an input that does not exist.
    """
    found: list[tuple[str, str]] = []
    for inp in inputs:
        if os.path.isdir(inp):
            for root, dirs, files in os.walk(inp):
                dirs.sort()
                for name in sorted(files):
                    if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("."):
                        path = os.path.join(root, name)
                        found.append((path, os.path.relpath(path, inp)))
        elif os.path.exists(inp):
            found.append((inp, os.path.basename(inp)))
        else:
            raise KwmlpError(f"input {inp} does not exist")
    return found
