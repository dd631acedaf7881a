"""ONNX Runtime's CUDA provider with the whole graph on the device: a session per input shape the
runtime meets repeatedly, bound to preallocated device buffers with pinned host staging, and
replayed as a CUDA graph (:mod:`kwmlp.runtime.device_graph` owns the buffers, the states and the
cache; this module supplies the ONNX Runtime :class:`~kwmlp.runtime.device_graph.Executor`).

A session at a fixed shape is opened on the export's fixed-shape file for that shape when one lies
beside it (``kwmlp export --fixed-shape 1x15680``: the shapes the runtime meets are canonical,
:mod:`kwmlp.runtime.shapes`), else on the export itself with ONNX Runtime's free-dimension
overrides, which fold the graph's shape arithmetic for that shape. It asks for
``enable_cuda_graph`` and runs on the shape's own stream (``user_compute_stream``), so that the
staging copies and ONNX Runtime's kernels are ordered on one stream. ONNX Runtime refuses CUDA
graphs when nodes of the graph are left off the CUDA provider with Memcpy nodes around them; the
session is then opened without graphs, runs plainly on the same buffers, and the refusal is
logged at debug level (``kwmlp --debug``).

ONNX Runtime captures inside a session's first run (it runs the model, then runs it again under
capture, then replays it, all in one ``run_with_iobinding``); every later run replays.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading

import numpy as np

from kwmlp.artifact import (
    EMBEDDING_DIMS, EMBEDDING_INPUT, IO_OF_LAYOUT, KEYWORD_DIMS, KEYWORD_INPUT, LAYOUT_EMBEDDINGS, ModelInfo,
    fixed_shapes_of, import_onnxruntime, io_shapes, session_log_severity,
)
from kwmlp.errors import KwmlpError, first_line
from kwmlp.runtime import onnxruntime_backend as ortb
from kwmlp.runtime.device_array import DeviceArray
from kwmlp.runtime.device_graph import (
    CHECK_TOLERANCE, Executor, GraphReport, ShapeCache, ShapedRun, TensorSpec, run_in_lanes, shape_name,
)
from kwmlp.runtime.runner import Runner
from kwmlp.runtime.shapes import bucket_rows, pad_rows

log = logging.getLogger("kwmlp")

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
# the run option that leaves the stream unsynchronized at the end of a plain run: the downloads that
# follow on the same stream, then one synchronize, order everything (a graph replay synchronizes
# the stream itself, so two lanes overlap less on ONNX Runtime than on TensorRT)
_NO_SYNC = "disable_synchronize_execution_providers"


def session_options(ort, input_name: str, shape: tuple[int, ...], threads: int | None):
    """Session options that fix the graph's free dimensions to ``shape`` (none for ``input_name`` "",
    a fixed-shape file)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = session_log_severity()  # a refused CUDA graph is no error of the user's
    opts.intra_op_num_threads = threads or 1  # only shape nodes may run on the CPU
    names = {EMBEDDING_INPUT: EMBEDDING_DIMS, KEYWORD_INPUT: KEYWORD_DIMS}.get(input_name, ())
    for name, size in zip(names, shape):
        opts.add_free_dimension_override_by_name(name, int(size))
    return opts


def fixed_files(path: str, info: ModelInfo) -> dict[tuple[int, ...], str]:
    """``{input shape: model}`` of the fixed-shape models (read once per runner: each file's metadata
    is opened): a fixed-shape file itself, or the export's ``NAME.BxS.onnx`` files of this export
    beside it (:func:`kwmlp.artifact.fixed_shapes_of`). Other shapes open the export, folded with
    free-dimension overrides."""
    if info.shape is not None:
        return {info.shape: path}
    return fixed_shapes_of(path, info) if info.layout == LAYOUT_EMBEDDINGS else {}


