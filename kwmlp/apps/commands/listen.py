"""``kwmlp listen MODEL [SOURCE]``: keywords in live audio (a microphone, a pipe, a file), as they happen."""

from __future__ import annotations

import json
import queue
import sys
import time

from kwmlp.apps.commands.rounding import confidence

# --raw turns smoothing, trigger level and refractory period off: the output equals `kwmlp spot --mode multi`
RAW = dict(smooth=1, trigger_level=1, refractory=0.0)
FILE_BLOCK_SECONDS = 0.1  # a file is read in pieces of this much audio


def add_detector_options(p) -> None:
    """The detector's options, shared by `listen` and `wyoming`."""
    from kwmlp.runtime.live import DEFAULTS as d

    p.add_argument("--window", type=float, default=d["window"], help=f"window length in seconds (default {d['window']})")
    p.add_argument("--hop", type=float, default=d["hop"], help=f"hop between windows in seconds (default {d['hop']})")
    p.add_argument("--threshold", type=float, default=d["threshold"],
                   help=f"minimum (smoothed) probability (default {d['threshold']})")
    p.add_argument("--smooth", type=int, default=d["smooth"],
                   help=f"average the probabilities of the last K windows (default {d['smooth']})")
    p.add_argument("--trigger-level", type=int, default=d["trigger_level"],
                   help=f"the same keyword must win N windows in a row (default {d['trigger_level']})")
    p.add_argument("--refractory", type=float, default=d["refractory"],
                   help=f"seconds before the same keyword may fire again (default {d['refractory']})")
    p.add_argument("--keywords", help="comma-separated keywords that may fire (default: all 35)")
    p.add_argument("--raw", action="store_true",
                   help="no smoothing, trigger level 1, no refractory period: every window above the threshold, "
                        "as `kwmlp spot --mode multi`")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default 1)")


def detector_options(args) -> dict:
    """LiveSpotter's keyword arguments from the parsed detector options (LiveSpotter checks them)."""
    from kwmlp.errors import KwmlpError
    from kwmlp.runtime.live import DEFAULTS

    options = {k: getattr(args, k) for k in DEFAULTS}
    options.update(RAW if args.raw else {})
    options["keywords"] = None
    if args.keywords is not None:
        options["keywords"] = [k.strip() for k in args.keywords.split(",") if k.strip()]
        if not options["keywords"]:
            raise KwmlpError(f"--keywords {args.keywords!r} names no keyword: give some, e.g. --keywords yes,no,stop, "
                             "or leave it out for all 35")
    return options


def add_parser(sub):
    from kwmlp.apps.pcm import FORMATS

    p = sub.add_parser("listen", help="spot keywords in live audio: a microphone, standard input or a file",
                       description="Spot the Speech Commands keywords in live audio and print each detection as it "
                                   "happens. SOURCE '-' reads raw PCM from standard input (a WAV header at its start "
                                   "is recognised and used), a path reads a file as a stream, no SOURCE records "
                                   "from the default microphone (needs the 'live' extra).")
    p.add_argument("model", help="an .onnx file written by `kwmlp export` (its .keywords.onnx beside it)")
    p.add_argument("source", nargs="?", help="'-' for standard input, an audio file, or nothing for the microphone")
    p.add_argument("--format", choices=sorted(FORMATS), default="s16le", help="raw PCM format (default s16le)")
    p.add_argument("--rate", type=int, default=16000, help="sample rate in Hz of raw PCM or the microphone (default 16000)")
    p.add_argument("--channels", type=int, default=1, help="channels of raw PCM or the microphone (default 1)")
    p.add_argument("--device", help="microphone: a device number or name (see --list-devices)")
    p.add_argument("--list-devices", action="store_true", help="list the audio devices and exit")
    add_detector_options(p)
    p.add_argument("--realtime", action="store_true",
                   help="a file: feed it in real time, as a microphone would (for demos)")
    p.add_argument("--json", action="store_true", help="one JSON object per detection and line")
    p.set_defaults(run=run)
    return p


def _sounddevice():
    """The `sounddevice` module (a function, so that tests can put a fake microphone in its place)."""
    from kwmlp.errors import KwmlpError, missing_extra

    try:
        import sounddevice
    except ImportError as e:
        raise missing_extra("sounddevice", "live", "listening to a microphone") from e
    except OSError as e:  # sounddevice is there, the PortAudio library it loads is not
        raise KwmlpError(f"listening to a microphone needs the PortAudio library ({e}); "
                         "install it, e.g. apt-get install libportaudio2") from e
    return sounddevice


def _printer(as_json: bool):
    def show(d) -> None:
        if as_json:
            row = {"label": d.label, "confidence": confidence(d.confidence), "start_s": d.start_s, "end_s": d.end_s}
            print(json.dumps(row), flush=True)
        else:
            print(f"{d.start_s:8.2f} - {d.end_s:8.2f} s  {d.label:<8} {d.confidence:.3f}", flush=True)
    return show


def run(args) -> int:
    from kwmlp.apps.pcm import PcmFormat, open_pcm
    from kwmlp.dims import SAMPLE_RATE
    from kwmlp.runtime import Embedder, LiveSpotter

    if args.list_devices:
        print(_sounddevice().query_devices())
        return 0
    options = detector_options(args)
    show = _printer(args.json)
    # everything that can be wrong is said before any audio is waited on: the model (and --threads),
    # its keyword graph, the detector's options, the stream's format
    embedder = Embedder(args.model, threads=args.threads, live=True)
    embedder.load_keywords()
    if args.source in ("-", None):
        given = PcmFormat(args.format, args.rate, args.channels)
    else:
        given = PcmFormat("f32le", SAMPLE_RATE, 1)  # what _file_blocks yields
    spotter = LiveSpotter(embedder, rate=given.rate, channels=given.channels, **options)
    fmt, blocks = given, None
    if args.source == "-":
        fmt, blocks = open_pcm(sys.stdin.buffer, given)
        if fmt != given:  # a WAV header said otherwise
            spotter = LiveSpotter(embedder, rate=fmt.rate, channels=fmt.channels, **options)
    elif args.source is not None:
        blocks = _file_blocks(args.source, args.realtime)
    try:
        for block in (blocks if blocks is not None else _microphone(args, fmt)):
            for d in spotter.feed(block):
                show(d)
    except KeyboardInterrupt:
        pass  # Ctrl-C: what was heard is still flushed below
    for d in spotter.close():
        show(d)
    return 0


def _file_blocks(path: str, realtime: bool):
    from kwmlp.apps import audio
    from kwmlp.dims import SAMPLE_RATE

    start, fed = time.monotonic(), 0
    for block in audio.read_blocks(path, FILE_BLOCK_SECONDS):
        if realtime:
            time.sleep(max(0.0, start + fed / SAMPLE_RATE - time.monotonic()))
        fed += len(block)
        yield block


def _microphone(args, fmt):
    """Blocks from the microphone; its callback only queues them, inference runs on this thread."""
    sd = _sounddevice()
    device = int(args.device) if args.device is not None and args.device.isdigit() else args.device
    blocks: queue.Queue = queue.Queue()

    def callback(indata, frames, when, status):
        blocks.put(indata.copy())

    with sd.InputStream(samplerate=fmt.rate, channels=fmt.channels, dtype="float32", device=device,
                        callback=callback) as stream:
        print(f"listening on {sd.query_devices(device, 'input')['name']} (Ctrl-C to stop)", file=sys.stderr)
        while stream.active or not blocks.empty():
            try:
                yield blocks.get(timeout=0.1)
            except queue.Empty:
                continue
