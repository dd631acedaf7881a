"""`kwmlp listen`: --raw equals `kwmlp spot --mode multi`; standard input as raw PCM or WAV; the
microphone path with an injected sounddevice; Ctrl-C and a missing extra."""

import argparse
import io
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf
import soxr

from conftest import keyword_sentence
from kwmlp.apps.cli import main
from kwmlp.apps.commands import listen

WORDS = ["yes", "stop", "seven", "left", "go"]


@pytest.fixture(scope="module")
def speech():
    return keyword_sentence(WORDS)


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_same(rows, detections, atol=1.001e-3):  # confidences are shown with 3 digits: one unit of the last
    assert len(detections) >= len(WORDS) - 1  # the words are found: the comparison means something
    assert [(r["label"], r["start_s"], r["end_s"]) for r in rows] == [
        (d["label"], d["start_s"], d["end_s"]) for d in detections]
    assert all(abs(r["confidence"] - d["confidence"]) <= atol for r, d in zip(rows, detections))


def spot_json(model, path, options, capsys):
    assert main(["spot", model, str(path), "--mode", "multi", "--json", *options]) == 0
    [row] = json.loads(capsys.readouterr().out)
    return row["detections"]


def test_raw_equals_spot_multi(exported, speech, tmp_path, capsys):
    path = tmp_path / "speech.flac"
    stereo = np.stack([speech * 0.5, speech * 1.5], axis=1)
    sf.write(path, soxr.resample(stereo, 16000, 44100), 44100, subtype="PCM_24")
    options = ["--window", "0.9", "--hop", "0.15", "--threshold", "0.6"]
    want = spot_json(exported(), path, options, capsys)
    assert main(["listen", exported(), str(path), "--raw", "--json", *options]) == 0
    assert_same(json_lines(capsys.readouterr().out), want)


def test_standard_input_raw_and_wav(exported, speech, tmp_path, capsys):
    path = tmp_path / "speech.wav"
    sf.write(path, speech, 16000, subtype="FLOAT")
    want = spot_json(exported(), path, ["--hop", "0.1", "--threshold", "0.5"], capsys)
    pcm48 = (soxr.resample(speech, 16000, 48000) * 32767).astype("<i2")
    raw = np.repeat(pcm48[:, None], 2, axis=1).tobytes()  # 48 kHz stereo s16le, no header
    wav = path.read_bytes()  # a RIFF header saying 32-bit float, 16 kHz, mono
    for data, extra, atol in [(raw, ["--rate", "48000", "--channels", "2"], 0.02), (wav, [], 1.001e-3)]:
        r = subprocess.run([sys.executable, "-m", "kwmlp", "listen", exported(), "-", "--raw", "--json",
                            "--threshold", "0.5", *extra], input=data, capture_output=True)
        assert r.returncode == 0, r.stderr.decode()
        rows = json_lines(r.stdout.decode())
        if atol > 0.01:  # resampled twice and quantised: the same words at the same times
            assert {r["label"] for r in rows} == {d["label"] for d in want}
        else:
            assert_same(rows, want, atol)


class FakeInputStream:
    """sounddevice.InputStream that plays ``audio`` through the callback in 80 ms blocks from a thread,
    then goes inactive (as a real stream does when its callback stops); ``interrupt_after`` blocks
    raise KeyboardInterrupt instead, as Ctrl-C would."""

    audio = None
    interrupt_after = None
    opened = []

    def __init__(self, samplerate, channels, dtype, device, callback):
        assert dtype == "float32"
        self.samplerate, self.channels, self.callback = samplerate, channels, callback
        self.device = device
        self._done = threading.Event()
        self.checks = 0
        FakeInputStream.opened.append(self)

    def __enter__(self):
        x = np.repeat(self.audio[:, None], self.channels, axis=1).astype(np.float32)

        def play():
            for i in range(0, len(x), 1280):
                self.callback(x[i : i + 1280], len(x[i : i + 1280]), None, None)
            self._done.set()

        threading.Thread(target=play).start()
        return self

    def __exit__(self, *exc):
        self._done.wait()

    @property
    def active(self):
        self.checks += 1
        if self.interrupt_after is not None and self.checks > self.interrupt_after:
            raise KeyboardInterrupt
        return not self._done.is_set()


