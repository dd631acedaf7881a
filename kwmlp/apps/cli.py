"""The ``kwmlp`` command line: one subcommand per module under ``kwmlp.apps.commands``.

User errors (:class:`kwmlp.errors.KwmlpError`, unreadable or unwritable files, CUDA errors)
print one line and exit with 1; ``--debug`` shows the traceback instead. SIGTERM unwinds like
Ctrl-C (temporary files are removed) and exits with 143; a reader that closes the pipe early
(``kwmlp info M --json | head``) is not an error.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys

import kwmlp
from kwmlp.cuda import CudaError
from kwmlp.errors import KwmlpError

# module names under kwmlp.apps.commands; each defines add_parser(subparsers) -> parser with a `run`
COMMANDS = ("export", "build", "info", "embed", "classify", "spot", "listen", "wyoming", "download", "bench", "triton-repo",
            "doctor")


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that ``finally`` blocks (temporary files) run."""


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: its options go on either side of its positional arguments. Plain argparse
    fills an optional positional with nothing when an option follows the one before it, and
    `kwmlp listen MODEL --json FILE` failed with "unrecognized arguments: FILE"."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:  # parse_known_intermixed_args parses twice through this method
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kwmlp", description="KW-MLP audio embeddings: export, build, run.")
    parser.add_argument("--version", action="version", version=f"kwmlp-rt {kwmlp.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_CommandParser)
    for name in COMMANDS:
        importlib.import_module(f"kwmlp.apps.commands.{name.replace('-', '_')}").add_parser(sub)
    return parser


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_unwinds():
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _pipe_closed() -> int:
    """The reader went away: drop what is left to print (Python would report it at exit)."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    with _sigterm_unwinds():
        try:
            code = int(args.run(args) or 0)
            if not sys.stdout.closed:  # a stdio:// server closes it when its client goes
                sys.stdout.flush()  # a closed pipe shows here, not at exit
            return code
        except BrokenPipeError:
            return _pipe_closed()
        except (KwmlpError, CudaError) as e:
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
        except Terminated:
            print(f"kwmlp {args.command}: terminated", file=sys.stderr)
            return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
