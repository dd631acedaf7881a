"""A model run at one fixed input shape on a CUDA device, and a bounded cache of such runs: the
one owner of what the ONNX Runtime CUDA runner and the TensorRT runner share (device buffers,
pinned host staging, warm-up, CUDA-graph capture and replay, which shapes get one).

A backend supplies an :class:`Executor` for one input shape (an ONNX Runtime session, or a
TensorRT execution context, bound to that shape); a :class:`ShapedRun` gives it device buffers for
every input and output with pinned host twins (:class:`DeviceBuffers`) and a stream of its own,
and walks these states, one walk per shape::

    cold --run--> warm --run--> captured --run--> captured ...   (each later run replays)
                        \\
                         +----> plain (capture refused or graphs off: plain runs from now on)

- **cold**: nothing ran at this shape; the first run is plain, because lazy allocations, library
  loading and autotuning happen in it and none of them may be captured.
- **warm**: one plain run done; the next run captures one enqueue as a CUDA graph and replays it.
- **captured**: a run stages the input into pinned memory, uploads it, replays the graph and
  downloads the outputs, all on the shape's stream, and synchronizes once.
- **plain**: the executor cannot be captured (say why in ``Executor.refused``: e.g. ONNX Runtime
  placed Memcpy nodes, so its CUDA graphs are refused) or graphs are off; it runs plainly on the
  same preallocated buffers. The reason is logged once, at debug level.

The rules this relies on: a graph freezes the shapes, the device addresses and (TensorRT) the
optimization profile of its capture, so every shape has an executor and buffers of its own that
never move (a TensorRT context's layer resources follow the last shape it ran, TensorRT#3798, so a
TensorRT shape gets its own context); a ShapedRun serves one thread at a time (its lock: its
buffers are shared, and ONNX Runtime's CUDA graphs do not support concurrent runs of a session).

Nothing here imports CUDA bindings: the CUDA API object (:mod:`kwmlp.cuda`) is handed in.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from kwmlp.errors import KwmlpError, first_line
from kwmlp.runtime.device_array import Allocation, DeviceArray
from kwmlp.runtime.shapes import pad_rows

log = logging.getLogger("kwmlp")

COLD, WARM, CAPTURED, PLAIN = "cold", "warm", "captured", "plain"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an executor at its shape."""

    shape: tuple[int, ...]
    dtype: np.dtype
    is_input: bool

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


class CaptureRefused(KwmlpError):
    """The executor cannot be captured as a CUDA graph (the message says why)."""


class DeviceBuffers:
    """A device buffer and a pinned host twin for every tensor of one shape, allocated once.

    ``stage(name, x)`` copies ``x`` into the pinned twin and queues its upload on ``stream``;
    ``fetch(names)`` queues the downloads; after the stream is synchronized, ``result(name)`` is a
    float32 copy of the pinned twin (the twin is reused by the next run).
    """

    def __init__(self, cuda, tensors: dict[str, TensorSpec], stream):
        self.cuda, self.tensors, self.stream = cuda, tensors, stream
        self.device: dict[str, int] = {}
        self.host: dict[str, np.ndarray] = {}
        self._pinned: dict[str, int] = {}
        try:
            for name, spec in tensors.items():
                # TensorRT wants a non-null address even for an empty tensor (0 timestamps): >= 256 bytes
                size = max(spec.nbytes, 256)
                self.device[name] = cuda.malloc(size)
                host, self._pinned[name] = cuda.pinned(size, np.dtype(spec.dtype))
                self.host[name] = host[: int(np.prod(spec.shape, dtype=np.int64))].reshape(spec.shape)
        except Exception:
            self.free()
            raise

    def stage(self, name: str, x: np.ndarray) -> None:
        spec = self.tensors[name]
        if tuple(x.shape) != spec.shape:
            raise KwmlpError(f"{name}: received shape {tuple(x.shape)}, this run takes {spec.shape}")
        np.copyto(self.host[name], x, casting="same_kind")
        self.cuda.h2d(self.device[name], self._pinned[name], spec.nbytes, self.stream)

    def fetch(self, names) -> None:
        for name in names:
            self.cuda.d2h(self._pinned[name], self.device[name], self.tensors[name].nbytes, self.stream)

    def pinned(self, name: str) -> int:
        """The address of ``name``'s pinned host twin."""
        return self._pinned[name]

    def result(self, name: str) -> np.ndarray:
        return self.host[name].astype(np.float32, copy=True)

    def free(self) -> None:
        for ptr in self.device.values():
            self.cuda.free(ptr)
        for ptr in self._pinned.values():
            self.cuda.free_pinned(ptr)
        self.device.clear()
        self._pinned.clear()
        self.host.clear()


