"""``kwmlp embed``: files and folders to one output per input, broken files reported, resumable."""

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import max_abs
from kwmlp.apps import audio, pipeline
from kwmlp.apps.cli import main
from kwmlp.runtime import Embedder


def noise(rate, seconds, channels=1, seed=0):
    return np.random.default_rng(seed).uniform(-0.3, 0.3, (int(rate * seconds), channels)).astype(np.float32)


@pytest.fixture
def folder(tmp_path):
    """Good files of several formats, rates, lengths and channel counts, with broken ones among them."""
    d = tmp_path / "in"
    (d / "sub" / "deeper").mkdir(parents=True)
    sf.write(d / "a.wav", noise(16000, 1.2), 16000, subtype="PCM_16")
    sf.write(d / "b.flac", noise(44100, 1.7, 2, seed=1), 44100)
    sf.write(d / "sub" / "c.ogg", noise(22050, 3.1, 1, seed=2), 22050)
    sf.write(d / "sub" / "deeper" / "d.wav", noise(48000, 0.4, 6, seed=3), 48000, subtype="FLOAT")
    sf.write(d / "sub" / "e.wav", noise(16000, 1.0, seed=4), 16000, subtype="PCM_24")  # same chunk count as a.wav
    (d / "broken.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00garbage")
    (d / "empty.flac").write_bytes(b"")
    (d / "sub" / "text.mp3").write_text("not audio at all\n" * 20)
    sf.write(d / "sub" / "silent.wav", np.zeros((0, 1), np.float32), 16000)
    (d / "README.txt").write_text("ignored: not an audio file name")
    return d


GOOD = ["a", "b", "sub/c", "sub/deeper/d", "sub/e"]
BROKEN = ["broken.wav", "empty.flac", "sub/text.mp3", "sub/silent.wav"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "kwmlp", *map(str, args)], capture_output=True, text=True)


def test_folder_with_broken_files(random_exported, folder, tmp_path):
    out = tmp_path / "out"
    r = _cli("embed", random_exported(), folder, "-o", out, "--batch-size", "4")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    errors = [l for l in r.stderr.splitlines() if "error:" in l]
    assert len(errors) == len(BROKEN), r.stderr
    for name in BROKEN:
        assert sum(str(folder / name) in l for l in errors) == 1, (name, r.stderr)
    assert "embedded 5 of 9 files" in r.stdout and "4 failed" in r.stdout
    written = sorted(os.path.relpath(os.path.join(dp, f), out) for dp, _, fs in os.walk(out) for f in fs)
    assert written == sorted(f"{g}.npz" for g in GOOD)  # and no temporary file left behind

    e = Embedder(random_exported())
    for g, src in zip(GOOD, ["a.wav", "b.flac", "sub/c.ogg", "sub/deeper/d.wav", "sub/e.wav"]):
        with np.load(out / f"{g}.npz") as z:
            x = audio.load(folder / src)
            expected = e.embed(x)
            n = len(x) // 160
            assert z["timestamp_embeddings"].shape == (n, 64) and z["timestamps"].shape == (n,)
            assert z["scene_embedding"].shape == (1024,)
            assert max_abs(z["timestamp_embeddings"], expected.timestamp_embeddings) <= 1e-5
            assert max_abs(z["scene_embedding"], expected.scene_embeddings) <= 1e-5
            np.testing.assert_array_equal(z["timestamps"], np.arange(1, n + 1, dtype=np.float32) * 10)
            h = sf.info(folder / src)
            assert int(z["sample_rate_in"]) == h.samplerate
            assert abs(float(z["duration_s"]) - h.frames / h.samplerate) < 1e-9


def test_skip_existing_and_npy_format(random_exported, folder, tmp_path, capsys):
    out = tmp_path / "out"
    files = [folder / "a.wav", folder / "sub" / "c.ogg"]
    assert main(["embed", random_exported(), *map(str, files), "-o", str(out), "--format", "npy", "-q"]) == 0
    assert logging.getLogger("kwmlp").level == logging.NOTSET  # -q does not outlive the command
    fields = sorted(f + ".npy" for f in (*pipeline.FIELDS, pipeline.PROVENANCE))
    assert sorted(os.listdir(out / "a")) == fields and sorted(os.listdir(out / "c")) == fields
    marker = out / "a" / "scene_embedding.npy"
    np.save(marker, np.zeros(3))
    assert main(["embed", random_exported(), *map(str, files), "-o", str(out), "--format", "npy",
                 "--skip-existing"]) == 0
    summary = capsys.readouterr().out
    assert "embedded 0 of 2 files" in summary and "2 skipped" in summary
    assert np.load(marker).shape == (3,)  # left alone
    os.remove(out / "c" / "timestamps.npy")  # an interrupted folder is redone
    assert main(["embed", random_exported(), *map(str, files), "-o", str(out), "--format", "npy",
                 "--skip-existing", "-q"]) == 0
    assert (out / "c" / "timestamps.npy").is_file() and np.load(marker).shape == (3,)
    assert main(["embed", random_exported(), *map(str, files), "-o", str(out), "--format", "npy", "-q"]) == 0
    assert np.load(marker).shape == (1024,)  # without --skip-existing, outputs are rewritten


