"""Live audio: LiveSpotter equals offline spot(mode="multi") on the same audio, its detector options,
off-thread work, and LiveEmbeddings equal to embedding the whole clip."""

import queue
import threading
import time

import numpy as np
import pytest
import soxr

from conftest import keyword_sentence, max_abs
from kwmlp.errors import KwmlpError
from kwmlp.runtime import KEYWORDS, Embedder, LiveEmbeddings, LiveSpotter, spot
from kwmlp.runtime.keywords import softmax

WORDS = ["yes", "stop", "seven", "left", "no", "go"]
RAW = dict(smooth=1, trigger_level=1, refractory=0)


@pytest.fixture(scope="module")
def embedder(exported):
    # ONNX Runtime, whatever `auto` picks on this CPU: its sums do not depend on the input's shape,
    # so the 1e-5 equalities below test the live logic alone (OpenVINO's scene moves by ~1e-4)
    return Embedder(exported(), backend="onnxruntime-cpu", threads=1)


@pytest.fixture(scope="module")
def speech():
    return keyword_sentence(WORDS)


def feed_in_pieces(spotter, x, seed=0):
    """Blocks of random sizes, single samples among them, then close()."""
    rng, out, i = np.random.default_rng(seed), [], 0
    while i < len(x):
        n = 1 if rng.random() < 0.2 else int(rng.integers(2, 6000))
        out += spotter.feed(x[i : i + n])
        i += n
    return out + spotter.close()


def assert_same(got, want, atol=1e-5):
    assert [(d.label, d.start_s, d.end_s) for d in got] == [(d.label, d.start_s, d.end_s) for d in want]
    assert all(abs(a.confidence - b.confidence) <= atol for a, b in zip(got, want))


@pytest.mark.parametrize("window,hop", [(1.0, 0.1), (0.8, 0.08), (1.3, 0.25)])
def test_raw_detector_equals_spot_multi(embedder, speech, window, hop):
    want = spot(embedder, speech, window, hop, 0.5, "multi")
    got = feed_in_pieces(LiveSpotter(embedder, window, hop, 0.5, **RAW), speech)
    assert len(want) >= len(WORDS)  # the words are found, so the comparison means something
    assert_same(got, want)


def test_int16_and_other_rates_and_channels(embedder, speech):
    pcm = np.round(speech * 20000).astype(np.int16)
    want = spot(embedder, pcm / np.float32(32768), 1.0, 0.1, 0.5, "multi")
    assert_same(feed_in_pieces(LiveSpotter(embedder, threshold=0.5, **RAW), pcm, seed=1), want)
    loud = soxr.resample(speech, 16000, 48000, quality="HQ")
    stereo = np.stack([loud * 0.5, loud * 1.5], axis=1).astype(np.float32)  # mean = loud
    want = spot(embedder, soxr.resample(loud, 48000, 16000, quality="HQ"), 1.0, 0.1, 0.5, "multi")
    got = feed_in_pieces(LiveSpotter(embedder, threshold=0.5, rate=48000, channels=2, **RAW), stereo, seed=2)
    assert_same(got, want)


def test_short_stream_gets_one_padded_window(embedder, speech):
    x = speech[:9000]
    assert_same(feed_in_pieces(LiveSpotter(embedder, threshold=0.0, **RAW), x), spot(embedder, x, threshold=0.0))


class ScriptedLogits:
    """An embedder whose windows get prescribed winners (one label per call), to test the detector."""

    def __init__(self, labels, p=0.9):
        self.logits = []
        for label in labels:
            row = np.full(len(KEYWORDS), -10.0, np.float32)
            if label is not None:
                row[KEYWORDS.index(label)] = np.log(p / (1 - p)) + np.log(len(KEYWORDS) - 1) - 10.0
            self.logits.append(row)
        self.calls = 0

    def keyword_logits(self, windows):
        self.calls += 1
        return self.logits[self.calls - 1][None]


def detect(labels, **options):
    fake = ScriptedLogits(labels)
    spotter = LiveSpotter(fake, window=0.1, hop=0.1, threshold=0.5, **options)
    found = spotter.feed(np.zeros(1600 * len(labels), np.float32)) + spotter.close()
    assert fake.calls == len(labels)
    return [(d.label, round(d.start_s, 1)) for d in found]


