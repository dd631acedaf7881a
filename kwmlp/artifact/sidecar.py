"""A TensorRT engine's sidecar (``MODEL.engine.json``): what it was built from, for which GPU
and TensorRT, with which optimization profiles; and the check that it fits this machine.

Pure Python: reading a sidecar and explaining a mismatch needs neither TensorRT nor a GPU.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field

from kwmlp.artifact.metadata import ModelInfo
from kwmlp.dims import CHUNK_SAMPLES, ModelDims
from kwmlp.errors import KwmlpError
from kwmlp.fileio import write_bytes_atomic
from kwmlp.paths import data_dir

SIDECAR_FORMAT = "kwmlp-engine/1"


@dataclass(frozen=True)
class Profile:
    """One TensorRT optimization profile for a 2-D input ``(batch, samples)``.

    ``min``, ``opt`` and ``max`` are ``(batch, samples)`` shapes; the engine runs any shape
    between ``min`` and ``max`` (both axes), fastest near ``opt``.
    """

    name: str
    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def __post_init__(self):
        for a, b in ((self.min, self.opt), (self.opt, self.max)):
            if not (1 <= a[0] <= b[0] and 1 <= a[1] <= b[1]):
                raise KwmlpError(f"profile {self.name}: shapes must grow from min to opt to max, got "
                                 f"min {self.min}, opt {self.opt}, max {self.max}")

    def fits(self, shape: tuple[int, int]) -> bool:
        return all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    @property
    def max_seconds(self) -> float:
        return self.max[1] / CHUNK_SAMPLES

    def to_json(self) -> dict:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, d: dict) -> "Profile":
        return cls(d["name"], tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))


# The profiles `kwmlp build` gives an engine by default, and ONNX Runtime's TensorRT provider
# too: (name, opt batch, opt seconds, max batch, max seconds): short clips at low latency,
# batches of 10-second clips at high throughput, and one clip of up to 10 minutes
DEFAULT_PROFILES = (
    ("latency", 1, 1.0, 8, 2.0),
    ("throughput", 16, 10.0, 64, 10.0),
    ("long", 1, 60.0, 1, 600.0),
)
KEYWORD_WINDOWS = (1, 64, 256)  # min / opt / max one-second windows per call of the keyword graph


def samples_of(seconds: float) -> int:
    return max(1, round(seconds * CHUNK_SAMPLES))


def default_profiles() -> tuple[Profile, ...]:
    """The embedding graph's profiles for ``audio (batch, samples)``; shapes run from ``(1, 1)``:
    any clip shorter than the max runs, padding happens inside the graph."""
    return tuple(Profile(n, (1, 1), (ob, samples_of(os_)), (mb, samples_of(ms))) for n, ob, os_, mb, ms in DEFAULT_PROFILES)


def keyword_profiles() -> tuple[Profile, ...]:
    """The keyword graph's one profile for ``windows (W, 16000)``; longer calls go in pieces."""
    lo, opt, hi = KEYWORD_WINDOWS
    return (Profile("windows", (lo, CHUNK_SAMPLES), (opt, CHUNK_SAMPLES), (hi, CHUNK_SAMPLES)),)


def first_fitting(profiles: tuple[Profile, ...], shape: tuple[int, int]) -> int | None:
    """Index of the first profile that runs ``shape``, or None."""
    return next((i for i, p in enumerate(profiles) if p.fits(shape)), None)


def rows_per_call(profiles: tuple[Profile, ...], shape: tuple[int, int], source: str) -> tuple[int, int]:
    """(profile index, rows per call) for an input of ``shape``: the first profile that takes it
    whole, else the one taking its length with the most rows (the batch then runs in pieces)."""
    k = first_fitting(profiles, shape)
    if k is not None:
        return k, shape[0]
    takes = [(p.max[0], k) for k, p in enumerate(profiles) if p.min[1] <= shape[1] <= p.max[1]]
    if not takes:
        raise KwmlpError(f"{source}: no optimization profile takes inputs of {shape[1]} samples")
    rows, k = max(takes)
    return k, rows


@dataclass(frozen=True)
class Device:
    """The GPU and software an engine is built for, or that would run it."""

    gpu_name: str
    compute_capability: str  # "8.7"
    trt_version: str
    cuda_version: str = ""  # CUDA runtime, "12.6"


