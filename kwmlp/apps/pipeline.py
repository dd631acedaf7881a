"""Embedding many files: decoding on a background thread, short clips batched, long ones streamed.

:func:`embed_files` yields one :class:`Outcome` per input, in the order they finish. A file
that cannot be read, or whose output cannot be written, gives a failed outcome naming the
file and the reason; the others go on.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import queue
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from kwmlp.apps import audio
from kwmlp.dims import SAMPLE_RATE, num_chunks
from kwmlp.errors import KwmlpError
from kwmlp.fileio import atomic_path, sha256_file
from kwmlp.runtime.inputs import as_clip

FORMATS = ("npz", "npy")
FIELDS = ("timestamp_embeddings", "timestamps", "scene_embedding", "sample_rate_in", "duration_s")
# What an output was made from (a JSON string: the source's path, size and mtime, the model's
# sha256), stored with it and written last; --skip-existing skips only an output whose record matches.
PROVENANCE = "provenance"
BATCH_MAX_SECONDS = 60.0  # longer clips are embedded block by block instead of batched
QUEUE_BLOCKS = 8  # decoded blocks held at most between the decoder and the model
PENDING_MAX_SECONDS = 600.0  # audio waiting in partly filled batches (38 MB) before they all run


@dataclass(frozen=True)
class Job:
    path: str  # input file
    output: str  # .npz file, or folder of .npy files
    provenance: str = ""  # see PROVENANCE; set by with_provenance


@dataclass
class Outcome:
    job: Job
    error: str | None = None  # one line naming the file; None when written
    seconds: float = 0.0  # audio duration embedded
    skipped: bool = False


def output_for(rel: str, out_dir: str, fmt: str, keep_extension: bool = False) -> str:
    """``a/b.wav`` -> ``OUT/a/b.npz`` (``OUT/a/b.wav.npz`` with ``keep_extension``; a folder without
    ``.npz`` for ``npy``)."""
    stem = rel if keep_extension else os.path.splitext(rel)[0]
    return os.path.join(out_dir, stem + ".npz" if fmt == "npz" else stem)


def plan(inputs: list[str], out_dir: str, fmt: str = "npz", keep_extension: bool = False,
         left_out: collections.Counter | None = None) -> list[Job]:
    """One job per audio input (see :func:`kwmlp.apps.audio.find_audio`, which counts into
    ``left_out`` the files of other types); an ``out_dir`` that cannot be a folder, and two inputs
    that would write the same output, are a :class:`KwmlpError`."""
    if fmt not in FORMATS:
        raise KwmlpError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    _check_folder(out_dir)
    jobs, seen = [], {}
    for path, rel in audio.find_audio(inputs, left_out):
        out = output_for(rel, out_dir, fmt, keep_extension)
        if out in seen:
            hint = ("embed them into separate folders" if keep_extension else
                    f"add --keep-extension to name the outputs {os.path.basename(output_for(seen[out], '', fmt, True))} "
                    f"and {os.path.basename(output_for(path, '', fmt, True))}, or embed them into separate folders")
            raise KwmlpError(f"{seen[out]} and {path} would both be written to {out}; {hint}")
        seen[out] = path
        jobs.append(Job(path, out))
    return jobs


def _check_folder(out_dir: str) -> None:
    """Refuse an output folder that is a file, or lies under one, before any model is loaded."""
    path = os.path.abspath(out_dir)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    if os.path.isdir(path):
        return
    if path == os.path.abspath(out_dir):
        raise KwmlpError(f"the output folder {out_dir} is a file; name a folder for the outputs")
    raise KwmlpError(f"the output folder {out_dir} cannot be made: {path} is a file")


def with_provenance(jobs: list[Job], model_path: str) -> list[Job]:
    """The jobs with what their outputs will be made from: each source's path, size and mtime
    (read now, before it is decoded) and the model file's sha256. A source that cannot be read
    gets none: its decoding reports why."""
    model_sha256 = sha256_file(model_path)
    out = []
    for job in jobs:
        try:
            st = os.stat(job.path)
        except OSError:
            out.append(job)
            continue
        record = {"source": os.path.abspath(job.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                  "model_sha256": model_sha256}
        out.append(dataclasses.replace(job, provenance=json.dumps(record, sort_keys=True)))
    return out


def _recorded(job: Job) -> str | None:
    """The provenance stored with an existing output; None when there is no complete output."""
    try:
        if job.output.endswith(".npz"):
            with np.load(job.output) as z:
                return str(z[PROVENANCE]) if PROVENANCE in z.files else None
        if not all(os.path.isfile(os.path.join(job.output, f + ".npy")) for f in FIELDS):
            return None
        return str(np.load(os.path.join(job.output, PROVENANCE + ".npy")))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return None


def is_done(job: Job) -> bool:
    """Whether ``job.output`` is complete and was made from the same source and model
    (``job.provenance``, see :func:`with_provenance`)."""
    return bool(job.provenance) and _recorded(job) == job.provenance


def write_result(job: Job, arrays: dict[str, np.ndarray]) -> None:
    """Write one input's arrays, and ``job.provenance``, atomically: a complete file, or none
    (the old one stays)."""
    arrays = {**arrays, PROVENANCE: np.array(job.provenance)}
    if job.output.endswith(".npz"):
        with atomic_path(job.output) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return
    # each file atomic, the provenance last: a folder counts as done (is_done) only once all are there
    if os.path.exists(os.path.join(job.output, PROVENANCE + ".npy")):
        os.remove(os.path.join(job.output, PROVENANCE + ".npy"))
    for name in (*FIELDS, PROVENANCE):
        with atomic_path(os.path.join(job.output, name + ".npy")) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, arrays[name])


@dataclass
class _Decoded:
    job: Job
    header: audio.AudioInfo | None = None
    blocks: list[np.ndarray] = field(default_factory=list)
    frames: int | None = None  # decoded, at the file's rate: the header's count may be wrong

    @property
    def duration_s(self) -> float:
        return self.header.duration_s if self.frames is None else self.frames / self.header.sample_rate


def _decode(jobs: list[Job], out: queue.Queue, stop: threading.Event, block_seconds: float) -> None:
    """Producer thread: ("begin", job, header), ("data", job, block)..., ("end", job, frames decoded) or
    ("error", job, message) per file, then None (after ("crash", None, exception) if it failed)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for job in jobs:
            try:
                if not put(("begin", job, audio.info(job.path))):
                    return
                blocks = audio.read_blocks(job.path, block_seconds)
                while True:
                    try:
                        block = next(blocks)
                    except StopIteration as end:  # its value: the frames decoded
                        put(("end", job, end.value))
                        break
                    if not put(("data", job, block)):
                        return
            except KwmlpError as e:
                put(("error", job, str(e)))
            except OSError as e:
                put(("error", job, f"{job.path}: {e.strerror or e}"))
    except BaseException as e:  # a bug, not a bad file: the consumer raises it rather than wait forever
        put(("crash", None, e))
    finally:
        put(None)


