"""Issue 11: damaged files named, folders read whole or refused, classify in bounded memory,
standard input and pipes read as streams (items 9, 10, 12, 16, 18)."""

import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

sf = pytest.importorskip("soundfile")

from kwmlp.apps import audio  # noqa: E402
from kwmlp.apps.cli import main  # noqa: E402
from kwmlp.errors import KwmlpError  # noqa: E402
from kwmlp.runtime.keywords import loudest_second, one_second  # noqa: E402

rng = np.random.default_rng(0)


def _noise(seconds, rate=16000, channels=1):
    return (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)


# --- 9. a file whose decoded length differs from its header is named; duration_s is what decoded

@pytest.mark.parametrize("ext", ["wav", "ogg"])
def test_truncated_file_is_named_and_its_duration_is_what_decoded(random_exported, tmp_path, caplog, ext):
    whole = tmp_path / f"whole.{ext}"
    sf.write(whole, _noise(10), 16000)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        assert main(["embed", random_exported(), str(cut), "-o", str(tmp_path / "o"), "-q"]) == 0
    assert any(str(cut) in r.getMessage() and "damaged or truncated" in r.getMessage() for r in caplog.records)
    decoded = len(audio.load(cut))
    with np.load(tmp_path / "o" / "cut.npz") as z:
        assert float(z["duration_s"]) == pytest.approx(decoded / 16000, abs=1e-3) and float(z["duration_s"]) < 9


def test_a_whole_file_is_not_named(tmp_path, caplog):
    sf.write(tmp_path / "a.ogg", _noise(2), 16000)
    with caplog.at_level(logging.WARNING, logger="kwmlp"):
        audio.load(tmp_path / "a.ogg")
        list(audio.read_blocks(tmp_path / "a.ogg"))
    assert not caplog.records


# --- 10. folders: unreadable refused, symlinked folders followed once, dot-files counted --------

def _tree(tmp_path):
    root = tmp_path / "in"
    (root / "sub").mkdir(parents=True)
    for p in (root / "a.wav", root / "sub" / "b.wav", root / ".hidden.wav"):
        sf.write(p, _noise(0.1), 16000)
    return root


def test_unreadable_subfolder_is_reported(tmp_path, monkeypatch, capsys, random_exported):
    root = _tree(tmp_path)
    real_scandir = os.scandir

    def scandir(path):  # root can read any folder: refuse this one as chmod 000 would for a user
        if os.fspath(path).endswith("sub"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(KwmlpError, match=r"folder .*sub cannot be read \(Permission denied\)"):
        audio.find_audio([str(root)])
    assert main(["spot", random_exported(), str(root)]) == 1
    assert "sub cannot be read" in capsys.readouterr().err


def test_symlinked_folders_are_followed_once(tmp_path, caplog):
    root = _tree(tmp_path)
    os.symlink(root / "sub", root / "link")  # a second way to the same folder
    os.symlink(root, root / "sub" / "loop")  # and a loop
    other = tmp_path / "elsewhere"
    other.mkdir()
    sf.write(other / "c.wav", _noise(0.1), 16000)
    os.symlink(other, root / "zlinked")
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        found = audio.find_audio([str(root)])
    assert [rel for _, rel in found] == ["a.wav", "link/b.wav", os.path.join("zlinked", "c.wav")]
    assert any("skipped 1 hidden file" in r.getMessage() for r in caplog.records)
    assert audio.find_audio([str(root / ".hidden.wav")])[0][1] == ".hidden.wav"  # named: read


# --- 12. messages that say what is wrong ------------------------------------------------------

def test_unreadable_file_says_so(tmp_path, monkeypatch):
    path = tmp_path / "a.wav"
    sf.write(path, _noise(0.1), 16000)
    real_open = os.open

    def deny(p, flags, *a, **k):
        if os.fspath(p) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(p, flags, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(KwmlpError, match=r"a.wav: cannot read \(Permission denied\)"):
        audio.info(path)


def test_a_folder_as_the_model_or_checkpoint(tmp_path, capsys):
    assert main(["info", str(tmp_path)]) == 1
    assert "is a folder, not a file" in capsys.readouterr().err
    pytest.importorskip("torch")
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "m.onnx")]) == 1
    assert "checkpoint " + str(tmp_path) + " is a folder, not a file" in capsys.readouterr().err
    from kwmlp.runtime import Embedder

    with pytest.raises(KwmlpError, match="is a folder, not a file"):
        Embedder(str(tmp_path))


# --- 16. classify keeps one second per file, read block by block --------------------------

def test_loudest_second_of_pieces_equals_one_second_of_the_whole():
    x = _noise(7.3)[:, 0]
    x[50000:66000] *= 5  # the loudest second, across a piece boundary below
    pieces = [x[i : i + 12345] for i in range(0, len(x), 12345)]
    np.testing.assert_array_equal(loudest_second(iter(pieces)), one_second(x))
    short = x[:9000]
    np.testing.assert_array_equal(loudest_second([short[:4000], short[4000:]]), one_second(short))


