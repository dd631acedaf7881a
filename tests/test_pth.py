"""``kwmlp.pth``: the checkpoint read without torch equals ``torch.load(weights_only=True)``, and a file
that names anything else is refused before anything in it runs."""

import collections
import os
import pickle
import zipfile

import numpy as np
import pytest

from kwmlp import pth

torch = pytest.importorskip("torch")


def _same(ours, theirs, where="the checkpoint"):
    """``ours`` (kwmlp.pth) equals ``theirs`` (torch.load): tensors by dtype, shape and value, containers by type."""
    if isinstance(theirs, torch.Tensor):
        want = (theirs.float() if theirs.dtype == torch.bfloat16 else theirs).detach().numpy()  # numpy has no bfloat16
        assert isinstance(ours, np.ndarray) and ours.flags.c_contiguous and ours.flags.writeable, where
        assert (ours.dtype, ours.shape) == (want.dtype, want.shape), where
        assert np.array_equal(ours, want, equal_nan=True), where
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs), where
        for k in theirs:
            _same(ours[k], theirs[k], f"{where}[{k!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is (tuple if isinstance(theirs, torch.Size) else type(theirs)), where
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _same(a, b, f"{where}[{i}]")
    else:  # numbers, strings, bytes, sets
        assert type(ours) is type(theirs) and ours == theirs, where


def _shipped(checkpoint):
    eight = os.path.join(os.path.dirname(checkpoint), "kwmlp-8.pth")
    return [checkpoint] + ([eight] if os.path.isfile(eight) else [])


def test_the_shipped_checkpoints_equal_torch_load(checkpoint):
    for path in _shipped(checkpoint):  # kwmlp-8.pth also holds optimizer and scheduler state, saved on CUDA
        _same(pth.load(path), torch.load(path, map_location="cpu", weights_only=True), os.path.basename(path))


DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128]


def _random(dtype, shape, g):
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 100
    if dtype.is_complex:
        return torch.complex(x, -x).to(dtype)
    return (x > 0) if dtype == torch.bool else x.to(dtype)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_checkpoints_of_every_dtype_and_layout(tmp_path, seed):
    g = torch.Generator().manual_seed(seed)
    base = {str(d): _random(d, (5, 7, 3), g) for d in DTYPES}
    obj = {
        "contiguous": base,
        "transposed": {k: v.transpose(0, 2) for k, v in base.items()},  # non-contiguous strides
        "offset views": [v[2:, 1::2, 1] for v in base.values()],  # storage offsets and steps, sharing storages
        "expanded": torch.arange(3.0).expand(4, 3),  # a stride of 0
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "parameter": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
        "ordered": collections.OrderedDict(b=torch.ones(1), a=(1, 2.5, "x", None, True, [b"raw"])),
        "size": torch.Size([3, 4]),
        "builtins": [{1, 2}, bytearray(b"xy"), 1 + 2j],
    }
    path = tmp_path / "random.pth"
    torch.save(obj, path)
    _same(pth.load(path), torch.load(path, weights_only=True))


