"""Quantization-aware training inside `pipeline run`: the report shows post-training int8 and
QAT int8 side by side (accuracy with its interval, size, p50), verify judges the QAT artifact
against its fake-quant model, and the recommendation considers it like any passing artifact."""
import json

from pipeline import load_config
from pipeline.running.orchestrator import run


def test_a_run_with_qat_reports_ptq_and_qat_side_by_side(tmp_path):
    overrides = ["train.model=mlp", "train.epochs=3", "prune.sparsity=[0]", 'quantize.modes=["int8"]',
                 "quantize.qat=true", "quantize.qat_epochs=1", 'convert.targets=["tflite"]',
                 "bench.runs=20", "bench.min_seconds=0"]
    result = run(load_config(overrides=overrides), out=tmp_path / "run")
    run_dir = result.run_dir
    report = json.loads((run_dir / "report.json").read_text())
    rows = {row["artifact"]: row for row in report["rows"] if row["variant"] == "base"}
    ptq, qat = rows["model_int8.tflite"], rows["model_int8_qat.tflite"]
    for row in (ptq, qat):
        low, high = row["value_ci95"]
        assert low <= row["value"] <= high and row["size_kb"] > 0 and row["p50_ms"] > 0
    assert abs(qat["size_kb"] - ptq["size_kb"]) <= 0.02 * ptq["size_kb"]  # the same integer graph
    verify = {r["artifact"]: r for r in json.loads((run_dir / "verify.json").read_text())["artifacts"]}
    assert "fake_quant_agreement" in verify["model_int8_qat.tflite"]["gates"]
    assert "model_int8_qat.tflite" in (run_dir / "report.md").read_text()
    passing = {f"{r['dir']}/{r['artifact']}" for r in report["rows"] if r["passed"] and r["pareto"]}
    assert report["recommended"] in passing


def test_qat_of_a_jax_trained_run_fine_tunes_under_jax(tmp_path):
    """A run trained under jax: its fake-quant model is fine-tuned under jax (a child process),
    converted under TensorFlow, and its int8 artifact computes what its fake-quant model does.
    Measured here (qat.seconds, one epoch): 23.7 under jax, 2.3 under TensorFlow."""
    import os
    import subprocess
    import sys

    import pytest

    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions
    from pipeline.config.stages import QuantizeOptions
    from pipeline.optimizing.quantize import quantize

    pytest.importorskip("jax")
    run_dir = tmp_path / "jax"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "train", "--backend", "jax", "--model", "mlp",
                           "--epochs", "2", "--quiet", "--out", str(run_dir)], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "KERAS_BACKEND": "jax"}, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    report = quantize(run_dir, QuantizeOptions(modes=["int8"], qat=True, qat_epochs=1, recover=False))
    assert report["qat"]["fine_tuned_under"] == "jax" and report["qat"]["epochs_run"] == 1
    verified = verify(run_dir, VerifyOptions(artifacts=["model_int8_qat.tflite"]))
    row = verified["artifacts"][0]
    assert row["gates"]["fake_quant_agreement"]["passed"] and row["passed"]
