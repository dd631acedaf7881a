"""The graphs' factored STFT (kwmlp.export.stft): its arithmetic in float64, and its graph in float32."""

import numpy as np
import pytest

from kwmlp.models import filters

pytest.importorskip("onnx")
from kwmlp.export import stft  # noqa: E402  (needs onnx)


def _mel_power(chunks: np.ndarray) -> np.ndarray:
    """The graph's factored arithmetic in numpy (float64): ``(N, 16000) -> mel power (N, 98, 40)``."""
    x = chunks.reshape(len(chunks), stft.ROWS, stft.P)
    frames = np.stack([x[:, stft.STRIDE * t : stft.STRIDE * t + stft.Q] for t in range(stft.N_FRAMES)], axis=1)  # (N, 98, n2, n1)
    w1 = stft.stage1_kernels().reshape(stft.P, stft.K2 * 2, stft.Q)
    a = np.einsum("ikq,ntqi->ntik", w1, frames).reshape(len(chunks), stft.N_FRAMES, stft.P, stft.K2, 2)
    a = a.transpose(0, 1, 3, 2, 4).reshape(len(chunks), stft.N_FRAMES, stft.K2, 2 * stft.P)
    y = np.einsum("kog,ntkg->ntko", stft.stage2_matrices(), a)
    return (y * y).reshape(len(chunks), stft.N_FRAMES, -1) @ stft.mel_matrix().T


def _mel_power_by_rfft(chunks: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(chunks, 480, axis=1)[:, ::160]
    power = np.abs(np.fft.rfft(frames * filters.hann_window(), axis=-1)) ** 2
    return power @ filters.mel_filterbank().T


@pytest.mark.parametrize("kind", ["noise", "tone_at_a_mirrored_bin", "impulses"])
def test_factored_stft_equals_the_rfft(kind):
    rng = np.random.default_rng(1)
    t = np.arange(16000)
    x = {
        "noise": lambda: rng.standard_normal((3, 16000)),
        # bin 200 is not computed directly (200 mod 30 = 20 > 15): it is read from its mirror, bin 280
        "tone_at_a_mirrored_bin": lambda: np.cos(2 * np.pi * 200 * t / 480)[None],
        "impulses": lambda: (t % 997 == 0).astype(np.float64)[None],
    }[kind]()
    truth = _mel_power_by_rfft(x)
    assert np.abs(_mel_power(x) - truth).max() <= 1e-12 * truth.max()


def test_every_bin_has_one_computed_source():
    seen = {stft.bin_of(b) for b in range(241)}
    assert len(seen) == 241 and all(k2 < stft.K2 and k1 < stft.K1 for k2, k1 in seen)


def test_graph_front_end_equals_the_rfft():
    from kwmlp.export.builder import GraphBuilder

    b = GraphBuilder()
    sess = _chunks_session(b, stft.mel_spectrogram(b, "chunks"), "stft")
    x = np.random.default_rng(2).uniform(-1, 1, (4, 16000)).astype(np.float32)
    y = sess.run(None, {"chunks": x})[0]
    truth = _mel_power_by_rfft(x.astype(np.float64))
    assert y.shape == (4, 98, 40) and np.abs(y - truth).max() <= 1e-6 * truth.max()
    # no node makes the (N, 98, 480) frames: the largest intermediate is the stage-1 output
    assert not {"Slice", "Concat", "Pad"} & {n.op_type for n in b.nodes}


def test_log_mel_floor_is_1e_10():
    """The graph's log-mel is ``10 log10(max(mel power, 1e-10))``, clamped at each chunk's max - 80 dB
    (README, The graph): silence is exactly -100 dB. A floor 0.1% off moved silence's embeddings by
    6.9e-4, under the parity tolerance of 1e-3, so the floor is checked here on its own."""
    from kwmlp.export import graph
    from kwmlp.export.builder import GraphBuilder

    b = GraphBuilder()
    sess = _chunks_session(b, graph._log_mel(b, "chunks"), "log_mel")
    x = np.zeros((3, 16000), np.float32)
    x[1] = np.random.default_rng(3).uniform(-1, 1, 16000)
    x[2, 8000:] = 1e-6 * np.sin(np.arange(8000))  # quiet: partly under the floor
    y = sess.run(None, {"chunks": x})[0]
    assert np.abs(y[0] + 100.0).max() <= 1e-4  # silence: 10 log10(1e-10)
    truth = 10 * np.log10(np.maximum(_mel_power_by_rfft(x.astype(np.float64)), 1e-10))
    truth = np.maximum(truth, truth.max(axis=(1, 2), keepdims=True) - 80.0)
    assert np.abs(y - truth).max() <= 1e-3  # dB


def _chunks_session(b, out: str, name: str):
    """An ONNX Runtime session over ``b``'s nodes: ``chunks (n, 16000)`` -> ``out (n, 98, 40)``."""
    import onnxruntime as ort
    from onnx import helper

    from kwmlp.export.builder import FLOAT, value_info

    g = helper.make_graph(b.nodes, name, [value_info("chunks", FLOAT, ["n", 16000])],
                          [value_info(out, FLOAT, ["n", 98, 40])], b.initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
