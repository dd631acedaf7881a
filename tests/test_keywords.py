"""Keyword spotting on the trained head: classify one-second clips, spot keywords in long audio."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import KEYWORDS_DIR
from kwmlp.apps import audio
from kwmlp.apps.cli import main
from kwmlp.runtime import KEYWORDS, Detection, Embedder, classify, spot, spot_stream
from kwmlp.runtime.keywords import aggregate, merge, one_second

SENTENCE = ["yes", "stop", "seven", "left"]


def keyword_files():
    files = sorted(KEYWORDS_DIR.glob("*__*.wav"))
    if not files:
        pytest.skip(f"keyword clips not found in {KEYWORDS_DIR}")
    return files


@pytest.fixture(scope="module")
def embedder(exported):
    return Embedder(exported())


@pytest.fixture(scope="module")
def sentence(tmp_path_factory):
    """Four keywords (one voice) with 0.75 s of silence between them, as a 44.1 kHz stereo FLAC."""
    keyword_files()
    parts, where = [np.zeros(8000, np.float32)], []
    for word in SENTENCE:
        clip = audio.load(KEYWORDS_DIR / f"{word}__en-gb-x-rp_f1.wav")
        start = sum(map(len, parts))
        where.append((start / 16000, (start + len(clip)) / 16000))
        parts += [clip, np.zeros(12000, np.float32)]
    x = np.concatenate(parts)
    path = tmp_path_factory.mktemp("sentence") / "sentence.flac"
    stereo = np.stack([x * 0.5, x * 1.5], axis=1)  # mean = x
    sf.write(path, soxr.resample(stereo, 16000, 44100), 44100, subtype="PCM_24")
    return path, where


def test_accuracy_on_the_keyword_set(embedder):
    """The README of ../shared/keywords: the original model gets 90.5% top-1 (190/210), 98.1% top-5."""
    files = keyword_files()
    truth = [f.name.split("__")[0] for f in files]
    tops = classify(embedder, [audio.load(f) for f in files], top_k=5)
    top1 = sum(t[0][0] == w for t, w in zip(tops, truth))
    top5 = sum(w in [l for l, _ in t] for t, w in zip(tops, truth))
    print(f"keyword set: top-1 {top1}/{len(files)}, top-5 {top5}/{len(files)}")
    assert len(files) == 210
    assert top1 >= 190 - 1 and top5 >= 206 - 1  # the reference figure, within one clip
    [every] = classify(embedder, [audio.load(files[0])], top_k=35)
    assert sorted(l for l, _ in every) == sorted(KEYWORDS) and abs(sum(p for _, p in every) - 1) < 1e-4


def test_one_second_centres_short_clips_and_takes_the_loudest_second():
    x = np.arange(1, 6001, dtype=np.float32)
    y = one_second(x)
    assert y.shape == (16000,) and y[5000] == 1 and y[10999] == 6000 and y[:5000].sum() == 0 and y[11000:].sum() == 0
    long = np.zeros(50000, np.float32)
    long[30000:31000] = 1.0
    z = one_second(long)
    assert z.shape == (16000,) and z.sum() == 1000


def test_classify_cli(exported, tmp_path):
    files = keyword_files()[:3]
    (tmp_path / "bad.wav").write_text("no audio here")
    r = subprocess.run([sys.executable, "-m", "kwmlp", "classify", exported(), *map(str, files),
                        str(tmp_path / "bad.wav"), "--top-k", "2", "--json"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    rows = json.loads(r.stdout)
    assert sorted(row["file"] for row in rows) == sorted([*map(str, files), str(tmp_path / "bad.wav")])
    good = [row for row in rows if "top" in row]
    assert len(good) == 3 and all(len(row["top"]) == 2 and row["top"][0]["probability"] >= row["top"][1]["probability"]
                                  for row in good)
    expected = [t[0][0] for t in classify(Embedder(exported()), [audio.load(f) for f in files], top_k=1)]
    assert [row["top"][0]["label"] for row in good] == expected
    [bad] = [row for row in rows if "error" in row]
    assert "cannot read audio" in bad["error"] and f"{tmp_path / 'bad.wav'}" in r.stderr


def same(a: list[Detection], b: list[Detection]) -> bool:
    """Equal detections; ONNX Runtime's float sums may differ in the last bits with the batch size."""
    key = lambda d: (d.label, d.start_s, d.end_s, d.votes)
    return [key(d) for d in a] == [key(d) for d in b] and all(abs(x.confidence - y.confidence) < 1e-5
                                                              for x, y in zip(a, b))