class FakeSounddevice:
    InputStream = FakeInputStream

    @staticmethod
    def query_devices(device=None, kind=None):
        return {"name": "fake microphone"} if kind else "0 fake microphone, ALSA (1 in, 0 out)"


@pytest.fixture
def microphone(monkeypatch):
    FakeInputStream.opened.clear()
    FakeInputStream.interrupt_after = None
    monkeypatch.setattr(listen, "_sounddevice", lambda: FakeSounddevice)
    return FakeInputStream


def test_microphone(exported, speech, tmp_path, microphone, capsys):
    microphone.audio = soxr.resample(speech, 16000, 48000)
    path = tmp_path / "heard.wav"  # what the microphone delivers, as a file
    sf.write(path, microphone.audio, 48000, subtype="FLOAT")
    want = spot_json(exported(), path, ["--hop", "0.1", "--threshold", "0.5"], capsys)
    assert main(["listen", exported(), "--rate", "48000", "--channels", "2", "--device", "0", "--raw", "--json",
                 "--threshold", "0.5"]) == 0
    [stream] = microphone.opened
    assert (stream.samplerate, stream.channels, stream.device) == (48000, 2, 0)
    assert_same(json_lines(capsys.readouterr().out), want)
    assert main(["listen", exported(), "--list-devices"]) == 0
    assert "fake microphone" in capsys.readouterr().out


