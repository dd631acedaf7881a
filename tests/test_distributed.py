"""Corpus embedding on a local Ray cluster equals the single-process CLI; broken files become error rows."""

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
sf = pytest.importorskip("soundfile")

from kwmlp.apps.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    (root / "sub").mkdir()
    sf.write(root / "a.wav", rng.uniform(-0.3, 0.3, 16000 * 3).astype(np.float32), 16000)
    sf.write(root / "b.flac", rng.uniform(-0.3, 0.3, (22050 * 2, 2)).astype(np.float32), 22050)
    sf.write(root / "sub" / "c.ogg", rng.uniform(-0.3, 0.3, 48000).astype(np.float32), 48000)
    sf.write(root / "sub" / "d.wav", rng.uniform(-0.3, 0.3, 5000).astype(np.float32), 16000, subtype="PCM_16")
    (root / "broken.wav").write_bytes(b"RIFF this is not a wav file")
    (root / "empty.wav").write_bytes(b"")
    return root


GOOD = ["a", "b", "sub/c", "sub/d"]
BROKEN = ["broken.wav", "empty.wav"]


@pytest.fixture(scope="module")
def local_outputs(random_exported, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    assert main(["embed", random_exported(), str(corpus), "-o", str(out), "-q"]) == 1  # two broken files
    return out


def test_ray_npz_tree_equals_local_cli(local_ray, random_exported, corpus, local_outputs, tmp_path, capsys):
    out = tmp_path / "ray"
    assert main(["embed", random_exported(), str(corpus), "-o", str(out), "--ray", "--actors", "1",
                 "--batch-size", "3"]) == 1
    err = capsys.readouterr().err
    for name in BROKEN:
        assert f"{corpus / name}: cannot read audio" in err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.npz")) == sorted(f"{g}.npz" for g in GOOD)
    for g in GOOD:
        with np.load(out / f"{g}.npz") as r, np.load(local_outputs / f"{g}.npz") as l:
            assert set(r.files) == set(l.files)
            assert str(r["provenance"]) == str(l["provenance"])  # same source, same model
            for k in set(l.files) - {"provenance"}:
                np.testing.assert_allclose(r[k], l[k], rtol=0, atol=1e-5, err_msg=f"{g}: {k}")


def test_ray_parquet_rows(local_ray, random_exported, corpus, local_outputs, tmp_path):
    import pyarrow.parquet as pq

    from kwmlp.apps.distributed import CorpusOptions, embed_corpus

    out = tmp_path / "pq"
    # two actors on the fixture's 2 CPUs: they must leave room for the decoding and writing tasks
    options = CorpusOptions(fmt="parquet", batch_size=2, actors=2)
    outcomes = embed_corpus(random_exported(), [str(corpus)], str(out), options)
    assert {o.job.path for o in outcomes if o.error} == {str(corpus / b) for b in BROKEN}
    rows = {r["path"]: r for r in pq.read_table(out).to_pylist()}
    assert len(rows) == len(GOOD) + len(BROKEN)
    for b in BROKEN:
        row = rows[str(corpus / b)]
        assert "cannot read audio" in row["error"] and row["scene_embedding"] is None
    for g, ext in zip(GOOD, ["wav", "flac", "ogg", "wav"]):
        row = rows[str(corpus / f"{g}.{ext}")]
        assert row["error"] is None
        with np.load(local_outputs / f"{g}.npz") as l:
            np.testing.assert_allclose(np.array(row["scene_embedding"], np.float32), l["scene_embedding"], atol=1e-5)
            ts = np.array(row["timestamp_embeddings"], np.float32).reshape(-1, 64)
            np.testing.assert_allclose(ts, l["timestamp_embeddings"], atol=1e-5)
            np.testing.assert_array_equal(np.array(row["timestamps"], np.float32), l["timestamps"])
            assert row["duration_s"] == pytest.approx(float(l["duration_s"]))
    from kwmlp.errors import KwmlpError

    with pytest.raises(KwmlpError, match="already holds Parquet files"):  # never mixed with an earlier run
        embed_corpus(random_exported(), [str(corpus)], str(out), CorpusOptions(fmt="parquet"))


def test_parquet_needs_ray(random_exported, corpus, tmp_path, capsys):
    assert main(["embed", random_exported(), str(corpus), "-o", str(tmp_path), "--format", "parquet"]) == 1
    assert "--format parquet needs --ray" in capsys.readouterr().err
