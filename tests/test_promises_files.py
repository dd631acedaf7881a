"""Issue 11: downloads bounded and cleaned up, temporary files of killed writers removed, long
output names, closed pipes, --threads bounds (items 4, 13, 14, 15)."""

import http.server
import io
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error

import pytest

from kwmlp.apps import checkpoint_download as dl
from kwmlp.errors import KwmlpError
from kwmlp.fileio import atomic_path, remove_stale_temps, write_bytes_atomic


# --- 4. downloads: bounded by the expected size, no temp files after SIGTERM or SIGKILL ------

def test_download_is_bounded_by_the_expected_size(tmp_path):
    class Endless(io.RawIOBase):  # file:///dev/zero
        reads = 0

        def read(self, n=-1):
            Endless.reads += 1
            return b"\0" * n

    with pytest.raises(KwmlpError, match=f"sent more than the expected {dl.CHECKPOINT_SIZE} bytes"):
        dl.download("file:///dev/zero", tmp_path / "kwmlp.pth", opener=lambda url, timeout: Endless())
    assert Endless.reads <= dl.CHECKPOINT_SIZE // dl._CHUNK + 2 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error,match", [
    (urllib.error.URLError(FileNotFoundError(2, "No such file or directory")), "no such file"),
    (urllib.error.URLError("unknown url type: ftp2"), "not a URL that can be fetched"),
    (ValueError("unknown url type: 'notaurl'"), "not a URL that can be fetched"),
    (urllib.error.URLError(ConnectionRefusedError(111, "Connection refused")), "cannot fetch .*Connection refused"),
])
def test_download_failures_say_what_failed(tmp_path, error, match):
    def opener(url, timeout):
        raise error

    with pytest.raises(KwmlpError, match=match) as e:
        dl.download("https://x/kwmlp.pth", tmp_path / "kwmlp.pth", opener=opener)
    assert "no network" not in str(e.value)


def test_download_full_disk_is_not_a_network_error(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")

    class Payload(io.BytesIO):
        pass

    # the temporary file is a symlink to /dev/full: writes fail with ENOSPC
    real_mkstemp = __import__("tempfile").mkstemp

    def mkstemp(**kw):
        fd, path = real_mkstemp(**kw)
        os.close(fd)
        os.remove(path)
        os.symlink("/dev/full", path)
        return os.open(path, os.O_WRONLY), path

    import kwmlp.fileio as fileio
    orig = fileio.tempfile.mkstemp
    fileio.tempfile.mkstemp = mkstemp
    try:
        with pytest.raises(KwmlpError, match="cannot write .*No space left on device") as e:
            dl.download("https://x/kwmlp.pth", tmp_path / "kwmlp.pth", size=10 << 20,
                        opener=lambda url, timeout: Payload(b"x" * (3 << 20)))
    finally:
        fileio.tempfile.mkstemp = orig
    assert "no network" not in str(e.value)


class _Trickle(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(dl.CHECKPOINT_SIZE))
        self.end_headers()
        try:
            for _ in range(600):  # slowly: the test stops the download long before the end
                self.wfile.write(b"\0" * 1024)
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_sigterm_during_download_leaves_no_temp_file(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Trickle)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        p = subprocess.Popen([sys.executable, "-m", "kwmlp", "download", "--dest", str(tmp_path),
                              "--url", f"http://127.0.0.1:{server.server_port}/kwmlp.pth"],
                             stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not os.listdir(tmp_path) and time.monotonic() < deadline:  # wait for the temporary file
            time.sleep(0.05)
        assert os.listdir(tmp_path), "the download never started"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        server.shutdown()
    assert p.returncode == 143 and "terminated" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


def test_temp_files_of_a_killed_writer_are_removed_by_the_next_write(tmp_path):
    script = (f"import os, sys; from kwmlp.fileio import atomic_path\n"
              f"with atomic_path({str(tmp_path / 'out.npz')!r}) as tmp:\n"
              f"    print(tmp, flush=True); os.kill(os.getpid(), 9)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    stale = r.stdout.strip()
    assert r.returncode == -9 and os.path.basename(stale) in os.listdir(tmp_path)
    live = tmp_path / f".other.npz.{os.getpid()}-abcdefgh.kwmlp-tmp"  # this process: alive, kept
    live.write_bytes(b"")
    mine = tmp_path / ".notes.tmp"  # not our naming: kept
    mine.write_bytes(b"")
    write_bytes_atomic(tmp_path / "out.npz", b"new")
    assert sorted(os.listdir(tmp_path)) == sorted([".notes.tmp", live.name, "out.npz"])


# --- 15. output names up to the file system's limit --------------------------------------

@pytest.mark.parametrize("length", [242, 255])
def test_long_output_names_are_writable(tmp_path, length):
    name = "a" * (length - 4) + ".npz"
    write_bytes_atomic(tmp_path / name, b"x")
    assert os.listdir(tmp_path) == [name]  # no temp file left beside it


def test_long_multibyte_output_name(tmp_path):
    name = "é" * 125 + ".npz"  # 254 bytes in UTF-8
    with atomic_path(tmp_path / name) as tmp:
        assert len(os.fsencode(os.path.basename(tmp))) <= 255
        open(tmp, "wb").close()
    assert os.listdir(tmp_path) == [name]


# --- 13. a closed pipe is not an error ------------------------------------------------------

def test_closed_pipe_is_not_an_error(random_exported):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written, as `| head` can be
    r = subprocess.run([sys.executable, "-m", "kwmlp", "info", random_exported(), "--json"], stdout=write,
                       stderr=subprocess.PIPE, text=True)
    os.close(write)
    assert r.returncode == 0 and r.stderr == ""


# --- 14. --threads is bounded ---------------------------------------------------------------

@pytest.mark.parametrize("threads", [-1, 0, 100000])
def test_threads_are_bounded(random_exported, tmp_path, capsys, threads):
    import numpy as np
    import soundfile as sf

    from kwmlp.apps.cli import main

    sf.write(tmp_path / "a.wav", np.zeros(1600, np.float32), 16000)
    assert main(["embed", random_exported(), str(tmp_path / "a.wav"), "-o", str(tmp_path / "o"), "--threads", str(threads)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "threads must be in [1," in err, err