def test_ctrl_c_stops_cleanly(exported, speech, microphone, capsys):
    microphone.audio = speech
    microphone.interrupt_after = 40  # about three seconds of audio, then Ctrl-C
    assert main(["listen", exported(), "--json", "--threshold", "0.5"]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and [r["label"] for r in json_lines(captured.out)][:1] == ["yes"]


def test_without_sounddevice_one_line(exported, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails
    assert main(["listen", exported()]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sounddevice" in err and ".[live]" in err


@pytest.mark.parametrize("args,match", [
    (["--keywords", "yes,hello"], "unknown keyword"), (["--smooth", "0"], "smooth"), (["--threads", "0"], "threads"),
])
def test_bad_options_are_one_line(exported, speech, args, match, tmp_path, capsys):
    path = tmp_path / "a.wav"
    sf.write(path, speech[:16000], 16000)
    assert main(["listen", exported(), str(path), *args]) == 1
    assert match in capsys.readouterr().err


class NoStandardInput:
    """Standard input that fails the test when read: what must be said is said before any audio."""

    @property
    def buffer(self):
        raise AssertionError("standard input was read")

    def fileno(self):
        raise AssertionError("standard input was read")


@pytest.mark.parametrize("command", ["listen", "wyoming"])
@pytest.mark.parametrize("args,match", [
    (["--keywords", ","], "--keywords ',' names no keyword: give some, e.g. --keywords yes,no,stop, or leave it out "
                          "for all 35"),  # was: listen never fired, wyoming took all 35
    (["--refractory", "inf"], "refractory must be a finite number of seconds, at least 0, got inf"),
    (["--refractory", "nan"], "refractory must be a finite number of seconds, at least 0, got nan"),
    (["--window", "1e7"], "window must be at most 10 s (the keyword head hears the first second of each window), "
                          "got 10000000.0 s"),
    (["--smooth", "1000000000"], "smooth must be a whole number of windows from 1 to 1000, got 1000000000"),
], ids=["no-keyword", "refractory-inf", "refractory-nan", "window-1e7", "smooth-1e9"])
def test_detector_options_are_refused_in_one_sentence_before_any_audio(exported, command, args, match, monkeypatch,
                                                                        capsys):
    if command == "wyoming":
        pytest.importorskip("wyoming")
    monkeypatch.setattr(sys, "stdin", NoStandardInput())
    source = ["-"] if command == "listen" else ["--uri", "stdio://"]
    assert main([command, exported(), *source, *args]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"kwmlp {command}: error: {match}"


@pytest.mark.parametrize("source", [["-"], []], ids=["stdin", "microphone"])
def test_rate_is_refused_before_any_audio(exported, source, microphone, monkeypatch, capsys):
    """--rate 1 was accepted: 16000-fold upsampling, 1.16 GB, and Ctrl-C took 11 s."""
    monkeypatch.setattr(sys, "stdin", NoStandardInput())
    assert main(["listen", exported(), *source, "--rate", "1"]) == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        "kwmlp listen: error: rate must be 8000 to 384000 Hz (the rates of audio devices), got 1")
    assert microphone.opened == []


@pytest.mark.parametrize("keywords", [None, b"garbage"])
def test_a_missing_or_broken_keyword_graph_is_said_before_listening(exported, tmp_path, keywords, monkeypatch,
                                                                     capsys):
    """On silent standard input `kwmlp listen` ran no window, so it exited 0 without a word."""
    model = tmp_path / "kwmlp.onnx"
    shutil.copy(exported(), model)
    if keywords is not None:
        (tmp_path / "kwmlp.keywords.onnx").write_bytes(keywords)
    monkeypatch.setattr(sys, "stdin", NoStandardInput())
    assert main(["listen", str(model), "-"]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("kwmlp listen: error: ") and "kwmlp.keywords.onnx" in err
    assert ("is missing" if keywords is None else "could not be loaded as an ONNX model") in err


def test_options_on_either_side_of_the_source(exported, speech, tmp_path, monkeypatch, capsys):
    """`kwmlp listen MODEL --json FILE` was "unrecognized arguments: FILE" with the top-level usage."""
    path = tmp_path / "a.wav"
    sf.write(path, speech[: 16000 * 2], 16000, subtype="FLOAT")
    options = ["--raw", "--threshold", "0.5", "--keywords", "yes,no"]
    assert main(["listen", exported(), str(path), "--json", *options]) == 0
    want = json_lines(capsys.readouterr().out)
    assert [r["label"] for r in want][:1] == ["yes"]
    assert main(["listen", exported(), "--json", *options, str(path)]) == 0
    assert json_lines(capsys.readouterr().out) == want
    assert main(["listen", exported(), "--realtime", "--json", *options, str(path)]) == 0
    assert json_lines(capsys.readouterr().out) == want
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    assert main(["listen", exported(), "--json", *options, "-"]) == 0
    assert json_lines(capsys.readouterr().out) == want


def test_a_bad_sample_on_standard_input_is_zeroed_and_said_once(exported, speech, monkeypatch, capsys, caplog):
    """One Inf in `listen - --format f32le` ended the run and gave its index inside a read block."""
    x = speech[: 16000 * 2].copy()
    x[20000], x[20001], x[30000] = np.inf, np.nan, np.inf
    clean = x.copy()
    clean[[20000, 20001, 30000]] = 0.0
    outputs = []
    for audio in (x, clean):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(audio.astype("<f4").tobytes())))
        assert main(["listen", exported(), "-", "--format", "f32le", "--raw", "--json", "--threshold", "0.5"]) == 0
        outputs.append(json_lines(capsys.readouterr().out))
    assert outputs[0] == outputs[1] and outputs[0]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["live audio: the stream has a NaN, Inf or a sample beyond 1e+15 in magnitude at frame 20000 "
                        "(1.250 s at 16000 Hz); it and any later ones are replaced by 0 (said once per stream)"]


def test_realtime_says_real_time():
    help_text = listen.add_parser(argparse.ArgumentParser().add_subparsers()).format_help()
    assert "feed it in real time" in " ".join(help_text.split()) and "speed of sound" not in help_text
