"""int8 recovery: a model whose full int8 fails its gates gets the fewest layers raised until
it passes (scored on the validation split), written as a normal, verified artifact; a model
whose int8 passes is left alone; a hopeless case fails in one line."""
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app


def test_recovery_raises_the_fewest_layers_and_the_result_passes_verify(outlier_run, monkeypatch):
    import pipeline.optimizing.mixed_precision

    # Float only, for the suite's time: int16 activations cannot hold the outlier's next layer's
    # tiny weights (measured: the int16 greedy needs more layers), so the float mix wins anyway.
    monkeypatch.setattr(pipeline.optimizing.mixed_precision, "PRECISIONS", ("float",))
    runner = CliRunner()
    result = runner.invoke(app, ["quantize", "--int8", "--recover", "--run", str(outlier_run)])
    assert result.exit_code == 0, result.output
    recovery = json.loads((outlier_run / "quantize.json").read_text())["recovery"]
    assert recovery["status"] == "recovered"
    # Measured: the full int8 model agrees with Keras on 65% of the 144 validation images;
    # raising 2 of 8 layers (the outlier's layer and the next, to float: int16 activations
    # cannot hold the next layer's tiny weights) brings it to 99.3%.
    assert recovery["full_int8"]["top1_agreement"] < 0.9
    assert 1 <= len(recovery["raised"]) <= recovery["raisable_layers"] // 4
    assert recovery["validation"]["passed"]
    sidecar = json.loads((outlier_run / "model_int8_mixed.tflite.json").read_text())
    assert sidecar["mode"] == "int8_mixed"
    assert [layer["tensor"] for layer in sidecar["options"]["recovery"]["raised"]] == \
        [layer["tensor"] for layer in recovery["raised"]]
    assert all(layer["why"] and layer["precision"] in ("int16x8", "float")
               for layer in sidecar["options"]["recovery"]["raised"])
    # The test split, never seen by the search: the full int8 fails, the mix passes.
    verified = runner.invoke(app, ["verify", "--run", str(outlier_run)])
    rows = {r["artifact"]: r for r in json.loads((outlier_run / "verify.json").read_text())["artifacts"]}
    assert not rows["model_int8.tflite"]["passed"] and verified.exit_code == 6
    assert rows["model_int8_mixed.tflite"]["passed"], rows["model_int8_mixed.tflite"]["gates"]
    error_line = next(line for line in verified.stderr.splitlines() if line.startswith("error: "))
    assert "model_int8_mixed.tflite" not in error_line  # the error line names only int8