def test_classify_reads_files_block_by_block(random_exported, tmp_path, monkeypatch, capsys):
    path = tmp_path / "long.flac"
    sf.write(path, _noise(5, 22050, 2), 22050)
    expected = main(["classify", random_exported(), str(path), "--json"]), capsys.readouterr().out

    def whole_file(*args, **kw):
        raise AssertionError("classify decoded a whole file at once")

    monkeypatch.setattr(audio, "load", whole_file)
    blocks = []
    real = audio.read_blocks
    monkeypatch.setattr(audio, "read_blocks", lambda *a, **k: (blocks.append(b) or b for b in real(*a, **k, block_seconds=0.5)))
    assert (main(["classify", random_exported(), str(path), "--json"]), capsys.readouterr().out) == expected
    assert len(blocks) >= 10 and max(len(b) for b in blocks) <= 9000  # about 0.5 s each


# --- 18. standard input and pipes ---------------------------------------------------------

def _kwmlp(*args, stdin: bytes):
    return subprocess.run([sys.executable, "-m", "kwmlp", *args], input=stdin, capture_output=True)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_spot_and_classify_read_standard_input(random_exported, tmp_path, fmt):
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, _noise(2.5, 22050, 2), 22050, format=fmt)
    from_file = _kwmlp("spot", random_exported(), str(path), "--threshold", "0", "--json", stdin=b"")
    from_stdin = _kwmlp("spot", random_exported(), "-", "--threshold", "0", "--json", stdin=path.read_bytes())
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout.replace(b'"-"', b'"' + str(path).encode() + b'"') == from_file.stdout
    r = _kwmlp("classify", random_exported(), "-", stdin=path.read_bytes())
    assert r.returncode == 0 and r.stdout.startswith(b"-  "), r.stderr


def test_raw_pcm_from_standard_input(random_exported, tmp_path):
    x = _noise(1.5, 8000, 2)
    sf.write(tmp_path / "a.wav", x, 8000, subtype="PCM_16")
    pcm = sf.read(tmp_path / "a.wav", dtype="int16")[0].tobytes()
    want = _kwmlp("classify", random_exported(), str(tmp_path / "a.wav"), stdin=b"")
    got = _kwmlp("classify", random_exported(), "-", "--format", "s16le", "--rate", "8000", "--channels", "2", stdin=pcm)
    assert got.returncode == 0, got.stderr
    assert got.stdout.split(b"  ", 1)[1] == want.stdout.split(b"  ", 1)[1]
    f32 = _kwmlp("classify", random_exported(), "-", "--format", "f32le", "--rate", "8000", "--channels", "2",
                 stdin=(sf.read(tmp_path / "a.wav", dtype="float32")[0]).tobytes())
    assert f32.stdout == got.stdout
    r = _kwmlp("classify", random_exported(), "-", stdin=pcm)  # raw PCM without --format
    assert r.returncode == 1 and b"--format" in r.stderr and b"Traceback" not in r.stderr
    r = _kwmlp("classify", random_exported(), "-", "--format", "s16le", stdin=pcm)
    assert r.returncode == 1 and b"needs --rate" in r.stderr


def test_a_fifo_is_read_as_a_stream(random_exported, tmp_path, capsys):
    path, fifo = tmp_path / "a.wav", tmp_path / "pipe"
    sf.write(path, _noise(1.2), 16000)
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(path.read_bytes()))
    writer.start()
    assert main(["classify", random_exported(), str(fifo)]) == 0
    writer.join()
    out = capsys.readouterr().out
    assert main(["classify", random_exported(), str(path)]) == 0
    assert out.split("  ", 1)[1] == capsys.readouterr().out.split("  ", 1)[1]


def test_dev_stdin_is_read_as_a_stream(random_exported, tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _noise(1.2), 16000)
    want = _kwmlp("classify", random_exported(), str(path), stdin=b"")
    got = _kwmlp("classify", random_exported(), "/dev/stdin", stdin=path.read_bytes())
    assert got.returncode == 0, got.stderr
    assert got.stdout.split(b"  ", 1)[1] == want.stdout.split(b"  ", 1)[1]


