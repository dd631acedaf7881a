"""``kwmlp bench`` without matplotlib: said at the start, the results written without plots, exit 0
(it ran the whole benchmark, then failed with "plotting needs matplotlib")."""

import json
import logging
import sys

from kwmlp.apps.cli import main


def test_bench_without_matplotlib_writes_the_results_and_says_so(random_checkpoint, random_exported, tmp_path,
                                                                  monkeypatch, capsys, caplog):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    out = tmp_path / "bench"
    with caplog.at_level(logging.INFO, logger="kwmlp"):
        code = main(["bench", "--quick", "--workloads", "1x1", "--output", str(out), "--checkpoint", random_checkpoint,
                     "--backends", "onnxruntime-cpu", "--model", random_exported()])
    assert code == 0
    said = "plotting needs matplotlib, which is not installed; install it with: pip install -e '.[bench]'"
    assert caplog.records[0].getMessage() == f"kwmlp bench: the results are written without plots: {said}"
    assert capsys.readouterr().out.strip() == f"wrote {out / 'results.json'}, results.md; no plots: {said}"
    assert json.loads((out / "results.json").read_text())["results"][0]["backend"] == "onnxruntime-cpu"
    assert (out / "results.md").is_file() and not list(out.glob("*.png"))
