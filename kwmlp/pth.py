"""Reading a PyTorch checkpoint without torch: the zip that ``torch.save`` writes (torch >= 1.6).

The zip holds ``NAME/data.pkl``, a pickle of the saved object whose tensors refer to raw storages
``NAME/data/KEY``. The pickle is read by an unpickler that may name only what rebuilds tensors
(``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``), the storage types
(``torch.FloatStorage``, ...), ``torch.Size``, ``collections.OrderedDict``, a few builtin types
(set, bytearray, complex) and ``_codecs.encode`` of latin-1 text (protocol 2's bytes): no wider
than ``torch.load(weights_only=True)``. Any other name in it (``os.system``, a class of another
package) refuses the file before anything is looked up, so nothing in a checkpoint runs; what the
pickle gets back for the names it may use cannot be changed by it (no attributes to set).

Tensors come back as C-contiguous numpy arrays of their dtype (bfloat16, which numpy lacks, as
float32, which holds it exactly); dicts, lists, tuples, numbers and strings as themselves.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Callable, NamedTuple

import numpy as np

from kwmlp.errors import KwmlpError

# torch's storage types and the numpy dtype of their bytes (little-endian unless the zip says otherwise)
STORAGE_DTYPES = {
    "DoubleStorage": "f8", "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?", "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
}
# torch.save before 1.6 wrote a pickle of this magic number first, not a zip
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class PthError(KwmlpError):
    """The file is not a PyTorch checkpoint this reader takes; the message says why in one sentence."""


class _Refused(Exception):
    """A name in the pickle outside the allow-list."""


def _not_a_checkpoint(path) -> PthError:
    return PthError(f"{path} is not a PyTorch checkpoint that loads with weights_only=True")


def load(path: str | os.PathLike) -> object:
    """The object a ``torch.save`` zip holds, its tensors as numpy arrays (see the module's docstring).

    Raises :class:`PthError` with one sentence for a file that is not such a zip, names anything
    outside the allow-list, or holds a tensor that does not fit its storage.
    """
    try:
        with zipfile.ZipFile(path) as z:
            return _Archive(z, path).load()
    except PthError:
        raise
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            legacy = f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
        if legacy:
            raise PthError(f"{path} is a PyTorch checkpoint in the format before torch 1.6, which kwmlp-rt "
                           "does not read: load it with torch.load and save it again with torch.save") from None
        raise _not_a_checkpoint(path) from None
    except (ValueError, NotImplementedError, EOFError, RuntimeError) as e:  # zipfile: a damaged or encrypted member
        raise _not_a_checkpoint(path) from e


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` looks like a file ``torch.save`` wrote (its zip with ``NAME/data.pkl``, or the
    format before torch 1.6), without reading its pickle: to tell a checkpoint given as a model."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return any(n.count("/") == 1 and n.endswith("/data.pkl") for n in z.namelist())
        with open(path, "rb") as f:
            return f.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC
    except (OSError, zipfile.BadZipFile):
        return False


class _Archive:
    """One ``torch.save`` zip: its pickle and its storages, each storage read once."""

    def __init__(self, z: zipfile.ZipFile, path):
        self.z, self.path = z, path
        pickles = [n for n in z.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise _not_a_checkpoint(path)
        self.prefix = pickles[0][: -len("data.pkl")]
        order = self._record("byteorder", b"little").decode(errors="replace")
        if order not in ("little", "big"):
            raise PthError(f"{path} is not a valid PyTorch checkpoint: its byte order is {order!r}")
        self.byteorder = "<" if order == "little" else ">"
        self.storages: dict[tuple[str, str], np.ndarray] = {}

    def _record(self, name: str, default: bytes | None = None) -> bytes:
        try:
            return self.z.read(self.prefix + name)
        except KeyError:
            if default is None:
                raise PthError(f"{self.path} is not a valid PyTorch checkpoint: {self.prefix}{name} is missing") from None
            return default

    def load(self) -> object:
        data = self._record("data.pkl")
        try:
            return _Unpickler(data, self).load()
        except _Refused as e:
            if str(e).startswith("torch."):  # torch.load may take it, this reader does not
                raise PthError(f"{self.path} holds {e}, which kwmlp-rt does not read: a checkpoint here holds "
                               "tensors, numbers, strings and containers") from None
            raise PthError(f"{self.path} is not a PyTorch checkpoint that loads with weights_only=True: its pickle "
                           f"names {e} (refused; nothing in the file was run)") from None
        except PthError:
            raise
        except Exception as e:  # a damaged pickle raises many types (UnpicklingError, EOFError, TypeError, ...)
            raise _not_a_checkpoint(self.path) from e

    def storage(self, name: str, key: str, numel: int) -> np.ndarray:
        """Storage ``key`` as a flat array of ``numel`` elements of the storage type ``name``."""
        if (name, key) not in self.storages:
            dtype = np.dtype(STORAGE_DTYPES[name]).newbyteorder(self.byteorder)
            raw = self._record(f"data/{key}")
            if not isinstance(numel, int) or numel < 0 or len(raw) < numel * dtype.itemsize:
                raise PthError(f"{self.path} is not a valid PyTorch checkpoint: storage {key} is shorter than "
                               f"its {numel} elements")
            self.storages[name, key] = np.frombuffer(raw, dtype, count=numel)
        return self.storages[name, key]


# Named tuples: no __dict__, no __setstate__, read-only fields, so that the pickle's BUILD cannot
# change what find_class and persistent_load give it.

class _StorageType(NamedTuple):
    """What the pickle's ``torch.FloatStorage`` (etc.) stands for: a name, used in ``persistent_load``."""

    name: str


class _Storage(NamedTuple):
    array: np.ndarray  # flat, of the storage's dtype
    bfloat16: bool


class _Callable(NamedTuple):
    fn: Callable

    def __call__(self, *args):
        return self.fn(*args)


def _is_index_tuple(t) -> bool:
    return isinstance(t, tuple) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in t)


