"""Embedding a corpus with Ray Data: decoding in parallel tasks, embedding in an actor pool.

:func:`embed_corpus` lists the files like ``kwmlp embed`` does, decodes and resamples each in a
Ray task (``kwmlp.apps.audio.load``), embeds them in ``map_batches`` actors that each hold one
:class:`~kwmlp.runtime.Embedder` (``num_gpus`` per actor for TensorRT engines), and writes either
the same ``.npz``/``.npy`` tree as the local CLI or Parquet (one row per file). A file that
cannot be read or embedded becomes a row with an ``error``, never a crashed job.
Needs ``pip install -e '.[distributed]'``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from kwmlp.artifact import is_engine, require_file
from kwmlp.errors import KwmlpError, missing_extra
from kwmlp.apps.pipeline import Job, Outcome, is_done, plan, result_arrays, with_provenance, write_result
from kwmlp.runtime.result import EmbeddingResult

log = logging.getLogger("kwmlp")

FORMATS = ("npz", "npy", "parquet")
TASK_CPUS = 0.5  # logical CPUs of one decoding or writing task
_EMBEDDING_FIELDS = ("timestamp_embeddings", "timestamps", "scene_embedding")


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise missing_extra("ray[data]", "distributed") from e
    return ray


@dataclass(frozen=True)
class CorpusOptions:
    fmt: str = "npz"
    address: str | None = None  # a running cluster ("auto", "ray://host:10001"); None: start a local one
    actors: int = 1  # embedding actors (each holds one Embedder)
    batch_size: int = 16  # files per actor call
    num_gpus: float | None = None  # per actor; default 1 for a TensorRT engine, else 0
    threads: int | None = None  # ONNX Runtime threads per actor
    skip_existing: bool = False
    keep_extension: bool = False  # a.wav -> a.wav.npz, as `kwmlp embed --keep-extension`

    def check(self) -> None:
        if self.fmt not in FORMATS:
            raise KwmlpError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.actors < 1 or self.batch_size < 1:
            raise KwmlpError("actors and batch size must be at least 1")


def _decode(row: dict) -> dict:
    from kwmlp.apps import audio

    out = {"path": row["path"], "output": row["output"], "provenance": row["provenance"], "error": "", "sample_rate_in": 0, "duration_s": 0.0,
           "audio": np.zeros(0, np.float32)}
    try:
        header = audio.info(row["path"])
        out["audio"], frames = audio.decode(row["path"])
        out["sample_rate_in"], out["duration_s"] = header.sample_rate, frames / header.sample_rate
    except KwmlpError as e:
        out["error"] = str(e)
    except OSError as e:
        out["error"] = f"{row['path']}: {e.strerror or e}"
    return out


class _EmbedActor:
    """One Embedder per actor; a batch of decoded files in, their embeddings (or errors) out."""

    def __init__(self, model: str, threads: int | None):
        from kwmlp.runtime import Embedder

        self.embedder = Embedder(model, threads=threads)

    def __call__(self, batch: dict) -> dict:
        n = len(batch["path"])
        errors = [str(e) for e in batch["error"]]
        ok = [i for i in range(n) if not errors[i]]
        results = {}
        if ok:
            try:
                for i, r in zip(ok, self.embedder.embed([batch["audio"][i] for i in ok])):
                    results[i] = r
            except KwmlpError:  # find the culprit: one file at a time
                for i in ok:
                    try:
                        results[i] = self.embedder.embed(batch["audio"][i])
                    except KwmlpError as e:
                        errors[i] = f"{batch['path'][i]}: {e}"
        empty = (np.zeros((0, 64), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
        cols = {f: [] for f in _EMBEDDING_FIELDS}
        for i in range(n):
            r = results.get(i)
            values = (r.timestamp_embeddings, r.timestamps, r.scene_embeddings) if r is not None else empty
            for f, v in zip(_EMBEDDING_FIELDS, values):
                cols[f].append(v)
        out = {k: batch[k] for k in ("path", "output", "provenance", "sample_rate_in", "duration_s")}
        out["error"] = np.array(errors)  # "" for none: an all-None column would come back as NaN
        out.update({f: _object_array(v) for f, v in cols.items()})
        return out


def _object_array(values: list) -> np.ndarray:
    a = np.empty(len(values), dtype=object)
    a[:] = values
    return a


def _write_file(row: dict) -> dict:
    if not row["error"]:
        r = EmbeddingResult(row["timestamp_embeddings"], row["timestamps"], row["scene_embedding"])
        arrays = result_arrays(r, row["sample_rate_in"], row["duration_s"])
        try:
            write_result(Job(row["path"], row["output"], str(row["provenance"])), arrays)
        except OSError as e:
            row = {**row, "error": f"{row['output']}: cannot write ({e.strerror or e})"}
    return {"path": row["path"], "output": row["output"], "error": row["error"], "duration_s": row["duration_s"]}


def _to_arrow(batch: dict):
    import pyarrow as pa

    def lists(values, depth):
        items = [None if e else np.asarray(v, np.float32).tolist() for v, e in zip(values, batch["error"])]
        t = pa.float32()
        for _ in range(depth):
            t = pa.list_(t)
        return pa.array(items, type=t)

    return pa.table({
        "path": pa.array(list(batch["path"]), pa.string()),
        "duration_s": pa.array(np.asarray(batch["duration_s"], np.float64)),
        "sample_rate_in": pa.array(np.asarray(batch["sample_rate_in"], np.int64)),
        "scene_embedding": lists(batch["scene_embedding"], 1),
        "timestamp_embeddings": lists(batch["timestamp_embeddings"], 2),
        "timestamps": lists(batch["timestamps"], 1),
        "error": pa.array([str(e) or None for e in batch["error"]], pa.string()),
    })


def embed_corpus(model: str, inputs: list[str], out_dir: str, options: CorpusOptions = CorpusOptions()) -> list[Outcome]:
    """Embed every audio file under ``inputs`` on a Ray cluster; returns one :class:`Outcome` per file.

    ``options.fmt``: ``npz``/``npy`` writes ``out_dir/<relative path>.npz`` as ``kwmlp embed``
    does; ``parquet`` writes Parquet files under ``out_dir`` with one row per file (``path``,
    ``duration_s``, ``sample_rate_in``, ``scene_embedding`` [1024], ``timestamp_embeddings``
    [N][64], ``timestamps`` [N], ``error``).
    """
    options.check()
    require_file(model)
    ray = _ray()
    jobs = with_provenance(plan(inputs, out_dir, "npz" if options.fmt == "parquet" else options.fmt,
                                options.keep_extension), model)
    if not jobs:
        raise KwmlpError(f"no audio files found in {', '.join(inputs)}")
    done = [j for j in jobs if options.skip_existing and options.fmt != "parquet" and is_done(j)]
    todo = [j for j in jobs if j not in done]
    outcomes = [Outcome(j, skipped=True) for j in done]
    if not todo:
        return outcomes
    if not ray.is_initialized():
        ray.init(address=options.address, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    gpus = options.num_gpus if options.num_gpus is not None else (1.0 if is_engine(model) else 0)
    # Logical CPUs: the actors hold theirs for the whole job and must leave room for the decoding
    # and writing tasks, or the pipeline waits forever (2 actors of 1 CPU on a 2-CPU node did)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    actor_cpus = min(1.0, (cpus - TASK_CPUS) / options.actors)
    if actor_cpus < 0.1:
        raise KwmlpError(f"{options.actors} embedding actors do not fit the cluster's {cpus:g} CPUs; use fewer --actors")
    model = os.path.abspath(model)
    ds = ray.data.from_items([{"path": os.path.abspath(j.path), "output": os.path.abspath(j.output),
                               "provenance": j.provenance} for j in todo])
    # decoding stays in its own tasks: with the same resources Ray would fuse it into the actors,
    # which would then decode and embed in turn instead of side by side
    ds = ds.map(_decode, num_cpus=TASK_CPUS)
    ds = ds.map_batches(_EmbedActor, fn_constructor_kwargs={"model": model, "threads": options.threads},
                        batch_size=options.batch_size, compute=ray.data.ActorPoolStrategy(size=options.actors),
                        num_cpus=actor_cpus, num_gpus=gpus, batch_format="numpy")
    by_path = {os.path.abspath(j.path): j for j in todo}
    if options.fmt == "parquet":
        rows = _write_parquet(ds, out_dir)
    else:
        rows = ds.map(_write_file, num_cpus=TASK_CPUS).take_all()
    for row in rows:
        job = by_path[row["path"]]
        outcomes.append(Outcome(job, row["error"]) if row["error"] else Outcome(job, seconds=float(row["duration_s"])))
    return outcomes


def _write_parquet(ds, out_dir: str) -> list[dict]:
    """Write into a fresh folder beside, then move the finished files in: a failed job leaves no
    partial Parquet files among the results. Returns each row's path, error and duration."""
    import shutil
    import tempfile

    import pyarrow.parquet as pq

    os.makedirs(out_dir, exist_ok=True)
    if any(f.endswith(".parquet") for f in os.listdir(out_dir)):
        raise KwmlpError(f"{out_dir} already holds Parquet files; write into an empty folder")
    tmp = tempfile.mkdtemp(prefix=".kwmlp-parquet.", dir=out_dir)
    try:
        ds.map_batches(_to_arrow, batch_format="numpy", num_cpus=TASK_CPUS).write_parquet(tmp)
        files = sorted(f for f in os.listdir(tmp) if f.endswith(".parquet"))
        rows = []
        for f in files:
            rows += pq.read_table(os.path.join(tmp, f), columns=["path", "error", "duration_s"]).to_pylist()
            os.replace(os.path.join(tmp, f), os.path.join(out_dir, f))
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
