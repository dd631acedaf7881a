"""Reading audio files: every format, rate and channel count, mixed down and resampled to 16 kHz."""

import numpy as np
import pytest
import soundfile as sf

from kwmlp.apps import audio
from kwmlp.errors import KwmlpError

HAVE_MP3 = "MP3" in sf.available_formats()


def tone(rate: int, seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# (extension, format, subtype, rate, channels, max abs error against the ideal 16 kHz tone)
CASES = [
    ("wav", "WAV", "PCM_16", 16000, 1, 1e-4),
    ("wav", "WAV", "PCM_24", 44100, 2, 1e-3),
    ("wav", "WAV", "PCM_32", 48000, 1, 1e-3),
    ("wav", "WAV", "PCM_U8", 8000, 1, 2e-2),
    ("wav", "WAV", "FLOAT", 22050, 6, 1e-3),
    ("wav", "WAV", "DOUBLE", 32000, 2, 1e-3),
    ("flac", "FLAC", "PCM_16", 48000, 2, 1e-3),
    ("flac", "FLAC", "PCM_24", 96000, 1, 1e-3),
    ("ogg", "OGG", "VORBIS", 44100, 2, 5e-2),
    pytest.param("mp3", "MP3", "MPEG_LAYER_III", 44100, 2, 5e-2,
                 marks=pytest.mark.skipif(not HAVE_MP3, reason="this libsndfile has no MP3")),
]


def write_case(path, fmt, subtype, rate, channels, seconds=1.5):
    """A 440 Hz tone whose channels, averaged, give the tone itself (channel k scaled by w_k, mean(w) = 1)."""
    weights = np.linspace(0.5, 1.5, channels) if channels > 1 else np.ones(1)
    x = tone(rate, seconds)[:, None] * weights[None, :].astype(np.float32)
    sf.write(path, x, rate, format=fmt, subtype=subtype)
    return path


@pytest.mark.parametrize("ext,fmt,subtype,rate,channels,tol", CASES)
def test_every_format_rate_and_channel_count(tmp_path, ext, fmt, subtype, rate, channels, tol):
    path = write_case(tmp_path / f"x.{ext}", fmt, subtype, rate, channels)
    info = audio.info(path)
    assert (info.sample_rate, info.channels) == (rate, channels)
    x = audio.load(path)
    assert x.dtype == np.float32 and x.ndim == 1
    expected = tone(16000, 1.5)
    if fmt in ("OGG", "MP3"):  # lossy codecs add a delay: compare the spectrum's peak and the level
        spectrum = np.abs(np.fft.rfft(x[4000:20000]))
        assert abs(np.argmax(spectrum) - 440) <= 1  # 16000 points at 16 kHz: 1 Hz a bin
        assert abs(np.sqrt(np.mean(x[4000:20000] ** 2)) - 0.5 / np.sqrt(2)) < tol
        return
    assert len(x) == len(expected)
    inner = slice(800, -800)  # the resampler's filter rings at the clip's edges
    assert np.abs(x[inner] - expected[inner]).max() < tol


def test_blocks_equal_whole_file(tmp_path):
    path = write_case(tmp_path / "long.flac", "FLAC", "PCM_24", 44100, 2, seconds=7.3)
    whole = audio.load(path)
    pieces = list(audio.read_blocks(path, block_seconds=0.37))
    assert len(pieces) > 10
    np.testing.assert_array_equal(np.concatenate(pieces), whole)


def test_find_audio_recurses_folders_for_audio_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/b/z.wav", "a/y.FLAC", "x.ogg", "notes.txt", ".hidden.wav"):
        (tmp_path / name).write_bytes(b"")
    found = audio.find_audio([str(tmp_path), str(tmp_path / "notes.txt")])
    assert [rel for _, rel in found] == ["x.ogg", "a/y.FLAC", "a/b/z.wav", "notes.txt"]
    with pytest.raises(KwmlpError, match="input /nonexistent does not exist"):
        audio.find_audio(["/nonexistent"])


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "the file is empty"),
        (b"hello, this is text and not audio at all" * 10, "cannot read audio"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00garbage", "cannot read audio"),
    ],
)
def test_unreadable_files_name_the_file_and_the_reason(tmp_path, content, match):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    for read in (audio.load, lambda p: list(audio.read_blocks(p))):
        with pytest.raises(KwmlpError, match=match) as e:
            read(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_no_samples_and_nan_are_errors(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(KwmlpError, match="has no audio samples"):
        audio.load(tmp_path / "empty.wav")
    with pytest.raises(KwmlpError, match="has no audio samples"):
        list(audio.read_blocks(tmp_path / "empty.wav"))
    x = np.zeros(1000, np.float32)
    x[10] = np.nan
    sf.write(tmp_path / "nan.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(KwmlpError, match="NaN or Inf"):
        audio.load(tmp_path / "nan.wav")
