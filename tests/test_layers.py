"""Dependencies point one way: base (kwmlp/ outside apps/) <- models <- export; base <- runtime;
applications (kwmlp/apps, benchmarks, and the entry points kwmlp/__main__.py and kwmlp/hear.py, the
HEAR API's public name) on top. Checked on every import statement, lazy ones too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = ("__main__", "hear")  # kwmlp/NAME.py modules that belong to the applications
ALLOWED = {
    "base": {"base"},
    "models": {"base", "models"},
    "export": {"base", "models", "export"},
    "runtime": {"base", "runtime"},
    "apps": {"base", "models", "export", "runtime", "apps"},
}


def _layer_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    if rel[0] in ("models", "export", "runtime"):
        return rel[0]
    return "apps" if rel[0] == "benchmarks" or rel[1] in ("apps",) + tuple(f"{e}.py" for e in ENTRY_POINTS) else "base"


def _layer_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "kwmlp":
        return None
    if len(parts) == 1:
        return "base"
    if parts[1] in ("models", "export", "runtime"):
        return parts[1]
    return "apps" if parts[1] in ("apps", "benchmarks") + ENTRY_POINTS else "base"


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


SOURCES = sorted(p for d in ("kwmlp", "models", "export", "runtime", "benchmarks") for p in (ROOT / d).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path):
    layer = _layer_of_file(path)
    wrong = sorted({m for m in _imports(path) if (_layer_of_module(m) or layer) not in ALLOWED[layer]})
    assert not wrong, f"{path.relative_to(ROOT)} ({layer}) imports {wrong}"