def test_spot_finds_the_words_in_order(embedder, sentence):
    path, where = sentence
    x = audio.load(path)
    found = spot(embedder, x, window=1.0, hop=0.25, threshold=0.85, mode="multi")
    runs = [d.label for i, d in enumerate(found) if i == 0 or found[i - 1].label != d.label]
    assert runs == SENTENCE
    for d in found:  # every detection's window overlaps its own word (the model fires on onsets too)
        start, end = where[SENTENCE.index(d.label)]
        assert min(d.end_s, end) - max(d.start_s, start) > 0.1, (d, start, end)
        assert d.end_s - d.start_s == 1.0 and d.confidence > 0.85

    [best] = spot(embedder, x, mode="max")
    assert best == max(found, key=lambda d: d.confidence)
    merged = merge(found)
    assert [m.label for m in merged] == SENTENCE and sum(m.votes for m in merged) == len(found)
    [vote] = spot(embedder, x, mode="n_voting")
    counts = {w: sum(d.label == w for d in found) for w in SENTENCE}
    assert vote.label == max(counts, key=lambda w: (counts[w], -KEYWORDS.index(w))) and vote.votes == counts[vote.label]

    # windows batched or one by one, whole or in pieces: the same detections
    assert same(spot(embedder, x, batch_size=1), found)
    assert same(spot_stream(embedder, np.array_split(x, 13), batch_size=5), found)


