"""``kwmlp wyoming MODEL --uri tcp://0.0.0.0:10400``: a Wyoming wake-word server for Home Assistant."""

from __future__ import annotations

DEFAULT_URI = "tcp://0.0.0.0:10400"


def add_parser(sub):
    from kwmlp.apps.commands.listen import add_detector_options

    p = sub.add_parser("wyoming", help="serve keyword detection over the Wyoming protocol (Home Assistant)",
                       description="A Wyoming wake-word server: one wake program 'kwmlp' whose models are the "
                                   "keywords (all 35, or --keywords), audio at any rate, width and channels, one "
                                   "detector per connection. Needs the 'wyoming' extra. Stops cleanly on SIGTERM.")
    p.add_argument("model", help="an .onnx file written by `kwmlp export` (its .keywords.onnx beside it)")
    p.add_argument("--uri", default=DEFAULT_URI,
                   help=f"where to listen: tcp://HOST:PORT, unix://PATH or stdio:// (default {DEFAULT_URI})")
    add_detector_options(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import asyncio
    from urllib.parse import urlparse

    from kwmlp.apps.commands.listen import detector_options
    from kwmlp.apps.serving.wyoming_server import require_wyoming, serve
    from kwmlp.dims import KEYWORDS
    from kwmlp.errors import KwmlpError
    from kwmlp.runtime import Embedder, LiveSpotter

    try:
        uri = urlparse(args.uri)
        bad = uri.scheme not in ("tcp", "unix", "stdio") or uri.scheme == "tcp" and (not uri.hostname or not uri.port)
    except ValueError:  # a port that is not a number or out of range, a broken IPv6 address
        bad = True
    if bad:
        raise KwmlpError(f"--uri must be tcp://HOST:PORT, unix://PATH or stdio://, got {args.uri}")
    require_wyoming()  # before the model loads
    options = detector_options(args)
    keywords = tuple(options.pop("keywords") or KEYWORDS)
    embedder = Embedder(args.model, threads=args.threads, live=True)
    LiveSpotter(embedder, keywords=keywords, **options)  # bad options: one line now, not per connection
    asyncio.run(serve(args.uri, embedder, options, keywords))
    return 0