class OrtShapeExecutor(Executor):
    """One ONNX Runtime CUDA session at one input shape, bound to device buffers through IO binding:
    on ``path``, a fixed-shape model of that shape when ``fixed_file``, else the export, whose free
    dimensions are then set to ``shape``."""

    def __init__(self, path: str, info: ModelInfo, shape: tuple[int, ...], stream_handle: int,
                 graphs: bool, threads: int | None = None, backend: str = "onnxruntime-cuda",
                 fixed_file: bool = False):
        self.ort = import_onnxruntime()
        self.shape, self.backend = tuple(shape), backend
        self.path, self.fixed_file = path, fixed_file
        self.session, self.refused = self._open(info, stream_handle, graphs, threads)
        self.tensors = self._specs(info)
        self.io = self.session.io_binding()
        self.options = self.ort.RunOptions()
        self.options.add_run_config_entry(_NO_SYNC, "1")

    def _open(self, info: ModelInfo, stream_handle: int, graphs: bool, threads: int | None):
        """(session, why it replays no CUDA graph or None): with graphs asked for, a session that
        refuses them is opened again without."""
        input_name = IO_OF_LAYOUT[info.layout][0][0]
        free = "" if self.fixed_file else input_name  # a fixed file has no free dimensions
        providers = lambda g: ortb.providers_for(self.backend, input_name, self.shape, stream_handle, g)
        if not graphs:
            return self._session(session_options(self.ort, free, self.shape, threads), providers(False)), \
                "CUDA graphs are off"
        try:
            return self._session(session_options(self.ort, free, self.shape, threads), providers(True)), None
        except KwmlpError as e:  # e.g. "... all compute graph nodes have not been partitioned to the CUDA EP"
            refused = f"ONNX Runtime refused CUDA graphs: {first_line(e.__cause__ or e)[:200]}"
        return self._session(session_options(self.ort, free, self.shape, threads), providers(False)), refused

    def _session(self, opts, providers: list):
        """A session whose first provider is the one asked for. ONNX Runtime's Python layer retries a
        session whose provider refused an option with its fallback providers, and says so on stdout
        ("EP Error ... Falling back"): that text is kept off the user's stdout, and such a session
        refused, since it runs neither on the shape's stream nor with the options asked for."""
        wanted, said = providers[0][0], io.StringIO()
        try:
            with contextlib.redirect_stdout(said):
                session = self.ort.InferenceSession(self.path, sess_options=opts, providers=providers)
        except Exception as e:  # ORT's own exception types
            raise KwmlpError(f"ONNX Runtime could not open {os.path.basename(self.path)} at shape "
                             f"{self.shape} on {self.backend} ({first_line(e)[:300]})") from e
        started = session.get_providers()
        if not started or started[0] != wanted:
            why = next((line for line in said.getvalue().splitlines() if "EP Error" in line), "")
            raise KwmlpError(f"ONNX Runtime started {started[0] if started else 'nothing'} instead of {wanted} for "
                             f"{os.path.basename(self.path)} at shape {self.shape}{f' ({why[:300]})' if why else ''}")
        return session

    def _specs(self, info: ModelInfo) -> dict[str, TensorSpec]:
        shapes = io_shapes(info, self.shape)
        types = {a.name: a.type for a in self.session.get_inputs() + self.session.get_outputs()}
        inputs = {a.name for a in self.session.get_inputs()}
        return {n: TensorSpec(shapes[n], np.dtype(_ORT_DTYPES.get(types[n], np.float32)), n in inputs) for n in types}

    def bind(self, buffers) -> None:
        for name, spec in self.tensors.items():
            bind = self.io.bind_input if spec.is_input else self.io.bind_output
            bind(name, "cuda", 0, spec.dtype, list(spec.shape), buffers.device[name])

    def enqueue(self) -> None:
        self.session.run_with_iobinding(self.io, self.options)

    def capture(self):
        # ONNX Runtime captured inside the first run (module docstring): this run is its replay
        self.enqueue()
        return self.session

    def replay(self, graph) -> None:
        self.enqueue()

    def close(self) -> None:
        self.io = self.session = None