def test_long_file_streamed_in_blocks_equals_whole(random_exported, tmp_path, monkeypatch):
    path = tmp_path / "long.flac"
    sf.write(path, noise(44100, 9.3, 2, seed=7), 44100, subtype="PCM_24")
    monkeypatch.setattr(pipeline, "BATCH_MAX_SECONDS", 2.0)  # 9.3 s counts as long here
    e = Embedder(random_exported(), block_seconds=2)
    streams = []
    monkeypatch.setattr(e, "stream", lambda real=e.stream: streams.append(real()) or streams[-1])
    jobs = pipeline.plan([str(path)], str(tmp_path / "out"))
    [outcome] = pipeline.embed_files(e, jobs, block_seconds=0.7)
    assert outcome.error is None and len(streams) == 1 and streams[0].num_samples == len(audio.load(path))
    whole = Embedder(random_exported()).embed(audio.load(path))  # whole file, one graph run
    with np.load(jobs[0].output) as z:
        assert max_abs(z["timestamp_embeddings"], whole.timestamp_embeddings) <= 1e-5
        assert max_abs(z["scene_embedding"], whole.scene_embeddings) <= 1e-5


@pytest.mark.parametrize("pending", [None, 1.0])  # 1.0: partly filled batches run as soon as they hold 1 s
def test_batch_size_does_not_change_results(random_exported, folder, tmp_path, monkeypatch, pending):
    if pending:
        monkeypatch.setattr(pipeline, "PENDING_MAX_SECONDS", pending)
    outs = []
    for bs in (1, 16):
        out = tmp_path / f"out{bs}"
        main(["embed", random_exported(), str(folder), "-o", str(out), "--batch-size", str(bs), "-q"])
        outs.append(out)
    for g in GOOD:
        with np.load(outs[0] / f"{g}.npz") as a, np.load(outs[1] / f"{g}.npz") as b:
            assert max_abs(a["timestamp_embeddings"], b["timestamp_embeddings"]) <= 1e-5
            assert max_abs(a["scene_embedding"], b["scene_embedding"]) <= 1e-5


@pytest.mark.parametrize(
    "args,match",
    [
        (["/nonexistent-input"], "input /nonexistent-input does not exist"),
        (["--batch-size", "0", "IN"], "--batch-size must be at least 1"),
        (["IN/a.wav", "IN/sub/a.wav"], "would both be written to"),
    ],
)
def test_embed_user_errors_are_one_line(random_exported, folder, tmp_path, args, match):
    (folder / "sub" / "a.wav").write_bytes((folder / "a.wav").read_bytes())
    args = [a.replace("IN", str(folder)) for a in args]
    r = _cli("embed", random_exported(), *args, "-o", tmp_path / "out")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith("kwmlp: running")]
    assert len(lines) == 1 and match in lines[0], r.stderr


def test_decoding_runs_on_a_background_thread(random_exported, folder, tmp_path, monkeypatch):
    import threading

    threads = set()
    real = audio.read_blocks

    def spy(*a, **k):
        threads.add(threading.current_thread().name)
        yield from real(*a, **k)

    monkeypatch.setattr(audio, "read_blocks", spy)
    jobs = pipeline.plan([str(folder / "a.wav"), str(folder / "b.flac")], str(tmp_path / "out"))
    assert all(o.error is None for o in pipeline.embed_files(Embedder(random_exported()), jobs))
    assert threads == {"kwmlp-decode"}


def test_a_crash_in_the_decoder_is_raised_not_waited_for(random_exported, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(audio, "info", lambda path: 1 / 0)
    jobs = pipeline.plan([str(folder / "a.wav")], str(tmp_path / "out"))
    with pytest.raises(RuntimeError, match="decoding thread failed"):
        list(pipeline.embed_files(Embedder(random_exported()), jobs))


def test_embed_classify_spot_run_without_torch(random_exported, folder, tmp_path):
    code = (
        "import sys; sys.modules['torch'] = None; from kwmlp.apps.cli import main; "
        f"rc = [main(['embed', {random_exported()!r}, {str(folder / 'a.wav')!r}, '-o', {str(tmp_path)!r}, '-q']), "
        f"main(['classify', {random_exported()!r}, {str(folder / 'a.wav')!r}]), "
        f"main(['spot', {random_exported()!r}, {str(folder / 'b.flac')!r}, '--threshold', '0'])]; "
        "assert not any(m.startswith('torch') for m in sys.modules if sys.modules[m] is not None); sys.exit(max(rc))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.npz").is_file() and "b.flac" in r.stdout


def test_partly_filled_batches_are_bounded(monkeypatch):
    monkeypatch.setattr(pipeline, "PENDING_MAX_SECONDS", 3.0)
    monkeypatch.setattr(pipeline, "_finish", lambda item, r: pipeline.Outcome(item.job))
    calls = []

    class CountingEmbedder:
        def embed(self, clips):
            calls.append([len(c) for c in clips])
            return [None] * len(clips)

    b = pipeline._Batcher(CountingEmbedder(), batch_size=2)
    item = pipeline._Decoded(pipeline.Job("in.wav", "out.npz"))
    for n in (16000, 16500, 40000, 16000, 70000):
        list(b.add(item, np.zeros(n, np.float32)))
    # 2 clips of 2 chunks fill a batch; 40000 + 16000 samples pass 3 s pending; 70000 alone too
    assert calls == [[16000, 16500], [40000], [16000], [70000]] and b.pending == 0 and not b.groups
