"""The few CUDA runtime calls the TensorRT backend needs, through cuda-python (``cuda.bindings``,
what TensorRT's own samples use since 10.14) or, when that is what is installed, pycuda.

Imported only by the TensorRT backend and ``kwmlp build``; a CPU-only machine never loads it.
"""

from __future__ import annotations

import contextlib
import ctypes

import numpy as np

from kwmlp.errors import KwmlpError, install_command

INSTALL_HINT = (f"install it with: {install_command('gpu')} (x86), or on a Jetson use JetPack's CUDA with "
                "cuda-python matching its CUDA version")


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6; `from cuda import cudart` is gone in 13
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python 12.x
        except ImportError:
            return None
    return cudart


class CudaError(RuntimeError):
    pass


class BindingsMissing(KwmlpError):
    """Neither cuda-python nor pycuda is installed (whether or not there is a GPU)."""


class CudaRuntime:
    """cuda-python's runtime API: every call's error code is checked."""

    name = "cuda-python"

    def __init__(self, cudart):
        self.rt = cudart

    def _ck(self, result):
        err, *values = result
        if err != self.rt.cudaError_t.cudaSuccess:
            name = self.rt.cudaGetErrorName(err)[1]
            raise CudaError(name.decode() if isinstance(name, bytes) else str(name))
        return values[0] if len(values) == 1 else (values or None)

    def context(self):
        return contextlib.nullcontext()  # the runtime API binds the primary context in every thread

    def device_count(self) -> int:
        """GPUs visible; 0 only for cudaErrorNoDevice. Any other error (e.g. cudaErrorInsufficientDriver:
        cuda-python 13 on a CUDA 12 driver) is raised as :class:`CudaError` with its name."""
        err, n = self.rt.cudaGetDeviceCount()
        if err == self.rt.cudaError_t.cudaErrorNoDevice:
            return 0
        return self._ck((err, n))

    def driver_version(self) -> str:
        """The CUDA version the driver supports, e.g. "12.6"."""
        v = self._ck(self.rt.cudaDriverGetVersion())
        return f"{v // 1000}.{v % 1000 // 10}"

    def memory(self) -> tuple[int, int]:
        """(free, total) bytes of device 0."""
        free, total = self._ck(self.rt.cudaMemGetInfo())
        return int(free), int(total)

    def device(self) -> tuple[str, str, str]:
        """(GPU name, compute capability "8.7", CUDA runtime version "12.6") of device 0."""
        props = self._ck(self.rt.cudaGetDeviceProperties(0))
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        v = self._ck(self.rt.cudaRuntimeGetVersion())
        return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}", f"{v // 1000}.{v % 1000 // 10}"

    def stream(self) -> int:
        return self._ck(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking))

    def destroy_stream(self, stream) -> None:
        self._ck(self.rt.cudaStreamDestroy(stream))

    def malloc(self, nbytes: int) -> int:
        return int(self._ck(self.rt.cudaMalloc(max(nbytes, 1))))

    def free(self, ptr: int) -> None:
        self._ck(self.rt.cudaFree(ptr))

    def pinned(self, nbytes: int, dtype: np.dtype) -> tuple[np.ndarray, int]:
        """A pinned host array of ``nbytes`` viewed as ``dtype``, and its pointer."""
        ptr = int(self._ck(self.rt.cudaMallocHost(max(nbytes, 1))))
        raw = (ctypes.c_uint8 * max(nbytes, 1)).from_address(ptr)
        return np.frombuffer(raw, dtype=np.uint8)[:nbytes].view(dtype), ptr

    def free_pinned(self, ptr: int) -> None:
        self._ck(self.rt.cudaFreeHost(ptr))

    def h2d(self, dst: int, src: int, nbytes: int, stream) -> None:
        self._ck(self.rt.cudaMemcpyAsync(dst, src, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def d2h(self, dst: int, src: int, nbytes: int, stream) -> None:
        self._ck(self.rt.cudaMemcpyAsync(dst, src, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def d2d(self, dst: int, src: int, nbytes: int, stream) -> None:
        self._ck(self.rt.cudaMemcpyAsync(dst, src, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream))

    def d2h_sync(self, dst: int, src: int, nbytes: int) -> None:
        """A synchronous copy to pageable host memory (DeviceArray.numpy)."""
        self._ck(self.rt.cudaMemcpy(dst, src, nbytes, self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost))

    def sync(self, stream) -> None:
        self._ck(self.rt.cudaStreamSynchronize(stream))

    def handle(self, stream) -> int:
        return int(stream)

    # CUDA graphs: capture one enqueue, replay it while shapes and addresses stay the same
    supports_graphs = True

    def capture(self, stream, enqueue) -> object:
        """``enqueue()`` captured on ``stream`` as an instantiated CUDA graph. Captured work does not
        run: :meth:`launch` the graph for that (and for every replay)."""
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._ck(self.rt.cudaStreamBeginCapture(stream, mode))
        failure = None
        try:
            enqueue()
        except Exception as e:  # re-raised below, once the capture is ended and cleaned up
            failure = e
        err, graph = self.rt.cudaStreamEndCapture(stream)
        if failure is not None or err != self.rt.cudaError_t.cudaSuccess:
            if graph:
                self.rt.cudaGraphDestroy(graph)
            self.rt.cudaGetLastError()  # clear the error an invalidated capture leaves (as trtexec does)
            if failure is not None:
                raise failure
            raise CudaError(f"cudaStreamEndCapture: {self.rt.cudaGetErrorName(err)[1]}")
        try:
            return self._ck(self.rt.cudaGraphInstantiate(graph, 0))
        finally:
            self._ck(self.rt.cudaGraphDestroy(graph))

    def launch(self, graph_exec, stream) -> None:
        """Run a captured graph on ``stream`` (asynchronously)."""
        self._ck(self.rt.cudaGraphLaunch(graph_exec, stream))

    def destroy_graph(self, graph_exec) -> None:
        self._ck(self.rt.cudaGraphExecDestroy(graph_exec))


class PyCuda:
    """The same calls through pycuda (no CUDA graphs: plain enqueue instead)."""

    name = "pycuda"
    supports_graphs = False

    def __init__(self, driver):
        self.drv = driver
        driver.init()
        self.ctx = driver.Device(0).retain_primary_context()
        self._keep: dict[int, object] = {}  # pointer -> pycuda allocation, freed explicitly

    def device_count(self) -> int:
        return self.drv.Device.count()

    def driver_version(self) -> str:
        v = self.drv.get_driver_version()
        return f"{v // 1000}.{v % 1000 // 10}"

    def memory(self) -> tuple[int, int]:
        free, total = self.drv.mem_get_info()
        return int(free), int(total)

    def device(self) -> tuple[str, str, str]:
        dev = self.drv.Device(0)
        major, minor = dev.compute_capability()
        v = self.drv.get_version()
        return dev.name(), f"{major}.{minor}", f"{v[0]}.{v[1]}"

    @contextlib.contextmanager
    def context(self):
        """pycuda needs the (primary) context current in the calling thread for every call."""
        self.ctx.push()
        try:
            yield
        finally:
            self.drv.Context.pop()

    def stream(self):
        return self.drv.Stream()

    def destroy_stream(self, stream) -> None:
        pass  # pycuda frees a Stream when it is garbage-collected

    def malloc(self, nbytes: int) -> int:
        mem = self.drv.mem_alloc(max(nbytes, 1))
        self._keep[int(mem)] = mem
        return int(mem)

    def free(self, ptr: int) -> None:
        self._keep.pop(ptr).free()

    def pinned(self, nbytes: int, dtype: np.dtype) -> tuple[np.ndarray, int]:
        arr = self.drv.pagelocked_empty(max(nbytes, 1), np.uint8)
        self._keep[arr.ctypes.data] = arr
        return arr[:nbytes].view(dtype), arr.ctypes.data

    def free_pinned(self, ptr: int) -> None:
        self._keep.pop(ptr, None)

    def h2d(self, dst: int, src: int, nbytes: int, stream) -> None:
        self.drv.memcpy_htod_async(dst, _host_view(src, nbytes), stream)

    def d2h(self, dst: int, src: int, nbytes: int, stream) -> None:
        self.drv.memcpy_dtoh_async(_host_view(dst, nbytes), src, stream)

    def d2d(self, dst: int, src: int, nbytes: int, stream) -> None:
        self.drv.memcpy_dtod_async(dst, src, nbytes, stream)

    def d2h_sync(self, dst: int, src: int, nbytes: int) -> None:
        self.drv.memcpy_dtoh(_host_view(dst, nbytes), src)

    def sync(self, stream) -> None:
        stream.synchronize()

    def handle(self, stream) -> int:
        return stream.handle


def _host_view(ptr: int, nbytes: int) -> np.ndarray:
    return np.frombuffer((ctypes.c_uint8 * max(nbytes, 1)).from_address(ptr), np.uint8)[:nbytes]


def load() -> CudaRuntime | PyCuda:
    """The CUDA API installed here, checked to see a GPU; a KwmlpError naming what is missing otherwise."""
    cudart = _cudart()
    if cudart is not None:
        api: CudaRuntime | PyCuda = CudaRuntime(cudart)
    else:
        try:
            import pycuda.driver as drv
        except ImportError:
            raise BindingsMissing(f"cuda-python is not installed (nor pycuda); {INSTALL_HINT}") from None
        try:
            api = PyCuda(drv)
        except drv.Error as e:
            raise KwmlpError(f"no CUDA GPU is usable here (pycuda: {e})") from e
    try:
        count = api.device_count()
    except CudaError as e:
        raise KwmlpError(f"CUDA is not usable here ({e}){_DRIVER_HINT.get(str(e), '')}") from e
    if count < 1:
        raise KwmlpError("no CUDA GPU is visible on this machine (check the driver and CUDA_VISIBLE_DEVICES)")
    return api


# what to do about the errors a first run meets
_DRIVER_HINT = {
    "cudaErrorInsufficientDriver": ": the NVIDIA driver is older than this cuda-python's CUDA; install cuda-python "
                                   "of the driver's CUDA major (`pip install 'cuda-python<13'` for a CUDA 12 driver, "
                                   f"or {install_command('gpu-cu12')})",
    "cudaErrorNoDevice": ": no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES)",
}
