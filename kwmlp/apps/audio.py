"""Reading audio files as 16 kHz mono float32, whole or block by block, without torch.

Every format the installed libsndfile reads (WAV of any PCM/float subtype, FLAC, OGG/Vorbis,
MP3 with libsndfile >= 1.1) through ``soundfile``; channels are mixed down by averaging, then
resampled to 16 kHz with soxr's high-quality filter. :func:`read_blocks` streams the file
through ``soxr.ResampleStream``, whose output equals resampling the whole file at once, so a
long file costs one block of memory.

Standard input (``-``), FIFOs and character devices such as ``/dev/stdin`` are read as streams:
a WAV/OGG/FLAC/... stream, or raw PCM described by a :class:`PcmFormat`
(:func:`open_pcm_stream`), e.g. ``arecord -f S16_LE -r 16000 | kwmlp spot MODEL -``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from kwmlp.dims import RESAMPLE_QUALITY, SAMPLE_RATE
from kwmlp.apps.pcm import FORMATS, SCALES, PcmFormat, open_pcm
from kwmlp.errors import KwmlpError, first_line

log = logging.getLogger("kwmlp")

STDIN = "-"  # the input name of standard input
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


def add_stream_arguments(parser) -> None:
    """The command-line options that describe raw PCM arriving on standard input or a pipe."""
    parser.add_argument("--format", dest="pcm_format", choices=tuple(FORMATS), default=None,
                        help="read - (standard input) and pipes as raw PCM of this encoding (with --rate); "
                             "without it they must carry a header (WAV, OGG, FLAC, ...)")
    parser.add_argument("--rate", type=int, default=None, help="raw PCM: sample rate in Hz")
    parser.add_argument("--channels", type=int, default=1, help="raw PCM: interleaved channels (default 1)")


def pcm_format(args) -> PcmFormat | None:
    """The :class:`PcmFormat` the options of :func:`add_stream_arguments` describe, or None."""
    if args.pcm_format is None:
        if args.rate is not None:
            raise KwmlpError("--rate and --channels describe raw PCM: give --format s16le or f32le too")
        return None
    if args.rate is None:
        raise KwmlpError(f"raw PCM (--format {args.pcm_format}) needs --rate")
    pcm = PcmFormat(args.pcm_format, args.rate, args.channels)
    pcm.check()
    return pcm


def _unreadable(path: str, e: Exception) -> KwmlpError:
    reason = first_line(e)
    # libsndfile's messages repeat the file name: keep only the reason
    reason = reason.replace(f"Error opening {path!r}: ", "").replace(f"Error opening '{path}': ", "")
    return KwmlpError(f"{path}: cannot read audio ({reason})")


def is_stream(path: str) -> bool:
    """Whether an input is read as a stream: ``-`` (standard input), a FIFO or a character device."""
    if path == STDIN:
        return True
    with contextlib.suppress(OSError):
        mode = os.stat(path).st_mode
        return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)
    return False


def _open(path: str):
    sf = _soundfile()
    if os.path.isdir(path):
        raise KwmlpError(f"{path}: is a folder, not an audio file")
    if is_stream(path):
        raise KwmlpError(f"{path} is a stream (a pipe or device): `kwmlp spot` and `kwmlp classify` read streams, "
                         "this reads files")
    if not os.path.isfile(path):
        raise KwmlpError(f"{path}: no such file" if not os.path.exists(path) else f"{path}: not a regular file")
    try:
        os.close(os.open(path, os.O_RDONLY))  # libsndfile says only "System error." for these
    except OSError as e:
        raise KwmlpError(f"{path}: cannot read ({e.strerror})") from e
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


def _to_16k(reads: Iterator[tuple[np.ndarray, bool]], rate: int, name: str) -> Iterator[np.ndarray]:
    """``(frames, channels)`` float32 reads (and whether each is the last) -> 16 kHz mono blocks;
    returns the number of input frames."""
    stream = None if rate == SAMPLE_RATE else _soxr().ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32",
                                                                   quality=RESAMPLE_QUALITY)
    total = 0
    for x, last in reads:
        mono = _mono(x, name)
        total += len(mono)
        out = mono if stream is None else stream.resample_chunk(mono, last=last)
        if len(out):
            yield np.ascontiguousarray(out, dtype=np.float32)
    return total


def _sf_reads(f, block: int, name: str) -> Iterator[tuple[np.ndarray, bool]]:
    try:
        while True:
            x = f.read(block, dtype="float32", always_2d=True)
            yield x, len(x) < block
            if len(x) < block:
                return
    except (RuntimeError, ValueError) as e:  # a file that goes corrupt half way
        if isinstance(e, KwmlpError):
            raise
        raise _unreadable(name, e) from e


# lines of libsndfile's log that mean the file is not what its header says
_DAMAGE_SIGNS = ("should be", "lacks an end-of-stream", "Junk after")


def _check_length(f, decoded: int, path: str) -> None:
    """Name a file on stderr (the ``kwmlp`` logger) whose decoded length differs from its header's."""
    damage = [line.strip() for line in f.extra_info.splitlines() if any(s in line for s in _DAMAGE_SIGNS)]
    # MP3 headers give an estimate; 2**62 and more is libsndfile's "unknown"
    differs = decoded != f.frames and f.format != "MPEG" and f.frames < 1 << 62
    if differs or damage:
        why = f", where the header says {f.frames}" if differs else f" (libsndfile: {damage[0]})"
        log.warning("%s: damaged or truncated: decoded %d frames (%.3f s)%s; using what decoded",
                    path, decoded, decoded / f.samplerate, why)


