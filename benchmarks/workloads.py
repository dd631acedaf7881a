"""Workloads (batch x seconds of audio) and the deterministic audio they run on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kwmlp.dims import SAMPLE_RATE


@dataclass(frozen=True)
class Workload:
    batch: int
    seconds: float

    @property
    def label(self) -> str:
        return f"{self.batch}x{self.seconds:g}s"

    @property
    def audio_seconds(self) -> float:
        return self.batch * self.seconds

    def audio(self, seed: int = 0) -> np.ndarray:
        """float32 ``(batch, seconds * 16000)``: noise with a slow envelope, the same in every process."""
        n = int(round(self.seconds * SAMPLE_RATE))
        rng = np.random.default_rng(seed + 1000 * self.batch + n)
        # float32 throughout: a float64 intermediate would add to the peak RSS being measured
        envelope = np.arange(n, dtype=np.float32)
        envelope *= np.float32(2 * np.pi / (3.7 * SAMPLE_RATE))
        np.abs(np.sin(envelope, out=envelope), out=envelope)
        envelope *= np.float32(0.4)
        envelope += np.float32(0.1)
        audio = rng.random((self.batch, n), dtype=np.float32)
        audio *= np.float32(2)
        audio -= np.float32(1)
        audio *= envelope
        return audio


GRID = (Workload(1, 1), Workload(1, 10), Workload(16, 10), Workload(64, 1), Workload(1, 600))
QUICK = (Workload(1, 1), Workload(1, 10), Workload(16, 10))
SCALING = tuple(Workload(1, s) for s in (1, 10, 60, 600, 3600))


def parse(text: str) -> tuple[Workload, ...]:
    """``"1x1,16x10"`` -> workloads (batch x seconds)."""
    from kwmlp.errors import KwmlpError

    out = []
    for item in filter(None, (t.strip() for t in text.split(","))):
        try:
            b, s = item.lower().rstrip("s").split("x")
            w = Workload(int(b), float(s))
        except ValueError:
            raise KwmlpError(f"workload {item!r} is not BATCHxSECONDS, e.g. 16x10") from None
        if w.batch < 1 or w.seconds <= 0:
            raise KwmlpError(f"workload {item!r} needs a batch >= 1 and a positive duration")
        out.append(w)
    if not out:
        raise KwmlpError("no workloads given")
    return tuple(out)
