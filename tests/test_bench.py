"""``kwmlp bench`` on a tiny workload: the structure of its outputs and the error column (no timings)."""

import json

import pytest

from kwmlp.apps.cli import main

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

KEYS = {"backend", "precision", "batch", "seconds", "throughput_x_realtime", "latency_ms", "peak_rss_mb", "max_abs_err"}


def _bench(tmp_path, *args):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--workloads", "1x1,2x0.5", "--output", str(out), *args]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_bench_quick_structure(random_checkpoint, tmp_path):
    out, r = _bench(tmp_path, "--checkpoint", random_checkpoint, "--backends", "pytorch,onnxruntime-cpu,tensorrt")
    assert {"cpu", "cores", "gpu", "versions"} <= set(r["machine"])
    rows = {(x["backend"], x["batch"], x["seconds"]): x for x in r["results"]}
    assert set(rows) == {(b, n, s) for b in ("pytorch", "onnxruntime-cpu") for n, s in ((1, 1.0), (2, 0.5))}
    for (backend, _, _), x in rows.items():
        assert KEYS <= set(x) and set(x["latency_ms"]) == {"p50", "p90", "p99"}
        assert x["throughput_x_realtime"] > 0 and x["peak_rss_mb"] > 0
        assert x["latency_ms"]["p50"] <= x["latency_ms"]["p90"] <= x["latency_ms"]["p99"]
        # the reference against itself is exact; the ONNX graph is within the parity tolerance
        assert x["max_abs_err"] == 0.0 if backend == "pytorch" else 0.0 < x["max_abs_err"] <= 1e-3
    assert [s["backend"] for s in r["skipped"]] == ["tensorrt"] and r["skipped"][0]["reason"]
    assert not r["failed"]
    roof = r["roofline"]
    assert roof["sgemm_gflops"] > 0 and set(roof["matmul_mflop_per_chunk"]) == {"export", "reference"}
    assert all(x["matmul_bound_x_realtime"] > 0 for x in r["results"])  # both are CPU backends
    table = (out / "results.md").read_text()
    assert "| onnxruntime-cpu | fp32 | 2x0.5s |" in table and "skipped tensorrt" in table
    assert "## Roofline" in table and "| onnxruntime-cpu | 2x0.5s |" in table
    for png in ("throughput.png", "latency_cdf.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_bench_shows_a_wrong_model_as_wrong(random_checkpoint, random_exported, tmp_path):
    # a depth-4 export is a valid, fast model that computes something else: its error must show it
    _, r = _bench(tmp_path, "--checkpoint", random_checkpoint, "--backends", "pytorch,onnxruntime-cpu",
                  "--model", random_exported(depth=4))
    errors = [x["max_abs_err"] for x in r["results"] if x["backend"] == "onnxruntime-cpu"]
    assert errors and min(errors) > 1e-2


def test_bench_unknown_backend_is_one_line(random_checkpoint, tmp_path, capsys):
    assert main(["bench", "--checkpoint", random_checkpoint, "--output", str(tmp_path), "--backends", "tvm"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown backend 'tvm'" in err[0]


def test_bench_without_the_reference_still_bounds_the_cpu_rows(random_checkpoint, random_exported, tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--workloads", "1x1", "--output", str(out), "--checkpoint", random_checkpoint,
                 "--backends", "onnxruntime-cpu", "--model", random_exported()]) == 0
    r = json.loads((out / "results.json").read_text())
    (row,) = r["results"]
    assert row["max_abs_err"] is None and row["matmul_bound_x_realtime"] > 0
    assert len(r["roofline"]["sgemm_gflops_probes"]) == 2  # before and after the grid, the best kept
    assert "| onnxruntime-cpu | 1x1s |" in (out / "results.md").read_text()


def test_bench_rows_carry_the_exports_precision(random_checkpoint, random_exported, tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--workloads", "1x0.5", "--output", str(out), "--checkpoint", random_checkpoint,
                 "--backends", "pytorch,onnxruntime-cpu", "--model", random_exported(precision="fp16")]) == 0
    rows = {x["backend"]: x for x in json.loads((out / "results.json").read_text())["results"]}
    assert rows["pytorch"]["precision"] == "fp32" and rows["onnxruntime-cpu"]["precision"] == "fp16"
    assert 0 < rows["onnxruntime-cpu"]["max_abs_err"] < 0.1  # fp16 differs from the reference, but not wildly
