"""Shared fixtures: the trained checkpoint (through KWMLP_CHECKPOINT), the parity vectors in
../shared/reference, and a seeded random KW-MLP for graph-equivalence tests that need no weights."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared(name: str, env: str) -> Path:
    """shared/NAME: from its variable, else beside the repository, else beside the checkpoint's folder
    (shared/models/kwmlp.pth -> shared/NAME), so that a checkout elsewhere still finds it."""
    if os.environ.get(env):
        return Path(os.environ[env])
    beside = REPO.parent / "shared" / name
    ckpt = os.environ.get("KWMLP_CHECKPOINT")
    if not beside.is_dir() and ckpt:
        return Path(ckpt).resolve().parent.parent / name
    return beside


REFERENCE_DIR = _shared("reference", "KWMLP_REFERENCE")
KEYWORDS_DIR = _shared("keywords", "KWMLP_KEYWORDS")
REFERENCE_CASES = sorted(Path(p).stem for p in glob.glob(str(REFERENCE_DIR / "*.npz")))


@pytest.fixture(scope="session", autouse=True)
def own_data_folder(tmp_path_factory) -> Path:
    """The suite's own data folder (``$KWMLP_HOME``, ``kwmlp.paths.data_dir``): what tests download,
    export through the HEAR API or cache for TensorRT goes there, never into the user's, whatever
    ``KWMLP_HOME``, ``KWMLP_CACHE`` or ``XDG_CACHE_HOME`` say. Subprocesses inherit it."""
    folder = tmp_path_factory.mktemp("kwmlp-home")
    mp = pytest.MonkeyPatch()
    mp.delenv("KWMLP_CACHE", raising=False)
    mp.setenv("KWMLP_HOME", str(folder))
    yield folder
    mp.undo()


def checkpoint_path() -> str | None:
    path = os.environ.get("KWMLP_CHECKPOINT")
    return path if path and os.path.isfile(path) else None


@pytest.fixture(scope="session")
def checkpoint() -> str:
    path = checkpoint_path()
    if path is None:
        pytest.skip("KWMLP_CHECKPOINT is not set to the trained kwmlp.pth (see README: Checkpoint)")
    return path


def load_case(name: str) -> dict[str, np.ndarray]:
    path = REFERENCE_DIR / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"reference vectors not found in {REFERENCE_DIR}")
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _export_factory(checkpoint: str, tmp_path_factory, name: str):
    """A function of the export settings that exports ``checkpoint`` once per settings."""
    from kwmlp.export import ExportOptions, export_checkpoint

    cache: dict = {}

    def get(**settings) -> str:
        key = tuple(sorted(settings.items()))
        if key not in cache:
            out = tmp_path_factory.mktemp(name) / f"{name}.onnx"
            export_checkpoint(checkpoint, str(out), ExportOptions(**settings))
            cache[key] = str(out)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def exported(checkpoint, tmp_path_factory):
    """The trained checkpoint exported with the given settings (``exported(depth=4)``)."""
    return _export_factory(checkpoint, tmp_path_factory, "kwmlp")


def random_state_dict(depth: int = 12, seed: int = 0) -> dict:
    """A seeded random KW-MLP with every LayerNorm affine perturbed, so that a graph that drops
    or misplaces one cannot pass."""
    import torch

    from kwmlp.dims import ModelDims
    from kwmlp.models import KWMLP

    torch.manual_seed(seed)
    model = KWMLP(ModelDims(depth=depth, embed_depth=depth))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "to_logits.0" in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
    return model.state_dict()


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> str:
    torch = pytest.importorskip("torch")
    path = tmp_path_factory.mktemp("random") / "random_kwmlp.pth"
    torch.save({"model_state_dict": random_state_dict()}, path)
    return str(path)


@pytest.fixture(scope="session")
def random_exported(random_checkpoint, tmp_path_factory):
    return _export_factory(random_checkpoint, tmp_path_factory, "random")


def max_abs(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.abs(a - b).max()) if a.size else 0.0


def keyword_sentence(words: list[str], gap: int = 8000) -> np.ndarray:
    """The keyword clips of one voice, each followed by ``gap`` samples of silence: float32 16 kHz."""
    from kwmlp.apps import audio

    files = [KEYWORDS_DIR / f"{w}__en-gb-x-rp_f1.wav" for w in words]
    if not all(f.is_file() for f in files):
        pytest.skip(f"keyword clips not found in {KEYWORDS_DIR}")
    return np.concatenate([np.concatenate([audio.load(f), np.zeros(gap, np.float32)]) for f in files])
