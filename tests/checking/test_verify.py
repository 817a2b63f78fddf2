"""pipeline verify: parity of every artifact, gates that fail the command, --explain."""
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.checking.gates import sqnr_db
from pipeline.cli import app
from pipeline.config.gates import DEFAULT_GATES, VerifyOptions, parse_gate
from tests.conftest import copy_run

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def verified_run(trained_run, tmp_path_factory):
    run_dir = copy_run(trained_run.run_dir, tmp_path_factory.mktemp("verified"))
    for args in (["quantize", "--int8", "--float16", "--dynamic", "--int16x8"], ["convert"]):
        result = invoke(*args, "--run", run_dir)
        assert result.exit_code == 0, result.output
    return run_dir


def test_every_artifact_passes_default_gates(verified_run):
    result = invoke("verify", "--run", verified_run)
    assert result.exit_code == 0, result.output
    assert "verify: passed" in result.output
    report = json.loads((verified_run / "verify.json").read_text())
    assert report["passed"] is True
    names = {row["artifact"] for row in report["artifacts"]}
    assert {"model_int8.tflite", "model_float32.onnx", "model_int8_tflite.onnx",
            "model_float16.tflite", "model_int16x8.tflite", "model_dynamic.tflite"} <= names
    for row in report["artifacts"]:
        for key in ("artifact", "format", "metric", "metric_value", "metric_drop", "top1_agreement",
                    "max_abs_error", "sqnr_db", "gates", "passed", "per_class_accuracy", "size_bytes"):
            assert key in row, key
        assert len(row["per_class_accuracy"]) == 10
    float32 = next(r for r in report["artifacts"] if r["artifact"] == "model_float32.tflite")
    assert float32["max_abs_error"] <= 1e-4 and float32["sqnr_db"] > 80
    assert set(float32["gates"]) == {*DEFAULT_GATES["float32"], "sidecar", "signature"}
    assert float32["gates"]["sidecar"]["value"] == "matches"
    pairs = {(p["tflite"], p["onnx"]) for p in report["cross_runtime"]}
    assert ("model_float32.tflite", "model_float32.onnx") in pairs
    assert "✓max_abs_error" in result.output
    # Batched only where the graph takes a batch and the batched outputs are the single-sample
    # ones: the ONNX export has a dynamic batch (measured: identical, batch 64; a CPU whose
    # kernels sum another way falls back); the seed CNN's TFLite flattens to a batch of one.
    onnx = next(r for r in report["artifacts"] if r["artifact"] == "model_float32.onnx")["inference"]
    assert onnx["probe_samples"] == 256
    assert (onnx["batch"] == 64) == (onnx["probe_max_abs_difference"] == 0.0) and onnx["batch"] in (1, 64)
    assert onnx["batch"] == 64 or "fallback" in onnx
    assert float32["inference"]["batch"] == 1 and "one_at_a_time" in float32["inference"]


def test_gate_override_from_the_command_line(verified_run):
    result = invoke("verify", "--run", verified_run, "--artifact", "model_float16.tflite",
                    "--gate", "float16.max_abs_error=1e-9")
    assert result.exit_code == 6
    assert "1 artifact(s) failed verification: model_float16.tflite (max_abs_error)" in result.stderr
    assert "✗max_abs_error" in result.output
    report = json.loads((verified_run / "verify.json").read_text())
    assert report["passed"] is False and report["gates"]["float16"]["max_abs_error"]["threshold"] == 1e-9


def test_bad_gate_text():
    from pipeline.core.errors import UsageError

    with pytest.raises(UsageError, match="KIND.METRIC=NUMBER"):
        parse_gate("quantized.metric_drop=lots")
    with pytest.raises(UsageError, match="unknown gate metric 'acuracy'"):
        VerifyOptions(gates={"quantized": {"acuracy": 1.0}}).resolved_gates()


def test_sqnr():
    reference = np.ones(100)
    assert sqnr_db(reference, reference) == float("inf")
    assert sqnr_db(reference, reference * 1.1) == pytest.approx(20.0)


def test_int8_calibrated_on_zeros_fails_and_is_explained(trained_run, tmp_path):
    """A deliberately damaged artifact: calibrated on all-zero inputs."""
    run_dir = copy_run(trained_run.run_dir, tmp_path)
    zeros = tmp_path / "zeros.npy"
    np.save(zeros, np.zeros((50, 28, 28, 1), dtype=np.uint8))
    result = invoke("quantize", "--int8", "--calibration-data", zeros, "--run", run_dir)
    assert result.exit_code == 0, result.output
    try:
        result = invoke("verify", "--run", run_dir, "--artifact", "model_int8.tflite")
        assert result.exit_code == 6
        assert "model_int8.tflite (metric_drop, top1_agreement)" in result.stderr
        report = json.loads((run_dir / "verify.json").read_text())
        explained = report["artifacts"][0]["explain"]  # automatic when a gate fails
        worst = explained["worst_layers"][0]
        assert worst["layer"] == "conv2d" and worst["rmse_over_scale"] > 10
        assert "50 samples from" in explained["calibration"]
        assert "worst layer conv2d" in result.output
        assert "calibration data" in explained["hints"][0]
    finally:
        invoke("quantize", "--int8", "--run", run_dir)  # put the good artifact back


def test_explain_on_passing_onnx_qdq(verified_run):
    result = invoke("verify", "--run", verified_run, "--artifact", "model_int8.onnx", "--explain")
    assert result.exit_code == 0, result.output
    report = json.loads((verified_run / "verify.json").read_text())
    explained = report["artifacts"][0]["explain"]
    assert explained["method"].startswith("onnxruntime.quantization.qdq_loss_debug")
    layers = explained["worst_layers"]
    assert layers and layers[0]["sqnr_db"] <= layers[-1]["sqnr_db"]
    model_layers = {"conv2d", "conv2d_1", "max_pooling2d", "max_pooling2d_1", "flatten", "dense", "dense_1"}
    assert layers[0]["layer"] in model_layers


def test_the_report_runs_an_artifact_with_the_batch_verify_recorded_and_no_other():
    """verify.json is the run's file: a batch record out of range, of the wrong type or
    missing means one sample at a time."""
    from pipeline.running.report import _verified_batch

    assert _verified_batch({"inference": {"batch": 64}}) == 64
    for record in ({"inference": {"batch": 10 ** 9}}, {"inference": {"batch": 0}}, {"inference": {"batch": True}},
                   {"inference": {"batch": "64"}}, {"inference": [64]}, {}):
        assert _verified_batch(record) == 1, record