class _Batcher:
    """Clips with the same number of one-second chunks, embedded together ``batch_size`` at a time."""

    def __init__(self, embedder, batch_size: int):
        self.embedder = embedder
        self.batch_size = max(1, batch_size)
        self.groups: dict[int, list[tuple[_Decoded, np.ndarray]]] = {}
        self.pending = 0  # samples in self.groups

    def add(self, item: _Decoded, clip: np.ndarray) -> Iterator[Outcome]:
        key = num_chunks(len(clip))
        group = self.groups.setdefault(key, [])
        group.append((item, clip))
        self.pending += len(clip)
        if len(group) >= self.batch_size:
            del self.groups[key]
            self.pending -= sum(len(c) for _, c in group)
            yield from self._run(group)
        if self.pending > PENDING_MAX_SECONDS * SAMPLE_RATE:  # many lengths, few of each: bound the memory
            yield from self.flush()

    def flush(self) -> Iterator[Outcome]:
        groups, self.groups, self.pending = self.groups, {}, 0
        for group in groups.values():
            yield from self._run(group)

    def _run(self, group) -> Iterator[Outcome]:
        try:
            results = self.embedder.embed([clip for _, clip in group])
        except KwmlpError as e:
            yield from (Outcome(item.job, f"{item.job.path}: {e}") for item, _ in group)
            return
        for (item, _), r in zip(group, results):
            yield _finish(item, r)


