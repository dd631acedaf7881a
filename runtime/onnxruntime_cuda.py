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

import logging
import os

import numpy as np

from kwmlp.artifact import (
    EMBEDDING_DIMS, EMBEDDING_INPUT, IO_OF_LAYOUT, KEYWORD_DIMS, KEYWORD_INPUT, LAYOUT_EMBEDDINGS, ModelInfo,
    fixed_shapes_of, import_onnxruntime, io_shapes, session_log_severity,
)
from kwmlp.errors import KwmlpError, first_line
from kwmlp.runtime import onnxruntime_backend as ortb
from kwmlp.runtime.device_array import DeviceArray
from kwmlp.runtime.device_graph import Executor, GraphReport, ShapeCache, ShapedRun, TensorSpec, run_in_lanes, shape_name
from kwmlp.runtime.runner import Runner
from kwmlp.runtime.shapes import bucket_rows, pad_rows

log = logging.getLogger("kwmlp")

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}
# the run option that leaves the stream unsynchronized at the end of a run: the downloads that
# follow on the same stream, then one synchronize, order everything
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


def model_at(path: str, info: ModelInfo, shape: tuple[int, ...]) -> tuple[str, bool]:
    """(the model to open at ``shape``, whether it is a fixed-shape file): the export's
    ``NAME.BxS.onnx`` when one of this export lies beside it (:func:`kwmlp.artifact.fixed_shapes_of`),
    else the export itself, to be folded with free-dimension overrides."""
    if info.layout != LAYOUT_EMBEDDINGS:
        return path, False
    fixed = fixed_shapes_of(path, info).get(tuple(shape))
    return (fixed, True) if fixed else (path, False)


class OrtShapeExecutor(Executor):
    """One ONNX Runtime CUDA session at one input shape, bound to device buffers through IO binding."""

    def __init__(self, path: str, info: ModelInfo, shape: tuple[int, ...], stream_handle: int,
                 graphs: bool, threads: int | None = None, backend: str = "onnxruntime-cuda"):
        self.ort = import_onnxruntime()
        self.shape, self.backend = tuple(shape), backend
        self.path, self.fixed_file = model_at(path, info, self.shape)
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
        try:
            return self.ort.InferenceSession(self.path, sess_options=opts, providers=providers)
        except Exception as e:  # ORT's own exception types
            raise KwmlpError(f"ONNX Runtime could not open {os.path.basename(self.path)} at shape "
                             f"{self.shape} on {self.backend} ({first_line(e)[:300]})") from e

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
    """ONNX Runtime's CUDA or TensorRT provider (``general.backend``): calls at a shape met ``admit_after`` times run on a session of
    their own at that shape (:class:`OrtShapeExecutor`, replayed as a CUDA graph where ONNX Runtime
    allows); other calls run on the general session (``general``, an :class:`OrtRunner`).

    ``cuda`` is the CUDA API of :mod:`kwmlp.cuda` (streams and pinned memory); ``capacity`` bounds
    the shapes held at once.
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
        self.threads = threads
        self.shapes = ShapeCache(self._shaped, capacity=capacity, admit_after=admit_after)
        self.exact_shapes = frozenset(fixed_shapes_of(self.path, info)) if info.layout == LAYOUT_EMBEDDINGS else frozenset()

    @property
    def metadata(self) -> dict[str, str]:
        return self.general.metadata

    def _shaped(self, shape: tuple[int, ...]) -> ShapedRun:
        stream = self.cuda.stream()
        try:
            executor = OrtShapeExecutor(self.path, self.info, shape, self.cuda.handle(stream), self.graphs,
                                        self.threads, self.backend)
            return ShapedRun(self.cuda, executor, stream, use_graphs=self.graphs,
                             check=lambda x: self.general.run({self.inputs[0]: x}))
        except Exception:
            self.cuda.destroy_stream(stream)
            raise

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        (x,) = feeds.values()
        if len(x) > self.piece_rows:  # a large batch: pieces on two streams, copies overlapping compute
            out = run_in_lanes(self.shapes, x, self.piece_rows)
            return self.general.run(feeds) if out is None else out
        rows = len(x) if x.shape in self.exact_shapes else bucket_rows(len(x))  # few shapes (kwmlp.runtime.shapes)
        shaped = self.shapes.get((rows,) + x.shape[1:])
        if shaped is None:
            return self.general.run(feeds)
        return {k: v[: len(x)] for k, v in shaped.run(pad_rows(x, rows)).items()}

    def run_device(self, feeds: dict[str, np.ndarray]) -> dict[str, DeviceArray]:
        """:meth:`run` with the outputs left on the GPU (:class:`~kwmlp.runtime.device_array.DeviceArray`)."""
        (x,) = feeds.values()
        rows = len(x) if x.shape in self.exact_shapes else bucket_rows(len(x))
        shaped = self.shapes.get((rows,) + x.shape[1:], now=True)
        if shaped is None:
            raise KwmlpError(f"{os.path.basename(self.path)} cannot keep results on the GPU at shape {x.shape}: "
                             f"{self.shapes.report().refused.get(shape_name((rows,) + x.shape[1:]), 'no session')}")
        return {k: v.head(len(x)) for k, v in shaped.run_device(pad_rows(x, rows)).items()}

    def graph_report(self) -> GraphReport:
        return self.shapes.report()

    def close(self) -> None:
        self.shapes.close()
        self.general.close()


def on_device(general: Runner, graphs: bool = True, threads: int | None = None) -> Runner:
    """``general`` (an ONNX Runtime CUDA session) with sessions at fixed shapes added, where the CUDA
    bindings that stage and stream them are installed; else ``general`` as it is (the reason at
    debug level)."""
    from kwmlp import cuda as cuda_api

    try:
        api = cuda_api.load()
        info = ModelInfo.from_props(general.metadata, general.path)
    except KwmlpError as e:
        log.debug("kwmlp: %s runs without sessions at fixed shapes or CUDA graphs (%s)",
                  os.path.basename(general.path), e)
        return general
    return OrtCudaRunner(general, info, api, graphs=graphs, threads=threads)
