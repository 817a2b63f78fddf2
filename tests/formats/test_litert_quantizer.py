"""LiteRT Quantizer as the quantization engine (`quantize --engine litert-quantizer`): its
artifacts carry the same signature, metadata and sidecar, and pass verify and TFLite Micro."""
import json

from tests.conftest import copy_run
from tests.hostile.helpers import invoke, one_error_line


def test_litert_quantizer_artifacts_pass_verify_like_the_converters(trained_run, tmp_path):
    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions
    from pipeline.config.stages import QuantizeOptions
    from pipeline.optimizing.quantize import quantize

    run_dir = copy_run(trained_run.run_dir, tmp_path)
    for stale in run_dir.glob("model_*"):
        stale.unlink()
    report = quantize(run_dir, QuantizeOptions(modes=["int8", "dynamic"], engine="litert-quantizer",
                                               recover=False))
    assert {a["engine"] for a in report["artifacts"].values()} == {"litert-quantizer"}
    sidecar = json.loads((run_dir / "model_int8.tflite.json").read_text())
    assert sidecar["options"]["engine"] == "litert-quantizer" and sidecar["calibration"]["count"] == 300
    verified = verify(run_dir, VerifyOptions())
    assert verified["passed"]  # the default gates: accuracy drop <= 1 pt, agreement >= 98%
    (int8,) = [r for r in verified["artifacts"] if r["artifact"] == "model_int8.tflite"]
    assert int8["signature"]["key"] == "serving_default"
    if "skipped" not in int8["micro"]:
        assert int8["micro"]["top1_agreement"] >= 0.99


def test_a_converter_option_makes_that_artifact_by_the_converter(trained_run, tmp_path):
    run_dir = copy_run(trained_run.run_dir, tmp_path)
    result = invoke("quantize", "--run", run_dir, "--int8", "--dynamic", "--float-io", "--no-recover")
    assert result.exit_code == 0, result.output
    engines = {name: json.loads((run_dir / f"{name}.json").read_text())["options"]["engine"]
               for name in ("model_int8.tflite", "model_dynamic.tflite")}
    # float I/O int8 is the converter's; dynamic is float I/O whoever makes it
    assert engines == {"model_int8.tflite": "converter", "model_dynamic.tflite": "litert-quantizer"}
    line = one_error_line(invoke("quantize", "--run", run_dir, "--int8", "--engine", "tflite"), 2)
    assert "--engine" in line


def test_weight_only_and_int4_modes_are_made_by_litert_quantizer_and_verified(trained_run, tmp_path):
    from pipeline.checking.verify import verify
    from pipeline.config.gates import VerifyOptions

    run_dir = copy_run(trained_run.run_dir, tmp_path)
    for stale in run_dir.glob("model_*"):
        stale.unlink()
    result = invoke("quantize", "--run", run_dir, "--weight-only-int8", "--int4")
    assert result.exit_code == 0, result.output
    for name in ("model_weight_only_int8.tflite", "model_int4.tflite"):
        assert json.loads((run_dir / f"{name}.json").read_text())["options"]["engine"] == "litert-quantizer"
    sizes = {p.name: p.stat().st_size for p in run_dir.glob("model_*.tflite")}
    assert sizes["model_int4.tflite"] < 0.7 * sizes["model_weight_only_int8.tflite"]  # half the weight bytes
    report = verify(run_dir, VerifyOptions(artifacts=["model_weight_only_int8.tflite", "model_int4.tflite"]))
    # measured on the seed CNN: 100% and 99.44% top-1 agreement with Keras (gate 98%)
    assert report["passed"], [(r["artifact"], r["top1_agreement"]) for r in report["artifacts"]]
    line = one_error_line(invoke("quantize", "--run", run_dir, "--int4", "--dynamic-batch"), 2)
    assert "int4 (LiteRT Quantizer's)" in line
