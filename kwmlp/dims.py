"""The one source of truth for KW-MLP's shapes and front-end constants.

Every other module (the PyTorch reference, the ONNX builder, the runtime) reads
shapes from :class:`ModelDims`; the exported ONNX model carries it in its
metadata so that the runtime can check what it was given.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

SAMPLE_RATE = 16000  # Hz, the only rate KW-MLP was trained on
CHUNK_SAMPLES = SAMPLE_RATE  # one-second chunks: the temporal projection fixes 98 frames
N_FFT = 480  # 30 ms window
HOP_LENGTH = 160  # 10 ms hop
PAD_BEFORE = 80  # HEAR wrapper: (window - hop) / 2 samples before the audio
PAD_AFTER = 240  # and window - hop/2 after it
N_MELS = 40
N_MFCC = 40
RESAMPLE_QUALITY = "HQ"  # soxr's high-quality filter, for every conversion of other rates to 16 kHz
TOP_DB = 80.0  # dB, applied per one-second chunk
AMIN = 1e-10  # power floor before the log
SCENE_STEPS = 16  # time steps of the scene embedding (16 x 64 = 1024)
LN_EPS = 1e-5  # torch.nn.LayerNorm default, used by every LayerNorm of the checkpoint
SCENE_ALGORITHMS = ("iterative", "single", "mean")  # paper Table 2; iterative is HEAR's
DEFAULT_OPSET = 17  # LayerNormalization needs 17; TensorRT 10.0 parses opsets 9-20

KEYWORDS = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward",
    "four", "go", "happy", "house", "learn", "left", "marvin", "nine", "no", "off",
    "on", "one", "right", "seven", "sheila", "six", "stop", "three", "tree", "two",
    "up", "visual", "wow", "yes", "zero",
)  # Speech Commands V2-35, sorted: the order of the checkpoint's head


@dataclass(frozen=True)
class ModelDims:
    """Shapes of one KW-MLP model and its front end.

    ``depth`` is the number of blocks in the checkpoint; ``embed_depth`` the block
    whose output becomes the embedding (Table 4 of the paper: 12 by default).
    """

    n_mfcc: int = N_MFCC  # input features per frame
    n_frames: int = 98  # frames per one-second chunk: (16000 - 480) // 160 + 1
    dim: int = 64  # d, the embedding size
    dim_ff: int = 256  # D, width of the gated MLP (u and g are D/2 each)
    depth: int = 12
    embed_depth: int = 12
    num_classes: int = len(KEYWORDS)

    def __post_init__(self):
        if not 1 <= self.embed_depth <= self.depth:
            raise ValueError(f"embed_depth must be in [1, {self.depth}], got {self.embed_depth}")

    @property
    def scene_size(self) -> int:
        return SCENE_STEPS * self.dim

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelDims":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


assert ModelDims().n_frames == (CHUNK_SAMPLES - N_FFT) // HOP_LENGTH + 1
N_BINS = N_FFT // 2 + 1  # 241 one-sided DFT bins
FRAMES_PER_CHUNK = CHUNK_SAMPLES // HOP_LENGTH  # 100 frames a second after compensation: 98 + one at each end
assert FRAMES_PER_CHUNK == ModelDims().n_frames + 2


def num_chunks(num_samples: int) -> int:
    """S: one-second chunks that a clip of ``num_samples`` occupies after the HEAR padding."""
    return math.ceil((num_samples + PAD_BEFORE + PAD_AFTER) / CHUNK_SAMPLES)


def canonical_samples(num_samples: int) -> int:
    """The longest clip that occupies the same chunks as one of ``num_samples``: 16000 S - 320. The
    graph pads with zeros to whole chunks anyway, so a clip zero-padded to this length gives the same
    chunks, frames and scene (and the same timestamps, up to its own ``num_samples // 160``)."""
    return CHUNK_SAMPLES * num_chunks(num_samples) - PAD_BEFORE - PAD_AFTER


def num_full_frames(num_samples: int) -> int:
    """T = 100 S - 2: frames after chunk compensation, from which the scene is made."""
    return FRAMES_PER_CHUNK * num_chunks(num_samples) - 2


def state_shapes(dims: ModelDims) -> dict[str, tuple[int, ...]]:
    """Every tensor of a KW-MLP ``model_state_dict`` (the original ``KW_MLP``'s names, in its order)
    and its shape; ``kwmlp.models.KWMLP(dims).state_dict()`` has exactly these."""
    half = dims.dim_ff // 2  # u and g, the two halves of the gated MLP
    block = {
        "fn.norm.weight": (dims.dim,), "fn.norm.bias": (dims.dim,),
        "fn.fn.proj_in.0.weight": (dims.dim_ff, dims.dim), "fn.fn.proj_in.0.bias": (dims.dim_ff,),
        "fn.fn.sgu.norm.weight": (half,), "fn.fn.sgu.norm.bias": (half,),
        "fn.fn.sgu.proj.weight": (dims.n_frames, dims.n_frames, 1), "fn.fn.sgu.proj.bias": (dims.n_frames,),
        "fn.fn.proj_out.weight": (dims.dim, half), "fn.fn.proj_out.bias": (dims.dim,),
    }
    shapes = {"to_patch_embed.1.weight": (dims.dim, dims.n_mfcc), "to_patch_embed.1.bias": (dims.dim,)}
    for i in range(dims.depth):
        shapes.update({f"layers.{i}.{k}": v for k, v in block.items()})
    shapes.update({"to_logits.0.weight": (dims.dim,), "to_logits.0.bias": (dims.dim,),
                   "to_logits.2.weight": (dims.num_classes, dims.dim), "to_logits.2.bias": (dims.num_classes,)})
    return shapes