def test_detector_options():
    words = ["yes", "yes", "yes", None, "no", "yes", "yes", None, None, "yes"]
    assert detect(words, **RAW) == [("yes", 0.0), ("yes", 0.1), ("yes", 0.2), ("no", 0.4), ("yes", 0.5),
                                     ("yes", 0.6), ("yes", 0.9)]
    assert detect(words, smooth=1, trigger_level=2, refractory=0) == [("yes", 0.1), ("yes", 0.2), ("yes", 0.6)]
    assert detect(words, smooth=1, trigger_level=1, refractory=0.35) == [("yes", 0.0), ("no", 0.4), ("yes", 0.5),
                                                                       ("yes", 0.9)]
    assert detect(words, smooth=1, trigger_level=1, refractory=0, keywords=["no"]) == [("no", 0.4)]
    # smoothing over 3: one lone window of a label is averaged away (0.9 / 3 < 0.5)
    assert detect([None, "yes", None, None, "no", "no"], smooth=3, trigger_level=1, refractory=0) == [("no", 0.5)]


def test_callback_runs_off_the_callers_thread_with_many_streams_on_one_embedder(embedder, speech):
    want = spot(embedder, speech, 1.0, 0.1, 0.5, "multi")
    results, threads = [], []

    def stream(seed):
        q, where = queue.Queue(), set()

        def collect(d):
            where.add(threading.current_thread().name)
            q.put(d)

        spotter = LiveSpotter(embedder, threshold=0.5, callback=collect, **RAW)
        assert feed_in_pieces(spotter, speech, seed) == []
        results.append((list(q.queue), where))

    for seed in range(3):
        threads.append(threading.Thread(target=stream, args=(seed,)))
        threads[-1].start()
    for t in threads:
        t.join()
    assert len(results) == 3
    for got, where in results:
        assert_same(got, want)
        assert where == {"kwmlp-live"}


@pytest.mark.parametrize("block", [1280, 16000 * 3 + 7])
def test_live_embeddings_equal_embed(embedder, speech, block):
    x = speech[: 16000 * 4 + 555]
    live = LiveEmbeddings(embedder)
    frames, times, arrived = [], [], []
    for i in range(0, len(x), block):
        f, t = live.feed(x[i : i + block])
        frames.append(f)
        times.append(t)
        arrived += [min(i + block, len(x))] * len(t)
    end = live.close()
    whole = embedder.embed(x)
    assert max_abs(np.concatenate(frames + [end.timestamp_embeddings]), whole.timestamp_embeddings) <= 1e-5
    np.testing.assert_array_equal(np.concatenate(times + [end.timestamps]), whole.timestamps)
    assert max_abs(end.scene_embeddings, whole.scene_embeddings) <= 1e-5
    # frames come out while the stream runs: at most a second and a bit after their own time
    assert len(arrived) > len(whole.timestamps) // 2
    assert all(a / 16 - t <= 2000 + block / 16 for a, t in zip(arrived, np.concatenate(times)))


@pytest.mark.parametrize("block,match", [
    (np.zeros(10, np.int32), "float32 or int16"),
    (np.zeros((10, 3), np.float32), r"shape \(samples,\) or \(samples, 1\)"),
    (["loud", "quiet"], "floating point"),
])
def test_bad_blocks(block, match):
    spotter = LiveSpotter(ScriptedLogits([]))
    with pytest.raises(KwmlpError, match=match):
        spotter.feed(block)


@pytest.mark.parametrize("options,match", [
    (dict(smooth=0), "^smooth must be a whole number of windows from 1 to 1000, got 0$"),
    (dict(smooth=10**9), "^smooth must be .* got 1000000000$"),  # was MemoryError: a (1e9, 35) history
    (dict(trigger_level=0), "^trigger_level must be a whole number of windows, at least 1, got 0$"),
    (dict(refractory=-1), "^refractory must be a finite number of seconds, at least 0, got -1$"),
    (dict(refractory=float("inf")), "^refractory must be a finite .* got inf$"),  # was OverflowError
    (dict(refractory=float("nan")), "^refractory must be a finite .* got nan$"),  # was ValueError
    (dict(window=1e7), r"^window must be at most 10 s .* got 10000000.0 s$"),  # was MemoryError (596 GiB)
    (dict(keywords=["yes", "hello"]), "^unknown keyword"),
    (dict(keywords=[]), "^keywords is empty, so nothing could fire"),  # was: never fires
    (dict(hop=0), "positive"),
    (dict(rate=0), r"^rate must be 8000 to 384000 Hz \(the rates of audio devices\), got 0$"),
    (dict(rate=1), "^rate must be 8000 to 384000 Hz"),  # was accepted: 16000-fold upsampling
    (dict(rate=10**6), "^rate must be 8000 to 384000 Hz"),
    (dict(channels=0), "^channels must be a whole number from 1 to 64, got 0$"),
])
def test_bad_options(options, match):
    with pytest.raises(KwmlpError, match=match):
        LiveSpotter(ScriptedLogits([]), **options)


