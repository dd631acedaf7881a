"""The roofline's FLOP counts: by hand on single nodes, and on real exports against ModelDims."""

import pytest

from kwmlp.benchmarks import roofline
from kwmlp.dims import ModelDims

pytest.importorskip("onnx")


def _block_flops(d: ModelDims) -> int:
    # per chunk: the two 64->128 projections, the 98x98 temporal projection on 128 channels, 128->64
    half = d.dim_ff // 2
    return 2 * d.n_frames * (d.dim * d.dim_ff + d.n_frames * half + half * d.dim)


def test_node_flops_by_hand():
    # (2, 98, 64) @ (64, 128): 2 * 2*98*128 outputs * 64
    assert roofline.node_flops("MatMul", [[2, 98, 64], [64, 128]], [2, 98, 128], {}) == 2 * 2 * 98 * 128 * 64
    # the weight on the left (temporal projection): the contraction is over its columns
    assert roofline.node_flops("MatMul", [[98, 98], [3, 98, 128]], [3, 98, 128], {}) == 2 * 3 * 98 * 128 * 98
    assert roofline.node_flops("Gemm", [[64, 10], [64, 5]], [10, 5], {"transA": 1}) == 2 * 10 * 5 * 64
    assert roofline.node_flops("Conv", [[1, 1, 16000], [241, 1, 480]], [1, 241, 98], {}) == 2 * 241 * 98 * 480
    # grouped: each output channel reads C_in / group = 1 channel over 30 taps
    assert roofline.node_flops("Conv", [[2, 16, 1000], [512, 1, 30]], [2, 512, 98], {"group": 16}) == 2 * 2 * 512 * 98 * 30
    # an activation of unknown shape on the left: K is read from the weight on the right
    assert roofline.node_flops("MatMul", [None, [64, 128]], [2, 98, 128], {}) == 2 * 2 * 98 * 128 * 64


def test_export_flops_are_counted_from_the_real_shapes(random_exported):
    from kwmlp.export import stft

    d = ModelDims()
    full, shallow = random_exported(), random_exported(depth=4)
    one, three = roofline.onnx_matmul_flops(full, 1.0), roofline.onnx_matmul_flops(full, 3.0)
    assert one == three  # per chunk: 2 chunks and 4 chunks count alike
    assert one - roofline.onnx_matmul_flops(shallow, 1.0) == 8 * _block_flops(d)
    # the factored STFT (grouped Conv, then per-k2 products with the weights on the left), mel, patch
    bins = stft.K2 * 2 * stft.K1
    front = 2 * d.n_frames * (stft.P * stft.K2 * 2 * stft.Q + stft.K2 * (2 * stft.K1) * (2 * stft.P)
                              + 40 * bins + 40 * d.dim)
    assert one == front + d.depth * _block_flops(d)  # 98.04 MFLOP


def test_reference_flops_by_hand(random_checkpoint):
    pytest.importorskip("torch")
    d = ModelDims()
    bins, n_fft = 241, 480
    front = 2 * d.n_frames * (2 * n_fft * bins + bins * 40 + 40 * 40 + 40 * d.dim)  # STFT convs, mel, DCT, patch
    assert roofline.reference_matmul_flops(random_checkpoint) == front + d.depth * _block_flops(d)


def test_bound_is_matrix_time_at_the_sgemm_rate():
    # 16 x 10 s is 176 chunks; at 100 MFLOP a chunk and 88 GFLOP/s: 0.2 s for 160 s of audio
    assert roofline.bound_x_realtime(100e6, 88.0, 16, 10.0) == pytest.approx(800.0)
    assert roofline.sgemm_gflops(1, sizes=(64, 128), runs=2) > 0


def test_one_model_that_cannot_be_counted_leaves_the_other(monkeypatch):
    from kwmlp.benchmarks import suite

    def boom(*_):
        raise RuntimeError("the profiler recorded no shapes for 'x'")

    monkeypatch.setattr(roofline, "onnx_matmul_flops", boom)
    monkeypatch.setattr(roofline, "reference_matmul_flops", lambda _: 135e6)
    monkeypatch.setattr(roofline, "sgemm_gflops", lambda _: 50.0)
    roof = roofline.measure("m.onnx", "ck.pth", 2)
    assert roof["matmul_mflop_per_chunk"] == {"reference": 135.0}
    assert roof["skipped"] == {"export": "could not count its matrix work: the profiler recorded no shapes for 'x'"}
    rows = [{"backend": b, "batch": 16, "seconds": 10.0} for b in ("onnxruntime-cpu", "pytorch", "tensorrt")]
    suite._add_bounds(rows, roof)
    assert [r["matmul_bound_x_realtime"] for r in rows] == [None, pytest.approx(160 / (176 * 135e6 / 50e9)), None]


def test_no_roofline_without_a_cpu_backend(tmp_path):
    from kwmlp.benchmarks import suite

    settings = suite.Settings(checkpoint="ck", output=str(tmp_path))
    assert suite._roofline(settings, "m.onnx", ["tensorrt"]) == {"skipped": "no CPU backend runs"}