def read_blocks(path: str | os.PathLike, block_seconds: float = BLOCK_SECONDS, pcm: PcmFormat | None = None,
                ) -> Iterator[np.ndarray]:
    """Yield the file as float32 ``(n,)`` pieces of 16 kHz mono audio, about ``block_seconds`` each;
    the generator returns the number of frames decoded (at the file's own rate).

    Concatenated, the pieces equal :func:`load`. Standard input (``-``), FIFOs and ``/dev/stdin``
    are read as streams: raw PCM when ``pcm`` is given (files have headers: it applies to streams only). Raises :class:`KwmlpError` naming the
    file when it is not readable audio, has no samples, or contains NaN/Inf; a file whose decoded
    length differs from its header's is named on stderr.
    """
    path = os.fspath(path)
    out = [0]  # 16 kHz samples handed out: a few samples at a high rate resample to none
    if is_stream(path):
        total = yield from _counted(_read_stream(path, block_seconds, pcm), out)
    else:
        with _open(path) as f:
            blocks = _to_16k(_sf_reads(f, max(1, int(block_seconds * f.samplerate)), path), f.samplerate, path)
            total = yield from _counted(blocks, out)
            _check_length(f, total, path)
    if total == 0:
        raise KwmlpError(f"{path}: the file has no audio samples")
    if out[0] == 0:
        raise KwmlpError(f"{path}: too short to embed ({total} samples at its rate are none at 16 kHz)")
    return total


def _counted(blocks: Iterator[np.ndarray], out: list[int]):
    """``blocks`` as they are, their samples added up in ``out[0]``; returns what ``blocks`` returns."""
    while True:
        try:
            block = next(blocks)
        except StopIteration as stop:
            return stop.value
        out[0] += len(block)
        yield block


