"""The HEAR 2021 common API under its short, stable name, the one HEAR's tools take on their
command line: ``hear-validator kwmlp.hear -m kwmlp.pth``.

``load_model(model_file_path)``, ``get_timestamp_embeddings(audio, model)`` and
``get_scene_embeddings(audio, model)`` are those of :mod:`kwmlp.apps.hear_api` (torch tensors in
and out; see there), imported on first use: importing this module loads neither torch nor the
runtime, so a tool can list or check it cheaply.
"""

from __future__ import annotations

__all__ = ["load_model", "get_timestamp_embeddings", "get_scene_embeddings"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from kwmlp.apps import hear_api  # needs torch: only now

    value = getattr(hear_api, name)
    globals()[name] = value  # later lookups find it without this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
