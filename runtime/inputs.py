"""Checking and normalising what users pass in: numpy float32, finite, bounded, of the right rank.

One check serves every entry point (``embed``, ``keyword_logits``, ``chunk_embeddings``,
``classify``, ``spot``, ``spot_stream`` and ``stream().feed``), so the rules are the same
everywhere, for arrays and for each element of a list:

- samples are floating point: integer PCM is refused rather than used unscaled;
- finite, and at most :data:`MAX_ABS_SAMPLE` in magnitude (beyond it the front end's float32
  power spectrum overflows and every embedding would be NaN);
- a clip has at least one sample; a ``(samples, channels)`` array is refused, not taken for a
  batch of tiny clips.
"""

from __future__ import annotations

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES, HOP_LENGTH
from kwmlp.errors import KwmlpError

# The front end squares each DFT bin in float32: a bin is at most sum(hann window) = 240 times the
# largest |sample|, so its power overflows float32 (3.4e38) from |x| = 1.8e19 / 240 = 7.7e16 on
# (and the mel sums, weights under 0.07 in all, come after). 1e15 keeps a factor of 5900 below that
# in power. Audio is expected in [-1, 1]; louder audio up to this bound embeds as it always did.
MAX_ABS_SAMPLE = 1e15


def _as_array(audio, what: str) -> np.ndarray:
    """``audio`` as a numpy array of checked dtype; a list of clips is checked clip by clip first,
    so that an int16 clip among float ones is refused rather than converted."""
    if isinstance(audio, np.ndarray):
        x = audio
    else:
        if is_clip_list(audio):
            audio = [_checked_dtype(np.asarray(a), f"{what}[{i}]") for i, a in enumerate(audio)]
        elif isinstance(audio, (list, tuple)):  # one clip as numbers: numpy integers are PCM too
            for i, a in enumerate(audio):
                if isinstance(a, (np.ndarray, np.generic)):
                    _checked_dtype(np.asarray(a), f"{what}[{i}]")
            if len({np.shape(a) for a in audio}) > 1:
                raise KwmlpError(f"{what} is a list of arrays of different shapes "
                                 f"({', '.join(str(np.shape(a)) for a in audio[:3])}...); pass equal lengths")
        try:
            x = np.asarray(audio)
        except (ValueError, TypeError) as e:
            raise KwmlpError(f"{what} must be a numpy array of samples, got {type(audio).__name__}") from e
    return _checked_dtype(x, what)


def _checked_dtype(x: np.ndarray, what: str) -> np.ndarray:
    if x.dtype.kind != "f":
        hint = " (scale integer PCM to [-1, 1] first)" if x.dtype.kind in "iu" else ""
        raise KwmlpError(f"{what} must be floating point, got dtype {x.dtype}{hint}")
    return x