@dataclass(frozen=True)
class EngineInfo:
    """The sidecar JSON written next to every engine by ``kwmlp build``."""

    device: Device
    input_name: str  # "audio" or "windows"
    profiles: tuple[Profile, ...]
    precision: str  # the source ONNX's: "fp16" or "fp32"
    network: str  # "strongly-typed" or "precision-constraints" (TensorRT < 10.12 fallback)
    onnx_path: str  # as given to `kwmlp build`, relative to the engine's folder when inside it
    onnx_sha256: str
    export: dict = field(default_factory=dict)  # the ONNX's kwmlp metadata (ModelInfo.summary())
    keywords_engine: str = ""  # file name of the keyword graph's engine, beside this one
    format: str = SIDECAR_FORMAT

    def to_json(self) -> str:
        d = asdict(self)
        d["profiles"] = [p.to_json() for p in self.profiles]
        return json.dumps(d, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> "EngineInfo":
        try:
            d = json.loads(text)
            if d.get("format") != SIDECAR_FORMAT:
                raise KwmlpError(f"{source} is not a kwmlp-rt engine sidecar (format {d.get('format')!r})")
            d["device"] = Device(**d["device"])
            d["profiles"] = tuple(Profile.from_json(p) for p in d["profiles"])
            return cls(**d)
        except (ValueError, KeyError, TypeError) as e:
            if isinstance(e, KwmlpError):
                raise
            raise KwmlpError(f"{source} is not a readable kwmlp-rt engine sidecar ({e})") from e

    def onnx_abspath(self, engine_path: str) -> str:
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(engine_path)), self.onnx_path))

    def model_info(self) -> ModelInfo:
        """The export's :class:`~kwmlp.artifact.metadata.ModelInfo` as the sidecar recorded it."""
        dims = ModelDims(**self.export.get("dims", {}))
        return ModelInfo(dims=dims, **{k: v for k, v in self.export.items() if k != "dims"})


def sidecar_path(engine_path: str) -> str:
    return os.fspath(engine_path) + ".json"


def write_sidecar(engine_path: str, info: EngineInfo) -> None:
    write_bytes_atomic(sidecar_path(engine_path), info.to_json().encode())


def read_sidecar(engine_path: str) -> EngineInfo:
    path = sidecar_path(engine_path)
    if not os.path.isfile(path):
        raise KwmlpError(f"{engine_path} has no sidecar {os.path.basename(path)}; build the engine with `kwmlp build`")
    with open(path) as f:
        return EngineInfo.from_json(f.read(), path)


def find_sidecar(engine_path: str) -> EngineInfo | None:
    """The engine's sidecar, or None for an engine built without ``kwmlp build`` (by trtexec or
    Polygraphy), which has none; a sidecar that is there but unreadable is an error."""
    return read_sidecar(engine_path) if os.path.isfile(sidecar_path(engine_path)) else None


def mismatch(built: Device, here: Device) -> str | None:
    """One sentence saying why an engine built for ``built`` cannot run ``here``, or None.

    TensorRT engines are specific to the GPU architecture and the TensorRT version; the GPU
    name is reported but only the compute capability decides.
    """
    if built.trt_version != here.trt_version:
        return (f"it was built with TensorRT {built.trt_version} but this machine has TensorRT {here.trt_version}; "
                "rebuild it here with `kwmlp build`")
    if built.compute_capability != here.compute_capability:
        return (f"it was built for {built.gpu_name} (compute capability {built.compute_capability}) but this GPU is "
                f"{here.gpu_name} (compute capability {here.compute_capability}); rebuild it here with `kwmlp build`")
    return None


def this_device(trt, cuda) -> Device:
    name, cc, cuda_version = cuda.device()
    return Device(gpu_name=name, compute_capability=cc, trt_version=trt.__version__, cuda_version=cuda_version)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()


def tensorrt_cache_dir() -> str:
    """Where TensorRT timing caches (and ONNX Runtime's TensorRT caches) go: the data folder's ``tensorrt/``."""
    return os.path.join(data_dir(), "tensorrt")


def timing_cache_path(device: Device, directory: str | None = None) -> str:
    """Timing caches are specific to the GPU and the TensorRT version: one file per pair."""
    directory = directory or tensorrt_cache_dir()
    name = f"{_slug(device.gpu_name)}-sm{device.compute_capability}-trt{device.trt_version}.timing-cache"
    return os.path.join(directory, name)