def open_pcm_stream(source: BinaryIO, pcm: PcmFormat, name: str = "stdin") -> Iterator[np.ndarray]:
    """Raw PCM from a binary stream (``sys.stdin.buffer``, a socket file, ...) as float32 ``(n,)``
    blocks of 16 kHz mono (mixed down and resampled like files), read by :func:`kwmlp.apps.pcm.open_pcm`
    as ``kwmlp listen`` reads it: a WAV header at the start decides the format instead of ``pcm``.
    The generator returns the number of frames read; a trailing partial frame is dropped."""
    pcm.check()
    fmt, blocks = open_pcm(source, pcm, name)
    fmt.check()
    scale = np.float32(SCALES[fmt.sample_format])

    def reads():
        for block in blocks:
            x = block.astype(np.float32)
            yield (x / scale if scale != 1 else x), False
        yield np.zeros((0, fmt.channels), np.float32), True

    return (yield from _to_16k(reads(), fmt.rate, name))


@contextlib.contextmanager
def _stream_file(path: str):
    """An unbuffered binary file over standard input (its descriptor left open) or a FIFO: each
    read is one read(2), so a thread blocked in one holds no lock that the interpreter needs at
    exit (``sys.stdin.buffer`` would: "Fatal Python error: _enter_buffered_busy")."""
    fd = sys.stdin.fileno() if path == STDIN else None
    with open(path if fd is None else fd, "rb", buffering=0, closefd=fd is None) as f:
        yield f


def _read_stream(path: str, block_seconds: float, pcm: PcmFormat | None) -> Iterator[np.ndarray]:
    name = "stdin" if path == STDIN else path
    with _stream_file(path) as f:
        if pcm is not None:
            return (yield from open_pcm_stream(f, pcm, name))
        with _sound_stream(f, name) as sound:
            block = max(1, int(block_seconds * sound.samplerate))
            return (yield from _to_16k(_sf_reads(sound, block, name), sound.samplerate, name))


@contextlib.contextmanager
def _sound_stream(f: BinaryIO, name: str):
    """libsndfile over a pipe: it reads WAV, OGG and the like from a pipe's descriptor itself, but
    FLAC only from something it can seek in, so a FLAC stream is spooled to a temporary file
    (on disk, not in memory). The 4 bytes read to tell them apart are relayed ahead of the rest."""
    sf = _soundfile()
    head = f.read(4)
    while len(head) < 4 and (more := f.read(4 - len(head))):  # a pipe may hand them over one by one
        head += more
    if not head:
        raise KwmlpError(f"{name}: no audio arrived (the stream is empty)")
    try:
        if head == b"fLaC":
            with tempfile.TemporaryFile() as spool:
                spool.write(head)
                shutil.copyfileobj(f, spool)
                spool.seek(0)
                with sf.SoundFile(spool) as sound:
                    yield sound
            return
        read_end = _relay(head, f)
        with sf.SoundFile(read_end, closefd=True) as sound:
            yield sound
    except (RuntimeError, TypeError, ValueError) as e:
        if isinstance(e, KwmlpError):
            raise
        hint = " (raw PCM needs --format, --rate and --channels)" if "Format not recognised" in str(e) else ""
        raise KwmlpError(f"{name}: cannot read audio ({str(e).splitlines()[0].split(': ', 1)[-1]}){hint}") from e


def _relay(head: bytes, f: BinaryIO) -> int:
    """A pipe's read end that yields ``head`` and then the rest of ``f`` (unbuffered, as
    :func:`_stream_file` opens it), copied by a daemon thread. The thread passes on each read as it
    arrives and takes no lock: it may still be blocked in a read when the process exits."""
    read_end, write_end = os.pipe()

    def copy():
        # OSError: the reader stopped; ValueError: the read is over and its file closed
        with contextlib.suppress(OSError, ValueError), open(write_end, "wb", buffering=0) as out:
            chunk = head
            while chunk:
                view = memoryview(chunk)
                while view:
                    view = view[out.write(view) :]
                chunk = f.read(1 << 16)

    threading.Thread(target=copy, name="kwmlp-stdin", daemon=True).start()
    return read_end


