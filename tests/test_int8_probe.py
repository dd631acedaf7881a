"""The INT8 probe runs end to end and reports fp32 against itself exactly (no timings checked)."""

import numpy as np
import pytest

pytest.importorskip("onnx")
sf = pytest.importorskip("soundfile")


def test_int8_probe_reports_every_precision(random_exported, tmp_path):
    from kwmlp.benchmarks.int8_probe import probe

    rng = np.random.default_rng(0)
    for voice in ("a", "b"):
        for word in ("yes", "no", "up"):
            sf.write(tmp_path / f"{word}__{voice}_1.wav", rng.uniform(-0.3, 0.3, 9000).astype(np.float32), 16000)
    rows = probe(random_exported(), str(tmp_path), threads=1, rounds=1)
    assert [r["precision"] for r in rows] == ["fp32", "int8 dynamic", "int8 static"]
    fp32 = rows[0]
    assert fp32["min_scene_cosine"] == pytest.approx(1.0) and fp32["held_out_clips"] == 3
    for r in rows:
        assert r["x_realtime_2x10s"] > 0 and r["latency_1x1s_ms"] > 0 and 0 <= r["keyword_top1"] <= 1
        assert np.isfinite(r["min_scene_cosine"])