def test_accuracy_scoring():
    from kwmlp.benchmarks.live_accuracy import score
    from kwmlp.runtime import Detection

    truth = [("yes", 1.0, 1.5), ("no", 3.0, 3.4)]
    found = [Detection("yes", 33, 0.9, 0.6, 1.6), Detection("yes", 33, 0.9, 0.7, 1.7),  # one occurrence, twice
             Detection("no", 18, 0.9, 0.6, 1.6),  # the wrong label there
             Detection("no", 18, 0.9, 3.4, 4.4)]  # touches the end only: no overlap
    assert score(found, truth) == (1, 2)


def test_a_reused_buffer_is_copied_before_it_waits(embedder, speech):
    """A sound card reuses its buffer; queued blocks and LiveEmbeddings' pending samples must not change."""
    want = spot(embedder, speech, 1.0, 0.1, 0.5, "multi")
    found, buf = [], np.zeros(1280, np.float32)
    spotter = LiveSpotter(embedder, threshold=0.5, callback=found.append, **RAW)
    live, whole = LiveEmbeddings(embedder), embedder.embed(speech[: 16000 * 3])
    frames = []
    for i in range(0, len(speech), len(buf)):
        n = len(speech[i : i + len(buf)])
        buf[:n] = speech[i : i + n]
        spotter.feed(buf[:n])
        if i < 16000 * 3:
            frames.append(live.feed(buf[: min(n, 16000 * 3 - i)])[0])
        buf[:] = 9.0  # the card writes the next block into the same memory
    spotter.close()
    assert_same(found, want)
    frames.append(live.close().timestamp_embeddings)
    assert max_abs(np.concatenate(frames), whole.timestamp_embeddings) <= 1e-5


def test_an_error_in_the_last_windows_reaches_close(embedder, speech):
    class Failing:
        def __getattr__(self, name):
            return getattr(embedder, name)

        def keyword_logits(self, windows):
            raise RuntimeError("inference failed")

    spotter = LiveSpotter(Failing(), callback=lambda d: None)
    spotter.feed(speech[:8000])  # half a window: it runs only when the stream is closed
    with pytest.raises(RuntimeError, match="inference failed"):
        spotter.close()


def test_a_buffer_that_is_not_an_array_is_copied(embedder):
    from kwmlp.runtime.live import _Pcm

    buf = np.zeros(1600, np.float32)
    x = _Pcm(16000, 1).convert(memoryview(buf))
    assert not np.shares_memory(x, buf)


class Recorder:
    """An embedder that keeps a copy of every window it is given and calls each one "yes" (p = 0.9)."""

    def __init__(self, delay=0.0):
        self.windows, self.delay = [], delay
        self.row = ScriptedLogits(["yes"]).logits[0][None]

    def keyword_logits(self, windows):
        self.windows.append(windows.copy())
        if self.delay:
            time.sleep(self.delay)  # hands the GIL to any other thread in the middle of a window
        return self.row


def test_a_bad_sample_is_zeroed_and_said_once_with_its_place_in_the_stream(caplog):
    """A live source does not end for one NaN or Inf: it becomes 0, and the one warning names the
    frame counted from the start of the stream (at the input's rate), not from the start of the block."""
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, (48000, 2)).astype(np.float32)  # one second at 48 kHz
    clean = stereo.copy()
    stereo[4810, 1], stereo[20000, 0], stereo[30000] = np.nan, np.inf, -1e30
    clean[4810, 1], clean[20000, 0], clean[30000] = 0.0, 0.0, 0.0
    got, want = Recorder(), Recorder()
    for fake, audio in ((got, stereo), (want, clean)):
        spotter = LiveSpotter(fake, hop=0.25, rate=48000, channels=2, **RAW)
        for i in range(0, len(audio), 4800):  # 0.1 s blocks: the first bad frame is the 10th of the second block
            spotter.feed(audio[i : i + 4800])
        spotter.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "at frame 4810 (0.100 s at 48000 Hz)" in warnings[0]
    assert "replaced by 0" in warnings[0]
    assert len(got.windows) == len(want.windows) > 0
    for a, b in zip(got.windows, want.windows):
        np.testing.assert_array_equal(a, b)


def test_live_embeddings_zero_a_bad_sample_too(embedder, speech, caplog):
    x = speech[:20000].copy()
    x[12345] = np.nan
    live = LiveEmbeddings(embedder)
    frames = [live.feed(x[:10000])[0], live.feed(x[10000:])[0], live.close().timestamp_embeddings]
    x[12345] = 0.0
    assert max_abs(np.concatenate(frames), embedder.embed(x).timestamp_embeddings) <= 1e-5
    assert ["at frame 12345 (0.772 s at 16000 Hz)" in r.getMessage() for r in caplog.records] == [True]