def decode(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """The whole file through :func:`read_blocks`: float32 ``(n,)`` 16 kHz mono, and the number of
    frames decoded at the file's own rate (what its duration is, whatever its header says)."""
    blocks, parts = read_blocks(path), []
    while True:
        try:
            parts.append(next(blocks))
        except StopIteration as end:
            return np.concatenate(parts), end.value


def load(path: str | os.PathLike) -> np.ndarray:
    """The whole file as float32 ``(n,)`` 16 kHz mono (mixed down by averaging, soxr HQ resampling)."""
    path = os.fspath(path)
    with _open(path) as f:
        rate = f.samplerate
        try:
            x = f.read(dtype="float32", always_2d=True)
        except (RuntimeError, ValueError) as e:
            raise _unreadable(path, e) from e
        _check_length(f, len(x), path)
    if len(x) == 0:
        raise KwmlpError(f"{path}: the file has no audio samples")
    mono = _mono(x, path)
    if rate != SAMPLE_RATE:
        mono = _soxr().resample(mono, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(mono, dtype=np.float32)


def find_audio(inputs: list[str], left_out: collections.Counter | None = None) -> list[tuple[str, str]]:
    """``(path, relative name)`` for every input: a file or stream as itself (relative name: its
    base name, ``stdin`` for ``-``), a folder searched in sorted order for files with an audio
    extension (relative to the folder).

    In a folder, files whose names start with ``.`` are skipped (hidden files, among them the
    temporary files of unfinished writes; their number is logged); name one explicitly to read
    it. Files of other extensions (``.m4a``, ``.txt``, ...) are left out and counted by extension:
    into ``left_out`` when given (the caller reports them), else in one log line per folder.
    Symbolic links to folders are followed, each real folder once. Raises :class:`KwmlpError` for
    an input that does not exist and for a folder that cannot be read.
    """
    found: list[tuple[str, str]] = []
    for inp in inputs:
        if inp == STDIN:
            found.append((inp, "stdin"))
        elif os.path.isdir(inp):
            others: collections.Counter = collections.Counter()
            hidden = _search(inp, inp, found, set(), others)
            if hidden:
                log.info("%s: skipped %d hidden file%s (names starting with '.')", inp, hidden, "s" * (hidden > 1))
            if left_out is not None:
                left_out.update(others)
            elif others:
                log.info("%s: left out %s; name a file to try it", inp, describe_left_out(others))
        elif os.path.exists(inp):
            found.append((inp, os.path.basename(inp)))
        else:
            raise KwmlpError(f"input {inp} does not exist")
    return found


def describe_left_out(counts: collections.Counter) -> str:
    """``3 files of other types (.m4a 2, .txt 1)``: what :func:`find_audio` left out, by extension."""
    n = sum(counts.values())
    kinds = ", ".join(f"{ext} {k}" for ext, k in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return f"{n} file{'s' * (n > 1)} of other types ({kinds})"


def _search(folder: str, top: str, found: list[tuple[str, str]], seen: set[str], others: collections.Counter) -> int:
    """Audio files under ``folder`` into ``found``, files before subfolders, each sorted by name, and
    the other files' extensions into ``others`` (hidden ones not counted); returns the number of
    hidden audio files skipped."""
    real = os.path.realpath(folder)
    if real in seen:  # a link back up the tree, or a second link to the same folder
        return 0
    seen.add(real)
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
        subfolders = {e.path for e in entries if e.is_dir()}
    except OSError as e:
        raise KwmlpError(f"folder {folder} cannot be read ({e.strerror}); make it readable or leave it out") from e
    hidden = 0
    for e in entries:
        if e.path in subfolders:
            continue
        if not e.name.lower().endswith(AUDIO_EXTENSIONS):
            if not e.name.startswith("."):
                others[os.path.splitext(e.name)[1].lower() or "no extension"] += 1
        elif e.name.startswith("."):
            hidden += 1
        else:
            found.append((e.path, os.path.relpath(e.path, top)))
    for sub in sorted(subfolders):
        hidden += _search(sub, top, found, seen, others)
    return hidden
