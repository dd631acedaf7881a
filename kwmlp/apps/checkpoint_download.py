"""Fetching the authors' trained checkpoint, checked against its published sha256."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request

from kwmlp.errors import KwmlpError
from kwmlp.fileio import atomic_path, sha256_file
from kwmlp.paths import data_dir

CHECKPOINT_URL = "https://github.com/ID56/HEAR-2021-Audio-MLP/raw/main/checkpoints/kwmlp.pth"
CHECKPOINT_SHA256 = "bfb3c2b1da7f723bba8fd1ad96f5be9b25fa79de48af80ce0235e4871613c016"  # KW-MLP-12, CC BY-SA 4.0
CHECKPOINT_NAME = "kwmlp.pth"
_CHUNK = 1 << 20


def _offline(url: str, reason) -> KwmlpError:
    why = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return KwmlpError(
        f"cannot reach {url} ({why}): this machine seems to have no network; download the file elsewhere "
        f"and check that its sha256 is {CHECKPOINT_SHA256}"
    )


def downloaded_checkpoint() -> str:
    """Where ``kwmlp download`` puts ``kwmlp.pth`` by default: in the data folder (:func:`kwmlp.paths.data_dir`)."""
    return os.path.join(data_dir(), CHECKPOINT_NAME)


def download(url: str = CHECKPOINT_URL, dest: str | os.PathLike | None = None,
             sha256: str = CHECKPOINT_SHA256, timeout: float = 60.0, opener=urllib.request.urlopen) -> bool:
    """Download ``url`` to ``dest`` (default :func:`downloaded_checkpoint`) if it is not there
    already with the right ``sha256``.

    The file is written atomically and only when its sha256 matches; a mismatch, an HTTP error or
    no network raise :class:`KwmlpError`. Returns True when it downloaded, False when ``dest``
    was already the expected file. ``opener`` is ``urllib.request.urlopen``'s signature (tests
    replace it).
    """
    dest = os.fspath(dest) if dest is not None else downloaded_checkpoint()
    if os.path.isfile(dest) and sha256_file(dest) == sha256:
        return False
    try:
        response = opener(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise KwmlpError(f"{url} answered HTTP {e.code} ({e.reason})") from e
    except urllib.error.URLError as e:
        raise _offline(url, e.reason) from e
    except (OSError, ValueError) as e:
        raise _offline(url, e) from e
    h = hashlib.sha256()
    with response, atomic_path(dest) as tmp:
        with open(tmp, "wb") as f:
            try:
                while block := response.read(_CHUNK):
                    h.update(block)
                    f.write(block)
            except OSError as e:
                raise _offline(url, e) from e
        if h.hexdigest() != sha256:
            raise KwmlpError(f"the file from {url} has sha256 {h.hexdigest()}, expected {sha256}; refusing it "
                             f"({dest} was not written)")
    return True
