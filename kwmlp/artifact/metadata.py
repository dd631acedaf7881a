"""What an exported model says about itself (ONNX ``metadata_props``), and its checks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from kwmlp.artifact.shapes import parse_fixed_shape
from kwmlp.dims import ModelDims
from kwmlp.errors import KwmlpError

LAYOUT_EMBEDDINGS = "kwmlp-embeddings/1"
LAYOUT_KEYWORDS = "kwmlp-keywords/1"
_PREFIX = "kwmlp."


@dataclass(frozen=True)
class ModelInfo:
    layout: str
    dims: ModelDims = field(default_factory=ModelDims)
    precision: str = "fp32"
    scene: str = "iterative"
    checkpoint_sha256: str = ""
    version: str = ""
    max_seconds: float = 0.0  # longest clip whose scene the graph computes (unrolled stages)
    keywords_model: str = ""  # file name of the keyword graph, beside this one
    fixed_shape: str = ""  # "BxS" for a fixed-shape graph (kwmlp.artifact.shapes); "" for any shape

    @property
    def shape(self) -> tuple[int, int] | None:
        """``(batch, samples)``, the one input shape of a fixed-shape graph; None when any shape runs."""
        return parse_fixed_shape(self.fixed_shape) if self.fixed_shape else None

    def to_props(self) -> dict[str, str]:
        out = {}
        for k, v in asdict(self).items():
            if k == "fixed_shape" and not v:
                continue  # absent rather than empty: an export of any shape records what it always did
            out[_PREFIX + k] = self.dims.to_json() if k == "dims" else str(v)
        return out

    @classmethod
    def from_props(cls, props: dict[str, str], source: str) -> "ModelInfo":
        if props.get(_PREFIX + "layout") not in (LAYOUT_EMBEDDINGS, LAYOUT_KEYWORDS):
            found = props.get(_PREFIX + "layout")
            what = f"layout {found!r}" if found else "no kwmlp metadata"
            raise KwmlpError(f"{source} is not a kwmlp-rt model ({what}); export one with `kwmlp export`")
        kw = {}
        for f in fields(cls):
            raw = props.get(_PREFIX + f.name)
            if raw is None:
                continue
            try:
                if f.name == "dims":
                    kw["dims"] = ModelDims.from_json(raw)
                elif f.name == "max_seconds":
                    kw["max_seconds"] = float(raw)
                    if not kw["max_seconds"] > 0:
                        raise ValueError(raw)
                else:
                    kw[f.name] = raw
                if f.name == "fixed_shape":
                    parse_fixed_shape(raw)
            except (ValueError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
                raise KwmlpError(f"{source}: its metadata {_PREFIX}{f.name} = {raw[:80]!r} is not valid; export "
                                 "the model again with `kwmlp export`") from e
        return cls(**kw)

    def summary(self) -> dict[str, str]:
        d = {k: v for k, v in asdict(self).items() if k != "dims" and (v or k != "fixed_shape")}
        d["dims"] = json.loads(self.dims.to_json())
        return d
