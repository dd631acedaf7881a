"""Fetching the authors' trained checkpoint, checked against its published size and sha256."""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import urllib.error
import urllib.request

from kwmlp.errors import KwmlpError
from kwmlp.fileio import atomic_path, sha256_file
from kwmlp.paths import data_dir

CHECKPOINT_URL = "https://github.com/ID56/HEAR-2021-Audio-MLP/raw/main/checkpoints/kwmlp.pth"
CHECKPOINT_SHA256 = "bfb3c2b1da7f723bba8fd1ad96f5be9b25fa79de48af80ce0235e4871613c016"  # KW-MLP-12, CC BY-SA 4.0
CHECKPOINT_SIZE = 1_743_045  # bytes: a source that sends more is cut off there, not written to disk
CHECKPOINT_NAME = "kwmlp.pth"
_CHUNK = 1 << 20
_NO_NETWORK = (socket.gaierror, TimeoutError, socket.timeout)


def _fetch_error(url: str, e: Exception) -> KwmlpError:
    """One sentence for a failed request that says what failed: no network only when it is that."""
    if isinstance(e, urllib.error.HTTPError):
        return KwmlpError(f"{url} answered HTTP {e.code} ({e.reason})")
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    why = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    if isinstance(reason, _NO_NETWORK) or getattr(reason, "errno", None) in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return KwmlpError(f"cannot reach {url} ({why}): this machine seems to have no network; download the file "
                          f"elsewhere and check that its sha256 is {CHECKPOINT_SHA256}")
    if isinstance(reason, FileNotFoundError):
        return KwmlpError(f"{url}: no such file")
    if isinstance(reason, str) and reason.startswith("unknown url type") or isinstance(e, ValueError):
        return KwmlpError(f"{url} is not a URL that can be fetched (use https://, http:// or file://)")
    return KwmlpError(f"cannot fetch {url} ({why})")


def downloaded_checkpoint() -> str:
    """Where ``kwmlp download`` puts ``kwmlp.pth`` by default: in the data folder (:func:`kwmlp.paths.data_dir`)."""
    return os.path.join(data_dir(), CHECKPOINT_NAME)


def download(url: str = CHECKPOINT_URL, dest: str | os.PathLike | None = None,
             sha256: str = CHECKPOINT_SHA256, size: int = CHECKPOINT_SIZE, timeout: float = 60.0,
             opener=urllib.request.urlopen) -> bool:
    """Download ``url`` to ``dest`` (default :func:`downloaded_checkpoint`) if it is not there
    already with the right ``sha256``.

    The file is written atomically and only when it is ``size`` bytes with the expected
    ``sha256``; reading stops as soon as the source sends more. A mismatch, an HTTP error, an
    unreachable source or an unwritable ``dest`` raise :class:`KwmlpError`. Returns True when it
    downloaded, False when ``dest`` was already the expected file. ``opener`` is
    ``urllib.request.urlopen``'s signature (tests replace it).
    """
    dest = os.fspath(dest) if dest is not None else downloaded_checkpoint()
    if os.path.isfile(dest) and sha256_file(dest) == sha256:
        return False
    try:
        response = opener(url, timeout=timeout)
    except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors
        raise _fetch_error(url, e) from e
    h = hashlib.sha256()
    with response, atomic_path(dest) as tmp:
        try:
            with open(tmp, "wb") as f:
                _copy(response, f, h, url, size)
        except OSError as e:  # a full disk is not a network problem (read errors are KwmlpErrors by now)
            raise KwmlpError(f"cannot write {dest} ({e.strerror or e})") from e
        if h.hexdigest() != sha256:
            raise KwmlpError(f"the file from {url} has sha256 {h.hexdigest()}, expected {sha256}; refusing it "
                             f"({dest} was not written)")
    return True


def _copy(response, f, h, url: str, size: int) -> None:
    """``response`` into ``f`` and ``h``; refuses a source that sends more than ``size`` bytes."""
    received = 0
    while True:
        try:
            block = response.read(_CHUNK)
        except OSError as e:
            raise _fetch_error(url, e) from e
        if not block:
            return
        received += len(block)
        if received > size:
            raise KwmlpError(f"{url} sent more than the expected {size} bytes; refusing it (nothing was written)")
        h.update(block)
        f.write(block)
