"""Checking and normalising what users pass in: numpy float32, finite, of the right rank."""

from __future__ import annotations

import numpy as np

from kwmlp.dims import CHUNK_SAMPLES
from kwmlp.errors import KwmlpError


def as_audio_batch(audio, what: str = "audio") -> tuple[np.ndarray, bool]:
    """``(L,)`` or ``(B, L)`` floating audio -> ``(B, L)`` float32, and whether the input was 1-D."""
    if isinstance(audio, np.ndarray):
        x = audio
    else:
        try:
            x = np.asarray(audio)
        except (ValueError, TypeError) as e:
            raise KwmlpError(f"{what} must be a numpy array of samples, got {type(audio).__name__}") from e
    if x.dtype.kind != "f":
        hint = " (scale integer PCM to [-1, 1] first)" if x.dtype.kind in "iu" else ""
        raise KwmlpError(f"{what} must be floating point, got dtype {x.dtype}{hint}")
    if x.ndim not in (1, 2):
        raise KwmlpError(f"{what} must have shape (samples,) or (batch, samples), got shape {x.shape}")
    squeeze = x.ndim == 1
    x = x[None] if squeeze else x
    if x.shape[0] == 0:
        raise KwmlpError(f"{what} is an empty batch (shape {x.shape})")
    if x.shape[1] == 0:
        raise KwmlpError(f"{what} has no samples (shape {x.shape})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        b, i = np.argwhere(~np.isfinite(x))[0]
        raise KwmlpError(f"{what} contains NaN or Inf (first at batch {b}, sample {i})")
    return x, squeeze


def as_windows(windows) -> np.ndarray:
    """``(W, 16000)`` or ``(16000,)`` floating windows -> ``(W, 16000)`` float32."""
    x, _ = as_audio_batch(windows, "windows")
    if x.shape[1] != CHUNK_SAMPLES:
        raise KwmlpError(f"keyword windows must be one second ({CHUNK_SAMPLES} samples at 16 kHz), got {x.shape[1]}")
    return x


def is_clip_list(audio) -> bool:
    """A list or tuple of clips (each 1-D array-like), as opposed to one clip given as a list of numbers."""
    return isinstance(audio, (list, tuple)) and len(audio) > 0 and all(np.ndim(a) >= 1 for a in audio)


INT16_SCALE = 1.0 / 32768  # int16 PCM -> [-1, 1): the one place integer samples are scaled


def as_pcm(block, channels: int = 1, what: str = "pcm") -> np.ndarray:
    """One block of live PCM -> float32 ``(n,)`` mono (channels averaged); ``n`` may be 0.

    ``block``: float32 in [-1, 1] or int16 samples, ``(n,)`` interleaved over ``channels`` or
    ``(n, channels)``. Floating blocks get the checks of :func:`as_audio_batch`.
    """
    x = block if isinstance(block, np.ndarray) else np.asarray(block)
    if x.dtype == np.int16:
        x = x.astype(np.float32) * np.float32(INT16_SCALE)
    elif x.dtype.kind in "iu":
        raise KwmlpError(f"{what} must be float32 or int16 samples, got dtype {x.dtype}")
    if x.ndim == 2 and x.shape[1] != channels or x.ndim not in (1, 2) or x.size % channels:
        raise KwmlpError(f"{what} must have shape (samples,) or (samples, {channels}) for {channels} channel(s), "
                         f"got shape {x.shape}")
    if x.size == 0:
        return np.zeros(0, np.float32)
    x, _ = as_audio_batch(x.reshape(-1), what)
    return x[0] if channels == 1 else x[0].reshape(-1, channels).mean(axis=1, dtype=np.float32)
