"""TensorRT engines at run time (TensorRT 10.x name-based tensor API, ``execute_async_v3``).

Each thread gets its own engine, execution context, non-default CUDA stream and buffers: a
profile may serve only one context of an engine at a time (TensorRT#1590), and a 0.42 M-parameter
engine is cheap to hold twice. The general context runs any shape: device and pinned host
buffers grow as needed and are reused, the input shape is set per call and output sizes come
from the context. With ``cuda_graph=True`` each input shape a thread meets gets an engine and
context of its own (:class:`TrtShapeExecutor`) in a bounded cache
(:mod:`kwmlp.runtime.device_graph`, shared with ONNX Runtime's CUDA path): one plain run, then a
captured CUDA graph replayed on every later call at that shape, whatever other shapes run between.

An engine built without ``kwmlp build`` (trtexec, Polygraphy) has no sidecar: its profiles are
read from the engine itself, the export's settings from the ONNX beside it, and the checks only the
sidecar allows (the GPU and TensorRT version it was built for) are left to TensorRT, which refuses
to deserialize a plan of another version or GPU; one log line says so.

``tensorrt`` and the CUDA bindings are imported when a runner is created, never at import.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np

from kwmlp.errors import KwmlpError
from kwmlp.artifact import onnx_beside, read_model_info, require_file
from kwmlp.artifact.sidecar import (
    EngineInfo, Profile, find_sidecar, first_fitting, mismatch, rows_per_call, sidecar_path, this_device,
)
from kwmlp.runtime.device_graph import (
    CHECK_TOLERANCE, Executor, GraphReport, ShapeCache, ShapedRun, TensorSpec, run_in_lanes,
)
from kwmlp.runtime.runner import Runner, run_in_rows
from kwmlp.runtime.shapes import bucket_rows, pad_rows
from kwmlp.trt import import_tensorrt, logger as trt_logger

log = logging.getLogger("kwmlp")


class EngineMismatch(KwmlpError):
    """The engine was built for another GPU or TensorRT version (or cannot load here at all)."""


def _tensorrt():
    try:
        return import_tensorrt()
    except KwmlpError as e:
        raise EngineMismatch(str(e)) from None


def unchecked(path: str) -> str | None:
    """For an engine without a sidecar, the sentence saying which checks are left to TensorRT; else None."""
    if find_sidecar(path) is not None:
        return None
    return (f"{os.path.basename(path)} has no sidecar {os.path.basename(sidecar_path(path))} (built with trtexec or "
            f"Polygraphy?): profiles read from the engine, settings from {os.path.basename(onnx_beside(path))}; "
            "not checked: the GPU and TensorRT version it was built for (TensorRT refuses it if they differ)")


def _check_here(path: str) -> tuple[EngineInfo | None, object, object]:
    """(sidecar record or None, tensorrt, CUDA API) for an engine that can run here; EngineMismatch
    otherwise. Without a sidecar the device checks are TensorRT's, when it deserializes the engine."""
    try:
        require_file(path, "TensorRT engine")
        info = find_sidecar(path)
    except KwmlpError as e:
        raise EngineMismatch(str(e)) from None
    trt = _tensorrt()
    from kwmlp import cuda as cuda_api

    try:
        cuda = cuda_api.load()
    except KwmlpError as e:
        raise EngineMismatch(str(e)) from None
    if info is None:
        return None, trt, cuda
    with cuda.context():
        here = this_device(trt, cuda)
    reason = mismatch(info.device, here)
    if reason:
        raise EngineMismatch(f"{path} cannot run here: {reason}")
    return info, trt, cuda


def engine_problem(path: str) -> str | None:
    """Why the engine at ``path`` cannot run here (no TensorRT, no GPU, built for another GPU or
    TensorRT version), or None when it matches (or, without a sidecar, when :func:`unchecked`
    says what is left to TensorRT); no engine is deserialized."""
    try:
        _check_here(path)
    except EngineMismatch as e:
        return str(e)
    return None