def test_spot_cli_matches_python(exported, embedder, sentence):
    path, _ = sentence
    r = subprocess.run([sys.executable, "-m", "kwmlp", "spot", exported(), str(path), "--hop", "0.5", "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    [row] = json.loads(r.stdout)
    expected = spot(embedder, audio.load(path), hop=0.5)
    shown = [dataclasses.replace(d, confidence=round(d.confidence, 3)) for d in expected]  # JSON shows 3 digits
    assert same([Detection(**d) for d in row["detections"]], shown) and expected


def test_short_audio_gets_one_padded_window(embedder):
    clip = audio.load(keyword_files()[0])  # under one second
    [d] = spot(embedder, clip, window=1.0, threshold=0.0)
    assert (d.start_s, d.end_s) == (0.0, 1.0)
    assert spot(embedder, np.zeros(0, np.float32)) == []


def test_aggregate_modes():
    d = lambda label, conf, t: Detection(label, KEYWORDS.index(label), conf, t, t + 1)
    found = [d("yes", 0.9, 0), d("no", 0.95, 0.25), d("yes", 0.91, 0.5), d("no", 0.9, 3.0)]
    assert aggregate(found, "multi") == found
    assert aggregate(found, "max") == [found[1]]
    # a tie of two votes each: the earlier class in KEYWORDS wins ("no" < "yes"), as np.bincount().argmax()
    assert aggregate(found, "n_voting") == [Detection("no", KEYWORDS.index("no"), 0.95, 0.25, 4.0, votes=2)]
    assert aggregate([], "max") == []
    assert merge(found) == [Detection("yes", 33, 0.9, 0, 1), Detection("no", 18, 0.95, 0.25, 1.25),
                            Detection("yes", 33, 0.91, 0.5, 1.5), Detection("no", 18, 0.9, 3.0, 4.0)]
    runs = [d("yes", 0.9, 0), d("yes", 0.95, 0.25), d("yes", 0.91, 1.0), d("no", 0.9, 3.0), d("no", 0.99, 4.5)]
    assert merge(runs) == [Detection("yes", 33, 0.95, 0, 2.0, votes=3), Detection("no", 18, 0.9, 3.0, 4.0),
                           Detection("no", 18, 0.99, 4.5, 5.5)]


@pytest.mark.parametrize(
    "args,match",
    [
        (["--mode", "best"], "invalid choice"),
        (["--threshold", "1.5"], "threshold must be in [0, 1)"),
        (["--hop", "0"], "window and hop must be positive"),
        (["--mode", "max", "--merge"], "--merge joins the windows of --mode multi"),
    ],
)
def test_spot_user_errors(random_exported, args, match, tmp_path):
    r = subprocess.run([sys.executable, "-m", "kwmlp", "spot", random_exported(), "x.wav", *args],
                       capture_output=True, text=True)
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr and match in r.stderr, r.stderr


def test_classify_missing_model_is_one_line(tmp_path):
    clip = keyword_files()[0]
    r = subprocess.run([sys.executable, "-m", "kwmlp", "classify", str(tmp_path / "none.onnx"), str(clip)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"kwmlp classify: error: model file {tmp_path / 'none.onnx'} does not exist"


def test_one_window_reads_the_same_in_classify_spot_and_listen(exported, tmp_path, capsys):
    clip = audio.load(keyword_files()[0])
    second = np.zeros(16000, np.float32)  # exactly one second: classify's window is spot's and listen's
    second[(16000 - len(clip)) // 2 :][: len(clip)] = clip
    path = tmp_path / "one_second.wav"
    sf.write(path, second, 16000, subtype="FLOAT")
    shown = {}
    assert main(["classify", exported(), str(path), "--top-k", "1", "--json"]) == 0
    shown["classify"] = json.loads(capsys.readouterr().out)[0]["top"][0]["probability"]
    assert main(["spot", exported(), str(path), "--threshold", "0.1", "--json"]) == 0
    shown["spot"] = json.loads(capsys.readouterr().out)[0]["detections"][0]["confidence"]
    assert main(["listen", exported(), str(path), "--raw", "--threshold", "0.1", "--json"]) == 0
    shown["listen"] = json.loads(capsys.readouterr().out.splitlines()[0])["confidence"]
    assert len(set(shown.values())) == 1 and all(v == round(v, 3) for v in shown.values()), shown


def test_nothing_found_says_why(exported, embedder, tmp_path, capsys):
    x = np.random.default_rng(5).normal(0, 0.05, 40000).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    [b] = spot(embedder, x, threshold=0.0, mode="max")  # the most confident window, whatever its probability
    assert b.confidence < 0.85
    for mode in ("multi", "max", "n_voting"):
        assert main(["spot", exported(), str(path), "--mode", mode]) == 0
        assert capsys.readouterr().out == (f"{path}: no keyword: no window above 0.85 (best: {b.label!r} "
                                           f"{b.confidence:.3f} at {b.start_s:g}-{b.end_s:g} s)\n")
    assert main(["spot", exported(), str(path), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["detections"] == [] and row["threshold"] == 0.85
    assert row["best"] == {**dataclasses.asdict(b), "confidence": round(b.confidence, 3)}


def test_each_modes_default_threshold_is_one_fact(exported, embedder, monkeypatch, capsys):
    from kwmlp.runtime import keywords

    def near_miss():  # a clip whose best window is its own word, under the default threshold
        for f in keyword_files():
            scan = keywords.spot_scan(embedder, [audio.load(f)])
            if scan.best.label == f.name.split("__")[0] and 0.6 < scan.best.confidence < 0.85:
                return f, scan.best
        pytest.skip("no keyword clip scores between 0.6 and 0.85")

    path, best = near_miss()
    x = audio.load(path)
    monkeypatch.setitem(keywords.DEFAULT_THRESHOLDS, "max", 0.5)  # max's default, and only max's
    assert [d.label for d in spot(embedder, x, mode="max")] == [best.label]
    assert spot(embedder, x, mode="multi") == spot_stream(embedder, [x], mode="n_voting") == []
    assert main(["spot", exported(), str(path), "--mode", "max"]) == 0
    assert capsys.readouterr().out.split()[5:7] == [best.label, f"{best.confidence:.3f}"]
    assert main(["spot", exported(), str(path), "--mode", "multi"]) == 0
    assert "no keyword: no window above 0.85" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["spot", "--help"])
    assert "0.85 for multi, 0.5 for max, 0.85 for n_voting" in " ".join(capsys.readouterr().out.split())


def test_spot_accuracy_replays_spot(embedder):
    from kwmlp.benchmarks.spot_accuracy import answer, window_probabilities

    clips = [audio.load(f) for f in keyword_files()[::40]]
    x = np.concatenate([np.zeros(5000, np.float32), *clips, *clips, np.zeros(3000, np.float32)])  # > 5 s: windows move
    for audio_ in [*clips, x]:
        windows = window_probabilities(embedder, audio_)
        for mode in ("multi", "max", "n_voting"):
            for t in (0.3, 0.85):
                assert answer(windows, mode, t) == [d.label for d in spot(embedder, audio_, mode=mode, threshold=t)]
