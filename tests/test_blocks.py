"""Block-by-block embedding equals embedding the clip at once."""

import numpy as np
import pytest

from conftest import max_abs

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("scene", ["iterative", "single", "mean"])
@pytest.mark.parametrize("length", [100, 15680, 16001, 47000, 16000 * 7 + 123])
def test_blocks_equal_whole(random_exported, scene, length):
    from kwmlp.runtime import Embedder

    audio = np.random.default_rng(length).uniform(-0.5, 0.5, (2, length)).astype(np.float32)
    # ONNX Runtime: its CPU kernels give the same sums at every shape, so 1e-5 tests the block
    # logic alone (OpenVINO's differ by ~3e-5 between shapes: test_openvino.py)
    e = Embedder(random_exported(scene=scene), backend="onnxruntime-cpu", block_seconds=1)
    whole = e._run_embeddings(audio)  # the graph on the whole clips, whatever their length
    blocked = [_streamed(e, row, 1) for row in audio]  # blocks of one chunk, fed in pieces of 1 s
    for i, b in enumerate(blocked):
        assert b.timestamp_embeddings.shape == whole.timestamp_embeddings[i].shape
        assert max_abs(b.timestamp_embeddings, whole.timestamp_embeddings[i]) <= 1e-5
        np.testing.assert_array_equal(b.timestamps, whole.timestamps[i])
        assert max_abs(b.scene_embeddings, whole.scene_embeddings[i]) <= 1e-5


def _streamed(embedder, clip, seconds):
    s = embedder.stream()
    for start in range(0, len(clip), 16000 * seconds):
        s.feed(clip[start : start + 16000 * seconds])
    return s.finish()


def test_embed_takes_the_block_path_past_block_seconds(random_exported, monkeypatch):
    from kwmlp.runtime import Embedder

    e = Embedder(random_exported(), block_seconds=2)
    calls = []
    monkeypatch.setattr(e, "_embed_blocks", lambda clip: calls.append(len(clip)) or Embedder._embed_blocks(e, clip))
    e.embed(np.zeros((1, 32000), np.float32))
    assert calls == []
    e.embed(np.zeros((1, 32001), np.float32))
    assert calls == [32001]


def test_long_clips_need_only_the_embedding_graph(random_exported, tmp_path):
    import os
    import shutil

    from kwmlp.artifact import keywords_path_for
    from kwmlp.runtime import Embedder

    src = random_exported()
    path = str(tmp_path / "alone.onnx")
    shutil.copyfile(src, path)  # no alone.keywords.onnx beside it
    assert not os.path.exists(keywords_path_for(path))
    audio = np.random.default_rng(65).uniform(-0.5, 0.5, 16000 * 65 + 321).astype(np.float32)
    r = Embedder(path, backend="onnxruntime-cpu").embed(audio)  # 65 s > 64 s: block by block
    whole = Embedder(src, backend="onnxruntime-cpu", block_seconds=70).embed(audio)
    assert max_abs(r.timestamp_embeddings, whole.timestamp_embeddings) <= 1e-5
    assert max_abs(r.scene_embeddings, whole.scene_embeddings) <= 1e-5


def test_stream_in_odd_pieces(random_exported):
    from kwmlp.runtime import Embedder

    e = Embedder(random_exported(), block_seconds=2)
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 5 + 777).astype(np.float32)
    s = e.stream()
    for piece in np.split(audio, [1, 5000, 5001, 40000, 70000]):
        s.feed(piece)
    r = s.finish()
    whole = e._run_embeddings(audio[None])[0]  # the graph on the whole clip, not the block path
    assert max_abs(r.timestamp_embeddings, whole.timestamp_embeddings) <= 1e-5
    assert max_abs(r.scene_embeddings, whole.scene_embeddings) <= 1e-5


