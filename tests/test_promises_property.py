"""Issue 11: a property test of the input checks. Whatever arrays or lists of arrays come in
(shapes, dtypes, NaN, Inf, huge values), the answer is a KwmlpError of one line, or a finite
result equal to that of the same audio given as float32."""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from kwmlp.errors import KwmlpError  # noqa: E402
from kwmlp.runtime.inputs import MAX_ABS_SAMPLE, as_audio_batch, as_clip  # noqa: E402

DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int16, np.int32, np.uint8, np.bool_, np.complex64])
VALUES = st.one_of(
    st.floats(-1, 1, width=16),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e20, -3e16, MAX_ABS_SAMPLE, 3.0, 0.0]),
)


def _arrays(max_len=600):
    shapes = st.one_of(
        st.tuples(st.integers(0, max_len)),
        st.tuples(st.integers(0, 3), st.integers(0, max_len)),
        st.tuples(st.integers(170, 400), st.integers(1, 3)),  # (samples, channels)
        st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 50)),
        st.just(()),
    )
    return DTYPES.flatmap(lambda dt: shapes.flatmap(
        lambda shape: hnp.arrays(dt, shape, elements=VALUES.map(lambda v: _fit(v, dt)))))


def _fit(v, dt):
    """A value the dtype can hold (what a user array of that dtype could contain)."""
    if np.issubdtype(dt, np.floating) or np.issubdtype(dt, np.complexfloating):
        with np.errstate(over="ignore"):
            return dt(v) if np.isfinite(dt(v)) or not np.isfinite(v) else dt(0)
    if dt is np.bool_:
        return bool(v == v and v > 0)
    return dt(np.clip(np.nan_to_num(v), 0, 1) * 100)


INPUTS = st.one_of(_arrays(), st.lists(_arrays(), min_size=1, max_size=3))


def _one_line(e: KwmlpError) -> None:
    assert str(e) and "\n" not in str(e)


def _as_float32(x):
    return [np.asarray(a, np.float32) for a in x] if isinstance(x, list) else np.asarray(x, np.float32)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(INPUTS)
def test_the_checks_refuse_in_one_line_or_pass_float32_unchanged(x):
    try:
        y, squeeze = as_audio_batch(x)
    except KwmlpError as e:
        _one_line(e)
        return
    assert y.dtype == np.float32 and y.ndim == 2 and y.size and np.isfinite(y).all()
    assert np.abs(y).max() <= MAX_ABS_SAMPLE
    assert all(np.asarray(a).dtype.kind == "f" for a in (x if isinstance(x, list) else [x]))
    np.testing.assert_array_equal(y, np.asarray(_as_float32(x)).reshape(y.shape))
    assert squeeze == (np.ndim(x) == 1)


@settings(max_examples=100, deadline=None)
@given(_arrays())
def test_one_clip_checks(x):
    try:
        y = as_clip(x, allow_empty=True)
    except KwmlpError as e:
        _one_line(e)
        return
    assert x.dtype.kind == "f" and x.ndim == 1 and np.isfinite(y).all()
    np.testing.assert_array_equal(y, x.astype(np.float32))


@pytest.fixture(scope="module")
def embedder(random_exported):
    from kwmlp.runtime import Embedder

    return Embedder(random_exported())


def test_through_the_embedder(embedder):
    """The same property end to end: embed, keyword_logits and a stream."""

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(INPUTS)
    def check(x):
        try:
            r = embedder.embed(x)
        except KwmlpError as e:
            _one_line(e)
            return
        ref = embedder.embed(_as_float32(x))
        for got, want in zip(r if isinstance(r, list) else [r], ref if isinstance(ref, list) else [ref]):
            assert np.isfinite(got.scene_embeddings).all() and np.isfinite(got.timestamp_embeddings).all()
            np.testing.assert_array_equal(got.scene_embeddings, want.scene_embeddings)

    check()


def test_streams_and_windows(embedder):
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_arrays(300), min_size=1, max_size=3))
    def check(pieces):
        s = embedder.stream()
        try:
            for p in pieces:
                s.feed(p)
            r = s.finish()
        except KwmlpError as e:
            _one_line(e)
            return
        ref = embedder.embed(np.concatenate([np.asarray(p, np.float32) for p in pieces]))
        assert np.isfinite(r.scene_embeddings).all()
        np.testing.assert_allclose(r.scene_embeddings, ref.scene_embeddings, atol=1e-5)
        try:
            logits = embedder.keyword_logits([np.resize(np.asarray(p), 16000) for p in pieces])
        except KwmlpError as e:
            _one_line(e)
            return
        assert np.isfinite(logits).all()

    check()
