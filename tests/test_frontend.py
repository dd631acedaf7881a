"""The MFCC front end against librosa (the original package's nnAudio equals librosa within 1e-5)."""

import numpy as np
import pytest

from conftest import load_case

torch = pytest.importorskip("torch")
librosa = pytest.importorskip("librosa")


def librosa_mfcc(x: np.ndarray) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=x.astype(np.float64), sr=16000, n_fft=480, win_length=480, hop_length=160, n_mels=40, center=False,
        power=2.0,
    )
    return librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=80.0), n_mfcc=40)


@pytest.mark.parametrize("kind", ["noise", "speech", "silence", "square"])
def test_mfcc_matches_librosa(kind):
    from kwmlp.models import MFCC

    rng = np.random.default_rng(0)
    x = {
        "noise": lambda: rng.uniform(-0.5, 0.5, 16000),
        "speech": lambda: np.pad(load_case("speech_front_center")["audio"][0], (0, 16000))[:16000],
        "silence": lambda: np.zeros(16000),
        "square": lambda: np.sign(np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)),
    }[kind]().astype(np.float32)
    expected = librosa_mfcc(x)
    with torch.no_grad():
        got = MFCC()(torch.from_numpy(x)[None]).numpy()[0]
    assert got.shape == (40, 98)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * scale + 1e-4)


def test_filters_match_librosa():
    from kwmlp.models import filters

    np.testing.assert_allclose(filters.mel_filterbank(), librosa.filters.mel(sr=16000, n_fft=480, n_mels=40),
                               rtol=0, atol=1e-8)
    import scipy.fft

    x = np.random.default_rng(1).standard_normal((40, 7))
    np.testing.assert_allclose(filters.dct_matrix() @ x, scipy.fft.dct(x, axis=0, norm="ortho"), atol=1e-12)