def test_a_file_too_short_to_resample_is_one_failure_among_others(random_exported, tmp_path, capsys):
    # one sample at 48 kHz is no sample at 16 kHz: that file fails with its name, the others are written
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "tiny.wav", np.zeros((1, 1), np.float32), 48000)
    sf.write(folder / "good.wav", _noise(1.5), 16000)
    assert main(["embed", random_exported(), str(folder), "-o", str(tmp_path / "o"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "tiny.wav: too short to embed" in err and "Traceback" not in err
    assert (tmp_path / "o" / "good.npz").is_file() and not (tmp_path / "o" / "tiny.npz").exists()


def test_spot_reads_a_wav_header_on_standard_input_even_with_format(random_exported, tmp_path):
    # a WAV stream piped in decides its own format, as `kwmlp listen -` reads it
    wav = tmp_path / "in.wav"
    sf.write(wav, _noise(2, rate=22050), 22050, subtype="PCM_16")
    raw = subprocess.run([sys.executable, "-m", "kwmlp", "spot", random_exported(), "-", "--format", "s16le",
                          "--rate", "22050", "--json", "--threshold", "0"], input=wav.read_bytes(), capture_output=True)
    assert raw.returncode == 0, raw.stderr.decode()
    ref = subprocess.run([sys.executable, "-m", "kwmlp", "spot", random_exported(), str(wav), "--json",
                          "--threshold", "0"], capture_output=True)
    import json

    got, want = json.loads(raw.stdout), json.loads(ref.stdout)
    assert len(got) == len(want) == 1 and got[0]["file"] == "-"
    assert got[0]["detections"] == want[0]["detections"] and want[0]["detections"]  # threshold 0: every window


# --- issue 18, item 15: what a folder left out, names that clash, a checkpoint as the model, -o a file

def _folder_with_other_types(tmp_path):
    root = tmp_path / "rec"
    root.mkdir()
    sf.write(root / "a.wav", _noise(0.5), 16000)
    for name in ("c.m4a", "d.M4A", "notes.txt", ".DS_Store"):  # .DS_Store: hidden, not counted
        (root / name).write_bytes(b"\0" * 64)
    return root


def test_files_of_other_types_are_counted_by_extension(random_exported, tmp_path, capsys, caplog):
    root = _folder_with_other_types(tmp_path)
    assert main(["embed", random_exported(), str(root), "-o", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"into {tmp_path / 'o'}; left out 3 files of other types "
                                                    "(.m4a 2, .txt 1)")
    with caplog.at_level(logging.INFO, logger="kwmlp"):  # the commands without a summary log it
        assert main(["spot", random_exported(), str(root)]) == 0
    assert f"{root}: left out 3 files of other types (.m4a 2, .txt 1); name a file to try it" in caplog.messages
    (root / "a.wav").unlink()
    assert main(["embed", random_exported(), str(root), "-o", str(tmp_path / "o")]) == 1
    assert f"no audio files found in {root} (3 files of other types (.m4a 2, .txt 1))" in capsys.readouterr().err


def test_names_that_clash_are_kept_apart_with_keep_extension(random_exported, tmp_path, capsys):
    root = tmp_path / "rec"
    root.mkdir()
    for name in ("a.wav", "a.flac", "b.wav"):
        sf.write(root / name, _noise(0.5), 16000)
    out = tmp_path / "o"
    assert main(["embed", random_exported(), str(root), "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"kwmlp embed: error: {root / 'a.flac'} and {root / 'a.wav'} would both be written to "
                   f"{out / 'a.npz'}; add --keep-extension to name the outputs a.flac.npz and a.wav.npz, or embed "
                   "them into separate folders")
    assert not out.exists()
    assert main(["embed", random_exported(), str(root), "-o", str(out), "--keep-extension", "-q"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.flac.npz", "a.wav.npz", "b.wav.npz"]
    (root / "a.flac").unlink()  # without a clash and without the option, names stay as they were
    assert main(["embed", random_exported(), str(root), "-o", str(tmp_path / "o2"), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["a.npz", "b.npz"]


@pytest.mark.parametrize("command", ["embed", "classify", "spot", "info"])
def test_a_checkpoint_given_as_the_model_says_to_export_it(random_checkpoint, tmp_path, capsys, command):
    sf.write(tmp_path / "a.wav", _noise(0.5), 16000)
    args = {"embed": [str(tmp_path / "a.wav"), "-o", str(tmp_path / "o")], "info": []}.get(command, [str(tmp_path / "a.wav")])
    assert main([command, random_checkpoint, *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"kwmlp {command}: error: {random_checkpoint} is a PyTorch checkpoint, not an exported model: "
                   f"export it first with `kwmlp export {random_checkpoint} -o NAME.onnx`, then give NAME.onnx")


def test_an_output_folder_that_is_a_file_is_refused_before_the_model_loads(tmp_path, capsys):
    sf.write(tmp_path / "a.wav", _noise(0.5), 16000)
    (tmp_path / "notes.md").write_text("mine")
    (tmp_path / "model.onnx").write_bytes(b"not a model: loading it would fail first")
    for out, said in [("notes.md", "is a file; name a folder for the outputs"),
                      ("notes.md/sub", f"cannot be made: {tmp_path / 'notes.md'} is a file")]:
        assert main(["embed", str(tmp_path / "model.onnx"), str(tmp_path / "a.wav"), "-o", str(tmp_path / out)]) == 1
        assert capsys.readouterr().err.strip() == f"kwmlp embed: error: the output folder {tmp_path / out} {said}"
    assert (tmp_path / "notes.md").read_text() == "mine"