class Executor(abc.ABC):
    """What a backend supplies for one input shape: its tensors, and how to run, capture and replay.

    ``refused`` is None when the executor can be captured, else one sentence saying why not.
    """

    tensors: dict[str, TensorSpec]
    refused: str | None = None

    @abc.abstractmethod
    def bind(self, buffers: DeviceBuffers) -> None:
        """Point the model's inputs and outputs at ``buffers`` (once: the addresses never move)."""

    @abc.abstractmethod
    def enqueue(self) -> None:
        """One plain run on the stream the executor was made with (asynchronous where it can be)."""

    @abc.abstractmethod
    def capture(self):
        """Capture one run as a CUDA graph and run it; returns what :meth:`replay` replays.
        Raises :class:`CaptureRefused` (or a CUDA error) when capture fails."""

    @abc.abstractmethod
    def replay(self, graph) -> None:
        """Run the captured graph again on the stream."""

    def release(self, graph) -> None:
        """Free a captured graph."""

    def close(self) -> None:
        """Free the session or context."""


@dataclass
class GraphReport:
    """How a runner's shapes ran: graphs captured, calls replayed, shapes refused and why."""

    captured: int = 0
    replays: int = 0
    plain_runs: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # "BxL" -> why it runs plainly

    def add(self, other: "GraphReport") -> None:
        self.captured += other.captured
        self.replays += other.replays
        self.plain_runs += other.plain_runs
        self.refused.update(other.refused)


def differs(got: dict[str, np.ndarray], want: dict[str, np.ndarray], tol: float = 1e-2) -> str | None:
    """Where ``got`` is not ``want`` within ``tol`` (absolute and relative), or None. Loose on purpose:
    kernels chosen for a fixed shape round differently; a broken buffer, binding or replay is off by
    far more (garbage, zeros, NaN)."""
    for name, w in want.items():
        g = got.get(name)
        if g is None or g.shape != w.shape:
            return f"{name}: shape {None if g is None else g.shape}, expected {w.shape}"
        if not np.allclose(g, w, rtol=tol, atol=tol):
            err = np.abs(g.astype(np.float64) - w)
            return f"{name}: max difference {np.nanmax(err) if np.isfinite(err).any() else 'NaN'}"
    return None


def shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


