"""The PyTorch reference against the original HEAR kwmlp package's outputs (max abs error <= 1e-4)."""

import numpy as np
import pytest

from conftest import REFERENCE_CASES, load_case, max_abs

torch = pytest.importorskip("torch")

TOL = 1e-4


@pytest.fixture(scope="module")
def reference(checkpoint):
    from kwmlp.models import load_checkpoint

    return load_checkpoint(checkpoint)


@pytest.mark.parametrize("case", REFERENCE_CASES)
def test_pytorch_reference_matches_hear(reference, case):
    from kwmlp.models import HearReference
    from kwmlp.models.hear import compensate, pad_and_chunk, scene_mean, scene_single

    z = load_case(case)
    audio = torch.from_numpy(z["audio"])
    model = HearReference(reference)
    out = model(audio)
    assert max_abs(out.timestamp_embeddings, z["timestamp_embeddings"]) <= TOL
    assert np.array_equal(out.timestamps.numpy(), z["timestamps"])
    assert max_abs(out.scene_embeddings, z["scene_embeddings"]) <= TOL
    assert max_abs(out.full_embeddings, z["full_timestamp_embeddings"]) <= TOL
    assert max_abs(scene_single(out.full_embeddings), z["scene_single"]) <= TOL
    assert max_abs(scene_mean(out.full_embeddings), z["scene_group_mean"]) <= TOL
    chunks = pad_and_chunk(audio)
    with torch.no_grad():
        mfcc = model.mfcc(chunks)
        # MFCC values are in the hundreds (dB scale): compare relative to their range
        assert max_abs(mfcc, z["mfcc"]) <= 2e-6 * float(np.abs(z["mfcc"]).max()) + 1e-4
        assert max_abs(model.keyword_logits(chunks), z["chunk_logits"]) <= TOL
        for depth in (4, 8):
            frames = reference.embed(mfcc, depth)
            assert max_abs(compensate(frames, audio.shape[0]), z[f"full_timestamp_embeddings_depth{depth}"]) <= TOL


def test_reference_cases_are_found(checkpoint):
    # with the trained weights at hand, missing parity vectors must fail, not skip every parity test
    from conftest import REFERENCE_DIR

    assert len(REFERENCE_CASES) == 10, f"expected the 10 parity cases in {REFERENCE_DIR}"


def test_pytorch_reference_takes_one_clip_without_batch_axis(reference):
    from kwmlp.errors import KwmlpError
    from kwmlp.models import HearReference

    audio = torch.from_numpy(load_case(REFERENCE_CASES[0])["audio"])
    model = HearReference(reference)
    batched, single = model(audio), model(audio[-1])
    for name in ("timestamp_embeddings", "timestamps", "scene_embeddings", "full_embeddings"):
        # not bit-equal: a batch of one takes other matmul paths
        assert max_abs(getattr(single, name), getattr(batched, name)[-1]) <= 1e-5, name
    with pytest.raises(KwmlpError, match=r"audio must have shape \(batch, samples\) or \(samples,\), got \(1, "):
        model(audio[None])