def _checked_values(x: np.ndarray, what: str) -> np.ndarray:
    """float32, contiguous, finite and within :data:`MAX_ABS_SAMPLE`."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not x.size:
        return x
    peak = float(np.max(np.abs(x)))  # NaN when any sample is NaN
    if not np.isfinite(peak):
        where = np.argwhere(~np.isfinite(x))[0]
        at = f"batch {where[0]}, sample {where[1]}" if x.ndim == 2 else f"sample {where[-1]}"
        raise KwmlpError(f"{what} contains NaN or Inf (first at {at})")
    if peak > MAX_ABS_SAMPLE:
        raise KwmlpError(f"{what} has values up to {peak:.0e}; audio is expected in [-1, 1] (the largest accepted "
                         f"magnitude is {MAX_ABS_SAMPLE:.0e}): scale it first")
    return x


def as_audio_batch(audio, what: str = "audio") -> tuple[np.ndarray, bool]:
    """``(L,)`` or ``(B, L)`` floating audio -> ``(B, L)`` float32, and whether the input was 1-D."""
    x = _as_array(audio, what)
    if x.ndim not in (1, 2):
        raise KwmlpError(f"{what} must have shape (samples,) or (batch, samples), got shape {x.shape}")
    squeeze = x.ndim == 1
    x = x[None] if squeeze else x
    if x.shape[0] == 0:
        raise KwmlpError(f"{what} is an empty batch (shape {x.shape})")
    if x.shape[1] == 0:
        raise KwmlpError(f"{what} has no samples (shape {x.shape})")
    if x.shape[1] < HOP_LENGTH < x.shape[0]:
        raise KwmlpError(
            f"{what} has shape {x.shape}, {x.shape[0]} clips of {x.shape[1]} samples: that looks like (samples, "
            f"channels) audio as soundfile.read returns it; mix it down first (x.mean(axis=1)) or pass (batch, samples)")
    return _checked_values(x, what), squeeze


def as_clip(audio, what: str = "audio", allow_empty: bool = False) -> np.ndarray:
    """One clip of floating samples ``(n,)`` -> float32 ``(n,)``; empty only where ``allow_empty``
    (a piece of a stream)."""
    x = _as_array(audio, what)
    if x.ndim != 1:
        hint = "; mix channels down first (x.mean(axis=1))" if x.ndim == 2 and x.shape[1] < x.shape[0] else ""
        raise KwmlpError(f"{what} must be 1-D samples, got shape {x.shape}{hint}")
    if not len(x) and not allow_empty:
        raise KwmlpError(f"{what} has no samples")
    return _checked_values(x, what)


def as_clips(clips, what: str = "clips") -> list[np.ndarray]:
    """A list or tuple of clips, each checked by :func:`as_clip`."""
    if not isinstance(clips, (list, tuple)):
        raise KwmlpError(f"{what} must be a list of 1-D clips, got {type(clips).__name__}")
    return [as_clip(c, f"clip {i}") for i, c in enumerate(clips)]


def as_windows(windows) -> np.ndarray:
    """``(W, 16000)`` or ``(16000,)`` floating windows -> ``(W, 16000)`` float32."""
    x, _ = as_audio_batch(windows, "windows")
    if x.shape[1] != CHUNK_SAMPLES:
        raise KwmlpError(f"keyword windows must be one second ({CHUNK_SAMPLES} samples at 16 kHz), got {x.shape[1]}")
    return x


def require_shape(x: np.ndarray, shape: tuple[int, int], model: str) -> np.ndarray:
    """``x`` when it has ``shape``, the one input shape of the fixed-shape graph ``model``; else one sentence."""
    if x.shape != tuple(shape):
        raise KwmlpError(f"{model} takes audio of shape {tuple(shape)} only; got {x.shape}")
    return x


def is_clip_list(audio) -> bool:
    """A list or tuple of clips (each 1-D array-like), as opposed to one clip given as a list of numbers."""
    return isinstance(audio, (list, tuple)) and len(audio) > 0 and all(np.ndim(a) >= 1 for a in audio)


INT16_SCALE = 1.0 / 32768  # int16 PCM -> [-1, 1): the one place integer samples are scaled


# Live PCM comes from audio devices and recorders: these are their rates. Anything else is a
# mistake, and an expensive one (1 Hz would be upsampled 16000-fold).
PCM_RATES = (8000, 384000)  # Hz
MAX_PCM_CHANNELS = 64


def check_pcm_layout(rate, channels, whose: str = "") -> None:
    """The one check of a live stream's ``rate`` (Hz) and ``channels``; ``whose`` names them in
    the message (``"raw PCM's "``)."""
    low, high = PCM_RATES
    if not low <= rate <= high:  # also NaN
        raise KwmlpError(f"{whose}rate must be {low} to {high} Hz (the rates of audio devices), got {rate}")
    if not isinstance(channels, (int, np.integer)) or not 1 <= channels <= MAX_PCM_CHANNELS:
        raise KwmlpError(f"{whose}channels must be a whole number from 1 to {MAX_PCM_CHANNELS}, got {channels}")


def as_pcm(block, channels: int = 1, what: str = "pcm") -> tuple[np.ndarray, np.ndarray]:
    """One block of live PCM -> float32 ``(n,)`` mono (channels averaged; ``n`` may be 0), and the
    indices of the frames in it where a sample that cannot be audio was replaced by 0.

    ``block``: float32 in [-1, 1] or int16 samples, ``(n,)`` interleaved over ``channels`` or
    ``(n, channels)``; other dtypes and shapes are refused. A live stream does not end for one bad
    sample: NaN, Inf and magnitudes above :data:`MAX_ABS_SAMPLE`, which :func:`as_audio_batch`
    refuses, become 0 here, and the caller says so.
    """
    x = block if isinstance(block, np.ndarray) else np.asarray(block)
    if x.dtype == np.int16:
        x = x.astype(np.float32) * np.float32(INT16_SCALE)
    elif x.dtype.kind in "iu":
        raise KwmlpError(f"{what} must be float32 or int16 samples, got dtype {x.dtype}")
    if x.ndim == 2 and x.shape[1] != channels or x.ndim not in (1, 2) or x.size % channels:
        raise KwmlpError(f"{what} must have shape (samples,) or (samples, {channels}) for {channels} channel(s), "
                         f"got shape {x.shape}")
    frames = np.ascontiguousarray(_checked_dtype(x, what), np.float32).reshape(-1, channels)
    bad = np.zeros(0, np.intp)
    if frames.size and not np.max(np.abs(frames)) <= MAX_ABS_SAMPLE:  # NaN compares False
        ok = np.abs(frames) <= MAX_ABS_SAMPLE
        bad = np.flatnonzero(~ok.all(axis=1))
        frames = np.where(ok, frames, np.float32(0))
    mono = frames[:, 0] if channels == 1 else frames.mean(axis=1, dtype=np.float32)
    return mono, bad