class ShapedRun:
    """One executor at one input shape, with its buffers, stream and state (module docstring).

    ``submit(x)`` queues a run (staging, upload, execute, download) and returns at once where the
    backend is asynchronous; ``collect()`` waits for it and returns ``{output: float32 array}``;
    ``run(x)`` does both. A ShapedRun serves one thread at a time.
    """

    def __init__(self, cuda, executor: Executor, stream, use_graphs: bool,
                 check: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None):
        self.cuda, self.executor, self.stream, self.check = cuda, executor, stream, check
        self.broken: str | None = None  # set when its first run disagreed with ``check``
        self.inputs = [n for n, s in executor.tensors.items() if s.is_input]
        self.outputs = [n for n, s in executor.tensors.items() if not s.is_input]
        self.shape = executor.tensors[self.inputs[0]].shape
        self.buffers = DeviceBuffers(cuda, executor.tensors, stream)
        executor.bind(self.buffers)
        self.lock = threading.Lock()
        self.graph = None
        self.report = GraphReport()
        reason = executor.refused or (None if use_graphs else "CUDA graphs are off")
        self.state = COLD if reason is None else PLAIN
        if reason:
            self._refuse(reason)

    def _refuse(self, reason: str) -> None:
        self.state = PLAIN
        self.report.refused[shape_name(self.shape)] = reason
        log.debug("kwmlp: shape %s runs without a CUDA graph: %s", shape_name(self.shape), reason)

    def _execute(self) -> None:
        if self.state == CAPTURED:
            self.report.replays += 1
            return self.executor.replay(self.graph)
        if self.state == WARM:
            try:
                self.graph = self.executor.capture()
            except (CaptureRefused, RuntimeError) as e:  # CudaError is a RuntimeError; plain from now on
                self._refuse(f"capture failed ({first_line(e)[:200]})")
                self.report.plain_runs += 1
                return self.executor.enqueue()
            self.state = CAPTURED
            self.report.captured += 1
            return None
        if self.state == COLD:
            self.state = WARM
        self.report.plain_runs += 1
        return self.executor.enqueue()

    def submit(self, x: np.ndarray) -> None:
        self.buffers.stage(self.inputs[0], x)
        self._execute()
        self.buffers.fetch(self.outputs)

    def collect(self) -> dict[str, np.ndarray]:
        self.cuda.sync(self.stream)
        return {n: self.buffers.result(n) for n in self.outputs}

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with self.lock:
            return self._run(x)

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        before = self.state
        self.submit(x)
        out = self.collect()
        if self.check is None or not (before == COLD or before == WARM and self.state == CAPTURED):
            return out
        return self._verified(before, x, out)

    def _verified(self, before: str, x: np.ndarray, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The first plain run and the first replay of a shape are checked against ``check`` (the
        runner's general path) on the same input; a disagreement is announced and ``check``'s answer
        returned: after a plain run the shape is ``broken`` (its cache drops it), after a capture
        the shape runs plainly from then on."""
        ref = self.check(x)
        diff = differs(out, ref)
        if diff is None:
            return out
        name = shape_name(self.shape)
        if before == COLD:
            self.broken = f"its outputs differ from the general path's ({diff})"
            log.warning("kwmlp: shape %s: %s; it runs on the general path", name, self.broken)
        else:
            self.executor.release(self.graph)
            self.graph = None
            self._refuse(f"its CUDA graph's outputs differ from a plain run's ({diff})")
            log.warning("kwmlp: shape %s: CUDA graph dropped: %s", name, self.report.refused[name])
        return ref

    def run_device(self, x: np.ndarray) -> dict[str, DeviceArray]:
        """Like :meth:`run`, the outputs left on the device: each copied (device to device) into an
        allocation of its own, which the next run does not overwrite. A shape's first runs, which
        are checked on the host, are uploaded from their checked host outputs instead."""
        with self.lock:
            if self.check is not None and self.state in (COLD, WARM):
                host = self._run(x)
                return {n: self._upload(n, host[n]) for n in self.outputs}
            self.buffers.stage(self.inputs[0], x)
            self._execute()
            out = {}
            for n in self.outputs:
                spec = self.executor.tensors[n]
                alloc = Allocation(self.cuda, max(spec.nbytes, 1))
                self.cuda.d2d(alloc.ptr, self.buffers.device[n], spec.nbytes, self.stream)
                out[n] = DeviceArray(alloc, spec.shape, spec.dtype)
            self.cuda.sync(self.stream)
            return out

    def _upload(self, name: str, host: np.ndarray) -> DeviceArray:
        spec = self.executor.tensors[name]
        staged = self.buffers.host[name]
        np.copyto(staged, host, casting="same_kind")
        alloc = Allocation(self.cuda, max(spec.nbytes, 1))
        self.cuda.h2d(alloc.ptr, self.buffers.pinned(name), spec.nbytes, self.stream)
        self.cuda.sync(self.stream)
        return DeviceArray(alloc, spec.shape, spec.dtype)

    def close(self) -> None:
        with self.lock:
            if self.graph is not None:
                self.executor.release(self.graph)
                self.graph = None
            self.executor.close()
            self.buffers.free()
            self.cuda.destroy_stream(self.stream)


def pipelined(lanes: list[ShapedRun], pieces: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Run equal-shaped ``pieces`` on ``lanes`` (ShapedRuns of that shape, each on its own stream) in
    turn, so that one lane's upload and download overlap another's compute: piece k is submitted
    before piece k - len(lanes) + 1 is collected. Results in the order of ``pieces``."""
    results: list[dict[str, np.ndarray]] = []
    pending: list[ShapedRun] = []
    locks = [lane.lock for lane in lanes]
    for lock in locks:
        lock.acquire()
    try:
        for k, piece in enumerate(pieces):
            lane = lanes[k % len(lanes)]
            if len(pending) == len(lanes):  # this lane's previous piece must be out of its buffers
                results.append(pending.pop(0).collect())
            lane.submit(piece)
            pending.append(lane)
        results.extend(lane.collect() for lane in pending)
    finally:
        for lock in locks:
            lock.release()
    return results


class ShapeCache:
    """The ShapedRuns of one runner, by input shape: at most ``capacity`` of them (the least
    recently used is closed to make room), and a shape gets one only once it has been met
    ``admit_after`` times (shapes met once run on the runner's general path).

    ``make(shape)`` builds a ShapedRun; it is called with the cache's lock held, so that threads
    meeting a new shape at once build one, not one each.
    """

    def __init__(self, make: Callable[[tuple[int, ...]], ShapedRun], capacity: int = 8, admit_after: int = 2):
        if capacity < 1 or admit_after < 1:
            raise ValueError("capacity and admit_after must be at least 1")
        self.make, self.capacity, self.admit_after = make, capacity, admit_after
        self._runs: OrderedDict[tuple[int, ...], ShapedRun] = OrderedDict()  # (lane, *shape) -> run
        self._seen: OrderedDict[tuple[int, ...], int] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = GraphReport()  # what evicted runs did, kept for the report
        self._failed: dict[tuple[int, ...], str] = {}  # shapes whose run could not be made, and why

    def get(self, shape: tuple[int, ...], lane: int = 0, now: bool = False) -> ShapedRun | None:
        """The ShapedRun of ``shape`` (``lane``: one of several runs of that shape, each on its own
        stream, for :func:`pipelined`), or None while the shape has not been met often enough
        (``now``: whatever it was met) or cannot have one."""
        shape = tuple(int(d) for d in shape)
        key = (lane,) + shape
        with self._lock:
            run = self._runs.get(key)
            if run is not None and run.broken:
                self._failed[shape] = run.broken
                self._retire(self._runs.pop(key))
                return None
            if run is not None:
                self._runs.move_to_end(key)
                return run
            if shape in self._failed:
                return None
            seen = self._seen.pop(key, 0) + 1
            if seen < self.admit_after and not now:
                self._seen[key] = seen
                while len(self._seen) > 4 * self.capacity:  # remember a bounded number of shapes
                    self._seen.popitem(last=False)
                return None
            while len(self._runs) >= self.capacity:
                _, old = self._runs.popitem(last=False)
                self._retire(old)
            try:
                run = self._runs[key] = self.make(shape)
            except KwmlpError as e:  # the general path keeps serving this shape
                self._failed[shape] = str(e)
                log.debug("kwmlp: shape %s stays on the general path: %s", shape_name(shape), e)
                return None
            return run

    def _retire(self, run: ShapedRun) -> None:
        self._closed.add(run.report)
        run.close()  # waits for a thread still running it (its lock)

    def report(self) -> GraphReport:
        with self._lock:
            total = GraphReport()
            total.add(self._closed)
            for run in self._runs.values():
                total.add(run.report)
            total.refused.update((shape_name(s), why) for s, why in self._failed.items())
            return total

    def close(self) -> None:
        with self._lock:
            while self._runs:
                self._retire(self._runs.popitem(last=False)[1])


def run_in_lanes(cache: ShapeCache, x: np.ndarray, rows: int, lanes: int = 2) -> dict[str, np.ndarray] | None:
    """``x`` (batch first) in pieces of ``rows`` rows (the last one zero-padded) on ``lanes`` runs of
    the piece's shape, pipelined (:func:`pipelined`); outputs concatenated and cut to ``len(x)``.
    None when the cache has no run for the piece shape yet (the caller's general path runs it)."""
    shape = (rows,) + x.shape[1:]
    runs = [cache.get(shape, lane) for lane in range(lanes)]
    if any(r is None for r in runs):
        return None
    pieces = [x[i : i + rows] for i in range(0, len(x), rows)]
    pieces[-1] = pad_rows(pieces[-1], rows)
    if all(r.state in (CAPTURED, PLAIN) for r in runs):
        outs = pipelined(runs, pieces)
    else:  # warming up: one piece at a time, each lane's first runs checked (ShapedRun.run)
        outs = [runs[k % lanes].run(p) for k, p in enumerate(pieces)]
    return {k: np.concatenate([o[k] for o in outs])[: len(x)] for k in outs[0]}
