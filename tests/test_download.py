"""``kwmlp download``: sha256-checked, atomic, and a clear line when there is no network."""

import hashlib
import io
import socket
import subprocess
import sys
import urllib.error

import pytest

from kwmlp.apps import checkpoint_download as dl
from kwmlp.errors import KwmlpError

PAYLOAD = b"pretend checkpoint bytes " * 100_000  # 2.5 MB: several read blocks
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def serving(data: bytes, fail_after: int | None = None):
    class Response(io.BytesIO):
        def read(self, n=-1):
            if fail_after is not None and self.tell() >= fail_after:
                raise ConnectionResetError(104, "Connection reset by peer")
            return super().read(n)

    return lambda url, timeout: Response(data)


def test_download_verifies_and_writes(tmp_path):
    dest = tmp_path / "models" / "kwmlp.pth"
    assert dl.download("https://x/kwmlp.pth", dest, SHA, len(PAYLOAD), opener=serving(PAYLOAD)) is True
    assert dest.read_bytes() == PAYLOAD
    assert dl.download("https://x/kwmlp.pth", dest, SHA, opener=None) is False  # already there: no request


@pytest.mark.parametrize("previous", [None, b"an older file"])
def test_mismatch_is_refused_and_nothing_is_written(tmp_path, previous):
    dest = tmp_path / "kwmlp.pth"
    if previous:
        dest.write_bytes(previous)
    with pytest.raises(KwmlpError, match=f"expected {SHA}; refusing it"):
        dl.download("https://x/kwmlp.pth", dest, SHA, len(PAYLOAD) + 8, opener=serving(PAYLOAD + b"tampered"))
    assert [p.name for p in tmp_path.iterdir()] == (["kwmlp.pth"] if previous else [])
    if previous:
        assert dest.read_bytes() == previous


def test_connection_lost_half_way_leaves_no_file(tmp_path):
    with pytest.raises(KwmlpError, match="Connection reset by peer"):
        dl.download("https://x/kwmlp.pth", tmp_path / "kwmlp.pth", SHA, len(PAYLOAD), opener=serving(PAYLOAD, fail_after=1 << 20))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "error,match",
    [
        (urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution")), "no network"),
        (TimeoutError("timed out"), "no network"),
        (urllib.error.HTTPError("https://x", 404, "Not Found", {}, None), "answered HTTP 404"),
    ],
)
def test_network_errors(tmp_path, error, match):
    def opener(url, timeout):
        raise error

    with pytest.raises(KwmlpError, match=match):
        dl.download("https://x/kwmlp.pth", tmp_path / "kwmlp.pth", SHA, opener=opener)
    assert list(tmp_path.iterdir()) == []


def test_cli_from_a_file_url(checkpoint, tmp_path):
    """The real checkpoint through a file:// URL: the published sha256 matches."""
    r = subprocess.run([sys.executable, "-m", "kwmlp", "download", "--dest", str(tmp_path / "m"),
                        "--url", f"file://{checkpoint}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"sha256 {dl.CHECKPOINT_SHA256} verified" in r.stdout
    assert dl.sha256_file(tmp_path / "m" / "kwmlp.pth") == dl.CHECKPOINT_SHA256


def test_cli_refused_connection_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "kwmlp", "download", "--dest", str(tmp_path),
                        "--url", "http://127.0.0.1:9/kwmlp.pth"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Connection refused" in lines[0] and "no network" not in lines[0], r.stderr
    assert list(tmp_path.iterdir()) == []
