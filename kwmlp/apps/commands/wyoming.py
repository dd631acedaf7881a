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
                   help=f"where to listen: tcp://HOST:PORT, unix:///PATH (a socket there that nothing answers on is "
                        f"replaced, nothing else) or stdio:// (default {DEFAULT_URI})")
    add_detector_options(p)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import asyncio
    from functools import partial

    from kwmlp.apps.commands.listen import detector_options
    from kwmlp.apps.serving.wyoming_server import Endpoint, require_wyoming, serve
    from kwmlp.dims import KEYWORDS
    from kwmlp.runtime import Embedder, LiveSpotter

    endpoint = Endpoint.from_uri(args.uri)
    require_wyoming()  # before the model loads
    options = detector_options(args)
    keywords = tuple(options.pop("keywords") or KEYWORDS)
    embedder = Embedder(args.model, threads=args.threads, live=True)
    embedder.load_keywords()  # a missing or broken .keywords.onnx: one line now, not a failure per connection
    new_spotter = partial(LiveSpotter, embedder, **options)
    new_spotter(keywords=keywords)  # bad options: one line now, not per connection
    asyncio.run(serve(endpoint, keywords, new_spotter))
    return 0
