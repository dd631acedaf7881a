"""The ``kwmlp`` command line: one subcommand per module under ``kwmlp.apps.commands``.

User errors (:class:`kwmlp.errors.KwmlpError`, unreadable or unwritable files) print one
line and exit with 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

import kwmlp
from kwmlp.errors import KwmlpError

# module names under kwmlp.apps.commands; each defines add_parser(subparsers) -> parser with a `run`
COMMANDS = ("export", "build", "info", "embed", "classify", "spot", "listen", "wyoming", "download", "bench", "triton-repo",
            "doctor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kwmlp", description="KW-MLP audio embeddings: export, build, run.")
    parser.add_argument("--version", action="version", version=f"kwmlp-rt {kwmlp.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"kwmlp.apps.commands.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    try:
        return int(args.run(args) or 0)
    except KwmlpError as e:
        if args.debug:
            raise
        print(f"kwmlp {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if args.debug:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"kwmlp {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"kwmlp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