def test_the_int8_onnx_is_recovered_by_leaving_the_fewest_nodes_float(outlier_run, tmp_path):
    """The same outlier breaks ONNX Runtime's QDQ int8 (per-tensor activations); recovery on
    the ONNX side leaves nodes float (``nodes_to_exclude``), scored on validation like the
    TFLite mix, and the mix passes verify on the test split where the full int8 fails."""
    run_dir = tmp_path / "run"
    shutil.copytree(outlier_run, run_dir, symlinks=True)
    runner = CliRunner()
    result = runner.invoke(app, ["convert", "--to", "onnx", "--recover", "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    recovery = json.loads((run_dir / "convert.json").read_text())["recovery"]
    assert recovery["status"] == "recovered" and recovery["full_int8"]["top1_agreement"] < 0.9, recovery
    assert 1 <= len(recovery["raised"]) <= recovery["raisable_layers"] // 4
    assert all(layer["precision"] == "float" and layer["node"] for layer in recovery["raised"])
    assert recovery["validation"]["passed_with_margin"]
    sidecar = json.loads((run_dir / "model_int8_mixed.onnx.json").read_text())
    assert sidecar["mode"] == "int8_mixed" and sidecar["format"] == "onnx"
    assert "model_int8_mixed.onnx" in result.output
    verified = runner.invoke(app, ["verify", "--run", str(run_dir), "--artifact", "model_int8.onnx",
                                   "--artifact", "model_int8_mixed.onnx"])
    rows = {r["artifact"]: r for r in json.loads((run_dir / "verify.json").read_text())["artifacts"]}
    assert not rows["model_int8.onnx"]["passed"] and verified.exit_code == 6
    assert rows["model_int8_mixed.onnx"]["passed"], rows["model_int8_mixed.onnx"]["gates"]
    # --no-recover: no mix, and the one from before is gone with its sidecar
    assert runner.invoke(app, ["convert", "--to", "onnx", "--no-recover", "--run", str(run_dir)]).exit_code == 0
    assert not (run_dir / "model_int8_mixed.onnx").exists() and not (run_dir / "model_int8_mixed.onnx.json").exists()
    assert "recovery" not in json.loads((run_dir / "convert.json").read_text())


def test_the_report_shows_what_recovery_costs(outlier_run):
    from pipeline.running.report import build_report

    runner = CliRunner()
    if not (outlier_run / "model_int8_mixed.tflite").exists():
        assert runner.invoke(app, ["quantize", "--int8", "--recover", "--run", str(outlier_run)]).exit_code == 0
    runner.invoke(app, ["verify", "--run", str(outlier_run)])
    assert runner.invoke(app, ["bench", "--run", str(outlier_run), "--artifact", "model_int8.tflite",
                               "--artifact", "model_int8_mixed.tflite", "--runs", "20",
                               "--min-seconds", "0"]).exit_code == 0
    summary = build_report(outlier_run)
    (cost,) = summary["recovery"]
    assert cost["artifact"] == "model_int8_mixed.tflite" and cost["size_ratio"] > 1.0
    assert cost["p50_ratio"] is not None and cost["p50_ratio"] > 0
    assert "Int8 recovery: base/model_int8_mixed.tflite: " in (outlier_run / "report.md").read_text()


def test_a_model_whose_int8_passes_is_left_alone(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, run_dir, symlinks=True)
    (run_dir / "model_int8_mixed.tflite").write_bytes(b"left over from an earlier model")
    result = CliRunner().invoke(app, ["quantize", "--int8", "--recover", "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    recovery = json.loads((run_dir / "quantize.json").read_text())["recovery"]
    assert recovery == {**recovery, "needed": False, "status": "full int8 passes: left alone"}
    assert not (run_dir / "model_int8_mixed.tflite").exists()
    assert "not needed" in result.output and "full int8 left alone" in result.output


def test_no_passing_mix_is_one_gate_failure_line(outlier_run, tmp_path, monkeypatch):
    import pipeline.optimizing.mixed_precision
    from pipeline.config.stages import QuantizeOptions
    from pipeline.core.errors import ParityError
    from pipeline.optimizing.quantize import quantize

    monkeypatch.setattr(pipeline.optimizing.mixed_precision, "SHORTLIST", 1)  # a shorter hopeless search:
    monkeypatch.setattr(pipeline.optimizing.mixed_precision, "PRECISIONS", ("float",))  # one precision to try

    real_search, outcomes = pipeline.optimizing.mixed_precision.recover_int8, []

    def replayed(*args, **kwargs):
        if not outcomes:
            outcomes.append(real_search(*args, **kwargs))
        return outcomes[0]

    monkeypatch.setattr(pipeline.optimizing.mixed_precision, "recover_int8", replayed)
    run_dir = tmp_path / "run"
    shutil.copytree(outlier_run, run_dir, symlinks=True)
    # A mix must pass by one standard error, and none agrees with Keras on more than 100%: none passes.
    with pytest.raises(ParityError, match=r"^int8 recovery: no mix raising at most 2 of 8 layers passes "
                                          r"the gates by one standard error on the 144 validation samples "
                                          r"\(best top-1 agreement [0-9.]+%"):
        quantize(run_dir, QuantizeOptions(modes=["int8"], recover=True,
                                          gates={"quantized": {"top1_agreement": 1.0}}))
    # Without --recover the same search only warns, and the run goes on to verify (the same
    # inputs give the same search: its outcome is replayed, not searched a second time).
    report = quantize(run_dir, QuantizeOptions(modes=["int8"], gates={"quantized": {"top1_agreement": 1.0}}))
    assert report["recovery"]["status"] == "no mix passes"
    assert not (run_dir / "model_int8_mixed.tflite").exists()


def test_a_candidate_quantizes_every_valid_input_not_just_the_calibration_range():
    """The MLPerf ResNet-8 mix once had input scale 0.94 and zero point -128: every pixel above
    240 saturated, because its calibration samples happened to stop there. Calibrated on
    samples in [0, 0.5], a candidate given the input range [0, 1] still represents 1.0."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    from pipeline.formats.tflite import float_tflite_with_signature
    from pipeline.optimizing.mixed_precision import input_range, quantize_mixed

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    calibration = np.random.default_rng(0).uniform(0.0, 0.5, (32, 4)).astype(np.float32)
    assert input_range({"raw_dtype": "uint8", "scale": 1 / 255}, calibration) == pytest.approx((0.0, 1.0))
    assert input_range({"raw_dtype": "float32", "scale": 1.0}, calibration * 510) == pytest.approx(
        (float(calibration.min() * 510), float(calibration.max() * 510)))
    float_model = float_tflite_with_signature(model)
    for widened, covers_one in ((None, False), ((0.0, 1.0), True)):
        mix = quantize_mixed(float_model, calibration, [], "int16x8", widened)
        scale, zero_point = Interpreter(model_content=mix).get_input_details()[0]["quantization"]
        assert scale > 0  # an int8 input; its largest representable value is scale * (127 - zp)
        assert (scale * (127 - zero_point) >= 1.0 - scale / 2) == covers_one, (scale, zero_point)