def _rebuild_tensor(storage, offset, size, stride, *_ignored) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    backward_hooks[, metadata])`` as a numpy copy, every element checked to lie inside the storage."""
    if not (isinstance(storage, _Storage) and _is_index_tuple((offset,)) and _is_index_tuple(size)
            and _is_index_tuple(stride) and len(size) == len(stride)):
        raise ValueError("a tensor with malformed storage, offset, size or stride")
    a = storage.array
    if 0 in size:
        x = np.zeros(size, a.dtype)
    else:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= len(a):
            raise ValueError(f"a tensor of shape {list(size)} reaches past its storage of {len(a)} elements")
        x = np.lib.stride_tricks.as_strided(a[offset:], size, [s * a.itemsize for s in stride], writeable=False)
    x = np.array(x, a.dtype.newbyteorder("="), order="C")  # a copy: the zip's bytes are not kept
    if storage.bfloat16:  # the high half of a float32
        x = (x.astype(np.uint32) << 16).view(np.float32)
    return x


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_state):
    return data


def _size(dims=()) -> tuple:
    return tuple(dims)


def _encode(text, encoding="utf-8") -> bytes:
    # pickle protocol 2 writes bytes as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("_codecs.encode of something other than latin-1 text")
    return text.encode("latin1")


_GLOBALS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _size,
    ("_codecs", "encode"): _encode,
}
# builtin types: the pickle cannot set attributes on them
_TYPES = {("collections", "OrderedDict"): collections.OrderedDict, ("builtins", "set"): set,
          ("builtins", "bytearray"): bytearray, ("builtins", "complex"): complex}


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: _Archive):
        super().__init__(io.BytesIO(data))
        self.archive = archive

    def find_class(self, module: str, name: str):
        if module == "__builtin__":  # protocol 2's name of builtins (torch.save writes protocol 2)
            module = "builtins"
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _TYPES:
            return _TYPES[module, name]
        if (module, name) not in _GLOBALS:
            raise _Refused(f"{module}.{name}")
        return _Callable(_GLOBALS[(module, name)])

    def persistent_load(self, pid):
        # ("storage", storage type, key, location, numel): the location (cpu, cuda:0) does not matter here
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and pid[1].name in STORAGE_DTYPES):
            raise ValueError("a persistent id that is not a storage")
        name = pid[1].name
        return _Storage(self.archive.storage(name, pid[2], pid[4]), bfloat16=name == "BFloat16Storage")
