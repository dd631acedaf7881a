"""Results that stay on the GPU: a device allocation exported through DLPack, for callers whose next
model runs on the same GPU (``torch.from_dlpack(a)``, ``cupy.from_dlpack(a)``, ``jax.dlpack``).

The DLPack structures (dmlc/dlpack ``dlpack.h``, version 0.8 ABI, the one every consumer reads) are
written with ctypes, as dlpack's own ``apps/numpy_dlpack`` example does: ``__dlpack__`` returns a
``"dltensor"`` capsule holding a ``DLManagedTensor``; the consumer renames it ``"used_dltensor"``
and calls its deleter when done; a capsule never consumed calls the deleter when it is collected.
The deleter drops the reference that keeps the allocation alive; the allocation itself is freed
when the last :class:`DeviceArray` over it goes (``free`` of the CUDA API it came from).
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

KDL_CPU, KDL_CUDA = 1, 2  # DLDeviceType
_DL_FLOAT = 2  # DLDataTypeCode kDLFloat


class _Device(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int), ("device_id", ctypes.c_int)]


class _DataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _Device), ("ndim", ctypes.c_int), ("dtype", _DataType),
                ("shape", ctypes.POINTER(ctypes.c_int64)), ("strides", ctypes.POINTER(ctypes.c_int64)),
                ("byte_offset", ctypes.c_uint64)]


_Deleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class _Managed(ctypes.Structure):
    _fields_ = [("dl_tensor", _Tensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _Deleter)]


# The capsule arrives as a raw pointer: converting an object being deallocated to a py_object would
# take and drop a reference to it, deallocating it a second time.
_CapsuleDestructor = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_py = ctypes.pythonapi
_py.PyCapsule_New.restype = ctypes.py_object
_py.PyCapsule_New.argtypes = [ctypes.c_void_p, ctypes.c_char_p, _CapsuleDestructor]
_py.PyCapsule_IsValid.restype = ctypes.c_int
_py.PyCapsule_IsValid.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
_py.PyCapsule_GetPointer.restype = ctypes.c_void_p
_py.PyCapsule_GetPointer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]

_exported: dict[int, tuple] = {}  # address of a DLManagedTensor -> what must live until its deleter runs
_exported_lock = threading.Lock()


def _release(address: int) -> None:
    with _exported_lock:
        _exported.pop(address, None)


_delete = _Deleter(_release)  # what a consumer calls, from C


@_CapsuleDestructor
def _destroy_capsule(capsule):
    if _py.PyCapsule_IsValid(capsule, b"dltensor"):  # never consumed: nobody else will call the deleter
        _release(_py.PyCapsule_GetPointer(capsule, b"dltensor"))


class Allocation:
    """``nbytes`` of device memory from ``cuda`` (:mod:`kwmlp.cuda`), freed when the last array over it goes."""

    def __init__(self, cuda, nbytes: int):
        self.cuda, self.nbytes = cuda, nbytes
        self.ptr = cuda.malloc(nbytes)

    def __del__(self):
        if getattr(self, "ptr", 0):
            self.cuda.free(self.ptr)
            self.ptr = 0


class DeviceArray:
    """A float array in device memory: ``shape`` and ``strides`` (in elements) over an :class:`Allocation`.

    ``__dlpack__`` / ``__dlpack_device__`` hand it to another framework without a copy; ``numpy()``
    copies it to the host (synchronously).
    """

    def __init__(self, allocation: Allocation, shape: tuple[int, ...], dtype, strides: tuple[int, ...] | None = None,
                 device_type: int = KDL_CUDA, device_id: int = 0):
        self.allocation, self.shape, self.dtype = allocation, tuple(shape), np.dtype(dtype)
        self.strides = tuple(strides) if strides is not None else _contiguous(self.shape)
        self.device_type, self.device_id = device_type, device_id

    @property
    def ptr(self) -> int:
        return self.allocation.ptr

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.device_type, self.device_id

    def __dlpack__(self, stream=None, max_version=None, dl_device=None, copy=None):
        """A ``"dltensor"`` capsule. The data is ready: it was synchronized before this array was made,
        so no stream ordering is needed whatever ``stream`` the consumer names."""
        ndim = len(self.shape)
        shape, strides = (ctypes.c_int64 * max(ndim, 1))(*self.shape), (ctypes.c_int64 * max(ndim, 1))(*self.strides)
        managed = _Managed()
        t = managed.dl_tensor
        t.data, t.ndim, t.byte_offset = self.ptr, ndim, 0
        t.device = _Device(self.device_type, self.device_id)
        t.dtype = _DataType(_DL_FLOAT, self.dtype.itemsize * 8, 1)
        t.shape = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
        t.strides = ctypes.cast(strides, ctypes.POINTER(ctypes.c_int64))
        managed.deleter = _delete
        address = ctypes.addressof(managed)
        with _exported_lock:
            _exported[address] = (managed, shape, strides, self.allocation)
        return _py.PyCapsule_New(address, b"dltensor", _destroy_capsule)

    def head(self, *sizes: int) -> "DeviceArray":
        """The leading ``sizes`` of the first axes (a view: same memory and strides), e.g. the first
        B rows and T timestamps of a padded call's output."""
        shape = tuple(sizes) + self.shape[len(sizes) :]
        if any(n > m for n, m in zip(shape, self.shape)):
            raise ValueError(f"head {sizes} of an array of shape {self.shape}")
        return DeviceArray(self.allocation, shape, self.dtype, self.strides, self.device_type, self.device_id)

    def first(self) -> "DeviceArray":
        """The first element of the first axis, that axis dropped (a view)."""
        return DeviceArray(self.allocation, self.shape[1:], self.dtype, self.strides[1:], self.device_type,
                           self.device_id)

    def numpy(self) -> np.ndarray:
        """A host copy (the elements this array's shape and strides select)."""
        span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides)) if all(self.shape) else 0
        flat = np.empty(span, self.dtype)
        if span:
            self.allocation.cuda.d2h_sync(flat.ctypes.data, self.ptr, span * self.dtype.itemsize)
        return np.lib.stride_tricks.as_strided(flat, self.shape, [s * self.dtype.itemsize for s in self.strides]).copy()

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, device={self.__dlpack_device__()})"


def _contiguous(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(shape):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))
