"""`kwmlp wyoming`: a real server process driven by the wyoming package's own client (as
wyoming-openwakeword's tests do), over a unix socket in tmp_path and TCP on 127.0.0.1; and the
connection handler on its own, with a stub writer and stub spotters."""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soxr

from conftest import keyword_sentence

pytest.importorskip("wyoming")
from wyoming.audio import AudioChunk, AudioStart, AudioStop  # noqa: E402
from wyoming.client import AsyncClient  # noqa: E402
from wyoming.error import Error  # noqa: E402
from wyoming.event import Event, async_read_event  # noqa: E402
from wyoming.info import Describe, Info  # noqa: E402
from wyoming.wake import Detect, Detection, NotDetected  # noqa: E402

from kwmlp.runtime import KEYWORDS  # noqa: E402

WORDS = ["yes", "stop", "seven", "left", "go"]
TIMEOUT = 20  # seconds for a server to answer


def start_server(model, uri, *options, debug=False):
    return subprocess.Popen([sys.executable, "-m", "kwmlp", *["--debug"] * debug, "wyoming", model, "--uri", uri,
                             *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def connect(uri, server):
    """A connected client, once the server process accepts connections."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        client = AsyncClient.from_uri(uri)
        try:
            await asyncio.wait_for(client.connect(), TIMEOUT)
            return client
        except (OSError, asyncio.TimeoutError):
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start: {server.stderr.read().decode()}")
            await asyncio.sleep(0.1)


@pytest.fixture
def own_server(exported):
    """start_server for one test; a server the test did not stop (it failed first) is killed."""
    started = []

    def start(uri, *options, debug=False):
        started.append(start_server(exported(), uri, *options, debug=debug))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def speech():
    return keyword_sentence(WORDS)


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    uri = f"unix://{tmp_path_factory.mktemp('wyoming') / 'kwmlp.sock'}"
    proc = start_server(exported(), uri, "--threshold", "0.8")
    yield uri, proc
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def as_pcm(speech, rate, channels, width=2):
    """``(pcm, rate, channels, width)``: PCM bytes of ``speech`` at ``rate`` Hz over ``channels`` (all alike),
    ``width`` bytes per sample (1: unsigned 8-bit, 2 to 4: signed little-endian)."""
    x = speech if rate == 16000 else soxr.resample(speech, 16000, rate, quality="HQ")
    x = np.repeat(np.clip(x, -1, 1).astype(np.float64)[:, None], channels, axis=1)
    if width == 1:
        return (np.round(x * 127) + 128).astype(np.uint8).tobytes(), rate, channels, width
    ints = np.round(x * (2 ** (8 * width - 1) - 1)).astype("<i4")
    raw = ints.astype("<i2") if width == 2 else ints.view(np.uint8).reshape(*ints.shape, 4)[..., :width]
    return raw.tobytes(), rate, channels, width


async def stream(client, audio, names=None):
    """One detect + audio stream; the events the server answers with, up to not-detected or the last detection."""
    pcm, rate, channels, width = audio
    await client.write_event(Detect(names=names).event())
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = 1024 * width * channels
    for i in range(0, len(pcm), step):
        await client.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=pcm[i : i + step]).event())
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
        pcm, rate, channels, width = as_pcm(speech[: 16000 * 3], 22050, 1)
        events = [AudioStart(rate=rate, width=width, channels=channels).event(),
                  AudioChunk(rate=rate, width=width, channels=channels, audio=pcm).event(), AudioStop().event()]
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
    """One line that names the extra, and the command once."""
    from kwmlp.apps.cli import main

    monkeypatch.setitem(sys.modules, "wyoming", None)  # import fails
    assert main(["wyoming", exported()]) == 1
    assert capsys.readouterr().err.strip() == ("kwmlp wyoming: error: the Wyoming server needs wyoming, which is not "
                                               "installed; install it with: pip install -e '.[wyoming]'")


# --- the address: nothing of the user's is replaced, nothing is said before it is bound ---

def refused(model, uri, *options, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE):
    """The one line of a server that must refuse to start: exit 1, nothing served."""
    r = subprocess.run([sys.executable, "-m", "kwmlp", "wyoming", model, "--uri", uri, *options], stdin=stdin,
                       stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=TIMEOUT * 2)
    lines = [line for line in r.stderr.splitlines() if not line.startswith("kwmlp: running")]
    assert r.returncode == 1 and len(lines) == 1 and "serving" not in r.stderr, r.stderr
    return lines[0]


def describe(uri, server):
    async def go():
        client = await connect(uri, server)
        await client.write_event(Describe().event())
        event = await asyncio.wait_for(client.read_event(), TIMEOUT)
        await client.disconnect()
        return event

    return Info.is_type(run(go()).type)


def stop(proc):
    """SIGTERM; the exit code and stderr."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, err.decode()


def test_unix_path_that_is_not_a_socket_is_left_alone(exported, tmp_path):
    keep, folder = tmp_path / "keep", tmp_path / "folder"
    keep.write_text("keep")
    folder.mkdir()
    assert refused(exported(), f"unix://{keep}").endswith(
        f"cannot listen on {keep}: it is a file that is not a socket, which is left alone; remove it or choose "
        "another path")
    assert "it is a folder" in refused(exported(), f"unix://{folder}")
    assert keep.read_text() == "keep" and folder.is_dir()


def test_unix_uri_with_a_host_part_is_refused(exported, tmp_path):
    uri = f"unix://sockets{tmp_path}/x.sock"  # urlparse: host "sockets", path tmp_path/x.sock
    assert refused(exported(), uri).endswith(f"--uri unix://PATH takes a path without a host part: {uri} has the "
                                             "host part 'sockets'; write unix:///absolute/path or unix:relative/path")
    assert not (tmp_path / "x.sock").exists()


def test_unix_socket_in_use_is_refused_and_keeps_serving(exported, server):
    uri, first = server
    assert refused(exported(), uri).endswith("address already in use (another server accepts connections there)")
    assert describe(uri, first)  # the first server still answers on its socket


def test_stale_unix_socket_is_replaced_and_removed_on_stop(own_server, tmp_path):
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as s:  # bound, then closed: a socket file nothing listens on
        s.bind(str(path))
    proc = own_server(f"unix://{path}")
    assert describe(f"unix://{path}", proc)
    code, err = stop(proc)
    assert code == 0 and "Traceback" not in err and not path.exists()


def test_stop_removes_only_its_own_socket(own_server, tmp_path):
    path = tmp_path / "kwmlp.sock"
    proc = own_server(f"unix://{path}")
    assert describe(f"unix://{path}", proc)
    path.unlink()  # someone removed our socket and put their own file there
    path.write_text("theirs")
    code, err = stop(proc)
    assert code == 0 and "Traceback" not in err and path.read_text() == "theirs"


def test_tcp_port_in_use_is_one_line_before_serving(exported):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        uri = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        assert refused(exported(), uri).endswith(f"cannot listen on {uri}: Address already in use")


@pytest.mark.parametrize("uri", ["unix://", "stdio://x", "tcp://127.0.0.1:1?x=1"])
def test_more_bad_uris_are_one_line(exported, uri):
    assert refused(exported(), uri).endswith(f"got {uri}")


# --- the model and stdio:// are checked before serving ---

def test_missing_or_broken_keyword_graph_is_one_line_before_serving(exported, tmp_path):
    model = tmp_path / "kwmlp.onnx"
    shutil.copy(exported(), model)  # without the kwmlp.keywords.onnx beside it
    assert "kwmlp.keywords.onnx" in refused(str(model), "tcp://127.0.0.1:1")
    (tmp_path / "kwmlp.keywords.onnx").write_bytes(b"not an onnx graph")
    assert "kwmlp.keywords.onnx" in refused(str(model), "tcp://127.0.0.1:1")


@pytest.mark.parametrize("which", ["stdin", "stdout", "/dev/null"])
def test_stdio_needs_pipes(exported, tmp_path, which):
    events = tmp_path / "events"
    events.write_bytes(b"")
    with open(events, "rb") as f, open(tmp_path / "out", "wb") as out:
        streams = {"stdin": dict(stdin=f), "stdout": dict(stdin=subprocess.PIPE, stdout=out),
                   "/dev/null": dict(stdin=subprocess.DEVNULL)}[which]
        line = refused(exported(), "stdio://", **streams)
    kind = {"stdin": "standard input is a regular file", "stdout": "standard output is a regular file",
            "/dev/null": "standard input is a device that cannot be waited on"}[which]
    assert line == (f"kwmlp wyoming: error: --uri stdio:// talks to the program that runs kwmlp through pipes, and "
                    f"{kind}; run kwmlp from that program with pipes, or serve on tcp:// or unix://")


# --- audio of any channel count and sample width ---

LOUD_WORDS = ["off", "one", "two", "three", "four"]


@pytest.fixture(scope="module")
def loud():
    """Speech at 0.9 of full scale: summing two channels instead of averaging them clips it, and "four"
    is then found a hop early."""
    speech = keyword_sentence(LOUD_WORDS)
    return speech * np.float32(0.9 / np.abs(speech).max())


def streamed(server, audio, names=None):
    async def go():
        client = await connect(*server)
        events = await stream(client, audio, names)
        await client.disconnect()
        return events

    return run(go())


@pytest.mark.parametrize("channels", [2, 3, 4, 8])
def test_channels_are_averaged(server, loud, channels):
    mono = detections(streamed(server, as_pcm(loud, 16000, 1)))
    assert [name for name, _ in mono] == LOUD_WORDS
    assert detections(streamed(server, as_pcm(loud, 16000, channels))) == mono


@pytest.mark.parametrize("width", [1, 3, 4])
def test_sample_widths(server, loud, width):
    sixteen = detections(streamed(server, as_pcm(loud, 22050, 2)))
    found = detections(streamed(server, as_pcm(loud, 22050, 2, width)))
    # 8-bit audio is another signal (48 dB of quantisation noise): the same words; 24 and 32 bits: the same detections
    assert ([n for n, _ in found] == [n for n, _ in sixteen]) if width == 1 else found == sixteen


# --- what a client asks for: detect ---

def test_detect_of_keywords_not_served(server, speech):
    """Unknown names get an error naming them; the stream listens only for the served names it asked for."""
    some = streamed(server, as_pcm(speech, 16000, 1), names=["yes", "marvin-the-robot", "go"])
    none = streamed(server, as_pcm(speech, 16000, 1), names=["marvin-the-robot"])
    served = ", ".join(KEYWORDS[:10]) + ", ..."  # the first ten of the 35
    for events in (some, none):
        error = Error.from_event(events[0])
        assert (error.code, error.text) == ("unknown-keywords", "detect: keyword(s) not served here: "
                                            f"'marvin-the-robot' (served: {served})")
    assert [n for n, _ in detections(some[1:])] == ["yes", "go"]
    assert [e.type for e in none[1:]] == ["not-detected"]


# --- malformed, oversized and vanished clients ---

def header(kind, data=None, **lengths):
    return (json.dumps({"type": kind, "data": data or {}, **lengths}) + "\n").encode()


async def exchange(uri, raw: bytes):
    """Write ``raw`` bytes to the server and end the writing side; the events it answers with, to its end."""
    reader, writer = await asyncio.open_unix_connection(uri[len("unix://"):])
    writer.write(raw)
    writer.write_eof()
    events = []
    while (event := await asyncio.wait_for(async_read_event(reader), TIMEOUT)) is not None:
        events.append(event)
    writer.close()
    return events


CHUNK = {"rate": 16000, "width": 2, "channels": 1}
MALFORMED = {  # what a client sends -> the error event's text
    b"not json\n": "an event header is not JSON",
    b"[1, 2]\n": "an event header is not a JSON object",
    header("line\nbreak"): "an event header needs a 'type' of up to 64 printable characters and an object 'data'",
    header("audio-chunk", CHUNK, payload_length=10 ** 9): "an event's payload_length of 1000000000 bytes is over "
                                                          "the limit of 8388608",
    header("describe", data_length=-1): "an event's data_length must be a whole number of bytes, got -1",
    b'{"type": "describe", "data": {}, "data_length": 4}\nnull': "the data of describe is not a JSON object",
    b"x" * 70_000 + b"\n": "an event header is longer than 65536 bytes",
    header("audio-chunk", {"rate": 16000, "width": 2}, payload_length=2) + b"\0\0":
        "audio-chunk needs integer rate, width (1, 2, 3, 4 bytes) and channels, got 16000, 2 and None",
    header("audio-start", {**CHUNK, "width": 5}): "audio-start needs integer rate, width (1, 2, 3, 4 bytes) and "
                                                  "channels, got 16000, 5 and 1",
    header("audio-start", {**CHUNK, "channels": 0}): "audio-start's channels must be a whole number from 1 to 64, "
                                                     "got 0",
    header("audio-chunk", {**CHUNK, "rate": 1}): "audio-chunk's rate must be 8000 to 384000 Hz (the rates of audio "
                                                 "devices), got 1",
    header("audio-chunk", {**CHUNK, "channels": 2}, payload_length=6) + b"\0" * 6:
        "audio-chunk: 6 bytes are not whole frames of 2 channel(s) of 2 byte(s)",
    header("detect", {"names": "yes"}): 'detect: names must be a list of strings, got "yes"',
    header("audio-chunk", CHUNK, payload_length=32000) + b"\0" * 1000:  # a client that goes away mid-event
        "the connection ended before the end of its audio-chunk event",
}


def test_malformed_events_get_an_error_and_one_log_line(own_server, tmp_path):
    uri = f"unix://{tmp_path / 'kwmlp.sock'}"
    proc = own_server(uri)

    async def go():
        await (await connect(uri, proc)).disconnect()
        return [await exchange(uri, raw) for raw in MALFORMED]

    answers = run(go())
    assert [[Error.from_event(e).text for e in events] for events in answers] == [[text] for text in MALFORMED.values()]
    code, err = stop(proc)
    logged = [line for line in err.splitlines() if ": client " in line]
    assert code == 0 and "Traceback" not in err and "Task exception" not in err
    assert logged == [f"kwmlp wyoming: client {i}: {text}" for i, text in enumerate(MALFORMED.values(), 2)]


# --- work: long chunks are fed in pieces; a stop drops what is left ---

async def send_stream(client, audio):
    """audio-start, the whole audio in one chunk, audio-stop."""
    pcm, rate, channels, width = audio
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    await client.write_event(AudioChunk(rate=rate, width=width, channels=channels, audio=pcm).event())
    await client.write_event(AudioStop().event())


def test_long_chunks_hold_up_neither_short_streams_nor_the_stop(own_server, tmp_path):
    """Clients each sending a minute of audio in one chunk (more of them than the threads of asyncio's
    default pool, which every chunk used to hold whole): a short stream sent after them is answered
    first, and SIGTERM drops what they had not fed."""
    uri = f"unix://{tmp_path / 'kwmlp.sock'}"
    proc = own_server(uri, "--threshold", "0.8")
    yes = keyword_sentence(["yes"], 8000)
    long = as_pcm(np.concatenate([np.zeros(16000 * 60, np.float32), yes]), 16000, 1)
    longs = min(32, (os.cpu_count() or 1) + 4)

    async def first_answer(client, who):
        return who, (await client.read_event()).type

    async def go():
        clients = [await connect(uri, proc) for _ in range(longs + 1)]
        for client in clients[1:]:
            await send_stream(client, long)
        await asyncio.sleep(1)  # their chunks are in (the old server then had one on each of its threads)
        await send_stream(clients[0], as_pcm(yes, 16000, 1))
        answers = [asyncio.create_task(first_answer(c, "short" if i == 0 else "long")) for i, c in enumerate(clients)]
        done, pending = await asyncio.wait(answers, timeout=TIMEOUT * 3, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        for client in clients:
            await client.disconnect()
        return [task.result() for task in done]

    assert run(go()) == [("short", "detection")]
    code, err = stop(proc)
    assert code == 0 and "Traceback" not in err
    assert err.count("s of audio not processed") == longs, err


def test_debug_logs_each_client(own_server, tmp_path, speech):
    uri = f"unix://{tmp_path / 'kwmlp.sock'}"
    proc = own_server(uri, "--threshold", "0.8", debug=True)

    async def go():
        await (await connect(uri, proc)).disconnect()
        client = await connect(uri, proc)
        await stream(client, as_pcm(speech[:24000], 48000, 2), names=["yes", "stop"])  # "yes" and a pause
        await client.disconnect()

    run(go())
    code, err = stop(proc)
    lines = [line for line in err.splitlines() if line.startswith("kwmlp wyoming: client 2: ")]
    expected = ["connected", "detect yes, stop", r"audio-start 48000 Hz, 2 byte\(s\), 2 channel\(s\)",
                r"detection yes at \d+ ms \(0\.\d+\)", "audio-stop after 1.50 s", "describe", "disconnected"]
    assert code == 0 and len(lines) == len(expected), err
    assert all(re.fullmatch(f"kwmlp wyoming: client 2: {e}", line) for e, line in zip(expected, lines)), lines


# --- the handler on its own: a stub writer, stub spotters ---

class StubSpotter:
    """Records the blocks it is fed; ``found`` maps a block number to the detections it returns."""

    def __init__(self, keywords, rate, channels, found=None):
        self.keywords, self.rate, self.channels, self.found = keywords, rate, channels, found or {}
        self.blocks, self.samples, self.closed = [], 0, False

    def feed(self, x):
        self.blocks.append(x.shape)
        self.samples += len(x) * 16000 // self.rate
        return self.found.get(len(self.blocks) - 1, [])

    def close(self):
        self.closed = True
        return []


def stub_handler(keywords=("yes", "no", "stop"), found=None):
    from kwmlp.apps.serving.wyoming_handler import KeywordHandler, Service

    spotters = []

    def new_spotter(**kwargs):
        spotters.append(StubSpotter(**kwargs, found=found))
        return spotters[-1]

    handler = KeywordHandler(Service(keywords, new_spotter, ThreadPoolExecutor(1)), "client 1", None, None)
    written = []

    async def write_event(event):
        written.append(event)

    handler.write_event = write_event
    return handler, spotters, written


def chunk(seconds, rate=16000, channels=1, width=2):
    audio = bytes(round(seconds * rate) * channels * width)
    return AudioChunk(rate=rate, width=width, channels=channels, audio=audio).event()


def test_handler_feeds_a_long_chunk_a_second_at_a_time():
    handler, spotters, _ = stub_handler()
    run(handler.handle_event(chunk(2.5, rate=8000, channels=2)))
    [spotter] = spotters
    assert (spotter.rate, spotter.channels, spotter.blocks) == (8000, 2, [(8000, 2), (8000, 2), (4000, 2)])


def test_handler_format_change_keeps_the_stream_time():
    from kwmlp.runtime.keywords import Detection as Found

    yes = Found(label="yes", index=33, confidence=0.9, start_s=0.0, end_s=1.0, votes=1)
    handler, spotters, written = stub_handler(found={0: [yes]})

    async def go():
        for event in (Detect(names=["yes"]).event(), AudioStart(rate=16000, width=2, channels=1).event(), chunk(1.5),
                      chunk(1.0, rate=48000, channels=2), AudioStop().event()):
            await handler.handle_event(event)

    run(go())
    assert [(s.keywords, s.rate, s.channels, s.closed) for s in spotters] == [
        (("yes",), 16000, 1, True), (("yes",), 48000, 2, True)]
    # the second spotter's detection at 1.0 s of its audio is 2.5 s into the stream
    assert [Detection.from_event(e).timestamp for e in written] == [1000, 2500]


def test_handler_detect_names():
    from kwmlp.apps.serving.wyoming_events import ProtocolError

    handler, spotters, written = stub_handler()
    with pytest.raises(ProtocolError, match='names must be a list of strings, got "yes"'):
        run(handler.handle_event(Event("detect", {"names": "yes"})))
    run(handler.handle_event(Detect(names=["nine"]).event()))
    assert Error.from_event(written[0]).text == "detect: keyword(s) not served here: 'nine' (served: yes, no, stop)"
    run(handler.handle_event(chunk(1.0)))
    assert spotters == []  # nothing served was asked for: nothing runs
