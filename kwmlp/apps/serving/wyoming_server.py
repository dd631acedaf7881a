"""``kwmlp wyoming``'s server: where it listens (``--uri``), its connections, and a prompt, clean stop.

``tcp://HOST:PORT`` and ``unix://PATH`` serve any number of clients at once, each a
:class:`~kwmlp.apps.serving.wyoming_handler.KeywordHandler` on a task of its own, all sharing one
Embedder and one pool of inference threads; ``stdio://`` serves the one client that started
kwmlp, through its standard input and output, until their end. "serving ..." is printed once the
address is bound. SIGTERM closes the listener and cancels every connection: the audio they had
not fed yet is dropped, so the stop waits at most for one piece of audio per thread.

This module imports wyoming only in :func:`serve`, so that :func:`require_wyoming` can say it is missing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import selectors
import signal
import stat
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

from kwmlp.errors import KwmlpError, missing_extra

log = logging.getLogger("kwmlp")


def require_wyoming() -> None:
    """KwmlpError naming the extra when the wyoming package is not installed."""
    try:
        import wyoming  # noqa: F401
    except ImportError as e:
        raise missing_extra("wyoming", "wyoming", "the Wyoming server") from e


@dataclass(frozen=True)
class Endpoint:
    """Where the server listens: ``scheme`` tcp (``host``, ``port``), unix (``path``) or stdio."""

    uri: str
    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def from_uri(cls, uri: str) -> Endpoint:
        """KwmlpError unless ``uri`` is tcp://HOST:PORT, unix://PATH without a host part (unix:///abs/path,
        unix:rel/path) or stdio:// (its standard input and output are checked when it starts to serve)."""
        usage = f"--uri must be tcp://HOST:PORT, unix://PATH or stdio://, got {uri}"
        try:
            u = urlparse(uri)
            host, port = u.hostname, u.port
        except ValueError:  # a port that is not a number or out of range, a broken IPv6 address
            raise KwmlpError(usage) from None
        if u.params or u.query or u.fragment:
            raise KwmlpError(usage)
        if u.scheme == "tcp" and host and port:
            return cls(uri, "tcp", host=host, port=port)
        if u.scheme == "unix" and u.netloc:  # unix://sockets/x would listen on /x
            raise KwmlpError(f"--uri unix://PATH takes a path without a host part: {uri} has the host part "
                             f"{u.netloc!r}; write unix:///absolute/path or unix:relative/path")
        if u.scheme == "unix" and u.path:
            return cls(uri, "unix", path=u.path)
        if u.scheme == "stdio" and not u.netloc and not u.path:
            return cls(uri, "stdio")
        raise KwmlpError(usage)


def _check_stdio() -> None:
    """The event loop waits on standard input and output: a regular file or /dev/null cannot be waited on."""
    for fd, name, events in ((0, "standard input", selectors.EVENT_READ), (1, "standard output", selectors.EVENT_WRITE)):
        with selectors.DefaultSelector() as selector:
            try:
                selector.register(fd, events)
            except (OSError, ValueError):
                raise _stdio_error(fd, name) from None


def _stdio_error(fd: int, name: str) -> KwmlpError:
    try:
        mode = os.fstat(fd).st_mode
        kind = ("a regular file" if stat.S_ISREG(mode) else "a folder" if stat.S_ISDIR(mode)
                else "a device that cannot be waited on" if stat.S_ISCHR(mode) else "not a pipe")
    except OSError:
        kind = "closed"
    return KwmlpError(f"--uri stdio:// talks to the program that runs kwmlp through pipes, and {name} is {kind}; "
                      "run kwmlp from that program with pipes, or serve on tcp:// or unix://")


async def serve(endpoint: Endpoint, keywords: tuple[str, ...], new_spotter: Callable, workers: int = 0) -> None:
    """Serve ``keywords`` on ``endpoint`` until SIGTERM (``stdio://``: also until standard input ends).

    ``new_spotter(keywords=..., rate=..., channels=...)`` makes a LiveSpotter; inference runs on
    ``workers`` threads (default: one per CPU this process may use).
    """
    from kwmlp.apps.serving.wyoming_handler import KeywordHandler, Service

    executor = ThreadPoolExecutor(workers or _cpus(), thread_name_prefix="kwmlp-wyoming")
    service = Service(keywords, new_spotter, executor)
    connections: set[asyncio.Task] = set()
    ids = itertools.count(1)

    async def connection(reader, writer) -> None:
        task = asyncio.current_task()
        connections.add(task)
        try:
            await KeywordHandler(service, _client_name(next(ids), writer), reader, writer).run()
        except asyncio.CancelledError:
            pass  # the server stops; a task that ends cancelled makes asyncio log a traceback (gh-113538, < 3.12.2)
        finally:
            connections.discard(task)

    stopping = asyncio.Event()

    def stop() -> None:
        stopping.set()
        for task in connections:
            task.cancel()

    try:
        close, stdio = await _listen(endpoint, connection)
        try:
            print(f"kwmlp wyoming: serving {len(keywords)} keyword(s) on {endpoint.uri}", file=sys.stderr, flush=True)
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
            await (stopping.wait() if stdio is None else asyncio.gather(stdio, return_exceptions=True))
        finally:
            close()
            stop()
            await asyncio.gather(*connections, return_exceptions=True)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)  # what still runs: one piece of audio per thread
    log.info("kwmlp wyoming: stopped")


async def _listen(endpoint: Endpoint, on_connect) -> tuple[Callable[[], None], asyncio.Task | None]:
    """Bind ``endpoint``: what closes it (removing our socket), and for stdio:// the one connection's task."""
    from kwmlp.apps.serving.unix_socket import bind_unix, remove_if_ours
    from kwmlp.apps.serving.wyoming_events import MAX_HEADER

    if endpoint.scheme == "stdio":
        return (lambda: None), asyncio.create_task(on_connect(*await _stdio_streams(MAX_HEADER)))
    if endpoint.scheme == "tcp":
        try:
            server = await asyncio.start_server(on_connect, endpoint.host, endpoint.port, limit=MAX_HEADER)
        except OSError as e:  # asyncio rewords bind errors; a host name that does not resolve has errno < 0
            reason = os.strerror(e.errno) if e.errno and e.errno > 0 else e.strerror or str(e)
            raise KwmlpError(f"cannot listen on {endpoint.uri}: {reason}") from e
        return server.close, None
    sock, identity = bind_unix(endpoint.path)
    try:
        server = await asyncio.start_unix_server(on_connect, sock=sock, limit=MAX_HEADER)
    except BaseException:
        sock.close()
        remove_if_ours(endpoint.path, identity)
        raise

    def close() -> None:
        server.close()
        remove_if_ours(endpoint.path, identity)

    return close, None


async def _stdio_streams(limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    _check_stdio()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (OSError, ValueError):
        raise _stdio_error(0, "standard input") from None
    try:
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    except (OSError, ValueError):
        raise _stdio_error(1, "standard output") from None
    return reader, asyncio.StreamWriter(transport, protocol, None, loop)


def _client_name(n: int, writer) -> str:
    peer = writer.get_extra_info("peername")
    return f"client {n} ({peer[0]}:{peer[1]})" if isinstance(peer, tuple) else f"client {n}"


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
