"""TensorRT engines at run time (TensorRT 10.x name-based tensor API, ``execute_async_v3``).

Each thread gets its own engine, execution context, non-default CUDA stream and buffers: a
profile may serve only one context at a time, and a 0.42 M-parameter engine is cheap to hold
twice. Device buffers and pinned host buffers grow as needed and are reused across calls; the
input shape is set per call and output sizes come from the context. With ``cuda_graph=True`` the
enqueue is captured as a CUDA graph after one plain warm-up run at a (profile, input shape), and
replayed while that shape and the buffer addresses stay; a context keeps one graph, since its
layer resources follow the last shape it ran (TensorRT#3798).

``tensorrt`` and the CUDA bindings are imported when a runner is created, never at import.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from kwmlp.errors import KwmlpError
from kwmlp.artifact.sidecar import EngineInfo, mismatch, read_sidecar, rows_per_call, this_device
from kwmlp.cuda import CudaError
from kwmlp.runtime.runner import Runner, run_in_rows
from kwmlp.trt import import_tensorrt, logger as trt_logger

log = logging.getLogger("kwmlp")


class EngineMismatch(KwmlpError):
    """The engine was built for another GPU or TensorRT version (or cannot load here at all)."""


def _tensorrt():
    try:
        return import_tensorrt()
    except KwmlpError as e:
        raise EngineMismatch(str(e)) from None


def _check_here(path: str) -> tuple[EngineInfo, object, object]:
    """(sidecar record, tensorrt, CUDA API) for an engine that can run here; EngineMismatch otherwise."""
    try:
        info = read_sidecar(path)
    except KwmlpError as e:
        raise EngineMismatch(str(e)) from None
    trt = _tensorrt()
    from kwmlp import cuda as cuda_api

    try:
        cuda = cuda_api.load()
    except KwmlpError as e:
        raise EngineMismatch(str(e)) from None
    with cuda.context():
        here = this_device(trt, cuda)
    reason = mismatch(info.device, here)
    if reason:
        raise EngineMismatch(f"{path} cannot run here: {reason}")
    return info, trt, cuda


def engine_problem(path: str) -> str | None:
    """Why the engine at ``path`` cannot run here (no TensorRT, no GPU, built for another GPU or
    TensorRT version), or None when it matches; no engine is deserialized."""
    try:
        _check_here(path)
    except EngineMismatch as e:
        return str(e)
    return None


class _Buffer:
    """A device buffer and its pinned host twin, grown on demand."""

    def __init__(self, cuda, dtype: np.dtype):
        self.cuda, self.dtype, self.nbytes = cuda, dtype, 0
        self.device = self.host_ptr = 0
        self.host = np.empty(0, dtype)

    def ensure(self, nbytes: int) -> bool:
        """Make room for ``nbytes``; True when the addresses changed."""
        if self.nbytes and nbytes <= self.nbytes:
            return False
        # TensorRT needs a non-null address even for an empty tensor (e.g. 0 timestamps for a clip
        # under 160 samples): allocate at least 256 bytes, which also keeps its alignment
        size = max(nbytes, 2 * self.nbytes, 256)
        self.free()
        self.nbytes = size
        self.device = self.cuda.malloc(self.nbytes)
        self.host, self.host_ptr = self.cuda.pinned(self.nbytes, self.dtype)
        return True

    def free(self) -> None:
        if self.nbytes:
            self.cuda.free(self.device)
            self.cuda.free_pinned(self.host_ptr)
            self.nbytes = 0


class _Worker:
    """One thread's engine, context, stream, buffers and captured graphs."""

    def __init__(self, trt, cuda, engine, use_graphs: bool):
        self.trt, self.cuda, self.engine = trt, cuda, engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise KwmlpError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda.stream()
        self.handle = cuda.handle(self.stream)
        self.profile = 0
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.buffers = {n: _Buffer(cuda, np.dtype(trt.nptype(engine.get_tensor_dtype(n)))) for n in names}
        self.inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.use_graphs = use_graphs and cuda.supports_graphs
        self.warm: set = set()
        self.graphs: dict = {}
        self.key = None  # the (profile, shape) this context last ran

    def _drop_graphs(self) -> None:
        for g in self.graphs.values():
            self.cuda.destroy_graph(g)
        self.graphs.clear()
        self.warm.clear()

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.handle):
            raise KwmlpError("TensorRT failed to enqueue the engine (see the TensorRT log)")

    def _execute(self, key) -> None:
        if not self.use_graphs:
            return self._enqueue()
        if key != self.key:
            # a context's layer resources follow its last profile and shapes: a graph captured at
            # another shape must not be replayed after them (TensorRT#3798), so one graph a context
            self._drop_graphs()
            self.key = key
        if key in self.graphs:
            return self.cuda.launch(self.graphs[key], self.stream)
        if key not in self.warm:  # a graph is captured only after one plain run at this shape
            self.warm.add(key)
            return self._enqueue()
        try:
            self.graphs[key] = self.cuda.capture(self.stream, self._enqueue)
        except (CudaError, KwmlpError) as e:  # announced, then plain enqueue from now on
            log.warning("kwmlp: CUDA graph capture failed (%s); running without CUDA graphs", e)
            self.use_graphs = False
            return self._enqueue()
        self.cuda.launch(self.graphs[key], self.stream)

    def run(self, x: np.ndarray, profile: int) -> dict[str, np.ndarray]:
        name = self.inputs[0]
        ctx = self.context
        if profile != self.profile:  # before set_input_shape: switching invalidates the shapes
            try:  # returns False on TensorRT 10.x, raises on others (and for an invalid index)
                switched = ctx.set_optimization_profile_async(profile, self.handle)
            except RuntimeError as e:
                raise KwmlpError(f"TensorRT could not switch to optimization profile {profile} ({e})") from e
            if not switched:
                raise KwmlpError(f"TensorRT could not switch to optimization profile {profile}")
            self.profile = profile
        if not ctx.set_input_shape(name, tuple(x.shape)):
            raise KwmlpError(f"TensorRT rejected input shape {tuple(x.shape)} for profile {profile}")
        missing = ctx.infer_shapes()
        if missing:
            raise KwmlpError(f"TensorRT could not infer the shapes of {', '.join(missing)}")
        shapes = {}
        moved = False
        for n, buf in self.buffers.items():
            shape = tuple(ctx.get_tensor_shape(n))
            if any(d < 0 for d in shape):  # KW-MLP has no data-dependent output shapes
                raise KwmlpError(f"TensorRT left output {n} with an unresolved shape {shape}")
            shapes[n] = shape
            moved |= buf.ensure(int(np.prod(shape, dtype=np.int64)) * buf.dtype.itemsize)
            if not ctx.set_tensor_address(n, buf.device):
                raise KwmlpError(f"TensorRT rejected the device address of tensor {n}")
        if moved:
            self._drop_graphs()
        src = self.buffers[name]
        nbytes = x.size * src.dtype.itemsize
        np.copyto(src.host[: x.size], x.reshape(-1), casting="same_kind")
        self.cuda.h2d(src.device, src.host_ptr, nbytes, self.stream)
        self._execute((profile, tuple(x.shape)))
        for n in self.outputs:
            buf = self.buffers[n]
            self.cuda.d2h(buf.host_ptr, buf.device, int(np.prod(shapes[n], dtype=np.int64)) * buf.dtype.itemsize,
                          self.stream)
        self.cuda.sync(self.stream)
        out = {}
        for n in self.outputs:
            size = int(np.prod(shapes[n], dtype=np.int64))
            out[n] = self.buffers[n].host[:size].reshape(shapes[n]).astype(np.float32, copy=True)
        return out

    def close(self) -> None:
        self._drop_graphs()
        for buf in self.buffers.values():
            buf.free()
        self.cuda.destroy_stream(self.stream)


