"""Loading the original checkpoint format, and one-line errors for files that are not one."""

import pytest

torch = pytest.importorskip("torch")

from conftest import random_state_dict  # noqa: E402
from kwmlp.models import CheckpointError, load_checkpoint  # noqa: E402


def test_trained_checkpoints_load(checkpoint):
    import os

    m = load_checkpoint(checkpoint)
    assert m.dims.depth == 12 and sum(p.numel() for p in m.parameters()) == 424_811
    eight = os.path.join(os.path.dirname(checkpoint), "kwmlp-8.pth")
    if os.path.isfile(eight):  # the KW-MLP-8 file also carries optimizer and scheduler state
        assert load_checkpoint(eight).dims.depth == 8


def test_random_depth_roundtrip(tmp_path):
    path = tmp_path / "d4.pth"
    torch.save({"model_state_dict": random_state_dict(depth=4)}, path)
    assert load_checkpoint(path).dims.depth == 4
    assert load_checkpoint(path, embed_depth=2).dims.embed_depth == 2
    with pytest.raises(CheckpointError, match="depth 5 is out of range: the checkpoint has 4 blocks"):
        load_checkpoint(path, embed_depth=5)


@pytest.mark.parametrize(
    "content,match",
    [
        ({"state_dict": {}}, "has no 'model_state_dict'"),
        ([1, 2, 3], "has no 'model_state_dict'"),
        ({"model_state_dict": {"to_patch_embed.1.weight": torch.zeros(64, 40)}}, "missing to_patch_embed.1.bias"),
    ],
)
def test_not_a_kwmlp_checkpoint(tmp_path, content, match):
    path = tmp_path / "x.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(path)


def test_missing_block_key(tmp_path):
    state = random_state_dict(depth=2)
    del state["layers.1.fn.fn.sgu.proj.bias"]
    path = tmp_path / "x.pth"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(CheckpointError, match="missing layers.1.fn.fn.sgu.proj.bias"):
        load_checkpoint(path)


def test_wrong_shapes(tmp_path):
    state = random_state_dict(depth=2)
    state["layers.0.fn.fn.proj_out.weight"] = torch.zeros(64, 100)
    path = tmp_path / "x.pth"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(CheckpointError, match="tensor shapes do not fit KW-MLP"):
        load_checkpoint(path)


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "x.pth"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")


def test_state_shapes_are_the_networks():
    """kwmlp.dims.state_shapes (what export checks without torch) is what the PyTorch KWMLP holds."""
    from kwmlp.dims import ModelDims, state_shapes
    from kwmlp.models import KWMLP

    for dims in (ModelDims(), ModelDims(n_mfcc=20, n_frames=5, dim=8, dim_ff=6, depth=3, embed_depth=2, num_classes=4)):
        assert [(k, tuple(v.shape)) for k, v in KWMLP(dims).state_dict().items()] == list(state_shapes(dims).items())
