"""Issue 11, silent wrong answers: one input check for every entry point (items 5-8)."""

import numpy as np
import pytest

from kwmlp.errors import KwmlpError
from kwmlp.runtime.inputs import MAX_ABS_SAMPLE
from kwmlp.runtime.keywords import classify, spot, spot_stream

rng = np.random.default_rng(0)
WINDOW = (0.1 * rng.standard_normal(16000)).astype(np.float32)


@pytest.fixture(scope="module")
def embedder(random_exported):
    from kwmlp.runtime import Embedder

    return Embedder(random_exported())


def _one_line(e) -> str:
    assert len(str(e.value).splitlines()) == 1
    return str(e.value)


# --- 5. stereo arrays are not a batch of two-sample clips -----------------------------------

@pytest.mark.parametrize("channels", [1, 2, 6])
def test_samples_by_channels_is_refused(embedder, channels):
    with pytest.raises(KwmlpError, match=r"looks like \(samples, channels\) audio") as e:
        embedder.embed(np.zeros((16000, channels), np.float32))
    _one_line(e)


def test_a_real_batch_of_short_clips_is_still_a_batch(embedder):
    assert embedder.embed(np.zeros((4, 159), np.float32)).scene_embeddings.shape == (4, 1024)


# --- 6. every entry point checks every element alike ----------------------------------------

INT_WINDOW = (WINDOW * 32767).astype(np.int16)


@pytest.mark.parametrize("call", [
    lambda e: e.keyword_logits([WINDOW, INT_WINDOW]),
    lambda e: e.chunk_embeddings([WINDOW, INT_WINDOW]),
    lambda e: e.embed([WINDOW, INT_WINDOW]),
    lambda e: classify(e, [INT_WINDOW]),
    lambda e: classify(e, [WINDOW, INT_WINDOW]),
    lambda e: spot_stream(e, iter([WINDOW, INT_WINDOW])),
    lambda e: spot(e, INT_WINDOW),
    lambda e: e.stream().feed(INT_WINDOW),
], ids=["keyword_logits", "chunk_embeddings", "embed", "classify", "classify-mixed", "spot_stream", "spot", "feed"])
def test_integer_audio_is_refused_everywhere(embedder, call):
    with pytest.raises(KwmlpError, match="must be floating point, got dtype int16") as e:
        call(embedder)
    _one_line(e)


def test_classify_refuses_empty_and_two_dimensional_clips(embedder):
    with pytest.raises(KwmlpError, match="clip 0 has no samples"):
        classify(embedder, [np.zeros(0, np.float32)])
    with pytest.raises(KwmlpError, match=r"clip 1 must be 1-D samples, got shape \(2, 16000\)"):
        classify(embedder, [WINDOW, np.zeros((2, 16000), np.float32)])


def test_float64_and_float16_equal_float32(embedder):
    ref = embedder.keyword_logits(WINDOW[None])
    np.testing.assert_array_equal(embedder.keyword_logits([WINDOW.astype(np.float64)]), ref)
    assert classify(embedder, [WINDOW.astype(np.float64)]) == classify(embedder, [WINDOW])


# --- 7. ClipStream.feed: the same checks; one finish() ------------------------------------

@pytest.mark.parametrize("bad,match", [
    (np.array([0.1, np.nan], np.float32), "NaN or Inf"),
    (np.zeros((2, 8000), np.float32), "must be 1-D samples"),
    (np.zeros(100, np.int16), "must be floating point"),
    (np.full(100, 1e20, np.float32), "values up to 1e\\+20"),
])
def test_stream_feed_checks_like_embed(embedder, bad, match):
    with pytest.raises(KwmlpError, match=match):
        embedder.stream().feed(bad)


def test_stream_float64_equals_embed_and_finishes_once(embedder):
    clip = (0.1 * rng.standard_normal(40000)).astype(np.float32)
    s = embedder.stream()
    s.feed(clip[:25000].astype(np.float64))
    s.feed(clip[25000:])
    r = s.finish()
    np.testing.assert_allclose(r.scene_embeddings, embedder.embed(clip).scene_embeddings, atol=1e-5)
    with pytest.raises(KwmlpError, match="this stream is finished"):
        s.finish()
    with pytest.raises(KwmlpError, match="this stream is finished"):
        s.feed(clip)
    with pytest.raises(KwmlpError, match="no samples"):
        embedder.stream().finish()


# --- 8. audio whose power spectrum would overflow is refused, never NaN -----------------------

@pytest.mark.parametrize("call", [
    lambda e, x: e.embed(x),
    lambda e, x: e.embed([x]),
    lambda e, x: e.keyword_logits(x[:16000]),
    lambda e, x: classify(e, [x]),
    lambda e, x: spot(e, x, threshold=0.0),
], ids=["embed", "embed-list", "keyword_logits", "classify", "spot"])
def test_huge_audio_is_refused(embedder, call):
    x = np.full(16000, 1e20, np.float32)
    with pytest.raises(KwmlpError, match=r"values up to 1e\+20; audio is expected in \[-1, 1\]") as e:
        call(embedder, x)
    _one_line(e)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_bound_is_the_readmes_1e15(embedder, dtype):
    """The README's literal, not the constant: a bound moved to 9e15 would pass every test of MAX_ABS_SAMPLE."""
    loud = np.where(np.arange(16000) % 2, 1e15, -1e15).astype(dtype)
    assert np.isfinite(embedder.embed(loud).scene_embeddings).all()  # 1e15 accepted
    with pytest.raises(KwmlpError, match=r"values up to 2e\+15; .* \(the largest accepted magnitude is 1e\+15\)"):
        embedder.embed(2 * loud)  # 2e15 refused


def test_loudest_accepted_audio_is_finite(embedder):
    # alternating signs put the whole window's sum into one bin: the worst case for the power spectrum
    x = np.where(np.arange(32000) % 2, MAX_ABS_SAMPLE, -MAX_ABS_SAMPLE).astype(np.float32)
    r = embedder.embed(x)
    assert np.isfinite(r.scene_embeddings).all() and np.isfinite(r.timestamp_embeddings).all()
    assert np.isfinite(embedder.keyword_logits(x[:16000])).all()


def test_huge_float_wav_fails_the_cli(random_exported, tmp_path, capsys):
    sf = pytest.importorskip("soundfile")
    from kwmlp.apps.cli import main

    sf.write(tmp_path / "loud.wav", np.full(16000, 1e20, np.float32), 16000, subtype="FLOAT")
    sf.write(tmp_path / "quiet.wav", np.full(16000, 0.1, np.float32), 16000, subtype="FLOAT")  # same batch
    assert main(["embed", random_exported(), str(tmp_path / "loud.wav"), str(tmp_path / "quiet.wav"),
                 "-o", str(tmp_path / "o"), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert "loud.wav: the audio has values up to 1e+20" in err and len(err.splitlines()) == 1  # quiet.wav is fine
    assert not (tmp_path / "o" / "loud.npz").exists() and (tmp_path / "o" / "quiet.npz").exists()
    assert main(["spot", random_exported(), str(tmp_path / "loud.wav"), "--threshold", "0"]) == 1
    assert "values up to 1e+20" in capsys.readouterr().err
