"""Fixed front-end matrices, built in numpy (float64, cast by the caller).

Shared by the PyTorch reference and the ONNX builder so that both use the very
same numbers. Equal to what nnAudio 0.3.4 (the original package's front end)
and librosa compute: periodic Hann window, Slaney mel scale with area
normalisation, orthonormal DCT-II.
"""

from __future__ import annotations

import numpy as np

from kwmlp.dims import N_BINS, N_FFT, N_MELS, N_MFCC, SAMPLE_RATE


def hann_window(n: int = N_FFT) -> np.ndarray:
    """Periodic Hann window, ``scipy.signal.get_window("hann", n)``. Shape ``(n,)``."""
    k = np.arange(n)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)


def dft_kernels(n_fft: int = N_FFT) -> tuple[np.ndarray, np.ndarray]:
    """Windowed real-DFT kernels for an STFT as a 1-D convolution.

    Returns ``(cos, sin)``, each of shape ``(n_fft // 2 + 1, n_fft)``: row ``f`` is
    ``window * cos(2 pi f n / n_fft)`` (resp. ``sin``). The power spectrum of a frame
    ``x`` is ``(cos @ x) ** 2 + (sin @ x) ** 2``.
    """
    f = np.arange(n_fft // 2 + 1)[:, None]
    n = np.arange(n_fft)[None, :]
    # f * n mod n_fft keeps the phase argument small and exact for large f * n
    phase = 2.0 * np.pi * ((f * n) % n_fft) / n_fft
    w = hann_window(n_fft)[None, :]
    return w * np.cos(phase), w * np.sin(phase)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's Auditory Toolbox scale: linear below 1 kHz, logarithmic above
    f = np.asanyarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = f / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asanyarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * m
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)


def mel_filterbank(
    sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 0.0, fmax: float | None = None
) -> np.ndarray:
    """Slaney-style, area-normalised triangular mel filters (``librosa.filters.mel`` defaults).

    Returns shape ``(n_mels, n_fft // 2 + 1)``.
    """
    fmax = sr / 2.0 if fmax is None else fmax
    fftfreqs = np.linspace(0, sr / 2.0, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fftfreqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    return weights * enorm[:, None]


def dct_matrix(n_out: int = N_MFCC, n_in: int = N_MELS) -> np.ndarray:
    """Orthonormal DCT-II as a matrix: ``mfcc = D @ log_mel``. Shape ``(n_out, n_in)``."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    d = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    d[0] /= np.sqrt(2.0)
    return d


assert mel_filterbank().shape == (N_MELS, N_BINS)
