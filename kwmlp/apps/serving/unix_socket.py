"""A Unix domain socket to listen on, bound without replacing anything that is not a stale socket.

wyoming's ``AsyncUnixServer`` unlinks whatever is at its path before it binds and again when it
stops: a user's file, or the socket of a server still running, which then runs on unreachable.
Here a path that is not a socket is refused; a socket that accepts a connection is in use; one
that refuses connections (its server is gone) is stale and replaced. On stop the path is removed
only while it is still the socket bound here (same device and inode).
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat

from kwmlp.errors import KwmlpError

PROBE_SECONDS = 2.0  # a live server with a full backlog may keep a connect waiting: then it counts as in use


def bind_unix(path: str, backlog: int = 100) -> tuple[socket.socket, tuple[int, int]]:
    """A listening socket bound at ``path`` and its identity ``(st_dev, st_ino)`` for :func:`remove_if_ours`.

    KwmlpError when ``path`` is a file, a folder, a live socket, or cannot be bound.
    """
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)  # fails on anything that appeared at path since: bind never replaces a file
        sock.listen(backlog)
        st = os.stat(path)
    except OSError as e:
        sock.close()
        raise KwmlpError(f"cannot listen on {path}: {e.strerror or e}") from e
    return sock, (st.st_dev, st.st_ino)


def remove_if_ours(path: str, identity: tuple[int, int]) -> None:
    """Remove ``path`` if it is still the socket :func:`bind_unix` made (not one bound there since)."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == identity:
            os.unlink(path)


def _remove_stale(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise KwmlpError(f"cannot listen on {path}: {e.strerror}") from e
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a file that is not a socket"
        raise KwmlpError(f"cannot listen on {path}: it is {kind}, which is left alone; remove it or choose "
                         "another path")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_SECONDS)
        try:
            probe.connect(path)
        except ConnectionRefusedError:  # nothing listens there: a stale socket, safe to replace
            os.unlink(path)
            return
        except TimeoutError:
            pass
        except OSError as e:
            raise KwmlpError(f"cannot listen on {path}: cannot tell whether its socket is in use "
                             f"({e.strerror or e})") from e
    raise KwmlpError(f"cannot listen on {path}: address already in use (another server accepts connections there)")
