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
