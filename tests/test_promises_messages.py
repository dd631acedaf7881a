"""Issue 11: one line instead of a traceback (item 11), and the keyword-graph path confined to the
export's folder (item 17)."""

import numpy as np
import pytest

from kwmlp.apps.cli import main
from kwmlp.errors import KwmlpError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")


def _one_line(capsys, *words) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and all(w in err for w in words), err
    return err


def _with_metadata(path, out, **props):
    m = onnx.load(path)
    for p in m.metadata_props:
        if p.key in props:
            p.value = props[p.key]
    onnx.save(m, out)
    return str(out)


@pytest.mark.parametrize("key,value", [("kwmlp.dims", "{not json"), ("kwmlp.dims", "[1, 2]"),
                                       ("kwmlp.max_seconds", "a lot"), ("kwmlp.max_seconds", "nan")])
def test_info_on_bad_metadata_is_one_line(random_exported, tmp_path, capsys, key, value):
    model = _with_metadata(random_exported(), tmp_path / "m.onnx", **{key: value})
    assert main(["info", model]) == 1
    _one_line(capsys, key, "is not valid")


def _checkpoint(tmp_path, **changes):
    from conftest import random_state_dict

    state = random_state_dict(depth=2)
    state.update(changes)
    path = tmp_path / "bad.pth"
    torch.save({"model_state_dict": state}, path)
    return str(path)


@pytest.mark.parametrize("changes,words", [
    ({"layers.0.fn.norm.weight": torch.ones(64, 1)}, ["layers.0.fn.norm.weight has shape [64, 1], expected [64]"]),
    ({"to_patch_embed.1.weight": torch.zeros(0, 0)}, ["dim = 0"]),
    ({"to_patch_embed.1.weight": torch.zeros(64)}, ["wrong ranks"]),
    ({"to_logits.2.weight": torch.zeros(0, 64), "to_logits.2.bias": torch.zeros(0)}, ["num_classes = 0"]),
    ({"layers.1.fn.fn.proj_out.bias": torch.full((64,), float("nan"))}, ["proj_out.bias contains NaN"]),
    ({"layers.0.fn.norm.weight": torch.ones(64, dtype=torch.int64)}, ["norm.weight has dtype int64"]),
], ids=["2-D for 1-D", "0x0", "1-D for 2-D", "0 classes", "NaN weights", "integer LayerNorm"])
def test_export_refuses_broken_checkpoints(tmp_path, capsys, changes, words):
    out = tmp_path / "m.onnx"
    assert main(["export", _checkpoint(tmp_path, **changes), "-o", str(out)]) == 1
    _one_line(capsys, *words)
    assert not out.exists()


def test_a_head_of_other_classes_is_refused():
    from kwmlp.runtime.keywords import classify

    class ZeroClasses:  # what an export of a checkpoint with 0 classes returns
        def keyword_logits(self, windows):
            return np.zeros((len(windows), 0), np.float32)

    with pytest.raises(KwmlpError, match="the model has 0 keyword classes"):
        classify(ZeroClasses(), [np.zeros(16000, np.float32)])


@pytest.mark.parametrize("option", [["--hop", "nan"], ["--window", "inf"], ["--hop", "inf"]])
def test_spot_refuses_non_finite_times(random_exported, tmp_path, capsys, option):
    assert main(["spot", random_exported(), str(tmp_path), *option]) == 1
    _one_line(capsys, "must be finite")


def test_cuda_errors_are_one_line(monkeypatch, capsys, tmp_path):
    from kwmlp.apps.commands import info
    from kwmlp.cuda import CudaError

    def fail(args):
        raise CudaError("cudaMalloc failed: out of memory")

    monkeypatch.setattr(info, "run", fail)
    assert main(["info", str(tmp_path)]) == 1
    _one_line(capsys, "kwmlp info: error: cudaMalloc failed")


# --- 17. the keyword graph named in an export's metadata stays beside it -------------------

@pytest.mark.parametrize("name", ["/etc/passwd", "../x.onnx", "..", ""])
def test_keyword_graph_path_is_confined(random_exported, tmp_path, name):
    from kwmlp.runtime import Embedder

    model = _with_metadata(random_exported(), tmp_path / "m.onnx", **{"kwmlp.keywords_model": name})
    e = Embedder(model)
    with pytest.raises(KwmlpError, match="not a file name beside it|names no keyword model"):
        e.keyword_logits(np.zeros(16000, np.float32))
