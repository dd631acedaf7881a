"""Atomic file writes: an output is either the old file or the complete new one, never half.

The temporary file beside the output is named ``.NAME.PID-XXXXXXXX.kwmlp-tmp``: hidden (folder
searches skip dot-files), and marked with the writer's process id, so that the temporary files
of a process that was killed (SIGKILL leaves them) are recognised and removed by the next write
into that folder, while those of a live writer are left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from typing import Iterator

TMP_SUFFIX = ".kwmlp-tmp"
_TMP_NAME = re.compile(r"^\..*\.(\d+)-[A-Za-z0-9_]+" + re.escape(TMP_SUFFIX) + "$", re.DOTALL)
_RANDOM = 8  # characters tempfile.mkstemp puts between prefix and suffix
_swept: set[str] = set()  # folders already cleaned of stale temporary files by this process


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def remove_stale_temps(directory: str) -> list[str]:
    """Remove the temporary files of writers that are no longer running from ``directory`` (once
    per process and folder); returns the names removed."""
    directory = os.path.abspath(directory)
    if directory in _swept:
        return []
    _swept.add(directory)
    removed = []
    with contextlib.suppress(OSError):
        for name in os.listdir(directory):
            m = _TMP_NAME.match(name)
            if m and not _pid_alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(directory, name))
                    removed.append(name)
    return removed


def _temp_prefix(path: str, directory: str) -> str:
    """``.NAME.PID-``, with NAME shortened so that the whole temporary name fits the file system's
    limit on a name (an output name within the limit must stay writable)."""
    try:
        name_max = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    tail = f".{os.getpid()}-"
    room = name_max - len(os.fsencode(f".{tail}{'x' * _RANDOM}{TMP_SUFFIX}"))
    name = os.fsencode(os.path.basename(path))[: max(room, 1)]
    return f".{name.decode('utf-8', 'ignore') or '_'}{tail}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``.

    On an exception (also SIGTERM, which the CLI turns into one) the temporary file is removed
    and ``path`` is left as it was; stale temporary files of killed writers in that folder go too.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temps(directory)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path, directory), suffix=TMP_SUFFIX, dir=directory)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