class TrtRunner(Runner):
    """A TensorRT engine written by ``kwmlp build``: a :class:`~kwmlp.runtime.runner.Runner`.

    ``run`` is thread-safe (a worker per thread); batches larger than every profile that takes
    the input's length run in pieces. Raises :class:`EngineMismatch` when the engine cannot run
    on this machine (another GPU or TensorRT version, no TensorRT, no GPU).
    """

    def __init__(self, path: str, cuda_graph: bool = False):
        self.path = path
        self.info, trt, self.cuda = _check_here(path)
        self.trt, self.cuda_graph = trt, cuda_graph
        self._runtime = trt.Runtime(trt_logger(trt))  # outlives every engine deserialized from it
        with open(path, "rb") as f:
            self._plan = f.read()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._workers: list[_Worker] = []
        self._closed = False
        first = self._worker()
        self.backend = "tensorrt"
        self.inputs = tuple(first.inputs)
        self.outputs = tuple(first.outputs)
        self.providers = [f"TensorRT {trt.__version__}"]
        self._metadata = self.info.model_info().to_props()
        self.max_samples = max(p.max[1] for p in self.info.profiles)

    @property
    def metadata(self) -> dict[str, str]:
        return self._metadata

    def _worker(self) -> _Worker:
        if self._closed:
            raise KwmlpError(f"{self.path}: the runner is closed")
        w = getattr(self._local, "worker", None)
        if w is None:
            with self._lock, self.cuda.context():
                engine = self._runtime.deserialize_cuda_engine(self._plan)
                if engine is None:
                    raise EngineMismatch(f"{self.path} could not be deserialized by TensorRT {self.trt.__version__}; "
                                         "rebuild it here with `kwmlp build`")
                w = _Worker(self.trt, self.cuda, engine, self.cuda_graph)
                self._workers.append(w)
            self._local.worker = w
        return w

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (x,) = feeds.values()
        profile, rows = rows_per_call(self.info.profiles, x.shape, self.path)
        w = self._worker()
        with self.cuda.context():
            # with CUDA graphs the remainder piece is padded to the full pieces' shape: a context
            # keeps one graph (TensorRT#3798), and alternating shapes would never replay it
            return run_in_rows(lambda f: w.run(f[self.inputs[0]], profile), feeds, rows, self.outputs,
                               pad=w.use_graphs)

    def close(self) -> None:
        """Frees every thread's context, stream and device buffers (there is no finalizer: device
        memory goes back here or when the process ends). Idempotent; a later ``run`` is an error."""
        with self._lock, self.cuda.context():
            for w in self._workers:
                w.close()
            self._workers.clear()
        self._local = threading.local()
        self._closed = True