def result_arrays(r, sample_rate_in: int, duration_s: float) -> dict[str, np.ndarray]:
    """The arrays of one output file (:data:`FIELDS`) from an embedding result of one clip."""
    return {
        "timestamp_embeddings": np.asarray(r.timestamp_embeddings, np.float32),
        "timestamps": np.asarray(r.timestamps, np.float32),
        "scene_embedding": np.asarray(r.scene_embeddings, np.float32),
        "sample_rate_in": np.int64(sample_rate_in),
        "duration_s": np.float64(duration_s),
    }


def _finish(item: _Decoded, r) -> Outcome:
    arrays = result_arrays(r, item.header.sample_rate, item.duration_s)
    try:
        write_result(item.job, arrays)
    except OSError as e:
        return Outcome(item.job, f"{item.job.output}: cannot write ({e.strerror or e})")
    return Outcome(item.job, seconds=item.duration_s)


def embed_files(
    embedder, jobs: list[Job], batch_size: int = 16, skip_existing: bool = False,
    block_seconds: float = audio.BLOCK_SECONDS,
) -> Iterator[Outcome]:
    """Embed every job's file with ``embedder`` (a :class:`kwmlp.runtime.Embedder`) and write its output.

    Files are decoded on a background thread ``block_seconds`` at a time; clips up to
    :data:`BATCH_MAX_SECONDS` are batched by chunk count, longer ones streamed through
    ``embedder.stream()`` (memory bounded by a few blocks).
    """
    todo = []
    for job in with_provenance(jobs, embedder.model_path):
        if skip_existing and is_done(job):
            yield Outcome(job, skipped=True)
        else:
            todo.append(job)
    q: queue.Queue = queue.Queue(maxsize=QUEUE_BLOCKS)
    stop = threading.Event()
    thread = threading.Thread(target=_decode, args=(todo, q, stop, block_seconds), name="kwmlp-decode", daemon=True)
    thread.start()
    batcher = _Batcher(embedder, batch_size)
    try:
        yield from _consume(embedder, q, batcher)
        yield from batcher.flush()
    finally:
        stop.set()
        thread.join()


def _consume(embedder, q: queue.Queue, batcher: _Batcher) -> Iterator[Outcome]:
    item, stream = None, None  # the file being assembled; None after it failed
    while (msg := q.get()) is not None:
        kind, job, payload = msg
        if kind == "crash":
            raise RuntimeError("decoding thread failed") from payload
        if kind == "error":
            item, stream = None, None
            yield Outcome(job, payload)
            continue
        if kind == "begin":
            item = _Decoded(job, payload)
            stream = embedder.stream() if payload.duration_s > BATCH_MAX_SECONDS else None
            continue
        if item is None or item.job is not job:  # the rest of a file that already failed
            continue
        try:
            if kind == "end":
                item.frames = payload
            if kind == "data" and stream is not None:
                stream.feed(payload)
            elif kind == "data":
                item.blocks.append(payload)
            elif stream is not None:
                yield _finish(item, stream.finish())
            else:
                # checked here, per file: a clip refused inside a batch would fail the batch's other files
                yield from batcher.add(item, as_clip(np.concatenate(item.blocks), "the audio"))
        except KwmlpError as e:
            item, stream = None, None
            yield Outcome(job, f"{job.path}: {e}")


class Progress:
    """Counts for the progress line: files, hours of audio, times realtime."""

    def __init__(self):
        self.start = time.perf_counter()
        self.seconds = 0.0
        self.done = self.failed = self.skipped = 0

    def add(self, o: Outcome) -> None:
        if o.skipped:
            self.skipped += 1
        elif o.error:
            self.failed += 1
        else:
            self.done += 1
            self.seconds += o.seconds

    @property
    def realtime(self) -> float:
        return self.seconds / max(time.perf_counter() - self.start, 1e-9)

    def postfix(self) -> str:
        return f"{self.seconds / 3600:.3f} h audio, {self.realtime:.0f}x realtime"