def engine_profiles(engine, trt, path: str) -> tuple[Profile, ...]:
    """The optimization profiles a deserialized TensorRT engine holds for its one 2-D input
    (``engine.get_tensor_profile_shape(name, k)`` -> (min, opt, max) for each of
    ``engine.num_optimization_profiles``): what a sidecar records for an engine of ``kwmlp build``."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    out = []
    for k in range(engine.num_optimization_profiles):
        shapes = [tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, k)]
        if len(shapes) != 3 or any(len(s) != 2 for s in shapes):
            raise EngineMismatch(f"{path}: its input {name} has profile {k} shapes {shapes}, expected (batch, samples)")
        out.append(Profile(f"profile{k}", *shapes))
    if not out:
        raise EngineMismatch(f"{path} holds no optimization profile for its input {name}")
    return tuple(out)


class _Buffer:
    """A device buffer and its pinned host twin, grown on demand."""

    def __init__(self, cuda, dtype: np.dtype):
        self.cuda, self.dtype, self.nbytes = cuda, dtype, 0
        self.device = self.host_ptr = 0
        self.host = np.empty(0, dtype)

    def ensure(self, nbytes: int) -> bool:
        """Make room for ``nbytes``; True when the addresses moved."""
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


def _switch_profile(ctx, profile: int, handle: int) -> None:
    """Select ``profile`` on ``ctx`` (before ``set_input_shape``: switching invalidates the shapes)."""
    try:  # returns False on TensorRT 10.x, raises on others (and for an invalid index)
        switched = ctx.set_optimization_profile_async(profile, handle)
    except RuntimeError as e:
        raise KwmlpError(f"TensorRT could not switch to optimization profile {profile} ({e})") from e
    if not switched:
        raise KwmlpError(f"TensorRT could not switch to optimization profile {profile}")


def _shapes_at(ctx, names, name: str, shape: tuple[int, ...], profile: int) -> dict[str, tuple[int, ...]]:
    """Set the input shape on ``ctx``; every tensor's shape from the context (never the engine's -1s)."""
    if not ctx.set_input_shape(name, tuple(shape)):
        raise KwmlpError(f"TensorRT rejected input shape {tuple(shape)} for profile {profile}")
    missing = ctx.infer_shapes()
    if missing:
        raise KwmlpError(f"TensorRT could not infer the shapes of {', '.join(missing)}")
    shapes = {}
    for n in names:
        shapes[n] = tuple(ctx.get_tensor_shape(n))
        if any(d < 0 for d in shapes[n]):  # KW-MLP has no data-dependent output shapes
            raise KwmlpError(f"TensorRT left output {n} with an unresolved shape {shapes[n]}")
    return shapes


class TrtShapeExecutor(Executor):
    """An engine and execution context of their own at one input shape, for
    :mod:`~kwmlp.runtime.device_graph`. A context's layer resources follow the last shape it ran
    (TensorRT#3798), so a graph captured on a context that also runs other shapes would replay stale
    resources: one context per shape never does. And an optimization profile serves one context of an
    engine at a time (TensorRT#1590), so each shape deserializes its own engine (a 0.42 M-parameter
    engine: a few MB and milliseconds)."""

    def __init__(self, trt, cuda, engine, profile: int, shape: tuple[int, ...], stream):
        self.cuda, self.stream, self.handle = cuda, stream, cuda.handle(stream)
        self.engine = engine  # the context needs its engine alive
        self.memory = 0  # device memory of its own, for this shape only (TensorRT >= 10.1)
        self.context = _shape_context(trt, engine)
        if self.context is None:
            raise KwmlpError("TensorRT could not create an execution context (out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if profile:
            _switch_profile(self.context, profile, self.handle)
        shapes = _shapes_at(self.context, names, inputs[0], shape, profile)
        self.tensors = {n: TensorSpec(shapes[n], np.dtype(trt.nptype(engine.get_tensor_dtype(n))), n in inputs)
                        for n in names}
        if hasattr(self.context, "update_device_memory_size_for_shapes"):  # user-managed: sized for this shape
            size = max(int(self.context.update_device_memory_size_for_shapes()), 1)
            self.memory = cuda.malloc(size)
            self.context.set_device_memory(self.memory, size)

    def bind(self, buffers) -> None:
        for name in self.tensors:
            if not self.context.set_tensor_address(name, buffers.device[name]):
                raise KwmlpError(f"TensorRT rejected the device address of tensor {name}")

    def enqueue(self) -> None:
        if not self.context.execute_async_v3(self.handle):
            raise KwmlpError("TensorRT failed to enqueue the engine (see the TensorRT log)")

    def capture(self):
        graph = self.cuda.capture(self.stream, self.enqueue)  # captured work does not run: launch it
        self.cuda.launch(graph, self.stream)
        return graph

    def replay(self, graph) -> None:
        self.cuda.launch(graph, self.stream)

    def release(self, graph) -> None:
        self.cuda.destroy_graph(graph)

    def close(self) -> None:
        self.context = self.engine = None  # TensorRT frees them when their last references go
        if self.memory:
            self.cuda.free(self.memory)
            self.memory = 0


def _shape_context(trt, engine):
    """An execution context for one shape. By default a context reserves the device memory of the
    largest shape of every profile (TensorRT's STATIC strategy: the 10-minute profile's, for each of
    a runner's shapes); where TensorRT has user-managed memory (10.1 and later) the context is made
    without any, and :class:`TrtShapeExecutor` gives it what its own shape needs."""
    strategy = getattr(getattr(trt, "ExecutionContextAllocationStrategy", None), "USER_MANAGED", None)
    if strategy is None:
        return engine.create_execution_context()
    context = engine.create_execution_context(strategy)
    if context is not None and not hasattr(context, "set_device_memory"):  # no way to give it memory: the default
        return engine.create_execution_context()
    return context


class _Worker:
    """One thread's engine, its general context (any shape, buffers grown on demand, plain runs) and,
    with CUDA graphs, a context per shape met (:class:`TrtShapeExecutor` in a
    :class:`~kwmlp.runtime.device_graph.ShapeCache`), captured after one plain run and replayed."""

    def __init__(self, trt, cuda, make_engine, profiles, use_graphs: bool, tol: float = CHECK_TOLERANCE["fp32"]):
        self.trt, self.cuda, self.make_engine, self.profiles, self.tol = trt, cuda, make_engine, profiles, tol
        self.engine = engine = make_engine()
        self.context = engine.create_execution_context()
        if self.context is None:
            raise KwmlpError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda.stream()
        self.handle = cuda.handle(self.stream)
        self.profile = 0
        self.names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.buffers = {n: _Buffer(cuda, np.dtype(trt.nptype(engine.get_tensor_dtype(n)))) for n in self.names}
        self.inputs = [n for n in self.names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]
        # pycuda has no CUDA graphs: its shapes still get contexts and buffers of their own
        self.shapes = ShapeCache(self._shaped, admit_after=1) if use_graphs else None
        self.use_graphs = use_graphs and cuda.supports_graphs

    def _shaped(self, shape: tuple[int, ...]) -> ShapedRun:
        profile = first_fitting(self.profiles, shape)
        stream = self.cuda.stream()
        try:
            executor = TrtShapeExecutor(self.trt, self.cuda, self.make_engine(), profile, shape, stream)
            return ShapedRun(self.cuda, executor, stream, use_graphs=self.use_graphs, tol=self.tol,
                             check=lambda x: self._run_general(x, profile))
        except Exception:
            self.cuda.destroy_stream(stream)
            raise

    def run(self, x: np.ndarray, profile: int) -> dict[str, np.ndarray]:
        shaped = self.shapes.get(x.shape) if self.shapes is not None else None
        out = shaped.run(x) if shaped is not None else None  # None: no run for it, or evicted meanwhile
        return self._run_general(x, profile) if out is None else out

    def _run_general(self, x: np.ndarray, profile: int) -> dict[str, np.ndarray]:
        name, ctx = self.inputs[0], self.context
        if profile != self.profile:
            _switch_profile(ctx, profile, self.handle)
            self.profile = profile
        shapes = _shapes_at(ctx, self.names, name, x.shape, profile)
        for n, buf in self.buffers.items():
            buf.ensure(int(np.prod(shapes[n], dtype=np.int64)) * buf.dtype.itemsize)
            if not ctx.set_tensor_address(n, buf.device):
                raise KwmlpError(f"TensorRT rejected the device address of tensor {n}")
        src = self.buffers[name]
        np.copyto(src.host[: x.size], x.reshape(-1), casting="same_kind")
        self.cuda.h2d(src.device, src.host_ptr, x.size * src.dtype.itemsize, self.stream)
        if not ctx.execute_async_v3(self.handle):
            raise KwmlpError("TensorRT failed to enqueue the engine (see the TensorRT log)")
        sizes = {n: int(np.prod(shapes[n], dtype=np.int64)) for n in self.outputs}
        for n in self.outputs:
            buf = self.buffers[n]
            self.cuda.d2h(buf.host_ptr, buf.device, sizes[n] * buf.dtype.itemsize, self.stream)
        self.cuda.sync(self.stream)
        return {n: self.buffers[n].host[: sizes[n]].reshape(shapes[n]).astype(np.float32, copy=True)
                for n in self.outputs}

    def report(self) -> GraphReport:
        return self.shapes.report() if self.shapes is not None else GraphReport()

    def close(self) -> None:
        if self.shapes is not None:
            self.shapes.close()
        for buf in self.buffers.values():
            buf.free()
        self.cuda.destroy_stream(self.stream)


class TrtRunner(Runner):
    """A TensorRT engine written by ``kwmlp build`` (or, without its sidecar, by trtexec or
    Polygraphy from a kwmlp-rt export): a :class:`~kwmlp.runtime.runner.Runner`.

    ``run`` is thread-safe (a worker per thread); batches larger than every profile that takes
    the input's length run in pieces. Raises :class:`EngineMismatch` when the engine cannot run
    on this machine (another GPU or TensorRT version, no TensorRT, no GPU).
    """

    def __init__(self, path: str, cuda_graph: bool = False):
        self.path = path
        self.info, trt, self.cuda = _check_here(path)  # info: the sidecar, None for an engine without one
        self._metadata = read_model_info(path).to_props()  # the sidecar's record, or the ONNX beside it
        if self.info is None:
            log.info("kwmlp: %s", unchecked(path))
        self.trt, self.cuda_graph = trt, cuda_graph
        self.fixed_shapes = cuda_graph  # calls at repeated shapes replay: the embedder pads calls to few shapes
        self._runtime = trt.Runtime(trt_logger(trt))  # outlives every engine deserialized from it
        with open(path, "rb") as f:
            self._plan = f.read()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._workers: list[_Worker] = []
        self._closed = False
        if self.info is not None:
            self.profiles = self.info.profiles
        else:
            with self.cuda.context():
                self.profiles = engine_profiles(self._engine(), trt, path)
        first = self._worker()
        self.backend = "tensorrt"
        self.inputs = tuple(first.inputs)
        self.outputs = tuple(first.outputs)
        self.providers = [f"TensorRT {trt.__version__}"]
        self.max_samples = max(p.max[1] for p in self.profiles)
        # shapes of exact profiles (kwmlp build of fixed-shape exports): calls at them are not padded
        self.exact_shapes = frozenset(p.min for p in self.profiles if p.min == p.max)

    @property
    def metadata(self) -> dict[str, str]:
        return self._metadata

    def _engine(self):
        engine = self._runtime.deserialize_cuda_engine(self._plan)
        if engine is None:
            raise EngineMismatch(f"{self.path} could not be deserialized by TensorRT {self.trt.__version__}; "
                                 "rebuild it here with `kwmlp build`")
        return engine

    def _worker(self) -> _Worker:
        if self._closed:
            raise KwmlpError(f"{self.path}: the runner is closed")
        w = getattr(self._local, "worker", None)
        if w is None:
            with self._lock, self.cuda.context():
                tol = CHECK_TOLERANCE.get(self.metadata.get("kwmlp.precision", "fp32"), CHECK_TOLERANCE["fp16"])
                w = _Worker(self.trt, self.cuda, self._engine, self.profiles, self.cuda_graph, tol)
                self._workers.append(w)
            self._local.worker = w
        return w

    def _call_rows(self, x: np.ndarray, rows: int) -> int:
        """Rows a call of ``x`` runs as: a small call padded to few shapes (:func:`bucket_rows`) where
        they fit the profile's ``rows``, a fixed shape's or a plain runner's call as it is."""
        if not self.fixed_shapes or x.shape in self.exact_shapes:
            return len(x)
        padded = bucket_rows(len(x))
        return padded if padded <= rows else len(x)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A call in the first profile that takes its shape, in pieces of that profile's rows (on two
        streams in turn with CUDA graphs, copies overlapping compute), on this thread's worker."""
        (x,) = feeds.values()
        profile, rows = rows_per_call(self.profiles, x.shape, self.path)
        w = self._worker()
        with self.cuda.context():
            if w.shapes is not None and len(x) > rows:
                out = run_in_lanes(w.shapes, x, rows)
                if out is not None:
                    return out
            n = self._call_rows(x, rows)
            if n != len(x):
                return {k: v[: len(x)] for k, v in w.run(pad_rows(x, n), profile).items()}
            # with CUDA graphs the remainder piece is padded to the full pieces' shape, so that a
            # split batch meets one shape and replays its graph
            return run_in_rows(lambda f: w.run(f[self.inputs[0]], profile), feeds, rows, self.outputs,
                               pad=self.fixed_shapes)

    def run_device(self, feeds: dict[str, np.ndarray]) -> dict:
        """:meth:`run` with the outputs left on the GPU (one call within one profile; CUDA graphs on)."""
        (x,) = feeds.values()
        profile, rows = rows_per_call(self.profiles, x.shape, self.path)
        w = self._worker()
        if w.shapes is None or len(x) > rows:
            raise KwmlpError(f"{self.path}: results stay on the GPU only with cuda_graph=True and at most "
                             f"{rows} rows of this length per call")
        n = self._call_rows(x, rows)
        with self.cuda.context():
            for _ in range(2):  # a run evicted between get and run: the next get makes another
                shaped = w.shapes.get((n,) + x.shape[1:], now=True)
                out = None if shaped is None else shaped.run_device(pad_rows(x, n))
                if out is not None:
                    return {k: v.head(len(x)) for k, v in out.items()}
        raise KwmlpError(f"{self.path} cannot keep results on the GPU at shape {x.shape}")

    def graph_report(self) -> GraphReport:
        """CUDA graphs captured and replayed, and shapes refused, over every thread's worker."""
        with self._lock:
            return GraphReport.total(w.report() for w in self._workers)

    def close(self) -> None:
        """Frees every thread's context, stream and device buffers (there is no finalizer: device
        memory goes back here or when the process ends). Idempotent; a later ``run`` is an error."""
        with self._lock, self.cuda.context():
            for w in self._workers:
                w.close()
            self._workers.clear()
        self._local = threading.local()
        self._closed = True

