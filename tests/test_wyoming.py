"""`kwmlp wyoming`: a real server process driven by the wyoming package's own client (as
wyoming-openwakeword's tests do), over a unix socket in tmp_path and TCP on 127.0.0.1."""

import asyncio
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import soxr

from conftest import keyword_sentence

pytest.importorskip("wyoming")
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncClient  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.wake import Detect, Detection, NotDetected  # noqa: E402

from kwmlp.runtime import KEYWORDS  # noqa: E402

WORDS = ["yes", "stop", "seven", "left", "go"]
TIMEOUT = 20  # seconds for a server to answer


def start_server(model, uri, *options):
    return subprocess.Popen([sys.executable, "-m", "kwmlp", "wyoming", model, "--uri", uri, *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def connect(uri, server):
    """A connected client, once the server process accepts connections."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        client = AsyncClient.from_uri(uri)
        try:
            await client.connect()
            return client
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start: {server.stderr.read().decode()}")
            await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def speech():
    return keyword_sentence(WORDS)


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    uri = f"unix://{tmp_path_factory.mktemp('wyoming') / 'kwmlp.sock'}"
    proc = start_server(exported(), uri, "--threshold", "0.8")
    yield uri, proc
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(TIMEOUT) == 0


def as_pcm(speech, rate, channels):
    """16-bit PCM bytes of ``speech`` at ``rate`` Hz over ``channels`` (all channels alike)."""
    x = speech if rate == 16000 else soxr.resample(speech, 16000, rate, quality="HQ")
    x = np.round(np.clip(x, -1, 1) * 32767).astype("<i2")
    return np.repeat(x[:, None], channels, axis=1).tobytes(), rate, channels


async def stream(client, audio, names=None):
    """One detect + audio stream; the events the server answers with, up to not-detected or the last detection."""
    pcm, rate, channels = audio
    await client.write_event(Detect(names=names).event())
    await client.write_event(AudioStart(rate=rate, width=2, channels=channels).event())
    step = 1024 * 2 * channels
    for i in range(0, len(pcm), step):
        await client.write_event(AudioChunk(rate=rate, width=2, channels=channels, audio=pcm[i : i + step]).event())
        await asyncio.sleep(0)
    await client.write_event(AudioStop().event())
    await client.write_event(Describe().event())  # its info marks the end of what the stream caused
    events = []
    while True:
        event = await asyncio.wait_for(client.read_event(), TIMEOUT)
        assert event is not None
        if Info.is_type(event.type):
            return events
        events.append(event)


def detections(events):
    assert all(Detection.is_type(e.type) for e in events), [e.type for e in events]
    return [(d.name, d.timestamp) for d in map(Detection.from_event, events)]


def run(coroutine):
    return asyncio.run(coroutine)


def test_describe(server):
    async def go():
        client = await connect(server[0], server[1])
        await client.write_event(Describe().event())
        info = Info.from_event(await asyncio.wait_for(client.read_event(), TIMEOUT))
        await client.disconnect()
        return info

    [program] = run(go()).wake
    assert program.name == "kwmlp" and [m.name for m in program.models] == list(KEYWORDS)
    assert all(m.phrase == m.name and m.languages == ["en"] for m in program.models)


@pytest.mark.parametrize("rate,channels", [(16000, 1), (48000, 2)])
def test_positive_and_negative_streams(server, speech, rate, channels):
    async def go():
        client = await connect(server[0], server[1])
        found = detections(await stream(client, as_pcm(speech, rate, channels)))
        absent = await stream(client, as_pcm(speech, rate, channels), names=["marvin", "sheila"])
        await client.disconnect()
        return found, absent

    found, absent = run(go())
    assert [name for name, _ in found] == ["yes", "stop", "seven", "left", "go"]
    # the timestamp is the end of the deciding window, ms from audio-start: within each word's second
    starts = np.cumsum([0] + [len(keyword_sentence([w], 8000)) / 16 for w in WORDS[:-1]])
    assert all(s <= t <= s + 2000 for (_, t), s in zip(found, starts))
    assert [e.type for e in absent] == [NotDetected().event().type]


def test_two_clients_at_once(server, speech):
    async def one(words):
        client = await connect(server[0], server[1])
        out = detections(await stream(client, as_pcm(speech, 48000, 1), names=words))
        await client.disconnect()
        return out

    async def both():
        return await asyncio.gather(one(["yes", "left"]), one(["stop", "go"]))

    first, second = run(both())
    assert [n for n, _ in first] == ["yes", "left"] and [n for n, _ in second] == ["stop", "go"]


def test_tcp_keyword_subset_and_sigterm(exported):
    with socket.socket() as s:  # a free port on the loopback interface
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"tcp://127.0.0.1:{port}"
    proc = start_server(exported(), uri, "--keywords", "yes,no,stop")

    async def go():
        client = await connect(uri, proc)
        await client.write_event(Describe().event())
        info = Info.from_event(await asyncio.wait_for(client.read_event(), TIMEOUT))
        await client.disconnect()
        return info

    try:
        assert [m.name for m in run(go()).wake[0].models] == ["yes", "no", "stop"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code, err = proc.wait(TIMEOUT), proc.stderr.read().decode()
    assert code == 0 and "Traceback" not in err


@pytest.mark.parametrize("uri", ["http://x", "tcp://0.0.0.0:abc", "tcp://0.0.0.0:99999", "tcp://[::1"])
def test_bad_uri_is_one_line(exported, uri):
    r = subprocess.run([sys.executable, "-m", "kwmlp", "wyoming", exported(), "--uri", uri],
                       capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().endswith(f"got {uri}") and "Traceback" not in r.stderr


def test_stdio(exported, speech):
    """stdio://: events over the process's standard input and output, as wyoming-openwakeword's tests drive it."""
    from wyoming.event import async_read_event, async_write_event

    async def go():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "kwmlp", "wyoming", exported(), "--uri", "stdio://", "--keywords", "yes,stop",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        pcm, rate, channels = as_pcm(speech[: 16000 * 3], 22050, 1)
        events = [AudioStart(rate=rate, width=2, channels=channels).event(),
                  AudioChunk(rate=rate, width=2, channels=channels, audio=pcm).event(), AudioStop().event()]
        for event in events:
            await async_write_event(event, proc.stdin)
        names = []
        while len(names) < 2:
            event = await asyncio.wait_for(async_read_event(proc.stdout), TIMEOUT)
            assert event is not None and Detection.is_type(event.type)
            names.append(Detection.from_event(event).name)
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), TIMEOUT) == 0  # the end of its input ends it
        return names

    assert run(go()) == ["yes", "stop"]


def test_without_wyoming_one_line(exported, monkeypatch, capsys):
    from kwmlp.apps.cli import main

    monkeypatch.setitem(sys.modules, "wyoming", None)  # import fails
    assert main(["wyoming", exported()]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and ".[wyoming]" in err