def test_clip_longer_than_graph_goes_by_blocks(random_exported, random_checkpoint):
    from kwmlp.models import HearReference, load_checkpoint
    from kwmlp.runtime import Embedder

    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (1, 16000 * 6)).astype(np.float32)
    e = Embedder(random_exported(max_seconds=2.0))  # the graph's scene covers 2 s only
    r = e.embed(audio)
    ref = HearReference(load_checkpoint(random_checkpoint))(torch.from_numpy(audio))
    assert np.isfinite(r.scene_embeddings).all()
    assert max_abs(r.scene_embeddings, ref.scene_embeddings) <= 1e-3
    assert max_abs(r.timestamp_embeddings, ref.timestamp_embeddings) <= 1e-3


@pytest.mark.parametrize("seconds", [1, 2, 63, 600, 3600])
@pytest.mark.parametrize("algorithm", ["iterative", "single", "mean"])
def test_numpy_scene_equals_pytorch(seconds, algorithm):
    from kwmlp.models import hear
    from kwmlp.runtime.scene import scene

    full = np.random.default_rng(seconds).standard_normal((100 * seconds - 2, 64)).astype(np.float32)
    expected = getattr(hear, f"scene_{algorithm}")(torch.from_numpy(full)[None]).numpy()[0]
    np.testing.assert_allclose(scene(full, algorithm), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("length", [16000 * 3 + 15919, 16000 * 3 - 80, 63919])
def test_no_call_exceeds_the_runners_longest_input(random_exported, length):
    # a TensorRT engine whose profiles take 3 s: every block, the last included, must fit
    from kwmlp.runtime import Embedder

    e = Embedder(random_exported(), backend="onnxruntime-cpu", threads=1)  # the runner itself, not chunks over cores
    e._runner.max_samples = 48000
    run, seen = e._runner.run, []
    e._runner.run = lambda feeds: seen.append(feeds["audio"].shape[1]) or run(feeds)
    audio = np.random.default_rng(length).uniform(-0.5, 0.5, length).astype(np.float32)
    r = e.embed(audio)
    assert seen and max(seen) <= 48000
    whole = e._run_embeddings(audio[None])[0]
    assert max_abs(r.timestamp_embeddings, whole.timestamp_embeddings) <= 1e-5
    assert max_abs(r.scene_embeddings, whole.scene_embeddings) <= 1e-5


def test_a_runner_too_short_for_blocks_is_one_sentence(random_exported):
    from kwmlp.errors import KwmlpError
    from kwmlp.runtime import Embedder

    e = Embedder(random_exported(), backend="onnxruntime-cpu", threads=1)
    e._runner.max_samples = 24000
    with pytest.raises(KwmlpError, match="takes at most 1.5 s per call"):
        e.embed(np.zeros(30000, np.float32))


def test_block_seconds_never_passes_the_graphs_scene_range(random_exported, random_checkpoint):
    from kwmlp.models import HearReference, load_checkpoint
    from kwmlp.runtime import Embedder

    audio = np.random.default_rng(6).uniform(-0.5, 0.5, (1, 16000 * 6)).astype(np.float32)
    r = Embedder(random_exported(max_seconds=2.0), block_seconds=10).embed(audio)  # the graph covers 2 s
    ref = HearReference(load_checkpoint(random_checkpoint))(torch.from_numpy(audio))
    assert np.isfinite(r.scene_embeddings).all()
    assert max_abs(r.scene_embeddings, ref.scene_embeddings) <= 1e-3


def test_threads_open_one_keyword_runner(random_exported, monkeypatch):
    import threading
    import time

    from kwmlp.runtime import Embedder

    e = Embedder(random_exported(), backend="onnxruntime-cpu", threads=1)
    opened, real = [], e._opened.open_keywords

    def slow(info):
        time.sleep(0.2)
        opened.append(1)
        return real(info)

    monkeypatch.setattr(e._opened, "open_keywords", slow)
    threads = [threading.Thread(target=e.keyword_logits, args=(np.zeros((1, 16000), np.float32),)) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(opened) == 1