def test_refractory_is_measured_between_window_starts_to_the_sample():
    """A repeat exactly ``refractory`` after the window a label fired on fires; one hop sooner it does not."""
    # windows every 0.1 s; refractory 0.3 s is exactly three hops
    assert detect(["yes", None, "yes", "yes"], smooth=1, trigger_level=1, refractory=0.3) == [("yes", 0.0),
                                                                                              ("yes", 0.3)]
    assert detect(["yes", "yes", "yes", "yes", "yes"], smooth=1, trigger_level=1, refractory=0.2) == [
        ("yes", 0.0), ("yes", 0.2), ("yes", 0.4)]


def test_smoothing_is_the_mean_of_exactly_the_last_k_windows():
    """A detection's confidence is the mean of the last K windows' probabilities (of those seen at
    the start); over K - 1 or K + 1 windows other windows would fire, with other confidences."""
    p_yes = [0.2, 0.95, 0.9, 0.1, 0.97, 0.3, 0.99, 0.2]
    k = 3
    logits = []
    for p in p_yes:  # "yes" gets p, the other 34 share the rest
        row = np.full(len(KEYWORDS), np.log((1 - p) / (len(KEYWORDS) - 1)), np.float32)
        row[KEYWORDS.index("yes")] = np.log(p)
        logits.append(row)
    fake = ScriptedLogits([])
    fake.logits = logits
    spotter = LiveSpotter(fake, window=0.1, hop=0.1, threshold=0.5, smooth=k, trigger_level=1, refractory=0)
    found = spotter.feed(np.zeros(1600 * len(p_yes), np.float32)) + spotter.close()
    probs = [softmax(row[None])[0, KEYWORDS.index("yes")] for row in logits]
    want = {i: np.mean(probs[max(0, i - k + 1) : i + 1]) for i in range(len(p_yes))}
    want = {i: m for i, m in want.items() if m > 0.5}
    assert [round(d.start_s / 0.1) for d in found] == list(want) == [1, 2, 3, 4, 6]
    for d in found:
        assert d.confidence == pytest.approx(want[round(d.start_s / 0.1)], abs=1e-6)


def test_close_ends_the_worker_thread_when_the_callback_raised():
    def live_threads():
        return sum(t.name == "kwmlp-live" and t.is_alive() for t in threading.enumerate())

    before = live_threads()
    for _ in range(20):
        fired = threading.Event()

        def callback(d):
            fired.set()
            raise RuntimeError("callback failed")

        spotter = LiveSpotter(Recorder(), window=0.1, hop=0.1, threshold=0.5, callback=callback, **RAW)
        spotter.feed(np.zeros(1600, np.float32))
        assert fired.wait(30)
        with pytest.raises(RuntimeError, match="callback failed"):
            for _ in range(100_000):  # until the worker has recorded the error: then feed re-raises it
                spotter.feed(np.zeros(0, np.float32))
                time.sleep(0.001)
        with pytest.raises(RuntimeError, match="callback failed"):
            spotter.close()
    assert live_threads() == before


def test_feed_from_two_threads_takes_turns():
    """Two threads feeding one spotter: each block is taken whole, so the windows are every hop of
    the stream once, and every window is one of the values fed (never a mix of two blocks)."""
    fake = Recorder(delay=0.0005)
    spotter = LiveSpotter(fake, window=0.1, hop=0.05, threshold=0.5, **RAW)
    found, errors = [], []

    def feeder(value):
        try:
            for _ in range(40):
                found.extend(spotter.feed(np.full(1600, value, np.float32)))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=feeder, args=(v,)) for v in (0.25, -0.5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found += spotter.close()
    assert errors == []
    assert spotter.samples == 2 * 40 * 1600
    assert sorted(round(d.start_s / 0.05) for d in found) == list(range(2 * 40 * 2 - 1))
    for w in fake.windows:
        assert set(np.unique(w[0, :1600])) <= {0.25, -0.5}


def test_keywords_as_one_string_and_empty():
    words = ["yes", "no", "yes"]
    assert detect(words, keywords="yes", **RAW) == [("yes", 0.0), ("yes", 0.2)]  # was: unknown keyword(s) e, s, y
    with pytest.raises(KwmlpError, match="^keywords is empty"):
        LiveSpotter(ScriptedLogits([]), keywords=())


def test_closed_streams_say_so_and_close_twice_alike(embedder):
    spotter, live = LiveSpotter(embedder), LiveEmbeddings(embedder)
    spotter.feed(np.zeros(1600, np.float32))
    live.feed(np.zeros(1600, np.float32))
    assert isinstance(spotter.close(), list) and live.close() is not None
    assert spotter.close() == [] and live.close() is None  # a second close does nothing
    assert spotter.closed and live.closed
    for stream, name in ((spotter, "LiveSpotter"), (live, "LiveEmbeddings")):
        with pytest.raises(KwmlpError, match=f"^this {name} is closed: its stream has ended, start a new one$"):
            stream.feed(np.zeros(10, np.float32))