class OrtCudaRunner(Runner):
    """ONNX Runtime's CUDA or TensorRT provider (``general.backend``): calls at a shape met
    ``admit_after`` times run on a session of their own at that shape (:class:`OrtShapeExecutor`,
    replayed as a CUDA graph where ONNX Runtime allows); other calls run on the general session
    (``general``, an :class:`OrtRunner`).

    Each thread has a cache of its own (at most ``capacity`` shapes): ONNX Runtime's CUDA provider
    keeps a session's graph per thread, and a session with CUDA graphs takes one run at a time.
    ``cuda`` is cuda-python's API (:mod:`kwmlp.cuda`): streams and pinned memory.
    """

    fixed_shapes = True  # calls at repeated shapes replay: the embedder pads calls to few shapes
    # Rows per piece of a large batch. A piece of 32 ten-second clips is 20 MB in and a few ms of
    # work on a large GPU: long enough to hide the next piece's upload, short enough that the
    # first upload and the last download (not overlapped) stay small.
    piece_rows = 32

    def __init__(self, general: Runner, info: ModelInfo, cuda, graphs: bool = True, capacity: int = 8,
                 admit_after: int = 2, threads: int | None = None):
        self.general, self.info, self.cuda, self.graphs = general, info, cuda, graphs
        self.path, self.backend, self.providers = general.path, general.backend, general.providers
        self.inputs, self.outputs = general.inputs, general.outputs
        self.max_samples, self.cache_sized_calls = general.max_samples, False
        self.threads, self.capacity, self.admit_after = threads, capacity, admit_after
        self._local, self._caches, self._lock = threading.local(), [], threading.Lock()
        self._fixed_files = fixed_files(self.path, info)
        self.exact_shapes = frozenset(self._fixed_files)

    @property
    def metadata(self) -> dict[str, str]:
        return self.general.metadata

    @property
    def shapes(self) -> ShapeCache:
        """This thread's cache of sessions at fixed shapes."""
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = ShapeCache(self._shaped, capacity=self.capacity, admit_after=self.admit_after)
            with self._lock:
                self._caches.append(cache)
        return cache

    def _shaped(self, shape: tuple[int, ...]) -> ShapedRun:
        stream = self.cuda.stream()
        try:
            model = self._fixed_files.get(shape)
            executor = OrtShapeExecutor(model or self.path, self.info, shape, self.cuda.handle(stream), self.graphs,
                                        self.threads, self.backend, fixed_file=model is not None)
            return ShapedRun(self.cuda, executor, stream, use_graphs=self.graphs, tol=CHECK_TOLERANCE[self.info.precision],
                             check=lambda x: self.general.run({self.inputs[0]: x}))
        except Exception:
            self.cuda.destroy_stream(stream)
            raise

    def _rows(self, x: np.ndarray) -> int:
        """Rows a call runs as: its own at a fixed-shape file's shape, else :func:`bucket_rows`."""
        return len(x) if x.shape in self.exact_shapes else bucket_rows(len(x))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A call on its shape's session where it has one (a large batch in pieces on two streams,
        copies overlapping compute), else on the general session."""
        (x,) = feeds.values()
        out = None
        if len(x) > self.piece_rows and x.shape not in self.exact_shapes:
            out = run_in_lanes(self.shapes, x, self.piece_rows)
        elif (shaped := self.shapes.get(self._run_shape(x))) is not None:
            out = shaped.run(pad_rows(x, self._rows(x)))
            out = None if out is None else {k: v[: len(x)] for k, v in out.items()}
        return self.general.run(feeds) if out is None else out

    def _run_shape(self, x: np.ndarray) -> tuple[int, ...]:
        return (self._rows(x),) + x.shape[1:]

    def run_device(self, feeds: dict[str, np.ndarray]) -> dict[str, DeviceArray]:
        """:meth:`run` with the outputs left on the GPU (:class:`~kwmlp.runtime.device_array.DeviceArray`)."""
        (x,) = feeds.values()
        shape = self._run_shape(x)
        for _ in range(2):  # a run evicted between get and run: the next get makes another
            shaped = self.shapes.get(shape, now=True)
            out = None if shaped is None else shaped.run_device(pad_rows(x, shape[0]))
            if out is not None:
                return {k: v.head(len(x)) for k, v in out.items()}
        raise KwmlpError(f"{os.path.basename(self.path)} cannot keep results on the GPU at shape {x.shape}: "
                         f"{self.graph_report().refused.get(shape_name(shape), 'its session was closed')}")

    def graph_report(self) -> GraphReport:
        with self._lock:
            return GraphReport.total(c.report() for c in self._caches)

    def close(self) -> None:
        with self._lock:
            for cache in self._caches:
                cache.close()
        self.general.close()


def on_device(general: Runner, graphs: bool = True, threads: int | None = None) -> Runner:
    """``general`` (an ONNX Runtime CUDA session) with sessions at fixed shapes added, where
    cuda-python (streams, pinned memory, no pycuda: it needs a context pushed per thread) is
    installed; else ``general`` as it is (the reason at debug level)."""
    from kwmlp import cuda as cuda_api

    try:
        api = cuda_api.load()
        if not api.supports_graphs:  # pycuda: no graphs, and a context to push in every thread
            raise KwmlpError(f"sessions at fixed shapes need cuda-python, not {api.name}")
        info = ModelInfo.from_props(general.metadata, general.path)
    except KwmlpError as e:
        log.debug("kwmlp: %s runs without sessions at fixed shapes or CUDA graphs (%s)",
                  os.path.basename(general.path), e)
        return general
    return OrtCudaRunner(general, info, api, graphs=graphs, threads=threads)
