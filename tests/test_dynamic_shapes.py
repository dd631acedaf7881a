"""One exported file handles every batch and length; the graph equals the PyTorch reference.

Runs on a seeded random KW-MLP (no trained weights needed) whose LayerNorm affines are
perturbed, so that any misplaced op shows."""

import numpy as np
import pytest

from conftest import max_abs

torch = pytest.importorskip("torch")

LENGTHS = [1, 159, 160, 15679, 15680, 16000, 16001, 24000, 596800]  # 1.5 s and 37.3 s at the end


@pytest.fixture(scope="module")
def pair(random_checkpoint, random_exported):
    from kwmlp.models import HearReference, load_checkpoint
    from kwmlp.runtime import Embedder

    return HearReference(load_checkpoint(random_checkpoint)), Embedder(random_exported())


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("length", LENGTHS)
def test_graph_equals_reference(pair, batch, length):
    reference, embedder = pair
    audio = np.random.default_rng(length + batch).uniform(-0.8, 0.8, (batch, length)).astype(np.float32)
    expected = reference(torch.from_numpy(audio))
    got = embedder.embed(audio)
    n = length // 160
    assert got.timestamp_embeddings.shape == (batch, n, 64)
    assert got.timestamps.shape == (batch, n)
    assert got.scene_embeddings.shape == (batch, 1024)
    assert max_abs(got.timestamp_embeddings, expected.timestamp_embeddings) <= 1e-3
    assert np.array_equal(got.timestamps, expected.timestamps.numpy())
    assert max_abs(got.scene_embeddings, expected.scene_embeddings) <= 1e-3


def test_keyword_graph_equals_reference(pair):
    reference, embedder = pair
    windows = np.random.default_rng(7).uniform(-0.5, 0.5, (5, 16000)).astype(np.float32)
    expected = reference.keyword_logits(torch.from_numpy(windows)).numpy()
    assert max_abs(embedder.keyword_logits(windows), expected) <= 1e-3


def test_one_dimensional_input_drops_the_batch_axis(pair):
    _, embedder = pair
    x = np.random.default_rng(3).uniform(-0.5, 0.5, 20000).astype(np.float32)
    one = embedder.embed(x)
    batched = embedder.embed(x[None])
    assert one.timestamp_embeddings.shape == (125, 64) and one.scene_embeddings.shape == (1024,)
    np.testing.assert_array_equal(one.scene_embeddings, batched.scene_embeddings[0])


def test_list_of_clips_equals_one_by_one(pair):
    _, embedder = pair
    rng = np.random.default_rng(4)
    clips = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (16000, 3000, 15000, 40000, 100)]
    results = embedder.embed(clips)
    assert len(results) == len(clips)
    for clip, r in zip(clips, results):
        alone = embedder.embed(clip)
        assert r.timestamp_embeddings.shape == (len(clip) // 160, 64)
        np.testing.assert_allclose(r.timestamp_embeddings, alone.timestamp_embeddings, atol=1e-5)
        np.testing.assert_array_equal(r.timestamps, alone.timestamps)
        np.testing.assert_allclose(r.scene_embeddings, alone.scene_embeddings, atol=1e-5)


def test_float64_input_is_accepted(pair):
    _, embedder = pair
    x = np.random.default_rng(5).uniform(-0.5, 0.5, (2, 5000))
    np.testing.assert_array_equal(embedder.embed(x).scene_embeddings,
                                  embedder.embed(x.astype(np.float32)).scene_embeddings)


def test_embed_from_several_threads(pair):
    from concurrent.futures import ThreadPoolExecutor

    _, embedder = pair
    rng = np.random.default_rng(9)
    clips = [rng.uniform(-0.5, 0.5, (2, n)).astype(np.float32) for n in (16000, 30000, 5000, 47000)] * 2
    alone = [embedder.embed(c) for c in clips]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(embedder.embed, clips))
    for a, t in zip(alone, together):
        np.testing.assert_array_equal(a.scene_embeddings, t.scene_embeddings)
        np.testing.assert_array_equal(a.timestamp_embeddings, t.timestamp_embeddings)