def test_big_endian_storages(tmp_path):
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    torch.save({"x": x.t()}, tmp_path / "little.pth")
    with zipfile.ZipFile(tmp_path / "little.pth") as src, zipfile.ZipFile(tmp_path / "big.pth", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:
                data = np.frombuffer(data, "<f4").astype(">f4").tobytes()
            dst.writestr(info, data)
    _same(pth.load(tmp_path / "big.pth"), {"x": x.t()})


def test_exported_onnx_is_the_same_as_through_torch(random_checkpoint, tmp_path):
    """``kwmlp export`` on the numpy reader writes the very bytes the torch reader gave."""
    from kwmlp.checkpoint import dims_of, read_state_dict
    from kwmlp.export import ExportOptions, build_models, export_checkpoint
    from kwmlp.fileio import sha256_file

    for options in (ExportOptions(), ExportOptions(precision="fp16", depth=4, scene="mean")):
        out = tmp_path / "m.onnx"
        export_checkpoint(random_checkpoint, str(out), options)
        state = torch.load(random_checkpoint, map_location="cpu", weights_only=True)["model_state_dict"]
        weights = {k: v.detach().cpu().double().numpy() for k, v in state.items()}  # what export did with torch
        dims = dims_of(read_state_dict(random_checkpoint), options.depth)
        emb, kw = build_models(weights, dims, options, sha256_file(random_checkpoint), "m.keywords.onnx")
        assert out.read_bytes() == emb.SerializeToString()
        assert (tmp_path / "m.keywords.onnx").read_bytes() == kw.SerializeToString()


# --- refusals -------------------------------------------------------------------------------

def _torch_like_zip(path, pickled: bytes, extra: dict | None = None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            z.writestr(f"archive/{name}", data)
    return str(path)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Evaluates:
    def __reduce__(self):
        return eval, ("1 + 1",)


@pytest.mark.parametrize("make,named", [
    (lambda m: {"model_state_dict": _RunsCode(m)}, "posix.system"),
    (lambda m: [_Evaluates()], "builtins.eval"),
    (lambda m: {"opener": open}, "io.open"),
    (lambda m: np.zeros(3), "numpy"),
])
def test_a_pickle_naming_anything_else_is_refused_without_running(tmp_path, make, named):
    marker = tmp_path / "ran"
    path = _torch_like_zip(tmp_path / "evil.pth", pickle.dumps(make(marker), protocol=2))
    with pytest.raises(pth.PthError, match=rf"is not a PyTorch checkpoint that loads with weights_only=True: "
                                           rf"its pickle names {named}.* \(refused; nothing in the file was run\)"):
        pth.load(path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # torch refuses it too
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_torch_values_it_does_not_rebuild_are_named(tmp_path):
    torch.save({"dtype": torch.float16}, tmp_path / "d.pth")
    with pytest.raises(pth.PthError, match="holds torch.float16, which kwmlp-rt does not read"):
        pth.load(tmp_path / "d.pth")


def test_a_tensor_past_its_storage_is_refused(tmp_path):
    torch.save({"x": torch.arange(6.0)}, tmp_path / "ok.pth")
    with zipfile.ZipFile(tmp_path / "ok.pth") as z:
        [name] = [n for n in z.namelist() if n.endswith("data.pkl")]
        data = z.read(name)
        storage = z.read(name.replace("data.pkl", "data/0"))
    # the same pickle, its size 6 made 7: one element past the storage
    grown = data.replace(b"K\x06\x85", b"K\x07\x85", 1)
    assert grown != data
    path = _torch_like_zip(tmp_path / "past.pth", grown, {"data/0": storage})
    with pytest.raises(pth.PthError, match="is not a PyTorch checkpoint that loads with weights_only=True"):
        pth.load(path)


def test_a_storage_shorter_than_it_says_is_refused(tmp_path):
    torch.save({"x": torch.arange(6.0)}, tmp_path / "ok.pth")
    with zipfile.ZipFile(tmp_path / "ok.pth") as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    path = _torch_like_zip(tmp_path / "short.pth", data, {"data/0": b"\0" * 8})
    with pytest.raises(pth.PthError, match="storage 0 is shorter than its 6 elements"):
        pth.load(path)


@pytest.mark.parametrize("content,match", [
    (b"hello", "is not a PyTorch checkpoint that loads with weights_only=True"),
    (None, "is a PyTorch checkpoint in the format before torch 1.6"),  # torch.save's legacy format
    (b"PK\x03\x04 broken", "is not a PyTorch checkpoint that loads with weights_only=True"),
])
def test_files_that_are_not_such_a_zip(tmp_path, content, match):
    path = tmp_path / "x.pth"
    if content is None:
        torch.save({"x": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(content)
    with pytest.raises(pth.PthError, match=match) as e:
        pth.load(path)
    assert len(str(e.value).splitlines()) == 1


def test_a_zip_without_one_pickle_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "x.pth", "w") as z:
        z.writestr("a/readme.txt", "not a checkpoint")
    with pytest.raises(pth.PthError, match="is not a PyTorch checkpoint that loads with weights_only=True"):
        pth.load(tmp_path / "x.pth")


def test_pickle_state_cannot_reach_the_readers_functions(tmp_path):
    """BUILD on a name the pickle looked up (setattr on what find_class gave) is refused: it would
    otherwise change the reader's own functions for every later load."""
    before = pth._rebuild_parameter.__defaults__
    # GLOBAL _rebuild_parameter, then BUILD with slot state {"__defaults__": (1,)}
    data = b"\x80\x02ctorch._utils\n_rebuild_parameter\nN}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b."
    with pytest.raises(pth.PthError, match="is not a PyTorch checkpoint that loads with weights_only=True"):
        pth.load(_torch_like_zip(tmp_path / "b.pth", data))
    assert pth._rebuild_parameter.__defaults__ == before
